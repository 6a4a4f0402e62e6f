"""The native max-norm k-NN kernels (``ops.knn.knn_maxnorm``: cpp, triton, cuda) against the torch reference.

Radii must be bit-identical and counts exact. On the CPU the Triton kernel runs under
``TRITON_INTERPRET=1`` (each program costs milliseconds per op, so shapes stay small); the CUDA
kernel and compiled Triton run only where a GPU is (``gpu`` marks, larger shapes, split sweeps).
With tied distances, mode 2 depends on which tied points count among the k nearest: every
backend takes the lowest indices, which :func:`_stable_oracle` (a stable sort) spells out.
"""
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from emergence_fast import _dispatch, backends
from emergence_fast.estimators import knn
from emergence_fast.ops import knn as knn_op
from tests.conftest import device_backend_pairs

NATIVE = ("cpp", "triton", "cuda")
PAIRS = [p for p in device_backend_pairs() if p.values[1] in NATIVE]
GPU_NATIVE = [b for b in ("triton", "cuda") if backends()[b].available and "cuda" in backends()[b].devices]
TRITON_CPU = backends()["triton"].available and "cpu" in backends()["triton"].devices
needs_cpp = pytest.mark.skipif(not backends()["cpp"].available, reason="emergence_fast._C is not built")
needs_triton_cpu = pytest.mark.skipif(not TRITON_CPU, reason="Triton interpreter unavailable")
needs_gpu = pytest.mark.skipif(not GPU_NATIVE, reason="no CUDA device with the triton or cuda backend")

SHAPES = [  # (batch dims, N, dx, dy): N a multiple of no block size
    ((), 37, 1, 1),
    ((3,), 157, 2, 3),
    ((2, 2), 101, 4, 1),
    ((1,), 257, 1, 7),
]


def _sample(lead, n, d, dtype, generator, device="cpu"):
    # Continuous Gaussian draws: no ties among distances, so the k-NN sets are unique.
    return torch.randn(*lead, n, d, generator=generator, dtype=torch.float64).to(device=device, dtype=dtype)


def _integer_sample(lead, n, d, dtype, generator, device="cpu", levels=4):
    # Few distinct values per column: many equal distances, duplicate points, zero radii.
    return torch.randint(0, levels, (*lead, n, d), generator=generator).to(device=device, dtype=dtype)


def _stable_oracle(z, dx, k, mode):
    """Brute force with the k nearest = the k smallest (distance, index) pairs; small N only."""
    z = z.cpu()
    n = z.shape[-2]
    diff = (z.unsqueeze(-2) - z.unsqueeze(-3)).abs()  # [..., N, N, D]
    eye = torch.eye(n, dtype=torch.bool)
    joint = diff.amax(-1).masked_fill(eye, math.inf)
    values, order = torch.sort(joint, dim=-1, stable=True)
    eps = values[..., k - 1]
    if mode == 0:
        return eps, None, None
    counts = []
    for marg in (diff[..., :dx].amax(-1), diff[..., dx:].amax(-1)):
        if mode == 1:
            inside = marg < eps.unsqueeze(-1)
        else:
            inside = marg <= marg.gather(-1, order[..., :k]).amax(-1, keepdim=True)
        counts.append((inside & ~eye).sum(-1))
    return eps, counts[0], counts[1]


def _assert_same(got, want, what=""):
    for name, g, w in zip(("eps", "n_x", "n_y"), got, want):
        if w is None:
            assert g is None, f"{what} {name}"
            continue
        assert g.dtype == w.dtype and g.shape == w.shape, f"{what} {name}: {g.dtype} {g.shape} vs {w.dtype} {w.shape}"
        assert torch.equal(g.cpu(), w.cpu()), f"{what} {name}: {int((g.cpu() != w.cpu()).sum())} rows differ"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("k", [1, 3, 7])
