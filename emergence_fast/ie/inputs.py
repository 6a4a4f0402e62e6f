"""What IE feeds the model: the ids under the BOS policy, and the facts about the model it needs first."""
from __future__ import annotations

import torch

from ..capture import vocab_size
from ..datasets import PREFIX_ABSENT, bos_token, check_token_ids, split_special_prefix


def _bos_plan(model, tokenizer, add_bos, input_ids, what: str = "dataset"):
    """``(input_ids, bos, handling)`` under the one BOS rule (:func:`~emergence_fast.datasets.split_special_prefix`).

    Rows that already start with the BOS lose it here and get it back as the prepended token, so
    it is fed once, never twice; ``handling`` is ``"added"``, ``"already present"``, ``"absent"``
    (``add_bos="auto"`` and the tokenizer adds no BOS) or ``"off"`` (``add_bos=False``). Every id,
    the BOS included, is first checked against the model's vocabulary (a named error, not torch's
    IndexError from the embedding); ``what`` names the ids in that error.
    """
    vocab = vocab_size(model)
    check_token_ids(input_ids, vocab, what)
    bos = bos_token(tokenizer, add_bos)
    if bos is None:
        return input_ids, None, "off" if add_bos is False or add_bos is None else PREFIX_ABSENT
    if bos < 0 or (vocab is not None and bos >= vocab):
        raise ValueError(f"add_bos={add_bos!r} gives the BOS id {bos}, outside the model's vocabulary of {vocab} ids "
                         f"(0..{vocab - 1})" if vocab is not None else f"add_bos={add_bos!r}: a token id must be >= 0")
    input_ids, handling = split_special_prefix(input_ids, [bos])
    return input_ids, bos, handling


def _prepend(ids: torch.Tensor, bos: int | None) -> torch.Tensor:
    if bos is None:
        return ids
    return torch.cat([torch.full((ids.shape[0], 1), bos, dtype=ids.dtype), ids], dim=1)


def _is_causal(model) -> bool:
    """Whether a position's state depends on its prefix only: a decoder-only language model. Anything
    else (BERT, a bare ``*Model`` class, an encoder-decoder) is treated as bidirectional, which is
    always correct for the noisy estimator's atoms, only less compact."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return False
    names = [type(model).__name__, *(getattr(config, "architectures", None) or [])]
    return bool(getattr(config, "is_decoder", False)) or any(name.endswith(("ForCausalLM", "LMHeadModel"))
                                                             for name in names)


def _block_width(model, capture, input_ids, bos, device) -> int:
    """The residual-stream width, from the config when it says, else from one sample's forward."""
    width = getattr(getattr(model, "config", None), "hidden_size", None)
    if isinstance(width, int) and width > 0:
        return width
    block_in, _ = capture.run(_prepend(input_ids[:1], bos).to(device), positions=[0 if bos is None else 1])
    return block_in.shape[-1]
