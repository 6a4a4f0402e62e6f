"""Noisy-channel MI against ground truths: closed forms, quadrature of exact mixtures, limits, orderings."""
import math

import pytest
import torch

import emergence_fast as ef
from emergence_fast.estimators import noisy

F64 = torch.float64


def _gaussian_closed_form(cov_x, a, sigma_x, sigma_y):
    """I(X + s_x Z; A X + s_y Z') for X ~ N(0, cov_x): a Gaussian MI."""
    eye_x, eye_y = torch.eye(cov_x.shape[0], dtype=F64), torch.eye(a.shape[0], dtype=F64)
    cxx, cyy, cxy = cov_x + sigma_x ** 2 * eye_x, a @ cov_x @ a.T + sigma_y ** 2 * eye_y, cov_x @ a.T
    joint = torch.cat([torch.cat([cxx, cxy], 1), torch.cat([cxy.T, cyy], 1)])
    return float(0.5 * (torch.logdet(cxx) + torch.logdet(cyy) - torch.logdet(joint)))


@pytest.mark.parametrize("sigma", [0.4, 1.0])
def test_gaussian_input_through_a_linear_map_matches_the_closed_form(sigma):
    generator = torch.Generator().manual_seed(3)
    root = torch.tensor([[1.0, 0.5], [0.0, 0.8]], dtype=F64)
    x = torch.randn(1500, 2, generator=generator, dtype=F64) @ root
    a = torch.tensor([[0.7, -1.2], [0.3, 0.9]], dtype=F64)
    value, details = noisy.mutual_information(x, x @ a.T, sigma=sigma, n_draws=4, details=True)
    # The closed form at the sample covariance and the noise scales the estimator used.
    truth = _gaussian_closed_form(torch.cov(x.T, correction=0), a, float(details.sigma_x), float(details.sigma_y))
    assert 0 < float(details.stderr) < 0.05
    assert abs(float(value) - truth) < 3 * float(details.stderr)


def _mixture_entropy_1d(centres, p, grid):
    density = (p[:, None] * torch.exp(-0.5 * (grid[None] - centres[:, None]) ** 2)).sum(0) / math.sqrt(2 * math.pi)
    step = grid[1] - grid[0]
    return float(-(density * torch.log(density.clamp_min(1e-300))).sum() * step)


def _mixture_entropy_2d(centres, p, grid):
    gx, gy = torch.meshgrid(grid, grid, indexing="ij")
    sq = (gx[None] - centres[:, 0, None, None]) ** 2 + (gy[None] - centres[:, 1, None, None]) ** 2
    density = (p[:, None, None] * torch.exp(-0.5 * sq)).sum(0) / (2 * math.pi)
    step = grid[1] - grid[0]
    return float(-(density * torch.log(density.clamp_min(1e-300))).sum() * step ** 2)


def test_discrete_atoms_match_the_exact_mixture_entropies_by_quadrature():
    # Four atoms, y merges atoms 1 and 2 (a many-to-one layer), unequal weights.
    x = torch.tensor([[-1.0], [0.0], [0.4], [2.0]], dtype=F64)
    y = torch.tensor([[0.0], [1.0], [1.0], [-0.5]], dtype=F64)
    counts = torch.tensor([3.0, 1.0, 2.0, 4.0], dtype=F64)
    sigma = 0.3
    value, details = noisy.mutual_information(x, y, sigma=sigma, weights=counts, n_draws=6000, details=True)
    p = counts / counts.sum()
    # Independent arithmetic for the scales: sigma times the p-weighted RMS radius of each side.
    sx = sigma * float((p * (x[:, 0] - (p * x[:, 0]).sum()) ** 2).sum().sqrt())
    sy = sigma * float((p * (y[:, 0] - (p * y[:, 0]).sum()) ** 2).sum().sqrt())
    assert float(details.sigma_x) == pytest.approx(sx, rel=1e-12) and float(details.sigma_y) == pytest.approx(sy, rel=1e-12)
    u, v = x[:, 0] / sx, y[:, 0] / sy
    grid = torch.linspace(-40, 40, 8001, dtype=F64)
    noise = 0.5 * math.log(2 * math.pi * math.e)
    mi_x = _mixture_entropy_1d(u, p, grid) - noise
    mi_y = _mixture_entropy_1d(v, p, grid) - noise
    grid2 = torch.linspace(-30, 30, 1201, dtype=F64)
    mi_joint = _mixture_entropy_2d(torch.stack([u, v], -1), p, grid2) - 2 * noise
    exact = mi_x + mi_y - mi_joint
    assert float(details.mc_stderr) < 0.01
    assert abs(float(value) - exact) < 4 * float(details.mc_stderr)
    assert abs(float(details.mi_x) - mi_x) < 0.01 and abs(float(details.mi_y) - mi_y) < 0.01


