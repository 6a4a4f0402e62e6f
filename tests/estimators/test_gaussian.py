"""Gaussian entropy and MI against closed forms."""
import math

import pytest
import torch

import emergence_fast as ef
from emergence_fast.estimators import gaussian
from tests.conftest import cpu_backends


def random_joint_covariance(dx, dy, generator):
    dim = dx + dy
    w = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
    return w @ w.T / dim + 0.5 * torch.eye(dim, dtype=torch.float64)


def true_mi(cov, dx):
    ld = lambda m: torch.linalg.slogdet(m)[1]  # noqa: E731
    return float(0.5 * (ld(cov[:dx, :dx]) + ld(cov[dx:, dx:]) - ld(cov)))


def sample(cov, n, generator):
    chol = torch.linalg.cholesky(cov)
    return torch.randn(n, cov.shape[0], generator=generator, dtype=torch.float64) @ chol.T


def test_bivariate_normal_rho_075(generator):
    truth = -0.5 * math.log(1 - 0.75**2)
    assert abs(truth - 0.4133) < 1e-4
    cov = torch.tensor([[1.0, 0.75], [0.75, 1.0]], dtype=torch.float64)
    z = sample(cov, 200_000, generator)
    assert abs(float(ef.mutual_information(z[:, :1], z[:, 1:])) - truth) < 0.01


@pytest.mark.parametrize("d,n", [(1, 20_000), (5, 20_000), (32, 20_000), (128, 40_000)])
def test_mi_matches_covariance_closed_form(d, n, generator):
    cov = random_joint_covariance(d, d, generator)
    truth = true_mi(cov, d)
    z = sample(cov, n, generator)
    estimate = float(ef.mutual_information(z[:, :d], z[:, d:], bias_correction="wishart"))
    # Delta method on the CCA form -1/2 sum log(1 - rho_i^2): sd <= sqrt(d / N); allow 5 sd.
    assert abs(estimate - truth) < 0.01 + 5 * math.sqrt(d / n), (estimate, truth)


def test_entropy_closed_form(generator):
    cov = random_joint_covariance(3, 4, generator)
    truth = 0.5 * math.log((2 * math.pi * math.e) ** 7 * float(torch.linalg.det(cov)))
    z = sample(cov, 100_000, generator)
    assert abs(float(ef.entropy(z, bias_correction="wishart")) - truth) < 0.03
    assert abs(float(ef.entropy(z, base=2)) - float(ef.entropy(z)) / math.log(2)) < 1e-12


def test_wishart_beats_plug_in_at_n2000_d32():
    errors = {"none": [], "wishart": []}
    for seed in range(6):
        g = torch.Generator().manual_seed(seed)
        cov = random_joint_covariance(32, 32, g)
        truth = true_mi(cov, 32)
        z = sample(cov, 2000, g)
        for correction in errors:
            est = float(ef.mutual_information(z[:, :32], z[:, 32:], bias_correction=correction))
            errors[correction].append(abs(est - truth))
    assert sum(errors["wishart"]) < 0.5 * sum(errors["none"]), errors


def test_wishart_bias_is_the_exact_expectation_in_one_dimension():
    # d = 1: E[log s^2] - log sigma^2 = psi(nu/2) + log(2/nu) (chi-square), checked by simulation at nu = 4.
    n = torch.tensor(5)
    closed = float(gaussian.wishart_logdet_bias(1, n))
    assert abs(closed - (float(torch.special.digamma(torch.tensor(2.0, dtype=torch.float64))) + math.log(0.5))) < 1e-12
    g = torch.Generator().manual_seed(0)
    draws = torch.randn(400_000, 5, generator=g, dtype=torch.float64)
    simulated = float(draws.var(dim=1).log().mean())
    assert abs(simulated - closed) < 0.01


def test_leading_batch_dims_equal_per_cell_results(generator):
    x = torch.randn(2, 3, 500, 4, generator=generator)
    y = x[..., :2] + torch.randn(2, 3, 500, 2, generator=generator)
    batched = ef.mutual_information(x, y)
    assert batched.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            assert abs(float(batched[i, j]) - float(ef.mutual_information(x[i, j], y[i, j]))) < 1e-6


