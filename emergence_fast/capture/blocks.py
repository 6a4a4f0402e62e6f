"""Where the transformer blocks are, per architecture, and how hook points are named.

Capture knows models, nothing about estimators. A block's *input* is the residual stream
entering it (TransformerLens ``blocks.{l}.hook_resid_pre``), its *output* the stream
leaving it (``blocks.{l}.hook_resid_post`` = ``blocks.{l+1}.hook_resid_pre``).
"""
from __future__ import annotations

import hashlib
import re
from contextlib import suppress
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
    "layers",  # also the stacks of BART-style encoder-decoders (see resolve_stack)
    "block",  # the stacks of T5-style encoder-decoders
)
STACKS = ("encoder", "decoder")

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


def is_encoder_decoder(model: nn.Module) -> bool:
    """Whether ``model`` is an encoder-decoder (BART, T5, ...), by its config."""
    return bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))


def resolve_stack(model: nn.Module, stack: str | None) -> nn.Module | None:
    """The encoder or decoder module ``stack`` names in an encoder-decoder ``model``; None for other models.

    An encoder-decoder has two block stacks and no single right one, so the caller must choose.

    Raises
    ------
    ValueError
        ``stack`` is None for an encoder-decoder model, not one of :data:`STACKS`, given for a
        model that is not an encoder-decoder, or the model has no ``get_encoder``/``get_decoder``.
    """
    name = type(model).__name__
    if stack is not None and stack not in STACKS:
        raise ValueError(f"stack must be one of {STACKS} (or None for a decoder-only model), got {stack!r}")
    if not is_encoder_decoder(model):
        if stack is not None:
            raise ValueError(f"stack={stack!r} applies to encoder-decoder models only; {name} is not one "
                             "(leave stack unset)")
        return None
    if stack is None:
        raise ValueError(f"{name} is an encoder-decoder model: choose the blocks to score with stack='encoder' "
                         f"or stack='decoder' (CLI: --stack encoder|decoder); one of {STACKS}")
    getter = getattr(model, f"get_{stack}", None)
    module = getter() if callable(getter) else None
    if not isinstance(module, nn.Module):
        raise ValueError(f"{name} is an encoder-decoder model without a get_{stack}() module: its {stack} "
                         "blocks cannot be found")
    return module


def vocab_size(model: nn.Module) -> int | None:
    """Rows of the model's input embedding (the ids it can read: ``0 .. vocab_size - 1``), else
    ``config.vocab_size``, else None."""
    embeddings = _input_embeddings(model)
    rows = getattr(embeddings, "num_embeddings", None)
    if isinstance(rows, int):
        return rows
    size = getattr(getattr(model, "config", None), "vocab_size", None)
    return size if isinstance(size, int) and size > 0 else None


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


# ---- models dispatched by accelerate (device_map, CPU and disk offload) -------------------------

def _accelerate_hooks(module: nn.Module) -> list:
    """The accelerate hooks on ``module`` (``_hf_hook``, a SequentialHook unpacked), outermost first."""
    hook = getattr(module, "_hf_hook", None)
    if hook is None:
        return []
    return list(getattr(hook, "hooks", None) or [hook])


def _as_device(device) -> torch.device:
    # accelerate writes execution devices as ints (accelerator index), strings or torch.device.
    return device if isinstance(device, torch.device) else torch.device(device)


def _input_embeddings(model: nn.Module) -> nn.Module | None:
    getter = getattr(model, "get_input_embeddings", None)
    if getter is None:
        return None
    try:
        embeddings = getter()
    except (NotImplementedError, AttributeError):
        return None
    return embeddings if isinstance(embeddings, nn.Module) else None


def _first_real_device(module: nn.Module) -> torch.device | None:
    return next((p.device for p in module.parameters() if p.device.type != "meta"), None)


def input_device(model: nn.Module) -> torch.device:
    """The device the input ids must go to.

    Parameters
    ----------
    model : nn.Module
        A model in memory, or one dispatched by accelerate (``from_pretrained(device_map=...)``,
        which sets ``model.hf_device_map``), whose weights may be offloaded to the CPU or disk.

    Returns
    -------
    torch.device
        For a dispatched model, the device the input embeddings *execute* on: the
        ``execution_device`` of their accelerate hook (an offloaded module's weights live on
        ``meta`` but it runs there), else the device of their first parameter that holds data,
        else that of the model's, else the CPU. For a model in memory, the device of its first
        parameter (the CPU when it has none).
    """
    if getattr(model, "hf_device_map", None) is not None:
        embeddings = _input_embeddings(model)
        for module in (embeddings, model):
            if module is None:
                continue
            for hook in _accelerate_hooks(module):
                if getattr(hook, "execution_device", None) is not None:
                    return _as_device(hook.execution_device)
        for module in (embeddings, model):
            device = None if module is None else _first_real_device(module)
            if device is not None:
                return device
        return torch.device("cpu")
    first = next(model.parameters(), None)
    return torch.device("cpu") if first is None else first.device


