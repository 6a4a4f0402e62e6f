"""return_stderr=True: the reported standard error matches the spread over independent draws.

Each check draws ``CELLS`` independent data sets as one batch, so the empirical sd across
cells and the mean reported standard error come from one call. With 48 cells the empirical sd
is itself uncertain by about 1/sqrt(2 * 47) = 10%; the accepted ratio band [0.65, 1.6] is
wide enough for that plus the jackknife's known mild conservatism (measured ratios 0.9–1.2 for
every method here), and narrow enough to catch a missing sqrt((N - d) / d) factor (ratio 1.0 vs
0.71 for halves only if the factor were squared, and 1.41 if it were dropped on a
resample-of-N scheme) or a stderr of the wrong order (1/N instead of 1/sqrt(N)).
"""
import math

import pytest
import torch

import emergence_fast as ef
from emergence_fast.estimators import uncertainty

CELLS = 48


def correlated_pairs(cells, n, generator, rho=0.75):
    x = torch.randn(cells, n, 1, generator=generator, dtype=torch.float64)
    y = rho * x + math.sqrt(1 - rho**2) * torch.randn(cells, n, 1, generator=generator, dtype=torch.float64)
    return x, y


@pytest.mark.parametrize("method,options,n", [
    ("gaussian", {}, 1000),
    ("ksg", {}, 600),
    ("binned", {"bins": 12}, 1000),
    ("sliced", {"n_slices": 8}, 1000),
])
def test_reported_stderr_matches_spread_over_draws(method, options, n, generator):
    x, y = correlated_pairs(CELLS, n, generator)
    value, stderr = ef.mutual_information(x, y, method, return_stderr=True, **options)
    assert value.shape == stderr.shape == (CELLS,)
    ratio = float(stderr.mean()) / float(value.std())
    assert 0.65 < ratio < 1.6, ratio


def test_entropy_stderr_matches_spread_over_draws(generator):
    x = torch.randn(CELLS, 800, 2, generator=generator, dtype=torch.float64)
    value, stderr = ef.entropy(x, "knn", return_stderr=True)
    ratio = float(stderr.mean()) / float(value.std())
    assert 0.65 < ratio < 1.6, ratio


def test_jackknife_of_the_mean_is_the_textbook_stderr(generator):
    """For the sample mean, the delete-half jackknife over all subsets is exactly s / sqrt(N)."""
    x = torch.randn(4000, 1, generator=generator, dtype=torch.float64)
    stderr = uncertainty.jackknife_stderr(lambda s: s.mean((-2, -1)), (x,), n_resamples=400)
    textbook = float(x.std()) / math.sqrt(4000)
    assert abs(float(stderr) / textbook - 1) < 0.1


def test_halves_are_distinct_rows_and_seeded():
    index = uncertainty.half_subsets(11, 5, seed=3)
    assert index.shape == (5, 5)
    assert all(len(set(row.tolist())) == 5 for row in index)
    assert torch.equal(index, uncertainty.half_subsets(11, 5, seed=3))
    assert not torch.equal(index, uncertainty.half_subsets(11, 5, seed=4))


def test_own_variance_is_used_where_it_exists(generator):
    x, y = correlated_pairs(1, 500, generator)
    _, details = ef.mutual_information(x, y, details=True)
    _, stderr = ef.mutual_information(x, y, return_stderr=True)
    assert torch.equal(stderr, details.stderr)


def test_stderr_arguments(generator):
    x, y = correlated_pairs(1, 50, generator)
    with pytest.raises(ValueError, match="n_resamples"):
        ef.mutual_information(x, y, "ksg", return_stderr=True, n_resamples=1)
    with pytest.raises(TypeError, match="stderr_seed"):
        ef.mutual_information(x, y, "ksg", return_stderr=True, stderr_seed=0.5)
    with pytest.raises(ValueError, match="details"):
        ef.mutual_information(x, y, return_stderr=True, details=True)
    with pytest.raises(ValueError, match="N >= 4"):
        uncertainty.jackknife_stderr(lambda s: s.sum(), (x[:, :3],))


def test_resamples_in_groups_give_the_one_call_answer(generator):
    """IE splits the jackknife to bound memory; the standard error must not change by a bit."""
    x, y = correlated_pairs(3, 200, generator)
    options = {"jitter": 1e-6}
    whole = ef.mutual_information(x, y, "ksg", return_stderr=True, **options)
    calls = []

    def counting(*args, **kwargs):
        calls.append(args[0].shape[-3])
        return ef.estimators.MI_METHODS["ksg"](*args, **kwargs)

    for per_call in (2, 5, 31):
        calls.clear()
        parts = uncertainty.estimate_with_stderr(counting, "ksg", (x, y), options, resamples_per_call=per_call)
        assert torch.equal(parts[0], whole[0]) and torch.equal(parts[1], whole[1])
        # the value call, then near-equal groups of at most per_call subsets
        assert sum(calls[1:]) == 32 and max(calls[1:]) <= per_call and max(calls[1:]) - min(calls[1:]) <= 1
    with pytest.raises(ValueError, match="resamples_per_call"):
        uncertainty.estimate_with_stderr(ef.estimators.MI_METHODS["ksg"], "ksg", (x, y), options, resamples_per_call=0)


