"""Exact max-norm k-nearest-neighbour radii and KSG marginal counts in Triton.

For every row i of every batch cell of z [B, N, D] (columns [0, dx) are x, [dx, D) y), with
d(i, j) = max_c |z_jc - z_ic| over all columns and d_x, d_y the same over the x / y columns:

    eps_i = k-th smallest d(i, j) over j != i                                 (every mode)
    mode 1 (KSG variant 1): n_x = #{j != i : d_x(i, j) <  eps_i}, likewise n_y
    mode 2 (KSG variant 2): n_x = #{j != i : d_x(i, j) <= e_x(i)}, likewise n_y, where
                            e_x(i) = max of d_x(i, j) over the k nearest j (e_y likewise)

The k nearest are the k smallest pairs (d, j) in lexicographic order, so equal distances go
to the lower index, as in the C++ kernel (this only matters for mode 2 with tied distances).

One program owns BLOCK_M query rows of one batch cell; the grid is (row blocks, batch), so
every cell runs in one launch. Two sweeps over the points in BLOCK_N tiles, nothing N x N
is stored:
  1. Distances by a loop over the D columns (elementwise |q - p| and max: max-norm has no
     matmul form, so no tl.dot). Each row keeps its k smallest (d, j) in a [BLOCK_M, BLOCK_K]
     register list, unsorted; padding slots (>= k) hold -inf so they are never the maximum.
     A tile's candidates are its entries below the row's current k-th distance; they are
     taken out smallest first (lowest index on ties) and each replaces the list's largest
     (d, j). After the first tile few entries qualify, so the loop runs a handful of times
     per tile, not BLOCK_N.
  2. With eps (mode 1) or the extents (mode 2, from the k neighbours' rows) known, recount
     the marginal distances per tile.
|a - b| and max are exact in floating point, so every distance is the number torch.cdist
(p = inf) gives in the input dtype (float32 or float64), and the radii are bit-identical.
Inputs must be finite (the estimators check this before calling).

The kernel reads a [B, D, N] copy of z, so a column of a row or point tile is one contiguous
load. GPU tiles: BLOCK_N = 64 (fp32) / 32 (fp64) points, BLOCK_M = 64 rows, halved down to
16 while the grid would not cover the SMs twice, warps sized for ~16 fp32 / 8 fp64 tile
elements per thread (about 128 registers on sm_90, no spills). k <= MAX_K keeps the list in
registers.
"""

import torch
import triton
import triton.language as tl

from ._launch import interpreting, row_tiles

# The per-row list lives in registers: [BLOCK_M, next_pow2(k)] per program. The same limit as the CUDA
# kernel's (csrc/native_limits.h, read back as _C.REGISTER_K_MAX; tests/kernels check the two agree).
MAX_K = 32
_SUPPORTED = (torch.float32, torch.float64)