@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtypes_and_backends_agree(backend, dtype, generator):
    x = torch.randn(2, 400, 6, generator=generator)
    y = x[..., :3] * 0.8 + 0.6 * torch.randn(2, 400, 3, generator=generator)
    x, y = x.to(dtype), y.to(dtype)
    reference = gaussian.mutual_information(x.double(), y.double(), backend="torch")
    tol = 1e-9 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(ef.mutual_information(x, y, backend=backend), reference, rtol=tol, atol=tol)


def test_massive_activation_offsets_do_not_cancel(generator):
    # A 1e4 offset on one dim (a "massive activation") must not change the float32 estimate.
    x = torch.randn(4000, 8, generator=generator)
    y = x @ torch.randn(8, 8, generator=generator) + torch.randn(4000, 8, generator=generator)
    shifted = x.clone()
    shifted[:, 0] += 1e4
    assert abs(float(ef.mutual_information(shifted, y)) - float(ef.mutual_information(x.double(), y.double()))) < 1e-3


def test_rank_deficient_input_is_reported_and_shrinkage_fixes_it(generator):
    x = torch.randn(300, 10, generator=generator, dtype=torch.float64)
    y = x[:, :4] @ torch.randn(4, 6, generator=generator, dtype=torch.float64)  # deterministic, rank 4
    value, diag = ef.mutual_information(x, y, details=True)
    assert math.isinf(float(value))
    assert int(diag.rank) == 10 and any("ill-posed" in note for note in diag.notes)
    shrunk, diag = ef.mutual_information(x, y, shrinkage=0.1, details=True)
    assert math.isfinite(float(shrunk)) and float(shrunk) > 0
    assert 1 <= float(diag.effective_rank) <= 16


def test_constant_variable_carries_no_information(generator):
    x = torch.randn(500, 3, generator=generator, dtype=torch.float64)
    y = torch.cat([x[:, :1] + torch.randn(500, 1, generator=generator, dtype=torch.float64),
                   torch.zeros(500, 1, dtype=torch.float64)], dim=-1)
    assert abs(float(ef.mutual_information(x, y)) - float(ef.mutual_information(x, y[:, :1]))) < 1e-12
    assert float(ef.entropy(y)) == -math.inf


def test_expected_bias_is_reported_when_large(generator):
    x = torch.randn(200, 40, generator=generator)
    y = torch.randn(200, 40, generator=generator)
    value, diag = ef.mutual_information(x, y, details=True)
    assert float(diag.expected_bias) > 1.0  # independent data: the plug-in reads pure bias
    assert abs(float(value) - float(diag.expected_bias)) < 0.5 * float(diag.expected_bias)
    assert any("biased" in note for note in diag.notes)


@pytest.mark.parametrize("kwargs,match", [
    ({"bias_correction": "jackknife"}, "bias_correction"),
    ({"shrinkage": 1.0}, "shrinkage"),
    ({"base": 1}, "base"),
])
def test_bad_options_name_the_argument(kwargs, match, generator):
    x = torch.randn(50, 2, generator=generator)
    with pytest.raises(ValueError, match=match):
        ef.mutual_information(x, x, **kwargs)


def test_wishart_needs_more_samples_than_dimensions(generator):
    x = torch.randn(20, 15, generator=generator)
    with pytest.raises(ValueError, match="N > d"):
        ef.mutual_information(x, x.flip(-1), bias_correction="wishart")


def test_pca_at_full_width_is_exact_and_narrower_is_a_lower_bound(generator):
    latent = torch.randn(3000, 2, generator=generator, dtype=torch.float64)
    x = latent @ torch.randn(2, 10, generator=generator, dtype=torch.float64) + 0.3 * torch.randn(
        3000, 10, generator=generator, dtype=torch.float64)
    y = latent @ torch.randn(2, 7, generator=generator, dtype=torch.float64) + 0.3 * torch.randn(
        3000, 7, generator=generator, dtype=torch.float64)
    full = float(ef.mutual_information(x, y))
    assert abs(float(ef.mutual_information(x, y, pca=10)) - full) < 1e-9
    two = float(ef.mutual_information(x, y, pca=2))
    assert 0.6 * full < two <= full  # the shared signal lives in two components, the rest averages noise


