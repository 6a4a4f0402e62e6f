"""Streaming capture of block inputs and outputs with forward hooks.

One forward pass hands back, for the chosen blocks and token positions only, the residual
stream entering and leaving each block: ``[layers, batch, positions, d]`` each. Positions
count real tokens of each sequence (left or right padding is skipped per row), and the pass
stops after the last hooked block when ``stop_early`` is set. Nothing is kept between
batches: the caller folds each batch into estimator state.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .._validation import as_device
from .blocks import find_blocks, hidden_of, hidden_of_call, input_device, parse_hook_point, resolve_stack


class _StopForward(Exception):
    """Raised by the last hook to skip the blocks nobody listens to."""


def padded_position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that number each row's real tokens 0, 1, 2, ... under left or right padding: int64 ``[B, T]``.

    ``attention_mask`` is ``[B, T]`` (bool or integer, 1 = real token). A pad before the first
    real token gets 0 (any id would do there: the mask hides it); a pad after the last real
    token keeps counting from it, harmless for the same reason.
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


def real_positions(attention_mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Column of the ``positions[p]``-th real token of each row: ``[B, P]``.

    Works for left and right padding alike: real tokens are the mask's ones, in order.
    """
    lengths = attention_mask.sum(-1)
    if positions.numel() == 0 or int(positions.min()) < 0:
        raise ValueError(f"positions must be a non-empty list of token indices >= 0, got {positions.tolist()}")
    if bool((positions.max() >= lengths).any()):
        raise ValueError(f"positions up to {int(positions.max())} were asked for, but a sequence in this batch has "
                         f"only {int(lengths.min())} real tokens")
    order = padded_position_ids(attention_mask)  # rank of each real token in its row
    order = torch.where(attention_mask.bool(), order, torch.full_like(order, -1))
    hits = order.unsqueeze(1) == positions.view(1, -1, 1).to(order.device)  # [B, P, T]
    return hits.float().argmax(-1)


def _block_index(layer: int | str, n_blocks: int) -> int:
    """A block index, or the block a TransformerLens point ``blocks.{l}.hook_resid_pre|post`` belongs to."""
    if isinstance(layer, str):
        return parse_hook_point(layer, n_blocks)[0]
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise ValueError(f"layers must hold block indices or 'blocks.{{l}}.hook_resid_pre|post' names, got {layer!r}")
    return layer


class BlockCapture:
    """Hooks on ``layers`` of ``model``'s blocks; :meth:`run` returns their gathered inputs and outputs.

    ``layers`` holds block indices or TransformerLens point names: block ``l``'s input is
    ``blocks.{l}.hook_resid_pre`` and its output ``blocks.{l}.hook_resid_post``, both captured.

    The model may be spread over devices by accelerate (``device_map``, CPU and disk offload):
    the ids go to :func:`input_device`, each block's states are picked on the device it ran on
    and moved to ``out_device`` (default ``None``: the device of the first hooked block's
    output) before they are stacked.

    An encoder-decoder model (``config.is_encoder_decoder``: BART, T5) needs ``stack``, and is
    refused without it (:func:`~emergence_fast.capture.blocks.resolve_stack`). ``"encoder"``
    hooks the encoder's blocks and runs the encoder alone on the ids. ``"decoder"`` hooks the
    decoder's blocks and feeds the same ids, unshifted, to the encoder and as the decoder's
    input: position ``t`` of the decoder holds token ``t``, and through cross-attention every
    decoder state sees the whole sequence, so neither stack is causal. ``blocks``, when given
    with ``stack``, must lie inside that stack.
    """

    def __init__(self, model: nn.Module, layers: Sequence[int | str] | None = None, *, blocks=None, stop_early=True,
                 out_device: str | torch.device | None = None, stack: str | None = None):
        self.out_device = None if out_device is None else as_device(out_device, "out_device")
        self.model = model
        self.stack = stack
        stack_module = resolve_stack(model, stack)
        if stack_module is None:
            self.blocks = find_blocks(model, blocks)
        elif blocks is None:
            self.blocks = find_blocks(stack_module, None)
        else:
            self.blocks = find_blocks(model, blocks)
            inside = {id(module) for module in stack_module.modules()}
            if not all(id(block) in inside for block in self.blocks):
                raise ValueError(f"blocks must lie inside the {stack} of {type(model).__name__} when stack={stack!r}")
        # The encoder runs alone; the decoder stack runs the whole model.
        self._forward = stack_module if stack == "encoder" else model
        n = len(self.blocks)
        layers = list(range(n)) if layers is None else [_block_index(layer, n) for layer in layers]
        bad = [layer for layer in layers if not 0 <= layer < n]
        if bad or not layers:
            raise ValueError(f"layers must be a non-empty list of block indices in 0..{n - 1}, got {layers}")
        if len(set(layers)) != len(layers):
            raise ValueError(f"layers must not repeat, got {layers}")
        self.layers = layers
        self.stop_early = stop_early

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    def run(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
            positions: Sequence[int] | torch.Tensor | None = None):
        """Forward ``input_ids [B, T]``; returns ``(inputs, outputs)`` each ``[layers, B, P, d]`` on ``out_device``."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if positions is None:
            positions = torch.arange(int(attention_mask.sum(-1).min()))
        positions = torch.as_tensor(positions, dtype=torch.long)
        device = input_device(self.model)
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        index = real_positions(attention_mask, positions)  # [B, P]
        indices: dict[torch.device, torch.Tensor] = {index.device: index}
        inputs: dict[int, torch.Tensor] = {}
        outputs: dict[int, torch.Tensor] = {}
        last = max(self.layers)

        def gather(hidden: torch.Tensor) -> torch.Tensor:
            # Blocks of a dispatched model run on different devices: pick the positions where the state is.
            at = indices.get(hidden.device)
            if at is None:
                at = indices[hidden.device] = index.to(hidden.device)
            return hidden.gather(1, at.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))

        def make_hook(layer: int):
            def hook(module, args, kwargs, output):
                inputs[layer] = gather(hidden_of_call(args, kwargs)).detach()
                outputs[layer] = gather(hidden_of(output)).detach()
                if self.stop_early and layer == last:
                    raise _StopForward

            return hook

        if self.stack is not None:
            # Encoder-decoder stacks take no position ids (BART's are absolute, counted from the left).
            if bool((attention_mask.diff(dim=-1) > 0).any()):
                raise ValueError(f"stack={self.stack!r}: pad on the right (a padded position precedes a real token)")
            model_inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if self.stack == "decoder":
                model_inputs.update(decoder_input_ids=input_ids, decoder_attention_mask=attention_mask, use_cache=False)
        else:
            model_inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": False}
        if self.stack is None and not bool(attention_mask.all()):
            # Absolute-position models (GPT-2, OPT) must number real tokens from 0 under left padding.
            model_inputs["position_ids"] = padded_position_ids(attention_mask)
        handles = [self.blocks[layer].register_forward_hook(make_hook(layer), with_kwargs=True) for layer in self.layers]
        try:
            with torch.no_grad():
                self._forward(**model_inputs)
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
        out = self.out_device if self.out_device is not None else outputs[self.layers[0]].device
        return (torch.stack([inputs[layer].to(out) for layer in self.layers]),
                torch.stack([outputs[layer].to(out) for layer in self.layers]))