@pytest.mark.parametrize("lead,n,dx,dy", SHAPES)
@pytest.mark.parametrize("device,backend", PAIRS)
def test_ksg_counts_and_radii_match_torch_exactly(device, backend, lead, n, dx, dy, k, dtype, generator):
    z = _sample(lead, n, dx + dy, dtype, generator, device)
    z[..., dx:] += 0.5 * z[..., :1]  # some dependence between x and y
    for mode in (1, 2):
        got = knn_op.knn_maxnorm(z, dx, k, mode, backend=backend)
        assert got[0].device == z.device and got[0].dtype == dtype and got[1].dtype == got[2].dtype == torch.int64
        assert got[0].shape == got[1].shape == got[2].shape == (*lead, n)
        _assert_same(got, knn_op.knn_maxnorm(z, dx, k, mode, backend="torch"), f"mode {mode}")
    eps, n_x, n_y = knn_op.knn_maxnorm(z, dx + dy, k, 0, backend=backend)
    assert n_x is None and n_y is None
    assert torch.equal(eps, knn_op.knn_radii(z.reshape(-1, n, dx + dy), k, metric="max").reshape(*lead, n))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("device,backend", PAIRS)
def test_ties_on_integer_data(device, backend, dtype, generator):
    z = _integer_sample((2,), 61, 3, dtype, generator, device)
    assert len(torch.unique(z[0], dim=0)) < 61, "the sample should hold duplicate points"
    for k in (1, 3, 8):
        for mode in (0, 1, 2):
            dx = 3 if mode == 0 else 1
            got = knn_op.knn_maxnorm(z, dx, k, mode, backend=backend)
            _assert_same(got, _stable_oracle(z, dx, k, mode), f"k={k} mode={mode} vs stable oracle")
            _assert_same(got, knn_op.knn_maxnorm(z, dx, k, mode, backend="torch"), f"k={k} mode={mode}")


@pytest.mark.parametrize("device,backend", PAIRS)
def test_k_up_to_n_minus_one(device, backend, generator):
    z = _sample((2,), 12, 3, torch.float64, generator, device)
    for mode in (0, 1, 2):
        dx = 3 if mode == 0 else 2
        _assert_same(knn_op.knn_maxnorm(z, dx, 11, mode, backend=backend),
                     knn_op.knn_maxnorm(z, dx, 11, mode, backend="torch"), f"mode {mode}")
    with pytest.raises((ValueError, RuntimeError), match=r"k must be an integer in \[1, 11\], got 12|k < N"):
        knn_op.knn_maxnorm(z, 2, 12, 1, backend=backend)


@pytest.mark.parametrize("device,backend", [p for p in PAIRS if p.values[1] != "cpp"])
def test_register_list_limit(device, backend, generator, monkeypatch):
    z = _sample((), 40, 2, torch.float32, generator, device)
    assert _dispatch.register_k_max(backend) == 32
    for mode in (1, 2):
        _assert_same(knn_op.knn_maxnorm(z, 1, 32, mode, backend=backend),
                     knn_op.knn_maxnorm(z, 1, 32, mode, backend="torch"), f"mode {mode}")
    # Beyond the register list, asking for the backend by name (argument or env var) says why it cannot ...
    with pytest.raises(ValueError, match=rf"^backend='{backend}' cannot serve this call: its kNN kernel keeps each "
                                         r"row's k nearest in registers, so k <= 32, got k=33"):
        knn_op.knn_maxnorm(z, 1, 33, 1, backend=backend)
    x, y = z[..., :1], z[..., 1:]
    with pytest.raises(ValueError, match=rf"backend='{backend}' cannot serve this call: .*k <= 32, got k=33"):
        knn.mutual_information(x, y, k=33, backend=backend)
    monkeypatch.setenv(_dispatch.ENV_VAR, backend)
    with pytest.raises(ValueError, match=rf"^EMERGENCE_FAST_BACKEND='{backend}' cannot serve this call: .*k <= 32"):
        knn_op.knn_maxnorm(z, 1, 33, 1)
    # ... while auto falls back to a backend that can.
    for mode in (1, 2):
        _assert_same(knn_op.knn_maxnorm(z, 1, 33, mode, backend="auto"),
                     knn_op.knn_maxnorm(z, 1, 33, mode, backend="torch"), f"k=33 mode {mode}")
    # The kernel itself refuses too, should anything call it directly.
    with pytest.raises((ValueError, RuntimeError), match="k <= 32"):
        if backend == "triton":
            _dispatch.call_triton("knn_maxnorm", z.reshape(1, 40, 2), 1, 33, 1)
        else:
            _dispatch.call_native("knn_maxnorm", "cuda", z.reshape(1, 40, 2), 1, 33, 1)


