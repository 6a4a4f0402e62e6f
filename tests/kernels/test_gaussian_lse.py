"""``ops.gaussian_lse.gaussian_lse`` on every backend against a float64 oracle built here.

The oracle forms the explicit [M, N] matrix of ``w - 0.5 |q - k|^2`` per output in float64 from
the same (possibly float32-rounded) inputs and takes ``torch.logsumexp`` over it; it shares no
code with the backends (the torch backend chunks query rows and never builds the full matrix).
On the CPU the Triton kernel runs under ``TRITON_INTERPRET=1``, where each program costs
milliseconds per op: its shapes stay small, and D stays small because the kernel loops over
columns. The CUDA kernel and compiled Triton run only where a GPU is (``gpu`` marks).
"""
import math

import numpy as np
import pytest
import torch

from emergence_fast import backends
from emergence_fast.ops.gaussian_lse import gaussian_lse
from tests.conftest import device_backend_pairs

PAIRS = device_backend_pairs()
CPU_FAST = [p for p in PAIRS if p.values[0] == "cpu" and p.values[1] != "triton"]  # large D: no interpreter
GPU_NATIVE = [b for b in ("triton", "cuda") if backends()[b].available and "cuda" in backends()[b].devices]
TRITON_CPU = backends()["triton"].available and "cpu" in backends()["triton"].devices
needs_cpp = pytest.mark.skipif(not backends()["cpp"].available, reason="emergence_fast._C is not built")
needs_triton_cpu = pytest.mark.skipif(not TRITON_CPU, reason="Triton interpreter unavailable")
needs_gpu = pytest.mark.skipif(not GPU_NATIVE, reason="no CUDA device with the triton or cuda backend")

# (batch dims, M, N, D, dx): D a multiple of no tile size; dx = 0, dx = D, 1 <= dx < D; M != N;
# N past one key block of the C++ kernel (256) and M past one query block (32).
CASES = [
    ((), 5, 7, 3, 1),
    ((2,), 37, 53, 7, 3),
    ((3,), 70, 300, 19, 0),
    ((2,), 33, 29, 13, 13),
    ((2, 2), 9, 40, 21, 20),
    ((1,), 1, 1, 1, 1),
]
TOL = {torch.float64: {"rtol": 1e-12, "atol": 1e-12}, torch.float32: {"rtol": 1e-5, "atol": 1e-5}}


def oracle(queries, keys, log_weights, dx):
    """float64 log-sum-exp over the explicit [..., M, N] matrices, direct differences."""
    q, k, w = (t.detach().cpu().double() for t in (queries, keys, log_weights))
    sq = (q.unsqueeze(-2) - k.unsqueeze(-3)).square()  # [..., M, N, D]
    sq_x, sq_y = sq[..., :dx].sum(-1), sq[..., dx:].sum(-1)
    outs = [torch.logsumexp(w[..., c].unsqueeze(-2) - 0.5 * s, dim=-1) for c, s in enumerate((sq_x, sq_y, sq_x + sq_y))]
    return torch.stack(outs, -1)


def _inputs(lead, m, n, d, dtype, generator, device="cpu", scale=1.0):
    q = scale * torch.randn(*lead, m, d, generator=generator, dtype=torch.float64)
    k = scale * torch.randn(*lead, n, d, generator=generator, dtype=torch.float64)
    w = torch.randn(*lead, n, 3, generator=generator, dtype=torch.float64)
    return q.to(device, dtype), k.to(device, dtype), w.to(device, dtype)


