"""pytest-benchmark: KSG MI per backend against scikit-learn's 1-D KSG (mutual_info_regression) in the same run."""
import numpy as np
import pytest
import torch

import emergence_fast as ef
from benchmarks.conftest import timed_backends

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