@triton.jit
def _maxnorm_tile(zb, c0, c1, stride_c, rows, row_ok, pts, pt_ok, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Max-norm distances over columns [c0, c1) between query ``rows`` and points ``pts``: [BLOCK_M, BLOCK_N]."""
    dist = tl.zeros([BLOCK_M, BLOCK_N], zb.dtype.element_ty)
    col = zb + c0 * stride_c
    for _ in range(c0, c1):
        q = tl.load(col + rows, mask=row_ok, other=0.0)
        p = tl.load(col + pts, mask=pt_ok, other=0.0)
        dist = tl.maximum(dist, tl.abs(q[:, None] - p[None, :]))
        col += stride_c
    return dist


@triton.jit
def _knn_maxnorm_kernel(
    zt_ptr, eps_ptr, nx_ptr, ny_ptr,
    N, D, DX, K,
    stride_b, stride_c,
    MODE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    INF: tl.constexpr = float("inf")
    pid_m = tl.program_id(0)
    # int64 because batch offsets of large inputs exceed 2**31 elements.
    pid_b = tl.program_id(1).to(tl.int64)
    zb = zt_ptr + pid_b * stride_b
    dtype = zt_ptr.dtype.element_ty

    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < N
    cols = tl.arange(0, BLOCK_N)
    slots = tl.arange(0, BLOCK_K)

    best_d = tl.where(slots[None, :] < K, INF, -INF) + tl.zeros([BLOCK_M, BLOCK_K], dtype)
    # Distinct placeholder indices: an eviction must replace exactly one slot.
    best_j = (-1 - slots)[None, :] + tl.zeros([BLOCK_M, BLOCK_K], tl.int32)
    kth = tl.full([BLOCK_M], INF, dtype)

    for j0 in range(0, N, BLOCK_N):
        pts = j0 + cols
        pt_ok = pts < N
        dist = _maxnorm_tile(zb, 0, D, stride_c, rows, row_ok, pts, pt_ok, BLOCK_M, BLOCK_N)
        # Padding rows get no candidates, so they add no passes to the loop below.
        keep = row_ok[:, None] & pt_ok[None, :] & (pts[None, :] != rows[:, None])
        cand = tl.where(keep & (dist < kth[:, None]), dist, INF)
        m, jl = tl.min(cand, axis=1, return_indices=True, return_indices_tie_break_left=True)
        while tl.min(m, axis=0) < INF:
            take = m < INF
            # The slot holding the largest (d, j): among slots at the k-th distance, the highest index.
            at_kth = best_d == kth[:, None]
            j_worst = tl.max(tl.where(at_kth, best_j, -BLOCK_K - 1), axis=1)
            slot = at_kth & (best_j == j_worst[:, None]) & take[:, None]
            best_d = tl.where(slot, m[:, None], best_d)
            best_j = tl.where(slot, (j0 + jl)[:, None], best_j)
            kth = tl.max(best_d, axis=1)
            cand = tl.where((cols[None, :] == jl[:, None]) | (cand >= kth[:, None]), INF, cand)
            m, jl = tl.min(cand, axis=1, return_indices=True, return_indices_tie_break_left=True)

    tl.store(eps_ptr + pid_b * N + rows, kth, mask=row_ok)

    if MODE > 0:
        if MODE == 1:
            bound_x = kth
            bound_y = kth
        else:
            # Extents: largest marginal distance to the k neighbours, read back from their rows.
            nb_ok = row_ok[:, None] & (slots[None, :] < K)
            bound_x = tl.zeros([BLOCK_M], dtype)
            bound_y = tl.zeros([BLOCK_M], dtype)
            col = zb
            for _ in range(DX):
                q = tl.load(col + rows, mask=row_ok, other=0.0)
                p = tl.load(col + best_j, mask=nb_ok, other=0.0)
                a = tl.where(nb_ok, tl.abs(p - q[:, None]), 0.0)
                bound_x = tl.maximum(bound_x, tl.max(a, axis=1))
                col += stride_c
            for _ in range(DX, D):
                q = tl.load(col + rows, mask=row_ok, other=0.0)
                p = tl.load(col + best_j, mask=nb_ok, other=0.0)
                a = tl.where(nb_ok, tl.abs(p - q[:, None]), 0.0)
                bound_y = tl.maximum(bound_y, tl.max(a, axis=1))
                col += stride_c

        count_x = tl.zeros([BLOCK_M], tl.int32)
        count_y = tl.zeros([BLOCK_M], tl.int32)
        for j0 in range(0, N, BLOCK_N):
            pts = j0 + cols
            pt_ok = pts < N
            dist_x = _maxnorm_tile(zb, 0, DX, stride_c, rows, row_ok, pts, pt_ok, BLOCK_M, BLOCK_N)
            dist_y = _maxnorm_tile(zb, DX, D, stride_c, rows, row_ok, pts, pt_ok, BLOCK_M, BLOCK_N)
            keep = pt_ok[None, :] & (pts[None, :] != rows[:, None])
            if MODE == 1:
                in_x = dist_x < bound_x[:, None]
                in_y = dist_y < bound_y[:, None]
            else:
                in_x = dist_x <= bound_x[:, None]
                in_y = dist_y <= bound_y[:, None]
            count_x += tl.sum((keep & in_x).to(tl.int32), axis=1)
            count_y += tl.sum((keep & in_y).to(tl.int32), axis=1)
        tl.store(nx_ptr + pid_b * N + rows, count_x.to(tl.int64), mask=row_ok)
        tl.store(ny_ptr + pid_b * N + rows, count_y.to(tl.int64), mask=row_ok)


def _num_warps(dtype: torch.dtype, block_m: int, block_n: int) -> int:
    """Warps of a GPU launch: 16 fp32 (8 fp64) tile elements per thread, so the live [BLOCK_M, BLOCK_N]
    tiles fit in about 128 registers (ptxas, sm_90) without spilling; 4 warps on a 64 x 64 tile spill."""
    per_thread = 16 if dtype == torch.float32 else 8
    return max(2, block_m * block_n // (32 * per_thread))


def _check(z: torch.Tensor, dx: int, k: int, mode: int) -> None:
    if z.dtype not in _SUPPORTED:
        raise TypeError(f"knn_maxnorm: z must be float32 or float64, got {z.dtype}")
    if z.dim() != 3:
        raise ValueError(f"knn_maxnorm: z must be 3-D [B, N, D], got shape {tuple(z.shape)}")
    if isinstance(mode, bool) or mode not in (0, 1, 2):
        raise ValueError(f"knn_maxnorm: mode must be 0 (radii), 1 or 2 (KSG variant), got {mode!r}")
    n, d = z.shape[1:]
    if d < 1:
        raise ValueError("knn_maxnorm: z needs at least one column")
    if mode == 0 and dx != d:
        raise ValueError(f"knn_maxnorm: mode 0 (radii) measures all columns: dx must equal D={d}, got {dx}")
    if mode > 0 and not 1 <= dx < d:
        raise ValueError(f"knn_maxnorm: KSG needs 1 <= dx < D={d}, got dx={dx}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < n:
        raise ValueError(f"knn_maxnorm: need 1 <= k < N={n}, got k={k!r}")
    if k > MAX_K:
        raise ValueError(f"knn_maxnorm: the Triton kernel supports k <= {MAX_K}, got k={k}; "
                         "use backend='cpp' or 'torch' for larger k")
    if n >= 2**31:
        raise ValueError(f"knn_maxnorm: N={n} does not fit the kernel's int32 point indices")


def knn_maxnorm(z: torch.Tensor, dx: int, k: int, mode: int, _block_m=None, _block_n=None):
    """Radii ``eps [B, N]`` (z's dtype) and, for mode 1 / 2, KSG counts ``n_x, n_y [B, N]`` int64.

    ``z [B, N, D]`` float32 or float64; the contract of ``_C.knn_maxnorm_cpu`` (mode 0 returns
    empty count tensors). ``_block_m`` / ``_block_n`` override the tile sizes (tests use them
    to force several tiles on small inputs).
    """
    _check(z, dx, k, mode)
    interpreting(z, "knn_maxnorm")  # raises for CPU tensors without the interpreter, before any allocation
    B, N, D = z.shape
    eps = torch.empty((B, N), dtype=z.dtype, device=z.device)
    shape = (B, N) if mode > 0 else (0,)
    n_x = torch.empty(shape, dtype=torch.int64, device=z.device)
    n_y = torch.empty(shape, dtype=torch.int64, device=z.device)
    if B == 0:
        return eps, n_x, n_y
    # [B, D, N]: a column of a row or point tile is one contiguous load, and offsets within a
    # column stay int32.
    zt = z.transpose(1, 2).contiguous()

    block_m, block_n, on_gpu = row_tiles(z, "knn_maxnorm", B, N, N, _block_m, _block_n)
    launch = {"num_warps": _num_warps(z.dtype, block_m, block_n)} if on_gpu else {}

    grid = (triton.cdiv(N, block_m), B)
    _knn_maxnorm_kernel[grid](
        zt, eps, n_x, n_y,
        N, D, dx, k,
        zt.stride(0), zt.stride(1),
        MODE=mode, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=triton.next_power_of_2(k),
        **launch,
    )
    return eps, n_x, n_y
