"""Entropy of ``softmax(logits)`` in one pass: the torch reference and the wrapper over every backend.

Kernels: ``kernels/softmax_entropy.py`` (Triton), ``csrc/cpu/softmax_entropy.cpp``,
``csrc/cuda/softmax_entropy.cu``.
"""
from __future__ import annotations

import torch

from .. import _dispatch


def softmax_entropy_torch(logits: torch.Tensor) -> torch.Tensor:
    """The reference: ``-sum p log p`` from ``log_softmax``, float16 / bfloat16 computed in float32;
    a zero probability (a ``-inf`` logit) contributes 0."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    log_p = torch.log_softmax(logits, dim=-1)
    p = log_p.exp()
    return -torch.where(p > 0, p * log_p, torch.zeros_like(p)).sum(-1)


def softmax_entropy(logits: torch.Tensor, backend: str | None = None) -> torch.Tensor:
    """Entropy (nats) of ``softmax(logits)`` over the last dim, ``[..., V] -> [...]``, in one pass.

    float64 in -> float64 out; other float dtypes -> float32. ``backend`` as in
    :func:`emergence_fast._dispatch.resolve_backend` (ValueError for an unknown or unavailable
    one); on ``triton``, float64 runs the torch reference.
    """
    name = _dispatch.resolve_backend(backend, logits.device)
    lead = logits.shape[:-1]
    x2 = logits.reshape(-1, logits.shape[-1])
    if name == "torch" or (name == "triton" and x2.dtype == torch.float64):
        out = softmax_entropy_torch(x2)
    elif name == "triton":
        out = _dispatch.call_triton("softmax_entropy", x2)
    else:
        out = _dispatch.call_native("softmax_entropy", name, x2)
    return out.reshape(lead)
