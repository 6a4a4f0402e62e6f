"""pytest-benchmark: KSG MI per backend against scikit-learn's 1-D KSG (mutual_info_regression) in the same run,
and on a GPU the kNN op itself (radii + KSG counts) on the Triton and CUDA kernels."""
import numpy as np
import pytest
import torch

import emergence_fast as ef
from benchmarks.conftest import sync, timed_backends
from emergence_fast.ops.knn import knn_maxnorm

DEVICE, BACKENDS = timed_backends()
CASES = [(5000, 1), (50000, 1), (5000, 4)]


def data(n, d):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    return x, 0.75 * x + 0.66 * torch.randn(n, d, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("n,d", [c for c in CASES if c[1] == 1])
def test_sklearn_mutual_info_regression(benchmark, n, d):
    sklearn = pytest.importorskip("sklearn.feature_selection")
    x, y = data(n, d)
    xn, yn = x.numpy(), y.numpy()[:, 0]
    value = benchmark(sklearn.mutual_info_regression, xn, yn, n_neighbors=3, random_state=0)
    ours = float(ef.mutual_information(x, y, method="ksg", k=3, backend="torch"))
    # sklearn adds 1e-10-scale noise and standardises, so agreement is statistical, not exact
    assert abs(float(np.asarray(value)[0]) - ours) < 0.02


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n,d", CASES)
def test_emergence_fast_ksg(benchmark, backend, n, d):
    x, y = (t.to(DEVICE) for t in data(n, d))
    benchmark(ef.mutual_information, x, y, method="ksg", k=3, backend=backend)


# The kNN op itself (radius search + KSG counts) on the GPU kernels, float32, k = 3, variant 1.
# N x (dx + dy): the KSG sizes; the torch reference only where it finishes in seconds.
KERNEL_CASES = [(20000, 1), (20000, 8), (100000, 1), (100000, 8), (100000, 64)]


@pytest.mark.skipif(DEVICE != "cuda", reason="the Triton and CUDA kNN kernels need a GPU")
@pytest.mark.parametrize("backend", [b for b in BACKENDS if b in ("triton", "cuda", "torch")])
@pytest.mark.parametrize("n,d", KERNEL_CASES)
def test_knn_maxnorm_kernel(benchmark, backend, n, d):
    if backend == "torch" and n > 20000:
        pytest.skip("the torch reference takes minutes per round at this N")
    x, y = data(n, d)
    z = torch.cat([x, y], dim=-1).float().to(DEVICE)

    def run():
        out = knn_maxnorm(z, d, 3, 1, backend=backend)
        sync(DEVICE)
        return out

    benchmark.extra_info["gpairs"] = n * n / 1e9  # distances per sweep; two sweeps (radius, counts)
    benchmark(run)
