"""Log-sum-exp of Gaussian kernels between query and key rows: the torch reference, the argument
checks and the wrapper over every backend.

Kernels: ``kernels/gaussian_lse.py`` (Triton), ``csrc/cpu/gaussian_lse.cpp``,
``csrc/cuda/gaussian_lse.cu``.
"""
from __future__ import annotations

import math
import operator

import torch

from .. import _dispatch


def gaussian_lse_torch(queries: torch.Tensor, keys: torch.Tensor, log_weights: torch.Tensor, dx: int,
                        chunk_bytes: int = 1 << 26) -> torch.Tensor:
    """The reference for :func:`gaussian_lse` on ``[B, M, D]``, ``[B, N, D]``, ``[B, N, 3]``: direct
    differences, query rows in chunks of about ``chunk_bytes``."""
    b, m, d = queries.shape
    n = keys.shape[1]
    out = torch.empty(b, m, 3, dtype=queries.dtype, device=queries.device)
    rows = max(1, chunk_bytes // max(1, b * n * d * queries.element_size()))
    for lo in range(0, m, rows):
        diff = (queries[:, lo:lo + rows, None, :] - keys[:, None, :, :]).square()  # [B, rows, N, D]
        sq_x, sq_y = diff[..., :dx].sum(-1), diff[..., dx:].sum(-1)
        for c, sq in enumerate((sq_x, sq_y, sq_x + sq_y)):
            out[:, lo:lo + rows, c] = torch.logsumexp(log_weights[:, None, :, c] - 0.5 * sq, dim=-1)
    return out


def gaussian_lse(queries: torch.Tensor, keys: torch.Tensor, log_weights: torch.Tensor, dx: int,
                 backend: str | None = None) -> torch.Tensor:
    r"""Log-sum-exp of Gaussian kernels between query rows and weighted key rows, in one fused pass.

    ``queries [..., M, D]``, ``keys [..., N, D]`` (same float dtype: float32 or float64; columns
    ``[0, dx)`` are x, ``[dx, D)`` y), ``log_weights [..., N, 3]`` -> ``[..., M, 3]`` in the
    input dtype:

    .. math::

        \mathrm{out}[m, c] = \log \sum_n \exp\big(w[n, c] - \tfrac12 \lVert q_m - k_n \rVert_c^2\big)

    with :math:`\lVert\cdot\rVert_c` over the x columns (c = 0), the y columns (c = 1) and all
    columns (c = 2). This is the log-density (up to a constant) of a mixture of unit isotropic
    Gaussians centred at the keys, for the x marginal, the y marginal and the joint at once: the
    inner loop of the noisy-channel MI (:mod:`emergence_fast.estimators.noisy`). Distances are
    direct differences, never ``|q|^2 + |k|^2 - 2 q.k``, which cancels catastrophically for
    states far from the origin relative to the noise. A ``-inf`` weight drops its key (padding);
    a row whose keys are all dropped (or ``N = 0``) gets ``-inf``. Weights must be below ``+inf``
    and the states finite.

    Backends: ``torch`` is :func:`gaussian_lse_torch` (query rows in memory-bounded chunks),
    ``cpp`` is ``_C.gaussian_lse_cpu`` (OpenMP, AVX2), ``triton`` is
    :mod:`emergence_fast.kernels.gaussian_lse`, ``cuda`` is ``_C.gaussian_lse_cuda``. All
    accumulate in the input dtype; they agree to rounding (float32: ~1e-6 relative).

    Raises ValueError for a dtype other than float32 / float64, dtypes or devices that differ
    between the three tensors, shapes that do not fit together, or ``dx`` outside ``[0, D]``
    (or not an integer); TypeError when an argument is not a tensor; ValueError from
    :func:`emergence_fast._dispatch.resolve_backend` for an unknown or unavailable ``backend``.
    """
    dx = _check(queries, keys, log_weights, dx)
    name = _dispatch.resolve_backend(backend, queries.device)
    lead, (m, d), n = queries.shape[:-2], queries.shape[-2:], keys.shape[-2]
    b = math.prod(lead)  # explicit: reshape(-1, ...) is ambiguous when M, N or D is 0
    q3, k3, w3 = queries.reshape(b, m, d), keys.reshape(b, n, d), log_weights.reshape(b, n, 3)
    if name == "torch":
        out = gaussian_lse_torch(q3, k3, w3, dx)
    elif name == "triton":
        out = _dispatch.call_triton("gaussian_lse", q3, k3, w3, dx)
    else:
        out = _dispatch.call_native("gaussian_lse", name, q3, k3, w3, dx)
    return out.reshape(*lead, m, 3)


def _check(queries, keys, log_weights, dx) -> int:
    """The argument checks of :func:`gaussian_lse`, the same errors on every backend; returns ``dx`` as an int."""
    for arg, t in (("queries", queries), ("keys", keys), ("log_weights", log_weights)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"gaussian_lse: {arg} must be a tensor, got {type(t).__name__}")
    if queries.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"gaussian_lse: queries must be float32 or float64, got {queries.dtype} "
                         "(cast float16 / bfloat16 states to float32 first)")
    for arg, t in (("keys", keys), ("log_weights", log_weights)):
        if t.dtype != queries.dtype:
            raise ValueError(f"gaussian_lse: {arg} must have the queries' dtype {queries.dtype}, got {t.dtype}")
        if t.device != queries.device:
            raise ValueError(f"gaussian_lse: {arg} must be on the queries' device {queries.device}, got {t.device}")
    if queries.dim() < 2:
        raise ValueError(f"gaussian_lse: queries must be [..., M, D], got shape {tuple(queries.shape)}")
    lead, d = queries.shape[:-2], queries.shape[-1]
    if keys.dim() != queries.dim() or keys.shape[:-2] != lead or keys.shape[-1] != d:
        raise ValueError(f"gaussian_lse: keys must be [..., N, D] with the queries' leading dims {tuple(lead)} "
                         f"and D={d}, got shape {tuple(keys.shape)}")
    if log_weights.shape != (*keys.shape[:-1], 3):
        raise ValueError(f"gaussian_lse: log_weights must be [..., N, 3] = {(*keys.shape[:-1], 3)}, "
                         f"got shape {tuple(log_weights.shape)}")
    try:
        dx_int = None if isinstance(dx, bool) else operator.index(dx)  # numpy / torch integers too
    except TypeError:
        dx_int = None
    if dx_int is None or not 0 <= dx_int <= d:
        raise ValueError(f"gaussian_lse: dx must be an int in [0, D={d}], got {dx!r}")
    return dx_int
