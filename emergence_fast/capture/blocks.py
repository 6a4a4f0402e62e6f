"""Where the transformer blocks are, per architecture, and how hook points are named.

Capture knows models, nothing about estimators. A block's *input* is the residual stream
entering it (TransformerLens ``blocks.{l}.hook_resid_pre``), its *output* the stream
leaving it (``blocks.{l}.hook_resid_post`` = ``blocks.{l+1}.hook_resid_pre``).
"""
from __future__ import annotations

import re
from typing import Sequence

import torch
from torch import nn

# Attribute paths of the block list, most common first.
BLOCK_PATHS = (
    "model.layers",  # Llama, Mistral, Qwen2, Gemma, Phi-3, SmolLM
    "transformer.h",  # GPT-2, GPT-J, Bloom (h), Falcon
    "gpt_neox.layers",  # GPT-NeoX, Pythia
    "model.decoder.layers",  # OPT
    "bert.encoder.layer",  # BERT with a head
    "roberta.encoder.layer",
    "encoder.layer",  # bare BERT / RoBERTa
    "model.language_model.layers",  # multimodal wrappers (Gemma 3, Llava-style)
    "transformer.layers",
    "layers",
)

_HOOK_POINT = re.compile(r"^blocks\.(\d+)\.hook_resid_(pre|post)$")


def _get_path(model: nn.Module, path: str):
    obj = model
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def find_blocks(model: nn.Module, blocks: str | Sequence[nn.Module] | None = None) -> list[nn.Module]:
    """The model's transformer blocks in order.

    ``blocks`` may be an attribute path (``"model.layers"``) or the modules themselves;
    when omitted the known paths are tried in turn.
    """
    if blocks is not None and not isinstance(blocks, str):
        found = list(blocks)
        if not found or not all(isinstance(b, nn.Module) for b in found):
            raise ValueError("blocks must be an attribute path or a non-empty sequence of nn.Module")
        return found
    tried = (blocks,) if isinstance(blocks, str) else BLOCK_PATHS
    for path in tried:
        candidate = _get_path(model, path)
        if isinstance(candidate, (nn.ModuleList, nn.Sequential)) and len(candidate) > 0:
            return list(candidate)
    raise ValueError(
        f"could not find the transformer blocks of {type(model).__name__}: tried {list(tried)}. "
        "Pass blocks='attribute.path.to.blocks' or blocks=[module, ...] (the residual blocks in order)."
    )


def parse_hook_point(name: str, n_layers: int) -> tuple[int, str]:
    """``blocks.{l}.hook_resid_pre|post`` -> (block index, "input" | "output")."""
    match = _HOOK_POINT.fullmatch(name)
    if match is None:
        raise ValueError(f"hook point {name!r} is not of the form 'blocks.{{l}}.hook_resid_pre' or "
                         "'blocks.{l}.hook_resid_post'")
    layer = int(match.group(1))
    if not 0 <= layer < n_layers:
        raise ValueError(f"hook point {name!r} names block {layer}, but the model has blocks 0..{n_layers - 1}")
    return layer, "input" if match.group(2) == "pre" else "output"


def hidden_of(output) -> torch.Tensor:
    """The hidden state a block returns: transformers 5.x returns a tensor, 4.x a tuple."""
    return output[0] if isinstance(output, (tuple, list)) else output


def hidden_of_call(args: tuple, kwargs: dict) -> torch.Tensor:
    """The hidden state a block was called with, positional or keyword."""
    if args:
        return args[0]
    if "hidden_states" in kwargs:
        return kwargs["hidden_states"]
    raise ValueError("could not find the block's input hidden state (neither a positional argument nor "
                     "hidden_states=); pass the blocks explicitly")
