"""Log-sum-exp of unit Gaussian kernels between query rows and weighted key rows, in Triton.

For queries q [B, M, D], keys k [B, N, D] (columns [0, dx) are x, [dx, D) y) and log-weights
w [B, N, 3]:

    out[b, m, c] = log sum_n exp(w[b, n, c] - 0.5 * |q[b, m] - k[b, n]|_c^2)

with the squared norm over the x columns (c = 0), the y columns (c = 1) and all columns
(c = 2): the inner loop of the noisy-channel MI estimator. The contract is
``_C.gaussian_lse_cpu``'s (csrc/ops.h).

One program owns BLOCK_M query rows of one batch cell; the grid is (row blocks, batch), so every
cell runs in one launch. The keys are swept in BLOCK_N tiles. For each tile the squared distances
are summed column by column from direct differences (q_c - k_c)^2, never |q|^2 + |k|^2 - 2 q.k
(that expansion, a tl.dot, cancels catastrophically for states far from the origin relative to
the unit noise), into an x tile over [0, dx) and a y tile over [dx, D); the joint is their sum.
Each row keeps a running (max, sum) per output and folds the tile in (online log-sum-exp), so
nothing M x N is stored. Padding keys load a -inf weight, which drops them; a row whose keys are
all dropped keeps (max, sum) = (-inf, 0) and gets -inf. Everything is accumulated in the input
dtype (float32 or float64).

The kernel reads [B, D, M] / [B, D, N] copies of the queries and keys, so a column of a row or
key tile is one contiguous load. GPU tiles: 64 rows x 64 (fp32) / 32 (fp64) keys, the rows
halved down to 16 while the grid would not cover the SMs twice; 4 warps hold the two live
distance tiles (~32 fp32 elements each per thread) in registers.
"""

import torch
import triton
import triton.language as tl

from ._launch import interpreting, row_tiles

_SUPPORTED = (torch.float32, torch.float64)


