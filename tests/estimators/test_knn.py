"""kNN entropy (Kozachenko–Leonenko) and KSG mutual information: closed forms, tiling, errors.

Tolerances come from the sampling spread of the estimators, measured over 16 independent
draws at the same N and d (bias and sd per draw in the comments); each test averages ``CELLS``
independent batch cells, so its standard error is sd / sqrt(CELLS), and allows 4 of those plus
the measured bias of the estimator at that N and d.
"""
import math

import pytest
import torch

from emergence_fast.estimators import knn
from emergence_fast.ops import knn as knn_op

CELLS = 2


def gaussian_samples(cov, shape, generator):
    chol = torch.linalg.cholesky(cov)
    return torch.randn(*shape, cov.shape[0], generator=generator, dtype=torch.float64) @ chol.T


def random_covariance(d, generator):
    w = torch.randn(d, d, generator=generator, dtype=torch.float64)
    return w @ w.T / d + 0.5 * torch.eye(d, dtype=torch.float64)


def gaussian_mi(cov, dx):
    ld = lambda m: float(torch.linalg.slogdet(m)[1])
    return 0.5 * (ld(cov[:dx, :dx]) + ld(cov[dx:, dx:]) - ld(cov))


# --- entropy -------------------------------------------------------------------------------

# Measured over 16 draws (max-norm / Euclidean): d=1 N=2000 bias +0.01 sd 0.022;
# d=3 N=3000 bias -0.023 sd 0.022; d=8 N=4000 bias +0.027 / -0.005, sd 0.032 / 0.029.
# Allowance: 0.03 bias + 4 * 0.032 / sqrt(2) = 0.12. A wrong volume constant (d log 2 for
# radius vs diameter) or a psi(k) off by 1/k = 0.33 is far outside it. (In 1-d the two
# metrics coincide.)
@pytest.mark.parametrize("d,n,metric", [(1, 2000, "max"), (3, 3000, "max"), (3, 3000, "euclidean"),
                                        (8, 4000, "max"), (8, 4000, "euclidean")])
def test_entropy_gaussian_closed_form(d, n, metric, generator):
    cov = random_covariance(d, generator)
    truth = 0.5 * math.log((2 * math.pi * math.e) ** d * float(torch.linalg.det(cov)))
    x = gaussian_samples(cov, (CELLS, n), generator)
    estimate = knn.entropy(x, metric=metric)
    assert estimate.shape == (CELLS,) and estimate.dtype == torch.float64
    assert abs(float(estimate.mean()) - truth) < 0.12, (float(estimate.mean()), truth)


# Uniform[0,1]^d has H = 0. Near the faces the k-NN balls stick out of the support, so KL is
# biased upwards, growing with d (measured: d=1 N=2000 +0.001..+0.009 sd 0.015..0.021;
# d=2 N=2000 +0.026..+0.04 sd 0.015; d=3 N=3000 +0.10). Allowance around the measured bias:
# 0.01 (its spread between measurements) + 4 * 0.021 / sqrt(2) = 0.07.
@pytest.mark.parametrize("d,n,bias", [(1, 2000, 0.005), (2, 2000, 0.033)])
def test_entropy_uniform_is_zero(d, n, bias, generator):
    x = torch.rand(CELLS, n, d, generator=generator, dtype=torch.float64)
    estimate = float(knn.entropy(x).mean())
    assert abs(estimate - bias) < 0.07, estimate


def test_entropy_float32_close_to_float64(generator):
    x = torch.randn(2, 1000, 3, generator=generator, dtype=torch.float64)
    assert torch.allclose(knn.entropy(x.float()), knn.entropy(x), atol=1e-5)


def test_entropy_base_2(generator):
    x = torch.randn(500, 2, generator=generator, dtype=torch.float64)
    assert torch.allclose(knn.entropy(x, base=2), knn.entropy(x) / math.log(2), rtol=1e-14, atol=0)


