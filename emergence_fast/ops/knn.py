"""Exact max-norm k-nearest-neighbour radii and KSG marginal counts: the torch reference, the
argument checks and the wrapper over every backend.

Kernels: ``kernels/knn.py`` (Triton), ``csrc/cpu/knn.cpp``, ``csrc/cuda/knn.cu``. The estimators
(:mod:`emergence_fast.estimators.knn`) call this module; it is the oracle of the kernels.

The reference is exact brute force, tiled: query rows are processed in tiles so that no
:math:`N \times N` distance matrix is ever held (each tile's distances fit in about
``TILE_BYTES``), with leading batch dims flattened and run together. Distances are
``torch.cdist`` (max-norm, or Euclidean without the matmul shortcut, so every pair is the same
number whatever the tiling); the counts are exact comparisons of those numbers.
"""
from __future__ import annotations

import math

import torch

from .. import _dispatch
from .._validation import check_int

TILE_BYTES = 64 * 2**20  # budget for the distance matrices of one tile, all batch cells together
_REGISTER_BACKENDS = ("triton", "cuda")  # their kernels keep each row's k nearest in registers


def check_tile_rows(tile_rows) -> None:
    """The ``_tile_rows`` test knob of the torch reference: ``None`` (tiles sized by ``TILE_BYTES``) or a positive int."""
    if tile_rows is not None:
        check_int(tile_rows, "_tile_rows", minimum=1)