@needs_cpp
@needs_triton_cpu
def test_register_k_max_is_declared_once():
    """The Triton kernel's limit is the native one (csrc/native_limits.h, exported as _C.REGISTER_K_MAX)."""
    from emergence_fast.kernels import knn as triton_knn

    from emergence_fast import _C

    assert isinstance(_C.REGISTER_K_MAX, int)
    assert triton_knn.MAX_K == _C.REGISTER_K_MAX
    assert _dispatch.register_k_max("triton") == _C.REGISTER_K_MAX
    assert _dispatch.register_k_max("cpp") is None and _dispatch.register_k_max("torch") is None


@needs_cpp
def test_op_checks_its_arguments_before_any_backend(generator):
    z = _sample((2,), 20, 3, torch.float64, generator)
    for backend in ("torch", "cpp"):
        with pytest.raises(ValueError, match=r"^knn_maxnorm: KSG needs 1 <= dx < D=3, got dx=3$"):
            knn_op.knn_maxnorm(z, 3, 2, 1, backend=backend)
        with pytest.raises(ValueError, match=r"^knn_maxnorm: k must be an integer in \[1, 19\], got 20$"):
            knn_op.knn_maxnorm(z, 2, 20, 1, backend=backend)
        with pytest.raises(ValueError, match=r"^knn_maxnorm: z must be float32 or float64, got torch.float16$"):
            knn_op.knn_maxnorm(z.half(), 2, 2, 1, backend=backend)
        with pytest.raises(ValueError, match=r"^knn_maxnorm: mode must be 0 \(radii\), 1 or 2"):
            knn_op.knn_maxnorm(z, 2, 2, 3, backend=backend)
    with pytest.raises(TypeError, match="^knn_maxnorm: z must be a tensor, got list$"):
        knn_op.knn_maxnorm([[0.0]], 1, 1, 0)


@pytest.mark.parametrize("device,backend", PAIRS)
def test_non_contiguous_input(device, backend, generator):
    base = torch.randn(90, 2, 6, generator=generator, dtype=torch.float64).to(device)
    z = base.transpose(0, 1)  # [2, 90, 6] strided view
    assert not z.is_contiguous()
    _assert_same(knn_op.knn_maxnorm(z, 2, 3, 1, backend=backend), knn_op.knn_maxnorm(z, 2, 3, 1, backend="torch"))


@needs_triton_cpu
@pytest.mark.parametrize("mode", [0, 1, 2])
def test_triton_small_tiles(mode, generator):
    """Many row and point tiles with ragged tails, and k spanning tiles: the tiling logic itself."""
    from emergence_fast.kernels import knn as triton_knn

    z = _sample((2,), 45, 3, torch.float64, generator)
    dx = 3 if mode == 0 else 2
    for k in (1, 5, 20):
        got = triton_knn.knn_maxnorm(z, dx, k, mode, _block_m=32, _block_n=16)
        want = knn_op.knn_maxnorm(z, dx, k, mode, backend="torch")
        _assert_same((got[0], *(got[1:] if mode else (None, None))), want, f"k={k}")


@needs_triton_cpu
@settings(max_examples=12, deadline=None)
@given(batch=st.integers(1, 3), n=st.integers(2, 80), dx=st.integers(1, 4), dy=st.integers(0, 3),
       k=st.integers(1, 12), mode=st.integers(0, 2), double=st.booleans(), ties=st.booleans(),
       seed=st.integers(0, 2**31 - 1))
def test_triton_random_shapes(batch, n, dx, dy, k, mode, double, ties, seed):
    k = min(k, n - 1)
    if mode > 0 and dy == 0:
        dy = 1
    d = dx + dy
    dx = d if mode == 0 else dx
    g = torch.Generator().manual_seed(seed)
    dtype = torch.float64 if double else torch.float32
    z = _integer_sample((batch,), n, d, dtype, g) if ties else _sample((batch,), n, d, dtype, g)
    got = knn_op.knn_maxnorm(z, dx, k, mode, backend="triton")
    _assert_same(got, _stable_oracle(z, dx, k, mode))