def _discrete_mi(x, y, p):
    def h(rows):
        _, inverse = torch.unique(rows, dim=0, return_inverse=True)
        q = torch.zeros(int(inverse.max()) + 1, dtype=F64).index_add_(0, inverse, p)
        return float(-(q * q.log()).sum())

    return h(x) + h(y) - h(torch.cat([x, y], -1))


def test_small_sigma_gives_the_discrete_mi_and_large_sigma_gives_zero():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(12, 3, generator=generator, dtype=F64)
    y = torch.randn(12, 2, generator=generator, dtype=F64)
    y[5] = y[4]  # a merge: the discrete MI is below H(p)
    counts = torch.arange(1.0, 13.0, dtype=F64)
    p = counts / counts.sum()
    limit = _discrete_mi(x, y, p)
    assert limit < float(-(p * p.log()).sum()) - 0.05
    assert float(noisy.mutual_information(x, y, sigma=1e-4, weights=counts)) == pytest.approx(limit, abs=1e-9)
    assert abs(float(noisy.mutual_information(x, y, sigma=1e4, weights=counts))) < 1e-7


def test_mi_decreases_as_sigma_grows_and_as_inputs_merge():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(40, 4, generator=generator, dtype=F64)
    y = torch.tanh(x @ torch.randn(4, 6, generator=generator, dtype=F64))
    values = [float(noisy.mutual_information(x, y, sigma=s)) for s in (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)]
    assert all(a > b for a, b in zip(values, values[1:])), values
    merged = y.clone()
    merged[1::2] = merged[0::2]  # the layer now maps pairs of inputs to one state
    full, details = noisy.mutual_information(x, y, sigma=0.2, details=True)
    lower, details_merged = noisy.mutual_information(x, merged, sigma=0.2, details=True)
    # Same sample, so only the Monte-Carlo error separates the two plug-in values.
    assert float(full - lower) > 3 * math.hypot(float(details.mc_stderr), float(details_merged.mc_stderr))


@pytest.mark.parametrize("sigma", [0.02, 0.2, 1.0])
def test_never_above_the_plug_in_entropy(sigma):
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(30, 5, generator=generator, dtype=F64)
    y = x @ torch.randn(5, 5, generator=generator, dtype=F64)
    counts = torch.randint(1, 20, (30,), generator=generator).to(F64)
    p = counts / counts.sum()
    ceiling = float(-(p * p.log()).sum())
    value, details = noisy.mutual_information(x, y, sigma=sigma, weights=counts, details=True)
    assert float(details.mi_x) <= ceiling + 1e-9 and float(details.mi_y) <= ceiling + 1e-9  # every term is bounded
    assert float(value) <= ceiling + 2 * float(details.stderr)


def test_invariant_to_translating_and_rescaling_a_side():
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(25, 3, generator=generator, dtype=F64)
    y = torch.randn(25, 2, generator=generator, dtype=F64) + x[:, :2]
    base = noisy.mutual_information(x, y, sigma=0.3)
    moved = noisy.mutual_information(100.0 + 7.0 * x, y * 0.01 - 3.0, sigma=0.3)
    assert float(moved) == pytest.approx(float(base), abs=1e-9)