# --- mutual information ----------------------------------------------------------------------

# rho = 0.75, N = 2000: measured bias +0.01 (v1) / +0.009 (v2), sd 0.017 / 0.023 per draw.
# Allowance: 0.01 + 4 * 0.023 / sqrt(2) = 0.075. Dropping KSG-2's -1/k (0.33) fails it.
@pytest.mark.parametrize("variant", [1, 2])
def test_ksg_bivariate_normal(variant, generator):
    truth = -0.5 * math.log(1 - 0.75**2)
    assert abs(truth - 0.4133) < 1e-4
    cov = torch.tensor([[1.0, 0.75], [0.75, 1.0]], dtype=torch.float64)
    z = gaussian_samples(cov, (CELLS, 2000), generator)
    estimate = knn.mutual_information(z[..., :1], z[..., 1:], variant=variant)
    assert estimate.shape == (CELLS,) and estimate.dtype == torch.float64
    assert abs(float(estimate.mean()) - truth) < 0.075, (float(estimate.mean()), truth)


# dx = dy = 2 with a random joint covariance (I = 0.219 nats), N = 2000: measured bias
# +0.006 / +0.009, sd 0.022 / 0.018. Allowance: 0.01 + 4 * 0.022 / sqrt(2) = 0.072.
@pytest.mark.parametrize("variant", [1, 2])
def test_ksg_d4_gaussian(variant):
    generator = torch.Generator().manual_seed(7)
    cov = random_covariance(4, generator)
    truth = gaussian_mi(cov, 2)
    assert truth > 0.1
    z = gaussian_samples(cov, (CELLS, 2000), generator)
    estimate = float(knn.mutual_information(z[..., :2], z[..., 2:], variant=variant).mean())
    assert abs(estimate - truth) < 0.072, (estimate, truth)


# Independent, dx = dy = 2, N = 2000: measured bias +0.006 / +0.008, sd 0.017 / 0.016.
# Allowance: 0.01 + 4 * 0.017 / sqrt(2) = 0.058.
@pytest.mark.parametrize("variant", [1, 2])
def test_ksg_independent_is_zero(variant, generator):
    x = torch.randn(CELLS, 2000, 2, generator=generator, dtype=torch.float64)
    y = torch.randn(CELLS, 2000, 2, generator=generator, dtype=torch.float64)
    assert abs(float(knn.mutual_information(x, y, variant=variant).mean())) < 0.058


def test_ksg_base_2_and_symmetry(generator):
    z = torch.randn(400, 3, generator=generator, dtype=torch.float64)
    z[:, 2] += z[:, 0]
    nats = knn.mutual_information(z[:, :2], z[:, 2:])
    assert torch.allclose(knn.mutual_information(z[:, :2], z[:, 2:], base=2), nats / math.log(2), rtol=1e-14, atol=0)
    assert torch.equal(knn.mutual_information(z[:, 2:], z[:, :2]), nats)


# --- tiling and batching against a dense reference --------------------------------------------

def dense_radii(x, k, p):
    dist = torch.cdist(x, x, p=p, compute_mode="donot_use_mm_for_euclid_dist")
    dist.diagonal(dim1=-2, dim2=-1).fill_(math.inf)
    return dist.sort(dim=-1).values[..., k - 1]