def _offloaded_value(model: nn.Module, name: str) -> torch.Tensor | None:
    """The data of the ``meta`` parameter ``name`` read through accelerate's offload, or None.

    accelerate keeps an offloaded module's weights in ``module._hf_hook.weights_map`` (a view of
    the CPU state dict or of the safetensors on disk) keyed by names relative to the hooked module;
    the innermost hooked ancestor that knows the name wins (what transformers itself does).
    """
    parts = name.split(".")
    for depth in range(len(parts) - 1, -1, -1):
        prefix = ".".join(parts[:depth])
        try:
            module = model.get_submodule(prefix)
        except AttributeError:
            continue
        relative = ".".join(parts[depth:])
        for hook in _accelerate_hooks(module):
            weights_map = getattr(hook, "weights_map", None)
            if weights_map is None:
                continue
            try:
                value = weights_map[relative]
            except (KeyError, FileNotFoundError):
                continue
            if isinstance(value, torch.Tensor) and value.device.type != "meta":
                return value
    return None


def _weight_sum(model: nn.Module, name: str, parameter: torch.Tensor) -> float | None:
    """Sum of a parameter's values in float64, on the CPU (the same bits wherever the weight lives)."""
    data = parameter.detach()
    if data.device.type == "meta":
        data = _offloaded_value(model, name)
        if data is None:
            return None
    if data.device.type != "cpu":
        data = data.to("cpu")
    # dtype= accumulates in float64 without a float64 copy of the weight (an embedding can be GBs).
    return float(torch.sum(data, dtype=torch.float64))


def _untied_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """``named_parameters()`` without the second name of a tied weight, even where the tie came undone.

    In memory a tied weight (GPT-2's ``lm_head.weight`` is ``transformer.wte.weight``) is one
    Parameter, listed once. When accelerate offloads both modules, its first forward puts a
    separate ``meta`` Parameter back into each, so the tie's target would then be listed too.
    """
    named = list(model.named_parameters())
    tied = getattr(model, "all_tied_weights_keys", None)  # transformers >= 5: {target: source}, config-aware
    if tied is None:
        tied = {}
        config = getattr(model, "config", None)
        if getattr(config, "tie_word_embeddings", False) and hasattr(model, "get_output_embeddings"):
            with suppress(NotImplementedError, AttributeError):
                ids = {id(p): n for n, p in named}
                source = ids.get(id(getattr(_input_embeddings(model), "weight", None)))
                output = model.get_output_embeddings()
                target = next((f"{name}.weight" for name, module in model.named_modules() if module is output), None)
                if source is not None and target is not None:
                    tied = {target: source}
    names = {name for name, _ in named}
    return [(name, p) for name, p in named if not (name in tied and tied[name] in names and tied[name] != name)]


def model_identity(model: nn.Module) -> dict:
    """Name, dtype, size and checksum of ``model``: a resumed run and every rank must see the same model.

    Parameters
    ----------
    model : nn.Module
        A model in memory or dispatched by accelerate, its weights possibly offloaded to the CPU
        or the disk (such parameters sit on the ``meta`` device).

    Returns
    -------
    dict
        ``name`` (``config._name_or_path``, else the class name), ``dtype`` (of the first
        parameter, as ``str``), ``n_parameters`` and ``checksum``: the float64 sum of the first
        and last parameters rounded to 6 decimals. Offloaded weights are read through accelerate's
        offload, so the same weights give the same identity in memory and offloaded. Only when an
        offloaded weight cannot be read is ``checksum`` the string ``"names-and-shapes:<sha256>"``
        over every parameter's name, shape and dtype (it never equals a weight checksum).
        ``weights``: a sha256 over every parameter's name, shape and ~256 strided values, which
        sees a change in any layer.
    """
    named = _untied_parameters(model)
    if not named:
        raise ValueError(f"model {type(model).__name__} has no parameters to identify it by")
    name = getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
    sums = [_weight_sum(model, n, p) for n, p in (named[0], named[-1])]
    if all(s is not None for s in sums):
        checksum = round(sums[0] + sums[1], 6)
    else:
        digest = hashlib.sha256()
        for n, p in named:
            digest.update(f"{n}:{tuple(p.shape)}:{p.dtype};".encode())
        checksum = f"names-and-shapes:{digest.hexdigest()[:16]}"
    return {"name": name, "dtype": str(named[0][1].dtype), "n_parameters": sum(p.numel() for _, p in named),
            "checksum": checksum, "weights": _sampled_fingerprint(model, named)}


def _sampled_fingerprint(model: nn.Module, named) -> str:
    """sha256 over every parameter's name, shape and about 256 evenly strided values (their exact bits).

    Cheap in memory at any size, and it sees a change in any layer, where ``checksum`` reads only
    the first and last weights. Offloaded weights are read through accelerate's offload like
    ``checksum``'s (one pass over a disk-offloaded model's weights, about one forward's reads).
    """
    digest = hashlib.sha256()
    for name, parameter in named:
        digest.update(f"{name}:{tuple(parameter.shape)}:{parameter.dtype};".encode())
        data = parameter.detach()
        if data.device.type == "meta":
            data = _offloaded_value(model, name)
            if data is None:
                return "names-and-shapes:" + digest.hexdigest()[:16]
        if data.numel():
            flat = data.reshape(-1)
            digest.update(flat[:: max(1, flat.numel() // 256)].to("cpu", torch.float64).numpy().tobytes())
    return digest.hexdigest()[:16]
