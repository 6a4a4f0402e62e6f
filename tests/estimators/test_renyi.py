"""Matrix-based Rényi entropy and MI against closed forms and an independent scipy reference."""
import math

import numpy as np
import pytest
import scipy.linalg
import torch

from emergence_fast.estimators import renyi

ALPHAS = [0.5, 1.0, 1.01, 2.0, 5.0]


def one_hot(labels, n_classes):
    return torch.nn.functional.one_hot(torch.as_tensor(labels), n_classes).to(torch.float64)


def plug_in_renyi(counts, alpha):
    p = np.asarray(counts, dtype=np.float64)
    p = p[p > 0] / p.sum()
    if alpha == 1.0:
        return float(-(p * np.log(p)).sum())
    return float(np.log((p**alpha).sum()) / (1 - alpha))


def numpy_reference(x, alpha, sigma):
    """Independent float64 implementation: numpy Gram, scipy eigenvalues, the documented threshold."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    dist2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    a = np.exp(-dist2 / (2 * sigma**2)) / n
    eig = scipy.linalg.eigvalsh(a)
    eig = eig[eig > eig[-1] * n * np.finfo(np.float64).eps]
    if alpha == 1.0:
        return float(-(eig * np.log(eig)).sum())
    return float(np.log((eig**alpha).sum()) / (1 - alpha))


@pytest.mark.parametrize("alpha", ALPHAS)
def test_uniform_spectrum_gives_log_n(alpha, generator):
    n = 24
    linear = renyi.entropy(torch.eye(n, dtype=torch.float64), alpha=alpha, kernel="linear")
    assert abs(float(linear) - math.log(n)) < 1e-12
    points = torch.randn(n, 3, generator=generator, dtype=torch.float64) * 10  # distinct; sigma tiny -> K = I
    rbf = renyi.entropy(points, alpha=alpha, bandwidth=1e-3)
    assert abs(float(rbf) - math.log(n)) < 1e-12
    assert abs(float(renyi.entropy(points, alpha=alpha, bandwidth=1e-3, base=2)) - math.log2(n)) < 1e-12


@pytest.mark.parametrize("alpha", ALPHAS)
def test_rank_one_gives_zero(alpha):
    same = torch.full((30, 4), 3.7, dtype=torch.float64)
    assert abs(float(renyi.entropy(same, alpha=alpha))) < 1e-12
    assert abs(float(renyi.entropy(same, alpha=alpha, bandwidth=0.5))) < 1e-12
    parallel = torch.arange(1.0, 31.0, dtype=torch.float64).unsqueeze(-1) * torch.tensor([[1.0, -2.0, 0.5]])
    assert abs(float(renyi.entropy(parallel, alpha=alpha, kernel="linear"))) < 1e-12


@pytest.mark.parametrize("alpha", ALPHAS)
def test_one_hot_linear_kernel_is_plug_in_renyi(alpha):
    counts = [7, 1, 3, 9]
    labels = np.repeat(np.arange(4), counts)
    estimate = float(renyi.entropy(one_hot(labels, 4), alpha=alpha, kernel="linear"))
    assert abs(estimate - plug_in_renyi(counts, alpha)) < 1e-12


def test_alpha_one_is_the_continuous_limit(generator):
    x = torch.randn(80, 3, generator=generator, dtype=torch.float64)
    von_neumann = float(renyi.entropy(x, alpha=1.0))
    below, above = float(renyi.entropy(x, alpha=0.999)), float(renyi.entropy(x, alpha=1.001))
    assert below > von_neumann > above  # S_alpha decreases in alpha
    assert abs(below - von_neumann) < 5e-3 and abs(above - von_neumann) < 5e-3
    # First order: the slope dS/dalpha at 1 is finite, so the gap shrinks tenfold with the step.
    closer = float(renyi.entropy(x, alpha=1.0001))
    assert abs(closer - von_neumann) < 0.15 * abs(above - von_neumann)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_mi_with_itself(alpha, generator):
    # One-hot rows: K has 0/1 entries, so A∘A/tr(A∘A) = A and I(X;X) = S(A) exactly.
    labels = torch.randint(0, 5, (60,), generator=generator)
    x = one_hot(labels, 5)
    mi = float(renyi.mutual_information(x, x, alpha=alpha, kernel="linear"))
    assert abs(mi - float(renyi.entropy(x, alpha=alpha, kernel="linear"))) < 1e-12
    # Continuous data: A∘A is the RBF Gram at sigma/sqrt(2), so only 0 < I(X;X) <= S(A) holds.
    z = torch.randn(60, 2, generator=generator, dtype=torch.float64)
    s = float(renyi.entropy(z, alpha=alpha))
    mi = float(renyi.mutual_information(z, z, alpha=alpha))
    assert 0 < mi <= s + 1e-12
    joint = float(renyi.matrix_entropy(renyi.joint_matrix(*[renyi.gram_matrix(z)[0]] * 2), alpha))
    assert abs(mi - (2 * s - joint)) < 1e-12


@pytest.mark.parametrize("alpha", [1.0, 2.0])
def test_one_hot_mi_is_plug_in_mi(alpha, generator):
    xl = torch.randint(0, 3, (90,), generator=generator)
    yl = (xl + torch.randint(0, 2, (90,), generator=generator)) % 4
    joint_counts = np.bincount((xl * 4 + yl).numpy(), minlength=12)
    truth = (plug_in_renyi(np.bincount(xl.numpy()), alpha) + plug_in_renyi(np.bincount(yl.numpy()), alpha)
             - plug_in_renyi(joint_counts, alpha))
    estimate = float(renyi.mutual_information(one_hot(xl, 3), one_hot(yl, 4), alpha=alpha, kernel="linear"))
    assert abs(estimate - truth) < 1e-12


def test_independent_mi_is_small_relative_to_entropy(generator):
    n = 300
    x = torch.randn(n, 1, generator=generator, dtype=torch.float64)
    y = torch.randn(n, 1, generator=generator, dtype=torch.float64)
    dependent = x + 0.3 * torch.randn(n, 1, generator=generator, dtype=torch.float64)
    s = float(renyi.entropy(x, alpha=2.0, bandwidth=2.0))
    independent_mi = float(renyi.mutual_information(x, y, alpha=2.0, bandwidth=2.0))
    dependent_mi = float(renyi.mutual_information(x, dependent, alpha=2.0, bandwidth=2.0))
    assert abs(independent_mi) < 0.05 * s
    assert dependent_mi > 0.3 * s


def test_mi_lower_bound_from_log_n(generator):
    # Documented: I >= S(x) + S(y) - log N, so a narrow kernel cannot give a small MI even when independent.
    x = torch.randn(100, 2, generator=generator, dtype=torch.float64)
    y = torch.randn(100, 2, generator=generator, dtype=torch.float64)
    sx, sy = float(renyi.entropy(x, bandwidth="scott")), float(renyi.entropy(y, bandwidth="scott"))
    assert float(renyi.mutual_information(x, y, bandwidth="scott")) >= sx + sy - math.log(100) - 1e-12


@pytest.mark.parametrize("approx", [None, "lanczos"])
def test_batched_equals_per_cell(approx, generator):
    x = torch.randn(2, 3, 40, 2, generator=generator, dtype=torch.float64)
    y = x.square() + torch.randn(2, 3, 40, 2, generator=generator, dtype=torch.float64)
    options = {"alpha": 1.5, "approx": approx, "n_probes": 8, "n_steps": 10}
    h, mi = renyi.entropy(x, **options), renyi.mutual_information(x, y, **options)
    assert h.shape == mi.shape == (2, 3) and h.dtype == mi.dtype == torch.float64
    for i in range(2):
        for j in range(3):
            # Lanczos shares one seeded probe set across cells, so it is batch-invariant too.
            assert abs(float(h[i, j]) - float(renyi.entropy(x[i, j], **options))) < 1e-10
            assert abs(float(mi[i, j]) - float(renyi.mutual_information(x[i, j], y[i, j], **options))) < 1e-10
    assert len({round(float(v), 6) for v in h.flatten()}) == 6  # the cells really differ


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, 3.0])
def test_matches_scipy_reference(alpha, generator):
    x = torch.randn(60, 5, generator=generator, dtype=torch.float64)
    estimate, info = renyi.entropy(x, alpha=alpha, bandwidth=1.3, details=True)
    assert info.bandwidth == 1.3 and info.stderr is None
    assert abs(float(estimate) - numpy_reference(x.numpy(), alpha, 1.3)) < 1e-10
    # Scott: standardise columns, sigma = N^(-1/(4+d)).
    scott, info = renyi.entropy(x * torch.tensor([1.0, 50.0, 1e-3, 2.0, 7.0], dtype=torch.float64), alpha=alpha,
                                bandwidth="scott", details=True)
    assert info.bandwidth == pytest.approx(60 ** (-1 / 9), rel=1e-15)
    z = x - x.mean(0)
    z = z / z.square().mean(0).sqrt()
    assert abs(float(scott) - numpy_reference(z.numpy(), alpha, 60 ** (-1 / 9))) < 1e-10


def spectral_entropy_np(a, alpha):
    eig = scipy.linalg.eigvalsh(a)
    eig = eig[eig > eig[-1] * a.shape[0] * np.finfo(np.float64).eps]
    return float(-(eig * np.log(eig)).sum()) if alpha == 1.0 else float(np.log((eig**alpha).sum()) / (1 - alpha))


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_linear_kernel_mi_matches_scipy_reference(alpha, generator):
    # Rows of unequal norm: tr(A_x ∘ A_y) != 1/N, so the joint's renormalisation matters.
    x = torch.randn(50, 8, generator=generator, dtype=torch.float64) * torch.rand(50, 1, generator=generator) * 3
    y = x[:, :4] + torch.randn(50, 4, generator=generator, dtype=torch.float64)
    kx, ky = x.numpy() @ x.numpy().T, y.numpy() @ y.numpy().T
    ax, ay = kx / np.trace(kx), ky / np.trace(ky)
    joint = ax * ay / np.trace(ax * ay)
    truth = spectral_entropy_np(ax, alpha) + spectral_entropy_np(ay, alpha) - spectral_entropy_np(joint, alpha)
    assert abs(float(renyi.mutual_information(x, y, alpha=alpha, kernel="linear")) - truth) < 1e-10
    assert abs(float(renyi.entropy(x, alpha=alpha, kernel="linear")) - spectral_entropy_np(ax, alpha)) < 1e-10


def test_float32_input_and_base(generator):
    x = torch.randn(50, 3, generator=generator)
    h64 = renyi.entropy(x.double(), alpha=2.0)
    assert abs(float(renyi.entropy(x, alpha=2.0)) - float(h64)) < 1e-12  # the Gram is built in float64
    assert abs(float(renyi.entropy(x, alpha=2.0, base=2)) - float(h64) / math.log(2)) < 1e-12


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_lanczos_within_three_standard_errors(alpha, generator):
    x = torch.randn(500, 3, generator=generator, dtype=torch.float64)
    # Scott's (narrow) bandwidth, as when Scott's was the default: the stderr bound below was set there.
    exact = float(renyi.entropy(x, alpha=alpha, bandwidth="scott"))
    estimate, info = renyi.entropy(x, alpha=alpha, bandwidth="scott", approx="lanczos", n_probes=32, n_steps=30,
                                   seed=3, details=True)
    assert info.stderr is not None and 0 < float(info.stderr) < 0.05
    assert abs(float(estimate) - exact) < 3 * float(info.stderr), (float(estimate), exact, float(info.stderr))


def test_lanczos_mi_and_exact_cases(generator):
    x = torch.randn(200, 2, generator=generator, dtype=torch.float64)
    y = x + torch.randn(200, 2, generator=generator, dtype=torch.float64)
    exact = float(renyi.mutual_information(x, y, alpha=2.0))
    estimate, info = renyi.mutual_information(x, y, alpha=2.0, approx="lanczos", n_probes=16, n_steps=20,
                                              details=True)
    assert abs(float(estimate) - exact) < 3 * float(info.stderr)
    # A = I/N and a rank-one A are exact for any probe: the Krylov space is exhausted (or the control variate
    # absorbs all the noise), so the reported error is 0.
    for data, kernel, truth in [(torch.eye(40, dtype=torch.float64), "linear", math.log(40)),
                                (torch.ones(40, 2, dtype=torch.float64), "rbf", 0.0)]:
        value, info = renyi.entropy(data, alpha=0.7, kernel=kernel, approx="lanczos", n_probes=4, details=True)
        assert abs(float(value) - truth) < 1e-10 and float(info.stderr) < 1e-10


def test_lanczos_is_seeded(generator):
    x = torch.randn(100, 2, generator=generator, dtype=torch.float64)
    a = renyi.entropy(x, alpha=1.0, approx="lanczos", n_probes=4, n_steps=8, seed=7)
    b = renyi.entropy(x, alpha=1.0, approx="lanczos", n_probes=4, n_steps=8, seed=7)
    c = renyi.entropy(x, alpha=1.0, approx="lanczos", n_probes=4, n_steps=8, seed=8)
    assert float(a) == float(b) and float(a) != float(c)


@pytest.mark.parametrize("kwargs,match", [
    ({"alpha": 0}, "alpha"), ({"alpha": -1.0}, "alpha"), ({"alpha": math.inf}, "alpha"),
    ({"alpha": math.nan}, "alpha"), ({"alpha": True}, "alpha"),
    ({"kernel": "laplace"}, "kernel"), ({"bandwidth": 0.0}, "bandwidth"), ({"bandwidth": -1}, "bandwidth"),
    ({"bandwidth": "silverman"}, "bandwidth"), ({"bandwidth": math.nan}, "bandwidth"),
    ({"approx": "chebyshev"}, "approx"), ({"approx": "lanczos", "n_probes": 1}, "n_probes"),
    ({"approx": "lanczos", "n_steps": 0}, "n_steps"), ({"backend": "numpy"}, "backend"), ({"base": 1}, "base"),
])
def test_bad_arguments(kwargs, match):
    x = torch.randn(10, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=match):
        renyi.entropy(x, **kwargs)
    with pytest.raises(ValueError, match=match):
        renyi.mutual_information(x, x, **kwargs)


def test_bad_samples():
    with pytest.raises(ValueError, match="same number of samples"):
        renyi.mutual_information(torch.randn(10, 2), torch.randn(11, 2))
    with pytest.raises(ValueError, match="NaN"):
        renyi.entropy(torch.tensor([[0.0], [math.nan]]))
    with pytest.raises(ValueError, match="alpha"):
        renyi.matrix_entropy(torch.eye(3) / 3, alpha=0.0)


# ----------------------------------------------------------------- issue #14: fast and exact-dual paths

def gram_form(x, y=None, alpha=1.01):
    """The N×N definitions, computed directly: S(A_x), or I(X;Y) through the Hadamard joint."""
    ax, _ = renyi.gram_matrix(x, kernel="linear")
    if y is None:
        return float(renyi.matrix_entropy(ax, alpha))
    ay, _ = renyi.gram_matrix(y, kernel="linear")
    return float(renyi.matrix_entropy(ax, alpha) + renyi.matrix_entropy(ay, alpha)
                 - renyi.matrix_entropy(renyi.joint_matrix(ax, ay), alpha))


@pytest.mark.parametrize("alpha", [0.5, 1.0, 1.01, 2.0])
@pytest.mark.parametrize("dims", [(3, 4), (8, 12)])  # dx*dy = 12 < N (Kronecker form), 96 >= N (Gram form)
def test_linear_dual_form_equals_gram_form(alpha, dims, generator):
    n = 80
    x = torch.randn(n, dims[0], generator=generator, dtype=torch.float64) * torch.rand(n, 1, generator=generator) * 3
    x[:, -1] = x[:, 0] - 2 * x[:, 1]  # rank-deficient: the rounding threshold must match the Gram form's
    y = x[:, :1] ** 2 + torch.randn(n, dims[1], generator=generator, dtype=torch.float64)
    assert abs(float(renyi.entropy(x, alpha=alpha, kernel="linear")) - gram_form(x, alpha=alpha)) < 1e-10
    assert abs(float(renyi.mutual_information(x, y, alpha=alpha, kernel="linear")) - gram_form(x, y, alpha)) < 1e-10
    # "nystrom" takes the same exact path for the linear kernel.
    assert abs(float(renyi.mutual_information(x, y, alpha=alpha, kernel="linear", approx="nystrom"))
               - gram_form(x, y, alpha)) < 1e-10


def test_median_bandwidth_against_pdist(generator, monkeypatch):
    from scipy.spatial.distance import pdist
    x = torch.randn(2, 41, 3, generator=generator, dtype=torch.float64) * torch.tensor([1.0, 5.0, 0.1])
    sigma = renyi.median_bandwidth(x)
    for cell in range(2):
        assert float(sigma[cell]) == pytest.approx(np.median(pdist(x[cell].numpy())) / math.sqrt(2), rel=1e-12)
    _, info = renyi.entropy(x, details=True)
    torch.testing.assert_close(info.bandwidth, sigma, rtol=0, atol=0)
    # Above MEDIAN_ROWS rows: the median of the rows the seed draws, the same rows for every cell.
    monkeypatch.setattr(renyi, "MEDIAN_ROWS", 16)
    rows = torch.randperm(41, generator=torch.Generator().manual_seed(5))[:16]
    sub = renyi.median_bandwidth(x, seed=5)
    for cell in range(2):
        assert float(sub[cell]) == pytest.approx(np.median(pdist(x[cell, rows].numpy())) / math.sqrt(2), rel=1e-12)
    # More than half the pairs coincide: the rms pair distance replaces a zero median.
    ties = torch.tensor([[0.0], [0.0], [0.0], [0.0], [3.0]], dtype=torch.float64)
    assert float(renyi.median_bandwidth(ties)) == pytest.approx(math.sqrt((pdist(ties.numpy()) ** 2).mean() / 2),
                                                                rel=1e-12)


def test_median_default_does_not_saturate(generator):
    # d = 32: Scott's sigma makes A = I/N, so S = log N whatever the data; the median heuristic does not.
    n = 200
    x = torch.randn(n, 32, generator=generator, dtype=torch.float64)
    y = x + 0.5 * torch.randn(n, 32, generator=generator, dtype=torch.float64)
    assert float(renyi.entropy(x, bandwidth="scott")) > math.log(n) - 1e-3
    assert float(renyi.entropy(x)) < math.log(n) - 0.5
    independent = torch.randn(n, 32, generator=generator, dtype=torch.float64)
    # Scott: I = log N + log N - log N for any data. Median: dependence shows (over a large floor at this N).
    for other in (y, independent):
        assert abs(float(renyi.mutual_information(x, other, bandwidth="scott")) - math.log(n)) < 1e-3
    assert float(renyi.mutual_information(x, y)) > float(renyi.mutual_information(x, independent)) + 0.05


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_nystrom_with_every_row_a_landmark_is_exact(alpha, generator):
    x = torch.randn(60, 3, generator=generator, dtype=torch.float64)
    y = x + torch.randn(60, 2, generator=generator, dtype=torch.float64).sum(-1, keepdim=True)
    options = {"alpha": alpha, "bandwidth": 2.0}
    h, info = renyi.entropy(x, approx="nystrom", n_landmarks=60, details=True, **options)
    assert abs(float(h) - float(renyi.entropy(x, **options))) < 1e-8
    assert float(info.residual) < 1e-10 and info.n_landmarks == 60
    mi = renyi.mutual_information(x, y, approx="nystrom", n_landmarks=100, **options)  # m > N is capped at N
    assert abs(float(mi) - float(renyi.mutual_information(x, y, **options))) < 1e-8


def test_nystrom_within_its_bound_and_close_in_low_dimension(generator):
    # alpha = 1: |S - S_nystrom| <= eps log(N - 1) + h(eps) (Fannes–Audenaert), eps = details.residual.
    n = 600
    x = torch.randn(n, 2, generator=generator, dtype=torch.float64)
    y = x + 0.5 * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    exact = float(renyi.entropy(x, alpha=1.0))
    value, info = renyi.entropy(x, alpha=1.0, approx="nystrom", n_landmarks=100, details=True)
    eps = float(info.residual)
    bound = eps * math.log(n - 1) - eps * math.log(eps) - (1 - eps) * math.log1p(-eps)
    assert 0 < eps < 0.01 and abs(float(value) - exact) <= bound
    # A smooth 2-D kernel has a fast-decaying spectrum: 100 landmarks give the entropy to 1 %, and the MI at
    # alpha = 2 (the joint lives in 4-D, eps ~ 0.04). Near alpha = 1 the MI, a difference, is more sensitive
    # to the spread-out residual: -16 % at 100 landmarks, -3 % at 300 (measured), shrinking with m.
    assert abs(float(value) / exact - 1) < 0.01
    mi = float(renyi.mutual_information(x, y, alpha=2.0, approx="nystrom", n_landmarks=100))
    assert abs(mi / float(renyi.mutual_information(x, y, alpha=2.0)) - 1) < 0.01
    exact_mi = float(renyi.mutual_information(x, y))
    errors = [abs(float(renyi.mutual_information(x, y, approx="nystrom", n_landmarks=m)) / exact_mi - 1)
              for m in (100, 300)]
    assert errors[1] < 0.05 and errors[1] < errors[0] / 2, errors


def test_nystrom_high_dimension_bulk(generator):
    # d = 32 with the median bandwidth: a bulk of comparable eigenvalues that no rank-100 form holds (eps > 0.2).
    # The shift spreads the missing trace over it, which leaves an error of a few %.
    n = 400
    x = torch.randn(n, 32, generator=generator, dtype=torch.float64)
    exact = float(renyi.entropy(x))
    value, info = renyi.entropy(x, approx="nystrom", n_landmarks=100, details=True)
    assert float(info.residual) > 0.2
    assert abs(float(value) / exact - 1) < 0.08, (float(value), exact)  # measured +5.6 %


def test_nystrom_is_seeded(generator):
    x = torch.randn(100, 2, generator=generator, dtype=torch.float64)
    a, b, c = (float(renyi.entropy(x, approx="nystrom", n_landmarks=10, seed=s)) for s in (7, 7, 8))
    assert a == b and a != c


@pytest.mark.parametrize("approx", [None, "nystrom"])
def test_median_and_landmarks_are_batch_invariant(approx, generator, monkeypatch):
    # The subsample of the median heuristic and the landmarks depend on the seed only, not on the batch.
    monkeypatch.setattr(renyi, "MEDIAN_ROWS", 20)
    x = torch.randn(2, 3, 40, 2, generator=generator, dtype=torch.float64)
    y = x.square() + torch.randn(2, 3, 40, 2, generator=generator, dtype=torch.float64)
    options = {"alpha": 1.5, "approx": approx, "n_landmarks": 12, "seed": 4}
    h, mi = renyi.entropy(x, **options), renyi.mutual_information(x, y, **options)
    for i in range(2):
        for j in range(3):
            assert abs(float(h[i, j]) - float(renyi.entropy(x[i, j], **options))) < 1e-12
            assert abs(float(mi[i, j]) - float(renyi.mutual_information(x[i, j], y[i, j], **options))) < 1e-12
    assert len({round(float(v), 6) for v in h.flatten()}) == 6  # the cells really differ


def test_nystrom_options_are_checked():
    x = torch.randn(10, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="n_landmarks"):
        renyi.entropy(x, approx="nystrom", n_landmarks=0)
    with pytest.raises(ValueError, match="bandwidth must be 'median', 'scott' or a finite number > 0"):
        renyi.mutual_information(x, x, bandwidth="silverman")


def test_linear_kernel_zero_trace():
    # An all-zero cell is constant: 0 like any constant cell (LAPACK used to fail on its 0/0 matrix), and the
    # other cells of the batch are unaffected. A joint with zero trace (x zero where y is not) has no unit-trace form.
    x = torch.randn(2, 40, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = x[..., :2] + 1.0
    x[0] = 0.0
    for dy in (2, 20):  # the Kronecker form (dx*dy < N) and the Gram form
        yy = y.repeat(1, 1, dy // 2)
        h, mi = renyi.entropy(x, kernel="linear"), renyi.mutual_information(x, yy, kernel="linear")
        assert float(h[0]) == 0.0 and float(mi[0]) == 0.0
        assert abs(float(h[1]) - gram_form(x[1])) < 1e-10 and abs(float(mi[1]) - gram_form(x[1], yy[1])) < 1e-10
    lanczos = renyi.entropy(x, kernel="linear", approx="lanczos", n_probes=4, n_steps=5)
    assert float(lanczos[0]) == 0.0 and math.isfinite(float(lanczos[1]))
    half = torch.zeros(40, 2, dtype=torch.float64)
    a, b = half.clone(), half.clone()
    a[:20] = torch.randn(20, 2, dtype=torch.float64)
    b[20:] = torch.randn(20, 2, dtype=torch.float64)
    assert math.isnan(float(renyi.mutual_information(a, b, kernel="linear")))
