"""Sliced and max-sliced MI against direct projection and canonical-correlation closed forms."""
import math

import pytest
import torch

import emergence_fast as ef
from emergence_fast.estimators import gaussian, sliced


def correlated(generator, n=3000, dx=6, dy=5):
    x = torch.randn(n, dx, generator=generator, dtype=torch.float64)
    y = x[:, :dy] @ torch.randn(dy, dy, generator=generator, dtype=torch.float64) * 0.5 + torch.randn(
        n, dy, generator=generator, dtype=torch.float64)
    return x, y


def test_stiefel_draws_are_orthonormal(generator):
    q = sliced.random_stiefel(7, 3, 5, generator)
    torch.testing.assert_close(q.transpose(-1, -2) @ q, torch.eye(3, dtype=torch.float64).expand(5, 3, 3))


@pytest.mark.parametrize("k", [1, 3])
def test_each_slice_equals_gaussian_mi_of_the_projected_data(generator, k):
    x, y = correlated(generator)
    value = sliced.mutual_information(x, y, k=k, n_slices=16, seed=3)
    g = torch.Generator().manual_seed(3)
    a = sliced.random_stiefel(6, k, 16, g)
    b = sliced.random_stiefel(5, k, 16, g)
    direct = gaussian.mutual_information(x @ a, y @ b).mean()
    assert abs(float(value) - float(direct)) < 1e-10


def test_max_sliced_closed_form(generator):
    x, y = correlated(generator)
    full = float(ef.mutual_information(x, y))
    assert abs(float(sliced.max_sliced_mutual_information(x, y, k=5)) - full) < 1e-9  # k = min(dx, dy): all of I
    top1 = float(sliced.max_sliced_mutual_information(x, y, k=1))
    mean1 = float(ef.mutual_information(x, y, method="sliced", k=1, n_slices=64))
    assert mean1 <= top1 <= full


def test_bivariate_normal_sliced_is_the_mi(generator):
    cov = torch.tensor([[1.0, 0.75], [0.75, 1.0]], dtype=torch.float64)
    z = torch.randn(100_000, 2, generator=generator, dtype=torch.float64) @ torch.linalg.cholesky(cov).T
    # in one dimension every slice is +-1, so the sliced MI is the MI itself
    value, stderr = ef.mutual_information(z[:, :1], z[:, 1:], method="sliced", n_slices=4, details=True)
    assert abs(float(value) + 0.5 * math.log(1 - 0.75**2)) < 0.01
    assert float(stderr) < 1e-12


def test_batched_cells_and_bits(generator):
    x, y = correlated(generator, n=800)
    xb, yb = torch.stack([x, x]), torch.stack([y, torch.randn_like(y)])
    value = ef.mutual_information(xb, yb, method="sliced", k=2, n_slices=8)
    assert value.shape == (2,) and value[0] > value[1]
    torch.testing.assert_close(value[0], sliced.mutual_information(x, y, k=2, n_slices=8))
    bits = ef.mutual_information(xb, yb, method="sliced", k=2, n_slices=8, base=2)
    torch.testing.assert_close(bits, value / math.log(2))


@pytest.mark.parametrize("kwargs,match", [({"k": 0}, "k must"), ({"k": 9}, "at most"), ({"n_slices": 0}, "n_slices"),
                                          ({"inner": "mine"}, "inner")])
def test_bad_options(generator, kwargs, match):
    x, y = correlated(generator, n=50)
    with pytest.raises(ValueError, match=match):
        sliced.mutual_information(x, y, **kwargs)
    with pytest.raises(ValueError, match="method must be one of"):
        ef.entropy(x, method="sliced")