def dense_ksg(x, y, k, variant):
    """Straight from the paper, with the full N x N matrices: returns (eps, n_x, n_y, estimate)."""
    n = x.shape[-2]
    dx = torch.cdist(x, x, p=math.inf)
    dy = torch.cdist(y, y, p=math.inf)
    for m in (dx, dy):
        m.diagonal(dim1=-2, dim2=-1).fill_(math.inf)
    joint = torch.maximum(dx, dy)
    order = joint.argsort(dim=-1)[..., :k]
    eps = joint.gather(-1, order).amax(-1, keepdim=True)
    psi = lambda v: torch.special.digamma(torch.as_tensor(v, dtype=torch.float64))
    if variant == 1:
        n_x, n_y = (dx < eps).sum(-1), (dy < eps).sum(-1)
        estimate = psi(k) + psi(n) - (psi(n_x + 1.0) + psi(n_y + 1.0)).mean(-1)
    else:
        n_x = (dx <= dx.gather(-1, order).amax(-1, keepdim=True)).sum(-1)
        n_y = (dy <= dy.gather(-1, order).amax(-1, keepdim=True)).sum(-1)
        estimate = psi(k) - 1 / k + psi(n) - (psi(n_x * 1.0) + psi(n_y * 1.0)).mean(-1)
    return eps.squeeze(-1), n_x, n_y, estimate


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("metric", ["max", "euclidean"])
def test_tiled_entropy_equals_dense(dtype, metric, generator):
    x = torch.randn(3, 61, 4, generator=generator, dtype=torch.float64).to(dtype)
    p = math.inf if metric == "max" else 2.0
    for k in (1, 4):
        reference = dense_radii(x, k, p)
        results = []
        for tile in (1, 7, 60, 61, 500):
            radii = knn_op.knn_radii(x, k, metric=metric, _tile_rows=tile)
            assert torch.equal(radii, reference), tile
            results.append(knn.entropy(x, k=k, metric=metric, _tile_rows=tile))
        assert all(torch.equal(r, results[0]) for r in results)
        direct = (knn._psi(61) - knn._psi(k) + knn._log_unit_ball(4, metric)
                  + 4 * reference.double().log().mean(-1))
        assert torch.allclose(results[0], direct, rtol=1e-13, atol=0)