def test_repeated_rows_and_counts_estimate_the_same_mi():
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(8, 2, generator=generator, dtype=F64)
    y = x + 0.3 * torch.randn(8, 2, generator=generator, dtype=F64)
    counts = torch.tensor([1, 4, 2, 3, 1, 5, 2, 2])
    compact, d1 = noisy.mutual_information(x, y, sigma=0.5, weights=counts.to(F64), n_draws=64, details=True)
    rows = torch.repeat_interleave(torch.arange(8), counts)
    repeated, d2 = noisy.mutual_information(x[rows], y[rows], sigma=0.5, n_draws=64 // 3, details=True)
    assert abs(float(compact - repeated)) < 3 * math.hypot(float(d1.mc_stderr), float(d2.mc_stderr))
    # Same distribution, same N: the sampling part of the error agrees too.
    assert float(d1.stderr) == pytest.approx(float(d2.stderr), rel=0.3)


def test_a_cell_gets_the_same_draws_in_any_batch_and_batches_broadcast_weights():
    generator = torch.Generator().manual_seed(6)
    x = torch.randn(3, 20, 4, generator=generator, dtype=F64)
    y = torch.randn(3, 20, 4, generator=generator, dtype=F64) + x
    counts = torch.arange(1.0, 21.0, dtype=F64)
    batched = noisy.mutual_information(x, y, sigma=0.3, weights=counts)
    assert float(noisy.mutual_information(x[0], y[0], sigma=0.3, weights=counts)) == float(batched[0])
    assert torch.equal(batched, noisy.mutual_information(x, y, sigma=0.3, weights=counts.expand(3, 20)))
    assert torch.equal(noisy.mutual_information(x, y, sigma=0.3),
                       noisy.mutual_information(x, y, sigma=0.3, weights=torch.ones(20)))


def test_float32_agrees_with_float64_and_units_follow_base():
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(2, 64, 16, generator=generator, dtype=F64) * 50 + 1000  # far from the origin
    y = torch.tanh(x / 1000) * 10
    v64, d64 = noisy.mutual_information(x, y, sigma=0.3, details=True)
    v32 = noisy.mutual_information(x.float(), y.float(), sigma=0.3)
    # float32 draws are other numbers than float64 draws: the two differ by Monte-Carlo error only.
    assert bool(((v32 - v64).abs() < 4 * math.sqrt(2) * d64.mc_stderr).all())
    assert torch.allclose(noisy.mutual_information(x, y, sigma=0.3, base=2), v64 / math.log(2))
    value, stderr = ef.mutual_information(x, y, method="noisy", sigma=0.3, return_stderr=True)
    assert torch.equal(value, v64) and torch.equal(stderr, d64.stderr)


@pytest.mark.parametrize("sigma", [0, -1.0, float("nan"), float("inf"), "0.5", True])
def test_bad_sigma_is_refused(sigma):
    with pytest.raises(ValueError, match="sigma must be a finite number > 0"):
        noisy.mutual_information(torch.randn(10, 2), torch.randn(10, 2), sigma=sigma)


def test_bad_input_is_refused_with_the_argument_named():
    x, y = torch.randn(10, 2), torch.randn(10, 2)
    with pytest.raises(ValueError, match="n_draws must be an integer >= 2"):
        noisy.mutual_information(x, y, n_draws=1)
    with pytest.raises(ValueError, match="weights must be finite, non-negative"):
        noisy.mutual_information(x, y, weights=-torch.ones(10))
    with pytest.raises(ValueError, match=r"weights must be broadcastable to \[..., N\]"):
        noisy.mutual_information(x, y, weights=torch.ones(9))
    with pytest.raises(ValueError, match="pass counts, not probabilities"):
        noisy.mutual_information(x, y, weights=torch.full((10,), 0.1))
    for seed in (-1, 2**70):
        with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*63\)"):
            noisy.mutual_information(x, y, seed=seed)
    with pytest.raises(TypeError, match="^seed must be an integer, got float 1.5$"):  # as every estimator's seed
        noisy.mutual_information(x, y, seed=1.5)
    with pytest.raises(ValueError, match="sigma must be at least 1e-09"):
        noisy.mutual_information(x, y, sigma=1e-12)


def test_a_constant_side_gives_exactly_zero():
    """It used to raise: I(X; c) = 0 for every estimator, whatever the noise scale."""
    x, y = torch.randn(2, 10, 2), torch.randn(2, 10, 2)
    y[1] = 1.0
    value, details = noisy.mutual_information(x, y, details=True)
    assert value[1].item() == 0.0 and details.stderr[1].item() == 0.0 and details.ceiling[1].item() == 0.0
    assert value[0].item() != 0.0
    one_row = torch.zeros(10)
    one_row[3] = 5.0  # one row of positive weight: one distinct state on both sides
    assert noisy.mutual_information(x[0], y[0], weights=one_row, base=2).item() == 0.0


@pytest.mark.parametrize("scale", [1e-30, 1e-12, 1e12, 1e30])
def test_any_input_scale_the_dtype_holds_gives_the_same_value(scale):
    generator = torch.Generator().manual_seed(8)
    x = torch.randn(40, 3, generator=generator)
    y = x + 0.5 * torch.randn(40, 3, generator=generator)
    base = noisy.mutual_information(x, y, sigma=0.3)
    scaled = noisy.mutual_information(x * scale, y * scale, sigma=0.3)
    assert torch.isfinite(scaled) and float(scaled) == pytest.approx(float(base), abs=1e-4)


def test_tiny_sigma_runs_in_float64_and_reaches_the_discrete_limit():
    generator = torch.Generator().manual_seed(9)
    x = torch.randn(30, 4, generator=generator)  # float32 input
    with pytest.warns(RuntimeWarning, match="too sparse"):  # every row distinct: the discrete limit, log N
        value, details = noisy.mutual_information(x, x.flip(-1), sigma=1e-8, details=True)
    assert float(value) == pytest.approx(math.log(30), abs=1e-9)
    assert float(details.mi_x) <= math.log(30) + 1e-8 and float(details.ceiling) == pytest.approx(math.log(30))


def test_a_sparse_continuous_sample_is_flagged():
    # Independent continuous x and y: every row is its own atom at sigma = 0.1, so the plug-in value is near log N.
    generator = torch.Generator().manual_seed(10)
    x, y = torch.randn(100, 4, generator=generator), torch.randn(100, 3, generator=generator)
    with pytest.warns(RuntimeWarning, match="too sparse at this sigma"):
        value, details = noisy.mutual_information(x, y, details=True)
    assert float(value) > 0.5 * float(details.ceiling) and float(details.ceiling) == pytest.approx(math.log(100))
