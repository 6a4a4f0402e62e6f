"""pytest-benchmark: Gaussian MI, ours against a float64 numpy/scipy implementation of the same formula."""
import numpy as np
import pytest
import scipy.linalg
import torch

import emergence_fast as ef
from benchmarks.conftest import timed_backends

DEVICE, BACKENDS = timed_backends()
CASES = [(4096, 64), (20000, 128), (4096, 576)]


def numpy_gaussian_mi(x: np.ndarray, y: np.ndarray) -> float:
    """The textbook float64 implementation: np.cov + Cholesky log-dets."""
    dx = x.shape[1]
    cov = np.cov(np.concatenate([x, y], axis=1), rowvar=False)
    logdet = lambda m: 2 * np.log(np.diag(scipy.linalg.cholesky(m))).sum()  # noqa: E731
    return 0.5 * (logdet(cov[:dx, :dx]) + logdet(cov[dx:, dx:]) - logdet(cov))


def data(n, d):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g)
    return x, x @ torch.randn(d, d, generator=g) / d**0.5 + torch.randn(n, d, generator=g)


@pytest.mark.parametrize("n,d", CASES)
def test_numpy_scipy_float64(benchmark, n, d):
    x, y = data(n, d)
    xn, yn = x.double().numpy(), y.double().numpy()
    value = benchmark(numpy_gaussian_mi, xn, yn)
    assert abs(value - float(ef.mutual_information(x.double(), y.double(), backend="torch"))) < 1e-6 * max(1, value)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n,d", CASES)
def test_emergence_fast(benchmark, backend, n, d):
    x, y = data(n, d)
    x, y = x.to(DEVICE), y.to(DEVICE)
    benchmark(ef.mutual_information, x, y, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_emergence_fast_batched_cells(benchmark, backend):
    """30 layers x 8 positions in one call: the shape Information Emergence needs."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 8, 1024, 32, generator=g).to(DEVICE)
    y = x + torch.randn(30, 8, 1024, 32, generator=g).to(DEVICE)
    benchmark(ef.mutual_information, x, y, backend=backend)