@pytest.mark.parametrize("variant", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_tiled_ksg_equals_dense(variant, dtype, generator):
    x = torch.randn(2, 53, 2, generator=generator, dtype=torch.float64)
    y = x[..., :1] + 0.7 * torch.randn(2, 53, 3, generator=generator, dtype=torch.float64)
    x, y = x.to(dtype), y.to(dtype)
    for k in (1, 3):
        eps, n_x, n_y, estimate = dense_ksg(x, y, k, variant)
        results = []
        for tile in (1, 5, 52, 53, 200):
            got = knn_op.ksg_counts(x, y, k, variant, _tile_rows=tile)
            assert torch.equal(got[0], eps) and torch.equal(got[1], n_x) and torch.equal(got[2], n_y), tile
            results.append(knn.mutual_information(x, y, k=k, variant=variant, _tile_rows=tile))
        assert all(torch.equal(r, results[0]) for r in results)
        assert torch.allclose(results[0], estimate, rtol=0, atol=1e-13)


def test_default_tiling_chunks_batch_and_rows(monkeypatch, generator):
    """A tiny byte budget forces both batch chunks and row tiles through the automatic path."""
    x = torch.randn(5, 40, 3, generator=generator, dtype=torch.float64)
    y = torch.randn(5, 40, 2, generator=generator, dtype=torch.float64)
    # The torch path is the one that tiles (the native kernels do not): count its distance blocks.
    calls = []
    distances = knn_op._distances
    monkeypatch.setattr(knn_op, "_distances", lambda *a: calls.append(a[0].shape) or distances(*a))
    whole_h, whole_i = knn.entropy(x, backend="torch"), knn.mutual_information(x, y, variant=2, backend="torch")
    blocks = [len(calls)]
    assert blocks == [3]  # one block each: the entropy's, and KSG's x and y
    for budget in (8 * 40 * 3 * 40 * 2, 8 * 40 * 3 * 7, 1):  # two cells per chunk, 7 rows per tile, 1 row
        calls.clear()
        monkeypatch.setattr(knn_op, "TILE_BYTES", budget)
        assert torch.equal(knn.entropy(x, backend="torch"), whole_h)
        assert torch.equal(knn.mutual_information(x, y, variant=2, backend="torch"), whole_i)
        blocks.append(len(calls))
    assert 3 < blocks[1] < blocks[2] < blocks[3] == 3 * 5 * 40  # finer tiles each time; at 1 byte, one row per block


def test_leading_batch_dims_match_loops(generator):
    x = torch.randn(2, 3, 80, 2, generator=generator, dtype=torch.float64)
    y = x[..., :1] ** 2 + torch.randn(2, 3, 80, 1, generator=generator, dtype=torch.float64)
    h = knn.entropy(x, metric="euclidean", k=2)
    for variant in (1, 2):
        mi = knn.mutual_information(x, y, variant=variant)
        assert mi.shape == (2, 3)
        for i in range(2):
            for j in range(3):
                assert torch.equal(mi[i, j], knn.mutual_information(x[i, j], y[i, j], variant=variant))
    assert h.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            assert torch.equal(h[i, j], knn.entropy(x[i, j], metric="euclidean", k=2))
    # A 1-D input is one variable.
    assert knn.entropy(x[0, 0, :, 0]).shape == ()


# --- ties and jitter ------------------------------------------------------------------------

def test_duplicates_raise_and_jitter_fixes_them(generator):
    x = torch.randint(0, 5, (300, 2), generator=generator).double()
    with pytest.raises(ValueError, match="jitter"):
        knn.entropy(x)
    y = torch.randn(300, 1, generator=generator, dtype=torch.float64)
    with pytest.raises(ValueError, match="jitter"):
        knn.mutual_information(x, y)  # the joint points are distinct, but x has ties
    with pytest.raises(ValueError, match="jitter"):
        knn.mutual_information(y, x, variant=2)
    h = knn.entropy(x, jitter=1e-6)
    assert torch.isfinite(h)
    assert torch.equal(h, knn.entropy(x, jitter=1e-6, seed=0))
    assert not torch.equal(h, knn.entropy(x, jitter=1e-6, seed=1))
    assert torch.isfinite(knn.mutual_information(x, y, jitter=1e-6))
    # A single duplicated pair is a zero 1-NN distance: caught at k=1, harmless at k=2.
    z = torch.randn(50, 2, generator=generator, dtype=torch.float64)
    z[7] = z[3]
    with pytest.raises(ValueError, match="duplicate"):
        knn.entropy(z, k=1)
    assert torch.isfinite(knn.entropy(z, k=2))


def test_jitter_does_not_depend_on_the_batch(generator):
    """One noise draw serves every cell: IE estimates cells in chunks and must get one batch's numbers."""
    x = torch.randint(0, 4, (5, 120, 2), generator=generator).float()
    y = x + torch.randint(0, 2, (5, 120, 2), generator=generator).float()
    batched = knn.mutual_information(x, y, jitter=1e-3)
    assert all(torch.equal(batched[i], knn.mutual_information(x[i], y[i], jitter=1e-3)) for i in range(5))
    assert torch.equal(knn.entropy(x, jitter=1e-3)[2:4], knn.entropy(x[2:4], jitter=1e-3))


def test_jitter_on_continuous_data_is_tiny_change(generator):
    x = torch.randn(500, 2, generator=generator, dtype=torch.float64)
    assert abs(float(knn.entropy(x, jitter=1e-9)) - float(knn.entropy(x))) < 1e-6


def _discrete_pair(generator, dtype, n=500):
    """x uniform on {0..4}, y = x + a fair bit: I(X;Y) = H(Y) - log 2 exactly, every value tied ~100 times."""
    x = torch.randint(0, 5, (n, 1), generator=generator)
    y = x + torch.randint(0, 2, (n, 1), generator=generator)
    h_y = -(2 * 0.1 * math.log(0.1) + 4 * 0.2 * math.log(0.2))
    return x.to(dtype), y.to(dtype), h_y - math.log(2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_jitter_breaks_ties_at_the_inputs_precision(generator, dtype):
    """jitter=1e-10 used to be rounded away below float64 (the noise was added in float64, then cast back)."""
    x, y, truth = _discrete_pair(generator, dtype)
    with pytest.raises(ValueError, match="pass jitter > 0"):
        knn.mutual_information(x, y)
    kept = x.clone()
    mi = knn.mutual_information(x, y, jitter=1e-10)
    # KSG on the tiny blobs estimates the discrete MI (1.0549 nats); sampling and KSG bias: a few 0.01.
    assert math.isfinite(float(mi)) and abs(float(mi) - truth) < 0.03
    assert torch.equal(x, kept)  # the input is not jittered in place
    assert math.isfinite(float(knn.entropy(x, jitter=1e-10)))


def test_ties_that_survive_the_jitter_name_a_larger_jitter(generator):
    # 3,000 copies of each of two values are more than 2**10 ulps of float32 noise can separate at k=3.
    x = torch.randint(0, 2, (6000, 1), generator=generator).float()
    with pytest.raises(ValueError, match=r"still has duplicate points after jitter=1e-10.*pass a larger jitter"):
        knn.mutual_information(x, torch.randn(6000, 1, generator=generator), jitter=1e-10)
    assert math.isfinite(float(knn.mutual_information(x, torch.randn(6000, 1, generator=generator), jitter=1e-3)))


def test_jitter_keeps_an_offset_from_coarsening_the_noise(generator):
    """Centring first: float32 ulps at 1e4 are 1e-3, yet the noise stays ~1e-4 of the spread."""
    x, y, _ = _discrete_pair(generator, torch.float32)
    mi = knn.mutual_information(x + 1e4, y - 1e4, jitter=1e-10)
    assert abs(float(mi) - float(knn.mutual_information(x, y, jitter=1e-10))) < 1e-6


@pytest.mark.parametrize("jitter", [0.0, 1e-3])
def test_a_constant_side_gives_exactly_zero_and_a_point_mass_minus_inf(generator, jitter):
    x = torch.randn(3, 200, 2, generator=generator, dtype=torch.float64)
    y = x + torch.randn(3, 200, 2, generator=generator, dtype=torch.float64)
    x[1] = 7.0  # cell 1: x constant
    y[2] = -1.5  # cell 2: y constant
    mi = knn.mutual_information(x, y, jitter=jitter)
    assert mi[1].item() == 0.0 and mi[2].item() == 0.0
    assert torch.equal(mi[0], knn.mutual_information(x[0], y[0], jitter=jitter))  # the other cells as alone
    h = knn.entropy(x, jitter=jitter)
    assert h[1].item() == -math.inf and math.isfinite(h[0].item())
    assert torch.equal(h[2], knn.entropy(x[2], jitter=jitter))
    assert knn.mutual_information(torch.ones(50, 1), torch.ones(50, 1), base=2).item() == 0.0


# --- argument errors ------------------------------------------------------------------------

def test_argument_errors(generator):
    x = torch.randn(10, 2, generator=generator, dtype=torch.float64)
    y = torch.randn(10, 1, generator=generator, dtype=torch.float64)
    for bad_k in (10, 11, 0, -1, 2.0, True):
        with pytest.raises(ValueError, match="k must"):
            knn.entropy(x, k=bad_k)
        with pytest.raises(ValueError, match="k must"):
            knn.mutual_information(x, y, k=bad_k)
    assert torch.isfinite(knn.entropy(x, k=9))
    for bad_variant in (3, 0, "1", True):
        with pytest.raises(ValueError, match="variant"):
            knn.mutual_information(x, y, variant=bad_variant)
    with pytest.raises(ValueError, match="metric"):
        knn.entropy(x, metric="manhattan")
    for bad_jitter in (-1.0, math.nan, math.inf, "0"):
        with pytest.raises(ValueError, match="jitter"):
            knn.entropy(x, jitter=bad_jitter)
    with pytest.raises(TypeError, match="seed"):
        knn.entropy(x, seed=1.5)
    with pytest.raises(ValueError, match="base"):
        knn.entropy(x, base=1)
    with pytest.raises(ValueError, match="backend"):
        knn.entropy(x, backend="nope")
    with pytest.raises(ValueError, match="_tile_rows"):
        knn.entropy(x, _tile_rows=0)
    nan = x.clone()
    nan[3, 1] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        knn.entropy(nan)
    with pytest.raises(ValueError, match="NaN"):
        knn.mutual_information(y, nan)
    with pytest.raises(ValueError, match="same number of samples"):
        knn.mutual_information(x, y[:9])
    with pytest.raises(ValueError, match="floating"):
        knn.entropy(torch.arange(10))


# --- KD-tree path ---------------------------------------------------------------------------

@pytest.mark.parametrize("variant", knn.VARIANTS)
def test_kd_tree_ksg_equals_brute_force(variant, generator):
    x = torch.randn(3, 700, 2, generator=generator, dtype=torch.float64)
    y = x[..., :1] + torch.randn(3, 700, 1, generator=generator, dtype=torch.float64)
    brute = knn_op.ksg_counts(x, y, 4, variant)
    tree = knn._tree_ksg_counts(x, y, 4, variant)
    assert torch.equal(brute[0], tree[0])
    assert torch.equal(brute[1], tree[1]) and torch.equal(brute[2], tree[2])
    assert torch.equal(knn.mutual_information(x, y, k=4, variant=variant, algorithm="kd_tree"),
                       knn.mutual_information(x, y, k=4, variant=variant, algorithm="brute", backend="torch"))


@pytest.mark.parametrize("metric", knn.METRICS)
def test_kd_tree_entropy_equals_brute_force(metric, generator):
    x = torch.randn(2, 900, 3, generator=generator, dtype=torch.float64)
    tree = knn._tree_radii(x, 3, math.inf if metric == "max" else 2.0)
    brute = knn_op.knn_radii(x, 3, metric=metric)
    if metric == "max":  # max |a - b| is the same float whatever the order; a Euclidean sum is not
        assert torch.equal(tree, brute)
    else:
        assert torch.allclose(tree, brute, rtol=1e-14, atol=0)
    assert torch.allclose(knn.entropy(x, metric=metric, algorithm="kd_tree"),
                          knn.entropy(x, metric=metric, algorithm="brute", backend="torch"), rtol=0, atol=1e-12)


def test_auto_takes_the_tree_only_for_low_dimensions_and_large_n(monkeypatch, generator):
    # dx = 1, dy = 2 (D = 3): the tree from N = 2500 D = 7500 (1-D pairs take the sorted search instead).
    calls = []
    original = knn._tree_ksg_counts
    monkeypatch.setattr(knn, "_tree_ksg_counts", lambda *a: calls.append(a[0].shape) or original(*a))
    small = torch.randn(7499, 1, generator=generator, dtype=torch.float64)
    large = torch.randn(7500, 1, generator=generator, dtype=torch.float64)
    knn.mutual_information(small, small + 1e-3 * torch.randn(7499, 2, generator=generator, dtype=torch.float64))
    assert calls == []
    knn.mutual_information(large, large + torch.randn(7500, 2, generator=generator, dtype=torch.float64))
    assert len(calls) == 1
    wide = torch.randn(20000, 3, generator=generator, dtype=torch.float64)
    knn.mutual_information(wide[:5000], wide[:5000] ** 3, algorithm="brute")
    assert len(calls) == 1


def test_kd_tree_argument_errors(generator):
    x = torch.randn(10, 2, generator=generator, dtype=torch.float64)
    with pytest.raises(ValueError, match="algorithm"):
        knn.entropy(x, algorithm="ball_tree")
    with pytest.raises(ValueError, match="algorithm"):
        knn.mutual_information(x, x[:, :1], algorithm=None)


# --- sorted path (one-dimensional samples) ----------------------------------------------------

def one_d_pairs(generator):
    """1-D pairs that exercise every exactness rule of the sorted path: continuous data, data on a grid (many
    joint distances tied at the radius: variant 2's lowest-index rule), and a large offset (float32 rounding
    of |x_i - x_j| moves the ends of the marginal runs found by searchsorted)."""
    x = torch.randn(3, 400, 1, generator=generator, dtype=torch.float64)
    yield "continuous", x, 0.6 * x + torch.randn(3, 400, 1, generator=generator, dtype=torch.float64)
    grid_x = torch.randint(0, 60, (3, 400, 1), generator=generator).double() * 0.25
    grid_y = torch.randint(0, 60, (3, 400, 1), generator=generator).double() * 0.5
    yield "grid", grid_x, grid_y
    yield "offset", x * 1e-3 + 3e3, x - torch.randn(3, 400, 1, generator=generator, dtype=torch.float64)


@pytest.mark.parametrize("variant", knn.VARIANTS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sorted_ksg_counts_equal_brute_force(variant, dtype, generator):
    tied_rows = []
    original = knn._tied_extents
    for name, x, y in one_d_pairs(generator):
        x, y = x.to(dtype), y.to(dtype)
        for k in (1, 3, 6):
            want = knn_op.ksg_counts(x, y, k, variant)
            got = knn._sorted_ksg_counts(x, y, k, variant)
            assert got[0].dtype == dtype and got[1].dtype == got[2].dtype == torch.int64
            for part, (a, b) in zip(("radius", "n_x", "n_y"), zip(want, got)):
                assert torch.equal(a, b), (name, k, part, int((a != b).sum()))
            if variant == 2 and name == "grid":
                knn._tied_extents = lambda *a: tied_rows.append(a[2].numel()) or original(*a)
                try:
                    knn._sorted_ksg_counts(x, y, k, variant)
                finally:
                    knn._tied_extents = original
    if variant == 2:
        assert sum(tied_rows) > 100  # the grid did send rows through the lowest-index tie rule


def test_sorted_run_ends_are_exact_comparisons(generator):
    """_count_within against the full comparison, with radii that are actual distances (the worst case for a
    searchsorted on q -/+ r, whose rounding alone gets thousands of these rows wrong)."""
    for dtype in (torch.float32, torch.float64):
        xs = (torch.randint(0, 500, (3000,), generator=generator) * 0.37 + 1e4).to(dtype).sort().values.numpy()
        q = xs[torch.randint(0, 3000, (3000,), generator=generator).numpy()]
        r = abs(xs[torch.randint(0, 3000, (3000,), generator=generator).numpy()] - q)
        for strict in (True, False):
            d = abs(xs[None, :] - q[:, None])
            want = (d < r[:, None] if strict else d <= r[:, None]).sum(1)
            assert (knn._count_within(xs, q, r, strict) == want).all(), (dtype, strict)


@pytest.mark.parametrize("variant", knn.VARIANTS)
def test_sorted_ksg_equals_brute_force_end_to_end(variant, generator):
    """Through mutual_information: batched cells (leading dims), jitter on tied data, and the C++ kernel."""
    x = torch.randint(0, 8, (2, 3, 500, 1), generator=generator).float()
    y = x + torch.randint(0, 3, (2, 3, 500, 1), generator=generator).float()
    for k in (2, 5):
        sorted_ = knn.mutual_information(x, y, k=k, variant=variant, jitter=1e-3, algorithm="sorted")
        for backend in ("torch", "cpp"):
            brute = knn.mutual_information(x, y, k=k, variant=variant, jitter=1e-3, algorithm="brute", backend=backend)
            assert torch.equal(sorted_, brute), (k, backend)
    with pytest.raises(ValueError, match="pass jitter > 0"):
        knn.mutual_information(x, y, variant=variant, algorithm="sorted")  # the ties, as every path reports them
    z = torch.randn(700, 1, generator=generator, dtype=torch.float64)
    w = z ** 3 + 0.1 * torch.randn(700, 1, generator=generator, dtype=torch.float64)
    value, details = knn.mutual_information(z, w, variant=variant, algorithm="sorted", details=True)
    assert details.algorithm == "sorted"
    assert torch.equal(value, knn.mutual_information(z, w, variant=variant, algorithm="brute", backend="torch"))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sorted_entropy_radii_equal_brute_force(dtype, generator):
    x = torch.randn(3, 600, 1, generator=generator, dtype=torch.float64).to(dtype)
    x[1] = (x[1] * 4).round() / 4 + 1e-3 * torch.arange(600, dtype=dtype).unsqueeze(-1) % 7  # tied distances
    for k in (1, 4, 9):
        got = knn._sorted_radii(x, k)
        assert torch.equal(got, knn_op.knn_radii(x, k, metric="max")), k
        assert torch.equal(got, knn_op.knn_radii(x, k, metric="euclidean")), k  # one dimension: the same number
    for metric in knn.METRICS:
        assert torch.equal(knn.entropy(x, metric=metric, algorithm="sorted"),
                           knn.entropy(x, metric=metric, algorithm="brute", backend="torch"))


def test_auto_takes_the_sorted_search_for_one_dimensional_samples(generator):
    x = torch.randn(knn._SORTED_MIN_N, 1, generator=generator, dtype=torch.float64)
    y = x + torch.randn(knn._SORTED_MIN_N, 1, generator=generator, dtype=torch.float64)
    assert knn.mutual_information(x, y, details=True)[1].algorithm == "sorted"
    assert knn.mutual_information(x[1:], y[1:], details=True)[1].algorithm == "brute"
    assert knn.entropy(x, details=True)[1].algorithm == "sorted"
    two = torch.cat([x, y], dim=-1)
    assert knn.mutual_information(two, y, details=True)[1].algorithm == "brute"  # D = 3: the tree from N = 7500
    assert knn.entropy(two, details=True)[1].algorithm == "brute"


def test_sorted_argument_errors(generator):
    x = torch.randn(50, 2, generator=generator, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"algorithm='sorted' needs one-dimensional samples .* got a 3-dimensional"):
        knn.mutual_information(x, x[:, :1], algorithm="sorted")
    with pytest.raises(ValueError, match=r"algorithm='sorted' needs one-dimensional samples .* got a 2-dimensional"):
        knn.entropy(x, algorithm="sorted")
    meta = torch.zeros(50, 1, device="meta")
    with pytest.raises(ValueError, match=r"algorithm='sorted' runs on CPU tensors only, got a tensor on meta"):
        knn._pick_algorithm("sorted", meta, 1, True)
    assert knn._pick_algorithm("auto", torch.zeros(5000, 1, device="meta"), 1, True) == "brute"


def test_one_dimensional_multiplicity_counts_like_unique_rows(generator):
    """The 1-D duplicate check (runs of a sorted cell) gives the unique-rows count, cell by cell (no run across cells)."""
    x = torch.randint(0, 40, (4, 300, 1), generator=generator).float()
    x[3, :250] = 5.0  # the largest run, in the last cell
    x[2, -200:] = 5.0  # runs ending one cell and starting the next must not join: 200 + ... stays below 250
    as_rows = torch.cat([x, torch.zeros_like(x)], dim=-1)  # the same points, through the unique-rows count
    assert knn._max_multiplicity(x) == knn._max_multiplicity(as_rows) == 250 + int((x[3, 250:] == 5.0).sum())
    assert knn._max_multiplicity(x[:3]) == knn._max_multiplicity(as_rows[:3])
