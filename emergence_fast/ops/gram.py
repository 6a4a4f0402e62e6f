"""Batched cross-product ``a^T b``: the torch reference and the wrapper over every backend.

Kernels: ``kernels/gram.py`` (Triton), ``csrc/cpu/gram.cpp``, ``csrc/cuda/gram.cu``.
"""
from __future__ import annotations

import torch

from .. import _dispatch


def gram_torch(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The reference: ``torch.matmul(a^T, b)``, float16 / bfloat16 computed in float32."""
    if a.dtype in (torch.float16, torch.bfloat16):
        a, b = a.float(), b.float()
    return torch.matmul(a.transpose(-1, -2), b)


def gram(a: torch.Tensor, b: torch.Tensor, backend: str | None = None) -> torch.Tensor:
    """Batched cross-product ``a^T b``: ``a [..., N, da]``, ``b [..., N, db]`` -> ``[..., da, db]``.

    float64 in -> float64 out; float16 / bfloat16 / float32 in -> float32 accumulation and out.
    ``backend`` as in :func:`emergence_fast._dispatch.resolve_backend` (ValueError for an unknown
    or unavailable one). On ``triton``, float64 runs the torch reference (``tl.dot`` has no
    float64 path: exactness beats speed there).
    """
    name = _dispatch.resolve_backend(backend, a.device)
    lead = a.shape[:-2]
    a3 = a.reshape(-1, *a.shape[-2:])
    b3 = a3 if b is a else b.reshape(-1, *b.shape[-2:])
    if name == "torch" or (name == "triton" and a3.dtype == torch.float64):
        out = gram_torch(a3, b3)
    elif name == "triton":
        out = _dispatch.call_triton("gram", a3, b3)
    else:
        out = _dispatch.call_native("gram", name, a3, b3)
    return out.reshape(*lead, a.shape[-1], b.shape[-1])