def test_batch_invariant_std(generator):
    t = torch.randn(6, 32, generator=generator, dtype=torch.float64)
    std = uncertainty.batch_invariant_std(t)
    torch.testing.assert_close(std, t.std(-1), rtol=1e-14, atol=0)
    assert all(torch.equal(std[i], uncertainty.batch_invariant_std(t[i:i + 1])[0]) for i in range(6))
    assert torch.isnan(uncertainty.batch_invariant_std(t[:, :1])).all()


# --- cells x resamples: planned within a working budget before any subset is stacked --------------------

def test_group_size_is_the_largest_count_that_fits():
    x, y = torch.randn(5, 100, 3, dtype=torch.float64), torch.randn(5, 100, 2, dtype=torch.float64)
    # Gaussian: the stacked float64 rows (8 B) and three float64 working copies (24 B) per element.
    per_resample = 5 * 50 * 5 * (8 + 24)
    assert uncertainty.group_size("gaussian", {}, (x, y), 50, 32, budget=7 * per_resample) == 7
    assert uncertainty.group_size("gaussian", {}, (x, y), 50, 32, budget=10**12) == 32
    assert uncertainty.group_size("gaussian", {}, (x, y), 50, 32, budget=1) == 2  # never a lone subset


def test_the_jackknife_runs_in_groups_that_fit_with_the_numbers_of_one_call(monkeypatch, generator):
    """return_stderr used to stack every cell x every subset at once, whatever they cost."""
    x, y = correlated_pairs(6, 200, generator)
    calls = []

    def counted(a, b, **options):
        calls.append(a.shape[-3])  # subsets in this call
        return ef.estimators.knn.mutual_information(a, b, **options)

    _, whole = uncertainty.estimate_with_stderr(counted, "ksg", (x, y), {}, n_resamples=8, resamples_per_call=8)
    assert calls[-1] == 8
    calls.clear()
    unbounded = uncertainty.group_size("ksg", {}, (x, y), 100, 8, budget=10**12)
    budget = uncertainty._call_bytes("ksg", {}, 100, (1, 1), 6 * 3, x.device) + 6 * 3 * 100 * 2 * 8
    monkeypatch.setattr(uncertainty, "WORKING_BYTES", budget)  # room for three subsets of every cell
    _, grouped = uncertainty.estimate_with_stderr(counted, "ksg", (x, y), {}, n_resamples=8)
    assert unbounded == 8 and calls[1:] == [3, 3, 2]  # calls[0] is the value on all N rows
    torch.testing.assert_close(grouped, whole, rtol=1e-12, atol=0)


def test_the_permutation_null_runs_in_groups_that_fit(monkeypatch, generator):
    x, y = correlated_pairs(4, 300, generator)
    whole = ef.permutation_null(x, y, "ksg", n_permutations=9, permutations_per_call=9)
    monkeypatch.setattr(uncertainty, "WORKING_BYTES", 1)  # the smallest groups: two permutations
    grouped = ef.permutation_null(x, y, "ksg", n_permutations=9)
    for field in ("estimate", "null_mean", "null_std", "p_value"):
        torch.testing.assert_close(getattr(grouped, field), getattr(whole, field), rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="permutations_per_call must be an integer >= 1, got 0"):
        ef.permutation_null(x, y, permutations_per_call=0)


def test_an_undefined_stderr_is_nan_with_a_warning_never_an_error(generator):
    """The Gaussian entropy of a duplicated column is -inf: its jackknife error is undefined, said so."""
    x = torch.randn(2, 60, 2, generator=generator, dtype=torch.float64)
    x[0, :, 1] = x[0, :, 0]
    with pytest.warns(RuntimeWarning, match=r"the standard error of the gaussian estimate is NaN in 1 of 2 cells"):
        value, stderr = ef.entropy(x, return_stderr=True, n_resamples=4)
    assert value[0].item() == -math.inf and math.isnan(stderr[0].item()) and math.isfinite(stderr[1].item())


def test_an_estimators_own_seed_reaches_it_through_the_jackknife():
    # The jackknife's subset seed (stderr_seed) and the estimator's seed (its jitter here) are two arguments.
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(200, 1, generator=generator, dtype=torch.float64)
    y = x + torch.randn(200, 1, generator=generator, dtype=torch.float64)
    value, stderr = ef.mutual_information(x, y, method="ksg", jitter=1e-3, seed=3, return_stderr=True, stderr_seed=1)
    assert torch.equal(value, ef.mutual_information(x, y, method="ksg", jitter=1e-3, seed=3))
    assert not torch.equal(value, ef.mutual_information(x, y, method="ksg", jitter=1e-3, seed=4))
    _, again = ef.mutual_information(x, y, method="ksg", jitter=1e-3, seed=3, return_stderr=True, stderr_seed=1)
    assert torch.equal(stderr, again) and 0 < float(stderr) < 0.2
