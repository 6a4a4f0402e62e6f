"""Sliced and max-sliced MI against direct projection and canonical-correlation closed forms."""
import math

import pytest
import torch

import emergence_fast as ef
from emergence_fast.estimators import gaussian, knn, sliced


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
    value, found = ef.mutual_information(z[:, :1], z[:, 1:], method="sliced", n_slices=4, details=True)
    stderr = found.stderr
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


# --- KSG inner estimator --------------------------------------------------------------------

def test_ksg_sliced_is_the_mean_of_ksg_on_each_projection(generator):
    x, y = correlated(generator, n=600)
    value, spread = sliced.mutual_information(x, y, k=2, n_slices=6, inner="ksg", seed=5, details=True,
                                              inner_options={"k": 4})
    g = torch.Generator().manual_seed(5)
    a = sliced.random_stiefel(6, 2, 6, g)
    b = sliced.random_stiefel(5, 2, 6, g)
    direct = torch.stack([knn.mutual_information(x @ a[s], y @ b[s], k=4) for s in range(6)])
    assert abs(float(value) - float(direct.mean())) < 1e-12
    assert abs(float(spread.stderr) - float(direct.std() / math.sqrt(6))) < 1e-12


def rotated_square_dependence(generator, n, d=4):
    """y_0 = x_0^2 + noise, every other coordinate independent, both sides randomly rotated.

    Correlation is zero in every direction, so Gaussian (and CCA) see nothing; the true
    max-sliced (k = 1) value is the MI of (x_0, y_0) along the hidden directions.
    """
    x = torch.randn(n, d, generator=generator, dtype=torch.float64)
    y = torch.randn(n, d, generator=generator, dtype=torch.float64)
    y[:, 0] = x[:, 0] ** 2 + 0.3 * y[:, 0]
    rot_x, rot_y = (torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=torch.float64))[0] for _ in "xy")
    return x, y, rot_x, rot_y


def test_max_sliced_ksg_finds_a_direction_gaussian_cannot_see(generator):
    x, y, rot_x, rot_y = rotated_square_dependence(generator, 2400)
    hidden = float(knn.mutual_information(x[:, :1], y[:, :1]))  # ~1.1 nats
    value, found = sliced.max_sliced_mutual_information(x @ rot_x, y @ rot_y, inner="ksg", steps=100, details=True)
    # the value is KSG on 1200 held-out rows: sd ~0.035 around the all-rows value, so 4 sd
    assert abs(float(value) - hidden) < 0.15
    assert float((rot_x @ found.x_slice)[0].abs().max()) > 0.99  # the slice is the hidden direction
    assert float(sliced.max_sliced_mutual_information(x @ rot_x, y @ rot_y)) < 0.01
    assert float(sliced.mutual_information(x @ rot_x, y @ rot_y, inner="ksg", n_slices=8)) < 0.3 * hidden


def test_max_sliced_ksg_matches_the_gaussian_closed_form(generator):
    rho = 0.8
    x = torch.randn(4000, 3, generator=generator, dtype=torch.float64)
    y = torch.randn(4000, 3, generator=generator, dtype=torch.float64)
    y[:, 1] = rho * x[:, 2] + math.sqrt(1 - rho**2) * y[:, 1]
    value = sliced.max_sliced_mutual_information(x, y, inner="ksg", steps=100)
    # KSG at N = 2000 held-out rows: sd ~0.02, bias ~ -0.01 at this MI (0.51 nats)
    assert abs(float(value) + 0.5 * math.log(1 - rho**2)) < 0.08


def test_max_sliced_batched_and_options(generator):
    x, y, rot_x, rot_y = rotated_square_dependence(generator, 800, d=3)
    xb, yb = torch.stack([x, x]), torch.stack([y, torch.randn_like(y)])
    value = ef.mutual_information(xb, yb, method="max_sliced", inner="ksg", steps=40, base=2)
    assert value.shape == (2,) and value[0] > value[1] + 0.5
    for kwargs, match in (({"steps": 0}, "steps"), ({"lr": -1.0}, "lr"), ({"holdout": 1.0}, "holdout"),
                          ({"restarts": 1.5}, "restarts"), ({"k": 4}, "at most")):
        with pytest.raises(ValueError, match=match):
            sliced.max_sliced_mutual_information(x, y, inner="ksg", **kwargs)
    with pytest.raises(ValueError, match="inner_options"):
        sliced.mutual_information(x, y, inner_options={"k": 5})


def test_max_sliced_on_singular_and_constant_input(generator):
    """The closed form used to raise LinAlgError on a duplicated column and on a constant side."""
    x = torch.randn(300, 3, generator=generator, dtype=torch.float64)
    y = x[:, :2] + torch.randn(300, 2, generator=generator, dtype=torch.float64)
    duplicated = torch.cat([x, x[:, 1:2]], -1)
    assert abs(float(sliced.max_sliced_mutual_information(duplicated, y, k=2))
               - float(sliced.max_sliced_mutual_information(x, y, k=2))) < 1e-9
    assert float(sliced.max_sliced_mutual_information(torch.ones(300, 3), y)) == 0.0
    assert float(ef.mutual_information(x, torch.zeros(300, 2), method="max_sliced", k=2)) == 0.0


def test_max_sliced_ksg_on_a_constant_side_is_zero_without_an_ascent(generator):
    """It used to fail inside the ascent ("x contains NaN or Inf": no bandwidth for a constant projection)."""
    x = torch.randn(2, 100, 3, generator=generator)
    y = x[..., :2] + torch.randn(2, 100, 2, generator=generator)
    x[0] = 1.0
    value, found = sliced.max_sliced_mutual_information(x, y, inner="ksg", steps=3, details=True,
                                                        inner_options={"jitter": 1e-3})
    assert value[0].item() == 0.0 and found.train_value[0].item() == 0.0
    assert torch.isnan(found.x_slice[0]).all() and not torch.isnan(found.x_slice[1]).any()
    alone = sliced.max_sliced_mutual_information(x[1], y[1], inner="ksg", steps=3, inner_options={"jitter": 1e-3})
    assert torch.equal(value[1], alone)