@needs_triton_cpu
def test_triton_argument_errors():
    from emergence_fast.kernels import knn as triton_knn

    z = torch.randn(1, 10, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="dx"):
        triton_knn.knn_maxnorm(z, 3, 2, 1)  # KSG needs a y part
    with pytest.raises(ValueError, match="dx"):
        triton_knn.knn_maxnorm(z, 2, 2, 0)  # radii measure every column
    with pytest.raises(ValueError, match="k"):
        triton_knn.knn_maxnorm(z, 2, 0, 1)
    with pytest.raises(ValueError, match="mode"):
        triton_knn.knn_maxnorm(z, 2, 2, 3)
    with pytest.raises(TypeError, match="float32 or float64"):
        triton_knn.knn_maxnorm(z.half(), 2, 2, 1)
    with pytest.raises(ValueError, match="3-D"):
        triton_knn.knn_maxnorm(z[0], 2, 2, 1)


@needs_triton_cpu
def test_dispatch_takes_the_triton_kernel(monkeypatch, generator):
    """backend="triton" must run the kernel, not fall through to the torch search."""
    def boom(*args, **kwargs):
        raise AssertionError("torch k-NN path used under backend='triton'")

    z = _sample((2,), 30, 3, torch.float64, generator)
    monkeypatch.setattr(knn_op, "ksg_counts", boom)
    monkeypatch.setattr(knn_op, "knn_radii", boom)
    for mode in (1, 2):
        knn_op.knn_maxnorm(z, 2, 3, mode, backend="triton")
    knn_op.knn_maxnorm(z, 3, 3, 0, backend="triton")


_COMPILE_FOR_SM90 = """
import os
os.environ["TRITON_INTERPRET"] = "0"
import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from emergence_fast.kernels import knn
from emergence_fast.kernels._launch import gpu_row_tiles

for dtype, ptr in ((torch.float32, "*fp32"), (torch.float64, "*fp64")):
    for cells in (1, 1000):  # the smallest and the largest row block
        block_m, block_n = gpu_row_tiles(dtype, cells, 5000, 132)
        num_warps = knn._num_warps(dtype, block_m, block_n)
        signature = {"zt_ptr": ptr, "eps_ptr": ptr, "nx_ptr": "*i64", "ny_ptr": "*i64", "N": "i32", "D": "i32",
                     "DX": "i32", "K": "i32", "stride_b": "i32", "stride_c": "i32", "MODE": "constexpr",
                     "BLOCK_M": "constexpr", "BLOCK_N": "constexpr", "BLOCK_K": "constexpr"}
        constexprs = {"MODE": 2, "BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_K": 32}
        src = ASTSource(fn=knn._knn_maxnorm_kernel, signature=signature, constexprs=constexprs)
        triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps})
"""


@needs_triton_cpu
def test_triton_kernel_compiles_for_sm90(tmp_path):
    """The interpreter skips Triton's compiler; compile the GPU configs to cubin (no GPU needed).

    This is what catches compile-only errors (loop-carried type changes, unsupported ops) here.
    """
    pytest.importorskip("triton.backends.nvidia.compiler")
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_CACHE_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", _COMPILE_FOR_SM90], env=env, cwd=Path(__file__).resolve().parents[2],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-6000:]


# ---- GPU: compiled Triton and the CUDA kernel at sizes that tile, split and merge ----