def _spectrum_matrix(eigenvalues, generator):
    """A symmetric matrix with the given eigenvalues in a random orthonormal basis: ``(matrix, basis)``."""
    n = eigenvalues.shape[-1]
    basis = torch.linalg.qr(torch.randn(*eigenvalues.shape[:-1], n, n, generator=generator, dtype=torch.float64))[0]
    return basis @ torch.diag_embed(eigenvalues) @ basis.transpose(-1, -2), basis


def test_top_eigenvectors_span_eighs_top_subspace_with_a_gap(generator):
    # Cells of width 200 whose spectra decay slowly (as hidden states' do) with a gap after the 8th eigenvalue.
    decay = torch.linspace(1, 0.01, 200, dtype=torch.float64).expand(2, 3, -1).clone()
    decay[..., :8] += 0.5 + torch.rand(2, 3, 8, generator=generator, dtype=torch.float64)
    mat, _ = _spectrum_matrix(decay, generator)
    vectors = gaussian.top_eigenvectors(mat, 8)
    exact = torch.linalg.eigh(mat)[1][..., -8:]
    assert vectors.shape == (2, 3, 200, 8) and vectors.dtype == torch.float64
    eye = torch.eye(8, dtype=torch.float64)
    assert torch.allclose(vectors.transpose(-1, -2) @ vectors, eye.expand(2, 3, 8, 8), atol=1e-12)
    # sine of the largest principal angle between the two subspaces
    sine = torch.linalg.matrix_norm(vectors - exact @ (exact.transpose(-1, -2) @ vectors), ord=2)
    assert float(sine.max()) < 1e-12


def test_top_eigenvectors_with_a_tie_at_k_are_eigenvectors_of_the_top_k_eigenvalues(generator):
    # No gap: eigenvalues 7..10 equal 1.0, so any 3 of those 4 directions make a valid top-10 basis.
    eigenvalues = torch.cat([torch.full((4,), 1.0), torch.linspace(0.5, 0.1, 90)]).to(torch.float64)
    eigenvalues[:6] += torch.arange(6, 0, -1, dtype=torch.float64)
    mat, _ = _spectrum_matrix(eigenvalues, generator)
    vectors = gaussian.top_eigenvectors(mat, 9)
    top = torch.linalg.eigvalsh(mat)[-9:]
    rayleigh = vectors.T @ mat @ vectors
    assert torch.allclose(rayleigh, torch.diag(top), atol=1e-12)  # orthonormal eigenvectors of exactly those values
    assert torch.allclose(mat @ vectors, vectors * top, atol=1e-12)


def test_pca_mi_equals_the_full_eigendecomposition_path(generator):
    cov = random_joint_covariance(120, 100, generator)
    x = sample(cov, 400, generator)
    count, _, comoment = gaussian.moments(x)
    value = gaussian.mutual_information_from_moments(count, comoment, 120, pca=8)
    _, corr = gaussian._standardise(comoment, 0.0)
    basis = torch.zeros(220, 16, dtype=torch.float64)
    basis[:120, :8] = torch.linalg.eigh(corr[:120, :120])[1][:, -8:]
    basis[120:, 8:] = torch.linalg.eigh(corr[120:, 120:])[1][:, -8:]
    projected = basis.T @ corr @ basis
    reference = true_mi(projected, 8)
    assert abs(float(value) - reference) < 1e-10 and reference > 0.01


def test_delta_method_stderr_matches_the_spread_over_repeats():
    cov = torch.tensor([[1.0, 0.75], [0.75, 1.0]], dtype=torch.float64)
    g = torch.Generator().manual_seed(7)
    estimates, stderrs = [], []
    for _ in range(300):
        z = sample(cov, 500, g)
        value, diag = ef.mutual_information(z[:, :1], z[:, 1:], details=True)
        estimates.append(float(value))
        stderrs.append(float(diag.stderr))
    spread = torch.tensor(estimates).std().item()
    assert abs(sum(stderrs) / len(stderrs) - spread) < 0.15 * spread, (spread, sum(stderrs) / len(stderrs))
    assert abs(sum(stderrs) / len(stderrs) - 0.75 / math.sqrt(500)) < 0.005


# --- singular and degenerate input: NaN with a note, never LinAlgError; constant cells are exactly 0 ---------