@triton.jit
def _sqdist_tile(qb, kb, c0, c1, stride_qc, stride_kc, rows, row_ok, keys, key_ok,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Squared distances over columns [c0, c1) between query ``rows`` and ``keys``: [BLOCK_M, BLOCK_N]."""
    acc = tl.zeros([BLOCK_M, BLOCK_N], qb.dtype.element_ty)
    qcol = qb + c0 * stride_qc
    kcol = kb + c0 * stride_kc
    for _ in range(c0, c1):
        q = tl.load(qcol + rows, mask=row_ok, other=0.0)
        k = tl.load(kcol + keys, mask=key_ok, other=0.0)
        diff = q[:, None] - k[None, :]
        acc += diff * diff
        qcol += stride_qc
        kcol += stride_kc
    return acc


@triton.jit
def _lse_fold(mx, total, v):
    """Fold the tile ``v [BLOCK_M, BLOCK_N]`` into the rows' running (max, sum): sum e^max = sum e^v."""
    new_max = tl.maximum(mx, tl.max(v, axis=1))
    # Rows with every key dropped so far shift by 0 instead of -inf: exp(-inf - 0) = 0 keeps
    # (max, sum) = (-inf, 0) where -inf - (-inf) would be NaN.
    shift = tl.where(new_max == float("-inf"), 0.0, new_max)
    total = total * tl.exp(mx - shift) + tl.sum(tl.exp(v - shift[:, None]), axis=1)
    return new_max, total


@triton.jit
def _lse_value(mx, total):
    """max + log(sum), and -inf for an empty row (sum 0) without taking log 0."""
    live = total > 0
    return tl.where(live, mx + tl.log(tl.where(live, total, 1.0)), float("-inf"))


@triton.jit
def _gaussian_lse_kernel(
    qt_ptr, kt_ptr, w_ptr, out_ptr,
    M, N, D, DX,
    stride_qb, stride_qc, stride_kb, stride_kc, stride_wb, stride_ob,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_m = tl.program_id(0)
    # int64 because batch offsets of large inputs exceed 2**31 elements.
    pid_b = tl.program_id(1).to(tl.int64)
    qb = qt_ptr + pid_b * stride_qb
    kb = kt_ptr + pid_b * stride_kb
    wb = w_ptr + pid_b * stride_wb
    dtype = qt_ptr.dtype.element_ty

    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    cols = tl.arange(0, BLOCK_N)
    mx0 = tl.full([BLOCK_M], float("-inf"), dtype)
    mx1 = tl.full([BLOCK_M], float("-inf"), dtype)
    mx2 = tl.full([BLOCK_M], float("-inf"), dtype)
    sum0 = tl.zeros([BLOCK_M], dtype)
    sum1 = tl.zeros([BLOCK_M], dtype)
    sum2 = tl.zeros([BLOCK_M], dtype)

    for j0 in range(0, N, BLOCK_N):
        keys = j0 + cols
        key_ok = keys < N
        sx = _sqdist_tile(qb, kb, 0, DX, stride_qc, stride_kc, rows, row_ok, keys, key_ok, BLOCK_M, BLOCK_N)
        sy = _sqdist_tile(qb, kb, DX, D, stride_qc, stride_kc, rows, row_ok, keys, key_ok, BLOCK_M, BLOCK_N)
        # Padding keys get a -inf weight: exp(-inf) = 0 drops them from every output.
        w0 = tl.load(wb + keys * 3, mask=key_ok, other=float("-inf"))
        w1 = tl.load(wb + keys * 3 + 1, mask=key_ok, other=float("-inf"))
        w2 = tl.load(wb + keys * 3 + 2, mask=key_ok, other=float("-inf"))
        mx0, sum0 = _lse_fold(mx0, sum0, w0[None, :] - 0.5 * sx)
        mx1, sum1 = _lse_fold(mx1, sum1, w1[None, :] - 0.5 * sy)
        mx2, sum2 = _lse_fold(mx2, sum2, w2[None, :] - 0.5 * (sx + sy))

    ob = out_ptr + pid_b * stride_ob + rows * 3
    tl.store(ob, _lse_value(mx0, sum0), mask=row_ok)
    tl.store(ob + 1, _lse_value(mx1, sum1), mask=row_ok)
    tl.store(ob + 2, _lse_value(mx2, sum2), mask=row_ok)


def _check(queries: torch.Tensor, keys: torch.Tensor, log_weights: torch.Tensor, dx: int) -> None:
    if queries.dtype not in _SUPPORTED:
        raise TypeError(f"gaussian_lse: queries must be float32 or float64, got {queries.dtype}")
    if keys.dtype != queries.dtype or log_weights.dtype != queries.dtype:
        raise TypeError(f"gaussian_lse: keys and log_weights must have the queries' dtype {queries.dtype}, "
                        f"got {keys.dtype} and {log_weights.dtype}")
    if queries.dim() != 3 or keys.dim() != 3 or log_weights.dim() != 3:
        raise ValueError(f"gaussian_lse: expected queries [B, M, D], keys [B, N, D], log_weights [B, N, 3], got "
                         f"shapes {tuple(queries.shape)}, {tuple(keys.shape)} and {tuple(log_weights.shape)}")
    B, _, D = queries.shape
    N = keys.shape[1]
    if keys.shape[0] != B or keys.shape[2] != D:
        raise ValueError(f"gaussian_lse: keys must be [B, N, D] with B={B}, D={D}, got {tuple(keys.shape)}")
    if tuple(log_weights.shape) != (B, N, 3):
        raise ValueError(f"gaussian_lse: log_weights must be [B, N, 3] = [{B}, {N}, 3], got {tuple(log_weights.shape)}")
    if isinstance(dx, bool) or not isinstance(dx, int) or not 0 <= dx <= D:
        raise ValueError(f"gaussian_lse: dx must be an int in [0, D={D}], got {dx!r}")
    if queries.shape[1] >= 2**31 or N >= 2**31:
        raise ValueError(f"gaussian_lse: M={queries.shape[1]} or N={N} does not fit the kernel's int32 row indices")


def gaussian_lse(queries: torch.Tensor, keys: torch.Tensor, log_weights: torch.Tensor, dx: int,
                 _block_m=None, _block_n=None) -> torch.Tensor:
    """``out [B, M, 3]`` (the input dtype) for ``queries [B, M, D]``, ``keys [B, N, D]``, ``log_weights [B, N, 3]``.

    All three float32 or float64, one dtype, one device; ``0 <= dx <= D``. ``_block_m`` /
    ``_block_n`` override the tile sizes (tests use them to force several tiles on small inputs).
    Raises TypeError for other dtypes and ValueError for inconsistent shapes or ``dx``.
    """
    _check(queries, keys, log_weights, dx)
    interpreting(queries, "gaussian_lse")  # raises for CPU tensors without the interpreter, before any allocation
    B, M, D = queries.shape
    N = keys.shape[1]
    out = torch.empty((B, M, 3), dtype=queries.dtype, device=queries.device)
    if out.numel() == 0:
        return out
    if N == 0:
        return out.fill_(float("-inf"))  # an empty sum
    # [B, D, M] / [B, D, N]: a column of a row or key tile is one contiguous load, and offsets
    # within a column stay int32.
    qt = queries.transpose(1, 2).contiguous()
    kt = keys.transpose(1, 2).contiguous()
    w = log_weights.contiguous()

    block_m, block_n, on_gpu = row_tiles(queries, "gaussian_lse", B, M, N, _block_m, _block_n)
    launch = {"num_warps": 4} if on_gpu else {}  # the two live distance tiles: ~32 fp32 elements a thread

    grid = (triton.cdiv(M, block_m), B)
    _gaussian_lse_kernel[grid](
        qt, kt, w, out,
        M, N, D, dx,
        qt.stride(0), qt.stride(1), kt.stride(0), kt.stride(1), w.stride(0), out.stride(0),
        BLOCK_M=block_m, BLOCK_N=block_n,
        **launch,
    )
    return out