@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("lead,n,dx,dy,k", [
    ((), 3001, 2, 2, 3),      # one cell: the CUDA kernel splits the points and merges the lists
    ((4,), 1000, 1, 5, 32),   # k at the register-list limit
    ((2, 3), 517, 40, 3, 7),  # D > 32: the column chunks of the CUDA tiles
    ((64,), 300, 1, 1, 4),    # many cells in one launch
])
@pytest.mark.parametrize("backend", GPU_NATIVE)
def test_gpu_matches_torch(backend, lead, n, dx, dy, k, dtype, generator):
    z = _sample(lead, n, dx + dy, dtype, generator, "cuda")
    z[..., dx:] += 0.5 * z[..., :1]
    for mode in (0, 1, 2):
        d_part = dx + dy if mode == 0 else dx
        _assert_same(knn_op.knn_maxnorm(z, d_part, k, mode, backend=backend),
                     knn_op.knn_maxnorm(z, d_part, k, mode, backend="torch"), f"mode {mode}")


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("backend", GPU_NATIVE)
def test_gpu_ties_match_stable_oracle(backend, dtype, generator):
    z = _integer_sample((3,), 700, 3, dtype, generator, "cuda", levels=6)
    for k in (1, 4, 17):
        for mode in (0, 1, 2):
            dx = 3 if mode == 0 else 2
            _assert_same(knn_op.knn_maxnorm(z, dx, k, mode, backend=backend), _stable_oracle(z, dx, k, mode),
                         f"k={k} mode={mode}")


# ---- the C++ kernel through the estimators ----

@needs_cpp
@pytest.mark.parametrize("variant", [1, 2])
@pytest.mark.parametrize("lead,n,dx,dy,k", [((), 200, 1, 1, 3), ((2, 3), 123, 2, 3, 1), ((4,), 311, 3, 2, 7)])
def test_mutual_information_cpp_equals_torch(lead, n, dx, dy, k, variant, generator):
    x = torch.randn(*lead, n, dx, generator=generator, dtype=torch.float64)
    y = x[..., :1] ** 2 + torch.randn(*lead, n, dy, generator=generator, dtype=torch.float64)
    got = knn.mutual_information(x, y, k=k, variant=variant, backend="cpp")
    want = knn.mutual_information(x, y, k=k, variant=variant, backend="torch")
    assert got.shape == lead
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


@needs_cpp
@pytest.mark.parametrize("lead,n,d,k", [((), 200, 1, 3), ((2, 3), 123, 4, 1), ((4,), 311, 2, 7)])
def test_entropy_max_norm_cpp_equals_torch(lead, n, d, k, generator):
    x = torch.randn(*lead, n, d, generator=generator, dtype=torch.float64)
    got = knn.entropy(x, k=k, metric="max", backend="cpp")
    torch.testing.assert_close(got, knn.entropy(x, k=k, metric="max", backend="torch"), rtol=0, atol=1e-12)


@needs_cpp
def test_duplicates_still_raise_on_cpp():
    x = torch.zeros(50, 1, dtype=torch.float64)
    x[:25] = 1.0
    y = torch.randn(50, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="duplicate"):
        knn.mutual_information(x, y, backend="cpp")
    with pytest.raises(ValueError, match="duplicate"):
        knn.entropy(x, backend="cpp")


@needs_cpp
def test_cpp_argument_errors():
    from emergence_fast import _C

    z = torch.randn(1, 10, 3, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="dx"):
        _C.knn_maxnorm_cpu(z, 3, 2, 1)  # KSG needs a y part
    with pytest.raises(RuntimeError, match="dx"):
        _C.knn_maxnorm_cpu(z, 2, 2, 0)  # radii measure every column
    with pytest.raises(RuntimeError, match="k"):
        _C.knn_maxnorm_cpu(z, 2, 10, 1)
    with pytest.raises(RuntimeError, match="float32 or float64"):
        _C.knn_maxnorm_cpu(z.half(), 2, 2, 1)


@needs_cpp
def test_cpp_backend_takes_the_native_path(monkeypatch, generator):
    """backend="cpp" must not fall through to the torch search (it would still give equal numbers)."""
    def boom(*args, **kwargs):
        raise AssertionError("torch k-NN path used under backend='cpp'")

    x = torch.randn(2, 60, 2, generator=generator, dtype=torch.float64)
    y = torch.randn(2, 60, 1, generator=generator, dtype=torch.float64)
    for module in (knn, knn_op):  # the estimator's torch path and the op's
        monkeypatch.setattr(module, "ksg_counts", boom)
        monkeypatch.setattr(module, "knn_radii", boom)
    for variant in (1, 2):
        knn.mutual_information(x, y, variant=variant, backend="cpp")
    knn.entropy(x, metric="max", backend="cpp")