def _with_duplicated_column(generator):
    z = torch.randn(200, 3, generator=generator, dtype=torch.float64)
    y = torch.randn(200, 2, generator=generator, dtype=torch.float64) + z[:, :2]
    return z, torch.cat([z, z[:, :1]], -1), y


def test_a_duplicated_column_gives_the_support_value_and_stderr(generator):
    """details / return_stderr used to raise LinAlgError (Cholesky of the singular marginal fed NaN to the SVD)."""
    z, duplicated, y = _with_duplicated_column(generator)
    value, diag = ef.mutual_information(duplicated, y, details=True)
    support, support_diag = ef.mutual_information(z, y, details=True)
    assert abs(float(value) - float(support)) < 1e-9
    assert abs(float(diag.stderr) - float(support_diag.stderr)) < 1e-9 and float(diag.stderr) > 0
    value, stderr = ef.mutual_information(duplicated, y, return_stderr=True)
    assert abs(float(stderr) - float(support_diag.stderr)) < 1e-9
    rho = gaussian.canonical_correlations(torch.cov(torch.cat([duplicated, y], -1).T), 4)
    torch.testing.assert_close(rho, gaussian.canonical_correlations(torch.cov(torch.cat([z, y], -1).T), 3),
                               rtol=0, atol=1e-10)


def test_the_stderr_of_an_infinite_mi_is_nan_with_a_note(generator):
    x = torch.randn(300, 3, generator=generator, dtype=torch.float64)
    value, diag = ef.mutual_information(x, x @ torch.randn(3, 3, generator=generator, dtype=torch.float64), details=True)
    assert float(value) == math.inf and math.isnan(float(diag.stderr))
    assert any(note.startswith("the standard error is NaN in 1 of 1 cells: the mutual information is infinite")
               for note in diag.notes)


@pytest.mark.parametrize("pca", [None, 1])
@pytest.mark.parametrize("correction", ["none", "wishart"])
def test_a_constant_side_gives_exactly_zero(generator, pca, correction):
    """A constant-token cell used to report -(Wishart bias) with bias_correction='wishart'."""
    x = torch.randn(2, 100, 3, generator=generator, dtype=torch.float64)
    y = torch.randn(2, 100, 2, generator=generator, dtype=torch.float64)
    x[0] = 4.0  # cell 0: a constant x (both sides constant below as well)
    value, diag = ef.mutual_information(x, y, pca=pca, bias_correction=correction, details=True)
    assert value[0].item() == 0.0 and diag.expected_bias[0].item() == 0.0 and diag.stderr[0].item() == 0.0
    assert value[1].item() != 0.0
    both = ef.mutual_information(torch.ones(50, 2), torch.zeros(50, 2), bias_correction=correction, pca=pca, base=2)
    assert both.item() == 0.0


def test_the_wishart_bias_counts_only_random_columns(generator):
    x = torch.randn(120, 3, generator=generator, dtype=torch.float64)
    y = x[:, :2] + torch.randn(120, 2, generator=generator, dtype=torch.float64)
    padded = torch.cat([x, torch.full((120, 2), 3.0, dtype=torch.float64)], -1)  # two constant columns
    _, diag = ef.mutual_information(padded, y, bias_correction="wishart", details=True)
    _, plain = ef.mutual_information(x, y, bias_correction="wishart", details=True)
    assert float(diag.expected_bias) == float(plain.expected_bias)
    assert abs(float(ef.mutual_information(padded, y, bias_correction="wishart"))
               - float(ef.mutual_information(x, y, bias_correction="wishart"))) < 1e-12
    assert float(gaussian.wishart_logdet_bias(torch.tensor([0, 3]), torch.tensor([50, 50]))[0]) == 0.0
    assert float(gaussian.wishart_logdet_bias(torch.tensor([0, 3]), torch.tensor(50))[1]) == float(
        gaussian.wishart_logdet_bias(3, torch.tensor(50)))


def test_the_entropy_of_a_constant_column_is_minus_inf_with_a_note(generator):
    x = torch.randn(2, 100, 3, generator=generator, dtype=torch.float64)
    x[0, :, 1] = 5.0
    value, diag = ef.entropy(x, details=True)
    assert value[0].item() == -math.inf and math.isfinite(value[1].item())
    assert any(note.startswith("the entropy is -inf in 1 of 2 cells: a constant column") for note in diag.notes)