def _tiles(batch: int, n: int, itemsize: int, matrices: int, tile_rows):
    """(batch chunk, query-row tile) pairs covering ``[B, N]``; each holds ~``TILE_BYTES`` of distances."""
    row_bytes = n * itemsize * matrices
    if tile_rows is None:
        per_cell = max(1, TILE_BYTES // row_bytes)  # query rows affordable for one batch cell
        bchunk = max(1, min(batch, per_cell // n)) if per_cell >= n else 1
        tile_rows = max(1, min(n, TILE_BYTES // (row_bytes * bchunk)))
    else:
        check_tile_rows(tile_rows)
        bchunk = batch
    for b0 in range(0, batch, bchunk):
        for r0 in range(0, n, tile_rows):
            yield slice(b0, min(batch, b0 + bchunk)), slice(r0, min(n, r0 + tile_rows))


def _distances(query: torch.Tensor, points: torch.Tensor, p: float) -> torch.Tensor:
    return torch.cdist(query, points, p=p, compute_mode="donot_use_mm_for_euclid_dist")


def _exclude_self(dist: torch.Tensor, rows: slice) -> torch.Tensor:
    """Set the (i, i) entries of a ``[b, T, N]`` tile whose rows start at ``rows.start`` to +inf."""
    dist.diagonal(offset=rows.start, dim1=-2, dim2=-1).fill_(math.inf)
    return dist


def knn_radii(x: torch.Tensor, k: int, *, metric: str = "max", _tile_rows=None) -> torch.Tensor:
    """Distance from each sample of ``x [B, N, d]`` to its ``k``-th nearest other sample: ``[B, N]``."""
    batch, n, _ = x.shape
    p = math.inf if metric == "max" else 2.0
    out = torch.empty(batch, n, dtype=x.dtype, device=x.device)
    for bs, rows in _tiles(batch, n, x.element_size(), 1, _tile_rows):
        dist = _exclude_self(_distances(x[bs, rows], x[bs], p), rows)
        out[bs, rows] = torch.topk(dist, k, dim=-1, largest=False, sorted=False).values.amax(-1)
    return out


def _k_nearest_mask(joint: torch.Tensor, eps: torch.Tensor, k: int) -> torch.Tensor:
    """The k nearest per row as a mask: everything closer than ``eps``, then ties at ``eps`` by lowest index.

    The lowest-index rule is what the native kernels do, so variant 2's marginal extents agree on
    every backend even with tied distances; ``torch.topk`` alone would break ties arbitrarily.
    """
    closer = joint < eps
    tied = joint == eps
    room = k - closer.sum(-1, keepdim=True)
    return closer | (tied & (tied.cumsum(-1) <= room))


def ksg_counts(x: torch.Tensor, y: torch.Tensor, k: int, variant: int, _tile_rows=None):
    """Joint k-NN radius and marginal counts (per the variant) for ``x [B, N, dx]``, ``y [B, N, dy]``.

    Returns ``(radius, n_x, n_y)``, each ``[B, N]``.
    """
    batch, n, _ = x.shape
    radius = torch.empty(batch, n, dtype=x.dtype, device=x.device)
    counts = [torch.empty(batch, n, dtype=torch.int64, device=x.device) for _ in range(2)]
    for bs, rows in _tiles(batch, n, x.element_size(), 3, _tile_rows):
        dx = _exclude_self(_distances(x[bs, rows], x[bs], math.inf), rows)
        dy = _exclude_self(_distances(y[bs, rows], y[bs], math.inf), rows)
        joint = torch.maximum(dx, dy)
        eps = torch.topk(joint, k, dim=-1, largest=False, sorted=False).values.amax(-1, keepdim=True)
        radius[bs, rows] = eps.squeeze(-1)
        if variant == 2:
            neighbours = _k_nearest_mask(joint, eps, k)
        for m, marg in enumerate((dx, dy)):
            if variant == 1:
                counts[m][bs, rows] = (marg < eps).sum(-1, dtype=torch.int32)
            else:
                extent = torch.where(neighbours, marg, torch.zeros_like(marg)).amax(-1, keepdim=True)
                counts[m][bs, rows] = (marg <= extent).sum(-1, dtype=torch.int32)
        del dx, dy, joint
    return radius, counts[0], counts[1]


def _check(z, dx, k, mode) -> None:
    """The argument checks of :func:`knn_maxnorm`, the same errors on every backend."""
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"knn_maxnorm: z must be a tensor, got {type(z).__name__}")
    if z.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"knn_maxnorm: z must be float32 or float64, got {z.dtype}")
    if z.dim() < 2 or z.shape[-1] < 1:
        raise ValueError(f"knn_maxnorm: z must be [..., N, D] with D >= 1, got shape {tuple(z.shape)}")
    if isinstance(mode, bool) or mode not in (0, 1, 2):
        raise ValueError(f"knn_maxnorm: mode must be 0 (radii), 1 or 2 (KSG variant), got {mode!r}")
    n, d = z.shape[-2:]
    if isinstance(dx, bool) or not isinstance(dx, int):
        raise TypeError(f"knn_maxnorm: dx must be an int, got {dx!r}")
    if mode == 0 and dx != d:
        raise ValueError(f"knn_maxnorm: mode 0 (radii) measures all columns: dx must equal D={d}, got {dx}")
    if mode > 0 and not 1 <= dx < d:
        raise ValueError(f"knn_maxnorm: KSG needs 1 <= dx < D={d}, got dx={dx}")
    check_int(k, "knn_maxnorm: k", minimum=1, maximum=n - 1)


def pick_backend(backend: str | None, device: torch.device, k) -> str:
    """The backend :func:`knn_maxnorm` runs for ``backend`` and ``k`` on ``device``.

    The Triton and CUDA kernels keep each row's k nearest in registers, up to
    :func:`emergence_fast._dispatch.register_k_max` (32): for a larger ``k``, ``auto`` takes the
    next backend (cpp on CPU, torch on a GPU), and an explicit ``triton`` / ``cuda`` (argument or
    ``EMERGENCE_FAST_BACKEND``) raises ValueError naming the backend and the limit. A ``k`` that
    is not an int is left to the caller's checks.
    """
    refused = {}
    if isinstance(k, int):
        for name in _REGISTER_BACKENDS:
            limit = _dispatch.register_k_max(name)
            if limit is not None and k > limit:
                refused[name] = (f"its kNN kernel keeps each row's k nearest in registers, so k <= {limit}, "
                                 f"got k={k}")
    return _dispatch.resolve_backend(backend, device, refused)


def knn_maxnorm(z: torch.Tensor, dx: int, k: int, mode: int = 1, backend: str | None = None, _tile_rows=None):
    """Exact max-norm k-NN search over ``z [..., N, D]`` (columns ``[0, dx)`` are x, the rest y).

    Returns ``(eps, n_x, n_y)``: ``eps [..., N]`` (z's dtype) is each row's distance to its
    ``k``-th nearest other row in the joint max-norm; ``mode`` 0 returns radii only (``dx == D``,
    ``n_x`` and ``n_y`` are ``None``); ``mode`` 1 / 2 return the KSG variant-1 / variant-2 marginal
    counts ``[..., N]`` int64. ``z`` (float32 or float64) is measured in its own dtype.

    The ``torch`` backend is :func:`knn_radii` / :func:`ksg_counts` here (``_tile_rows`` sets its
    tile height; the kernels do not tile), ``cpp`` is ``_C.knn_maxnorm_cpu``, ``triton`` is
    :mod:`emergence_fast.kernels.knn`, ``cuda`` is ``_C.knn_maxnorm_cuda``. All give bit-identical
    radii and exact counts; in mode 2 the k nearest are the k smallest (distance, index) pairs
    everywhere, so tied distances give the same extents on every backend. The backend is
    :func:`pick_backend`'s: ``k`` beyond the register-list kernels' limit falls back under
    ``auto`` and raises when ``triton`` or ``cuda`` was asked for.

    Raises TypeError when ``z`` is not a tensor or ``dx`` not an int; ValueError for another dtype, ``mode`` not in
    (0, 1, 2), ``dx`` or ``k`` out of range (mode 0: ``dx == D``; else ``1 <= dx < D``;
    ``1 <= k < N``), or a backend that cannot serve the call.
    """
    _check(z, dx, k, mode)
    name = pick_backend(backend, z.device, k)
    lead, (n, d) = z.shape[:-2], z.shape[-2:]
    z3 = z.reshape(-1, n, d)
    if name == "triton":
        eps, n_x, n_y = _dispatch.call_triton("knn_maxnorm", z3, dx, k, mode)
    elif name != "torch":
        eps, n_x, n_y = _dispatch.call_native("knn_maxnorm", name, z3, dx, k, mode)
    elif mode == 0:
        eps = knn_radii(z3, k, metric="max", _tile_rows=_tile_rows)
    else:
        eps, n_x, n_y = ksg_counts(z3[..., :dx], z3[..., dx:], k, mode, _tile_rows)
    if mode == 0:
        return eps.reshape(*lead, n), None, None
    return eps.reshape(*lead, n), n_x.reshape(*lead, n), n_y.reshape(*lead, n)