def _check(got, want, dtype):
    assert got.dtype == dtype and got.shape == want.shape
    got = got.cpu().double()
    assert torch.equal(torch.isneginf(got), torch.isneginf(want)), "-inf outputs differ"
    assert not got.isnan().any()
    torch.testing.assert_close(got, want, **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("lead,m,n,d,dx", CASES)
@pytest.mark.parametrize("device,backend", PAIRS)
def test_matches_float64_oracle(device, backend, lead, m, n, d, dx, dtype, generator):
    q, k, w = _inputs(lead, m, n, d, dtype, generator, device)
    got = gaussian_lse(q, k, w, dx, backend=backend)
    assert got.device == q.device
    _check(got, oracle(q, k, w, dx), dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("device,backend", PAIRS)
def test_dropped_keys_and_all_dropped_rows(device, backend, dtype, generator):
    """-inf weights drop keys (padding); a cell or an output with every key dropped gives -inf, never NaN."""
    q, k, w = _inputs((3,), 20, 45, 6, dtype, generator, device)
    w[0, 5:, :] = -math.inf      # cell 0: only 5 live keys (padding at the end)
    w[1, ::2, 0] = -math.inf     # cell 1: half the keys dropped from the x output only
    w[1, :, 2] = -math.inf       # cell 1: the joint output has no key at all
    w[2] = -math.inf             # cell 2: nothing
    got = gaussian_lse(q, k, w, 2, backend=backend)
    want = oracle(q, k, w, 2)
    _check(got, want, dtype)
    assert torch.isneginf(got[1, :, 2]).all() and torch.isneginf(got[2]).all()
    assert torch.isfinite(got[0]).all() and torch.isfinite(got[1, :, :2]).all()
    # Dropping keys with -inf is the same as leaving them out.
    _check(gaussian_lse(q[:1], k[:1, :5], w[:1, :5], 2, backend=backend), want[:1], dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("device,backend", PAIRS)
def test_far_apart_points_do_not_underflow(device, backend, dtype, generator):
    """Every exp(-0.5 d^2) underflows to 0; the running max must keep the log finite and exact."""
    q, k, w = _inputs((2,), 11, 23, 4, dtype, generator, device, scale=40.0)  # squared distances ~ 10^4
    w[0, :, 0] -= 800.0  # and weights far below the others
    want = oracle(q, k, w, 1)
    assert (want < -700).any(), "the case should need the max shift"
    got = gaussian_lse(q, k, w, 1, backend=backend)
    assert torch.isfinite(got).all()
    _check(got, want, dtype)


@pytest.mark.parametrize("dtype,offset", [(torch.float64, 1e8), (torch.float32, 1e3)])
@pytest.mark.parametrize("device,backend", PAIRS)
def test_far_from_origin_uses_direct_differences(device, backend, dtype, offset, generator):
    """States far from the origin with unit-scale differences: |q|^2 + |k|^2 - 2 q.k would cancel.

    The inputs are rounded to ``dtype`` first and the oracle sees the rounded values, so only the
    distance arithmetic is under test. The expansion, evaluated here in ``dtype``, misses the
    oracle by orders of magnitude more than the tolerance, which shows the case is a real test.
    """
    lead, m, n, d, dx = (2,), 13, 17, 9, 4
    q, k, w = _inputs(lead, m, n, d, torch.float64, generator)
    q, k, w = (q + offset).to(dtype), (k + offset).to(dtype), w.to(dtype)
    want = oracle(q, k, w, dx)
    got = gaussian_lse(q.to(device), k.to(device), w.to(device), dx, backend=backend)
    _check(got, want, dtype)

    def expansion(a, b):
        return (a.square().sum(-1)[..., :, None] + b.square().sum(-1)[..., None, :] - 2 * a @ b.transpose(-1, -2))

    sq = expansion(q, k)  # joint squared distances in dtype
    expanded = torch.logsumexp(w[..., 2].unsqueeze(-2) - 0.5 * sq, dim=-1).double()
    assert (expanded - want[..., 2]).abs().max() > 100 * TOL[dtype]["rtol"] * want[..., 2].abs().max()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("device,backend", CPU_FAST)
def test_wide_states(device, backend, dtype, generator):
    """D of a real model's hidden width (vector loops with tails, both halves long)."""
    q, k, w = _inputs((2,), 10, 13, 1153, dtype, generator, device, scale=0.05)
    got = gaussian_lse(q, k, w, 577, backend=backend)
    _check(got, oracle(q, k, w, 577), dtype)


@pytest.mark.parametrize("device,backend", PAIRS)
def test_empty_and_degenerate_shapes(device, backend, generator):
    q, k, w = _inputs((2,), 4, 3, 5, torch.float64, generator, device)
    out = gaussian_lse(q, k[:, :0], w[:, :0], 2, backend=backend)  # no keys: an empty sum
    assert out.shape == (2, 4, 3) and torch.isneginf(out).all()
    assert gaussian_lse(q[:, :0], k, w, 2, backend=backend).shape == (2, 0, 3)
    assert gaussian_lse(q[:0], k[:0], w[:0], 2, backend=backend).shape == (0, 4, 3)
    # D = 0: every distance is 0, so each output is the log-sum-exp of its weights.
    out = gaussian_lse(q[..., :0], k[..., :0], w, 0, backend=backend)
    torch.testing.assert_close(out.cpu(), torch.logsumexp(w.cpu(), dim=-2).unsqueeze(-2).expand(2, 4, 3))


@pytest.mark.parametrize("device,backend", PAIRS)
def test_non_contiguous_inputs(device, backend, generator):
    base = torch.randn(30, 2, 8, generator=generator, dtype=torch.float64).to(device)
    q = base.transpose(0, 1)[:, ::2]  # [2, 15, 8] strided view
    k = base.transpose(0, 1)[:, 1::3]  # [2, 10, 8]
    w = torch.randn(3, 2, 10, generator=generator, dtype=torch.float64).to(device).permute(1, 2, 0)
    assert not (q.is_contiguous() or k.is_contiguous() or w.is_contiguous())
    _check(gaussian_lse(q, k, w, np.int64(5), backend=backend), oracle(q, k, w, 5), torch.float64)


@needs_triton_cpu
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_triton_small_tiles(dtype, generator):
    """Several row and key tiles with ragged tails, -inf keys spanning tiles: the tiling itself."""
    from emergence_fast.kernels import gaussian_lse as triton_lse

    q, k, w = _inputs((2,), 21, 37, 5, dtype, generator)
    w[0, 10:30, 1] = -math.inf
    w[1, :, 0] = -math.inf
    got = triton_lse.gaussian_lse(q, k, w, 2, _block_m=8, _block_n=16)
    _check(got, oracle(q, k, w, 2), dtype)


BAD_INPUTS = [  # (what to change, message fragment)
    (lambda q, k, w, dx: (q.half(), k.half(), w.half(), dx), "queries must be float32 or float64"),
    (lambda q, k, w, dx: (q.to(torch.int32), k, w, dx), "queries must be float32 or float64"),
    (lambda q, k, w, dx: (q.float(), k, w, dx), "keys must have the queries' dtype"),
    (lambda q, k, w, dx: (q, k, w.float(), dx), "log_weights must have the queries' dtype"),
    (lambda q, k, w, dx: (q, k[..., :-1], w, dx), "keys must be"),
    (lambda q, k, w, dx: (q, k[:1], w[:1], dx), "keys must be"),
    (lambda q, k, w, dx: (q[0], k, w, dx), "keys must be"),
    (lambda q, k, w, dx: (q, k, w[..., :2], dx), "log_weights must be"),
    (lambda q, k, w, dx: (q, k, w[:, :-1], dx), "log_weights must be"),
    (lambda q, k, w, dx: (q[0, 0], k[0, 0], w[0, 0], dx), "queries must be"),
    (lambda q, k, w, dx: (q, k, w, -1), "dx must be"),
    (lambda q, k, w, dx: (q, k, w, 6), "dx must be"),
    (lambda q, k, w, dx: (q, k, w, 1.5), "dx must be"),
    (lambda q, k, w, dx: (q, k, w, True), "dx must be"),
]


@pytest.mark.parametrize("change,message", BAD_INPUTS)
@pytest.mark.parametrize("backend", ["torch", "cpp", "triton"])
def test_bad_input_raises_value_error(backend, change, message, generator):
    q, k, w = _inputs((2,), 4, 3, 5, torch.float64, generator)
    with pytest.raises(ValueError, match=message):
        gaussian_lse(*change(q, k, w, 2), backend=backend)


def test_non_tensor_raises_type_error(generator):
    q, k, w = _inputs((2,), 4, 3, 5, torch.float64, generator)
    with pytest.raises(TypeError, match="keys must be a tensor"):
        gaussian_lse(q, k.numpy(), w, 2)


@needs_cpp
def test_native_op_checks_its_inputs(generator):
    """Called directly (not through the dispatch), the C++ op refuses what would read out of bounds."""
    from emergence_fast import _C

    q, k, w = _inputs((2,), 4, 3, 5, torch.float64, generator)
    with pytest.raises(RuntimeError, match="log_weights must be"):
        _C.gaussian_lse_cpu(q, k, w[:, :2].contiguous(), 2)
    with pytest.raises(RuntimeError, match="dx must be in"):
        _C.gaussian_lse_cpu(q, k, w, 6)
    with pytest.raises(RuntimeError, match="contiguous"):
        _C.gaussian_lse_cpu(q.transpose(1, 2).contiguous().transpose(1, 2), k, w, 2)
    with pytest.raises(RuntimeError, match="dtype"):
        _C.gaussian_lse_cpu(q, k.float(), w, 2)


@needs_gpu
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("backend", GPU_NATIVE)
def test_gpu_large_shapes_and_key_splits(backend, dtype, generator):
    """Few query blocks and many keys (the CUDA kernel splits the keys and merges), plus a wide D."""
    for lead, m, n, d, dx in [((2,), 70, 5000, 37, 20), ((2,), 65, 200, 1153, 577)]:  # oracle: <= 240 MB
        q, k, w = _inputs(lead, m, n, d, dtype, generator, "cuda", scale=0.1)
        w[0, 100:3000, 1] = -math.inf
        w[-1, :, 2] = -math.inf
        got = gaussian_lse(q, k, w, dx, backend=backend)
        _check(got, oracle(q, k, w, dx), dtype)


def test_benchmark_script_runs(capsys):
    """benchmarks/gaussian_lse.py on a tiny shape: its table has the peer and every timed backend (no speed asserted)."""
    from benchmarks import gaussian_lse as bench

    assert bench.main(["--sizes", "8", "--batch", "2", "--dim", "6", "--reps", "1"]) == 0
    table = capsys.readouterr().out
    assert "peer: cdist + logsumexp" in table and "| torch |" in table
    if backends()["cpp"].available:
        assert "| cpp |" in table
