"""Curve statistics: hand-computed scores, their invariances, and the power-law model of Schaeffer et al."""
import math

import numpy as np
import pytest

from emergence_fast.mirage import curves


def test_emergence_score_by_hand():
    x = [1, 2, 3, 4, 5]
    y = [0.0, 0.1, 0.15, 0.9, 1.0]
    # steps 0.1, 0.05, 0.75, 0.1 -> squares 0.01, 0.0025, 0.5625, 0.01 -> median 0.01 -> root 0.1
    assert curves.emergence_score(x, y) == pytest.approx(1.0 / 0.1)
    # linearity: root mean square step sqrt((0.01 + 0.0025 + 0.5625 + 0.01) / 4)
    assert curves.linearity(x, y) == pytest.approx(1.0 / math.sqrt(0.585 / 4))
    assert curves.breakthroughness(x, y) == curves.emergence_score(x, y)
    # unsorted input is sorted by x first
    assert curves.emergence_score(x[::-1], y[::-1]) == pytest.approx(10.0)


def test_straight_rise_and_single_jump():
    x = np.arange(1, 6)
    assert curves.linearity(x, x * 2.0) == pytest.approx(4.0)
    assert curves.emergence_score(x, x * 2.0) == pytest.approx(4.0)
    step = [0, 0, 0, 1, 1]
    assert curves.linearity(x, step) == pytest.approx(1 / math.sqrt(1 / 4))
    assert curves.emergence_score(x, step) == math.inf


@pytest.mark.parametrize("a, b", [(3.0, 0.0), (0.01, -5.0), (250.0, 17.0)])
def test_emergence_score_is_affine_invariant(a, b):
    rng = np.random.default_rng(0)
    x, y = np.logspace(7, 11, 9), np.sort(rng.random(9)) + rng.normal(0, 0.05, 9)
    assert curves.emergence_score(x, a * y + b) == pytest.approx(curves.emergence_score(x, y), rel=1e-12)
    assert curves.linearity(x, a * y + b) == pytest.approx(curves.linearity(x, y), rel=1e-12)


def test_emergence_score_changes_sign_for_decreasing_curves():
    x = np.logspace(7, 11, 8)
    y = np.array([0.01, 0.02, 0.02, 0.05, 0.3, 0.7, 0.8, 0.82])
    es = curves.emergence_score(x, y)
    assert es > 0
    assert curves.emergence_score(x, -y) == pytest.approx(-es)
    assert curves.emergence_score(x, y[::-1]) < 0
    # a lower-is-better metric is oriented first: the error rate of a rising accuracy scores like it
    assert curves.emergence_score(x, 1 - y, higher_is_better=False) == pytest.approx(es)


def test_degenerate_curves():
    assert math.isnan(curves.emergence_score([1, 2], [0, 1]))
    assert math.isnan(curves.emergence_score([1, 2, 3], [0.4, 0.4, 0.4]))
    assert math.isnan(curves.linearity([1, 2, 3], [0.4, 0.4, 0.4]))
    assert curves.emergence_score([1, 2, 3, 4], [0, 0, 0, 1]) == math.inf
    assert curves.emergence_score([1, 2, 3, 4], [1, 0, 0, 0]) == -math.inf
    with pytest.raises(ValueError, match="same length"):
        curves.emergence_score([1, 2, 3], [1, 2])
    with pytest.raises(TypeError, match="higher_is_better"):
        curves.emergence_score([1, 2, 3], [1, 2, 3], higher_is_better="yes")


def test_curve_statistics_explains_small_and_flat_families():
    two = curves.curve_statistics([1e8, 1e9], [0.1, 0.5], n_boot=10)
    assert math.isnan(two.emergence_score) and two.sharp is None
    assert any("at least 3" in n for n in two.notes)
    flat = curves.curve_statistics([1e8, 1e9, 1e10, 1e11], [0.2] * 4, n_boot=10)
    # a flat family is a clear "no transition", not "undetermined" (the minimum-amplitude rule)
    assert flat.verdict == "no transition" and flat.sharp is False
    assert any("no transition" in n for n in flat.notes)
    jump = curves.curve_statistics(np.logspace(7, 10, 7), [0, 0, 0, 0, 1, 1, 1], n_boot=10)
    assert jump.emergence_score == math.inf and any("infinite" in n for n in jump.notes)
    with pytest.raises(ValueError, match="positive"):
        curves.curve_statistics([0, 1, 2], [0, 1, 2])


def test_resolution_floor():
    assert curves.resolution_floor([100, 5153]).tolist() == pytest.approx([0.01, 1 / 5153])
    assert curves.below_floor([0.0, 0.005, 0.02, 0.5], [100, 100, 100, np.nan]).tolist() == [True, True, False, False]
    stats = curves.curve_statistics(np.logspace(7, 11, 6), [0, 0.001, 0.004, 0.2, 0.6, 0.9], n_test=500,
                                    proportion=True, n_boot=10)
    assert stats.n_below_floor == 2 and any("resolution floor" in n for n in stats.notes)
    with pytest.raises(ValueError, match="n_test"):
        curves.resolution_floor([0])


# ---------------------------------------------------------------------------------------------
# the power-law model: L(N) = (N / c)^alpha, p = exp(-L)

ALPHA, C, LENGTH = -0.6, 2e6, 12
SIZES = np.logspace(7, 12.5, 16)


def simulated_family(n_test=1500, seed=0):
    """Per-example outcomes of independent tokens with p(N) = exp(-(N/c)^alpha)."""
    rng = np.random.default_rng(seed)
    p = np.exp(-((SIZES / C) ** ALPHA))
    correct = rng.random((SIZES.size, n_test, LENGTH)) < p[:, None, None]
    exact = correct.all(axis=2).mean(axis=1)
    ted = (~correct).sum(axis=2).mean(axis=1)
    return p, exact, ted


def test_power_law_predictions_are_the_closed_forms():
    fit = curves.PowerLawFit(ALPHA, C, (math.nan,) * 2, (math.nan,) * 2, 1.0, 3)
    p = np.exp(-((SIZES / C) ** ALPHA))
    assert fit.predicted_accuracy(SIZES, LENGTH) == pytest.approx(p**LENGTH)
    assert fit.predicted_edit_distance(SIZES, LENGTH) == pytest.approx(LENGTH * (1 - p))
    assert fit.predicted_accuracy(SIZES, [2, 4]) == pytest.approx((p**2 + p**4) / 2)
    assert fit.predicted_accuracy(SIZES, 1) == pytest.approx(1 - fit.predicted_edit_distance(SIZES, 1))


def test_fitted_alpha_and_c_recover_the_generating_values():
    rng = np.random.default_rng(4)
    loss = (SIZES / C) ** ALPHA * np.exp(rng.normal(0, 0.03, SIZES.size))
    fit = curves.fit_loss_power_law(SIZES, loss, n_boot=2000, seed=1)
    assert fit.alpha_ci[0] < ALPHA < fit.alpha_ci[1]
    assert fit.c_ci[0] < C < fit.c_ci[1]
    assert fit.alpha == pytest.approx(ALPHA, abs=0.02) and fit.c == pytest.approx(C, rel=0.25)
    exact = curves.fit_loss_power_law(SIZES, (SIZES / C) ** ALPHA, n_boot=0)
    assert exact.alpha == pytest.approx(ALPHA, rel=1e-10) and exact.c == pytest.approx(C, rel=1e-8)
    assert exact.r2 == pytest.approx(1.0)


def test_power_law_fit_degenerate_input():
    assert math.isnan(curves.fit_loss_power_law([1e8, 1e9], [2.0, 1.0]).alpha)
    assert "same size" in curves.fit_loss_power_law([1e8] * 3, [2.0, 1.5, 1.0]).note
    with pytest.raises(ValueError, match="same length"):
        curves.fit_loss_power_law([1e8, 1e9, 1e10], [1.0, 2.0])


def test_exact_match_looks_sharper_than_edit_distance_on_the_same_outputs():
    p, exact, ted = simulated_family()
    em = curves.curve_statistics(SIZES, exact, higher_is_better=True, n_boot=300)
    ed = curves.curve_statistics(SIZES, ted, higher_is_better=False, n_boot=300)
    # exact match: a sigmoid beats every smooth curve, with its transition inside the range of sizes
    assert em.transition.smoothness.verdict == "sigmoid" and em.sharp is True
    lo, hi = em.transition.logistic.location_ci
    assert math.log10(SIZES[0]) < lo < hi < math.log10(SIZES[-1])
    # edit distance of the very same outputs: a power law explains it as well, and it is not sharp
    assert ed.transition.smoothness.verdict == "smooth" and ed.transition.smoothness.preferred == "power"
    assert ed.sharp is False
    # the power law in loss predicts both curves
    fit = curves.fit_loss_power_law(SIZES, -np.log(p), n_boot=0)
    assert curves.compare_prediction(exact, fit.predicted_accuracy(SIZES, LENGTH))["max_abs"] < 0.05
    assert curves.compare_prediction(ted, fit.predicted_edit_distance(SIZES, LENGTH))["max_abs"] < 0.1


def test_compare_prediction():
    out = curves.compare_prediction([0.0, 0.5, 1.0], [0.1, 0.5, 0.7])
    assert out["rmse"] == pytest.approx(math.sqrt((0.01 + 0 + 0.09) / 3))
    assert out["max_abs"] == pytest.approx(0.3) and out["n"] == 3


# ---------------------------------------------------------------------------------------------
# verdicts

PYTHIA = np.array([70_426_624, 162_322_944, 405_334_016, 1_011_781_632, 1_414_647_808, 2_775_208_960,
                   6_857_302_016, 11_846_072_320], dtype=float)
# Exact match on 200 examples that jumps from about 0.05 to 0.7 between the two largest sizes (ES 5.8): the
# instance of issue #13, which used to be called "smooth" (the sigmoid won the BIC comparison, but its location
# and width cannot be resolved with one point above the jump, and "not resolved" was read as smooth).
JUMP = np.array([0.04, 0.08, 0.0, 0.13, 0.01, 0.14, 0.05, 0.7])
JUMP_SE = np.sqrt(np.maximum(JUMP * (1 - JUMP), 1 / 200) / 200)


def test_a_jump_between_adjacent_sizes_is_sharp_with_its_bracket():
    stats = curves.curve_statistics(PYTHIA, JUMP, metric="exact_match", y_err=JUMP_SE, n_test=200, proportion=True,
                                    n_boot=200)
    assert stats.emergence_score == pytest.approx(5.833, abs=1e-3)
    assert stats.verdict == "sharp" and stats.sharp is True
    assert stats.bracket_x() == (6_857_302_016, 11_846_072_320)
    assert stats.transition.width_bound == pytest.approx(math.log10(11_846_072_320 / 6_857_302_016))   # 0.237 decades
    data = stats.to_dict()
    assert data["verdict"] == "sharp" and data["transition"]["units"]["width_bound"] == "log10(parameters)"
    assert data["transition"]["logistic"]["units"]["location_ci"] == "log10(parameters)"


def test_noise_sized_rise_is_no_transition():
    # MMLU-sized test set (100 questions): a 0.06 wander around chance is below 3 combined standard errors
    y = np.array([0.25, 0.22, 0.27, 0.24, 0.28, 0.23, 0.26, 0.25])
    se = np.sqrt(y * (1 - y) / 100)
    stats = curves.curve_statistics(PYTHIA, y, y_err=se, n_test=100, proportion=True, n_boot=50)
    assert stats.verdict == "no transition" and stats.sharp is False
    assert stats.transition.amplitude.noise_threshold == pytest.approx(3 * math.hypot(se[4], se[1]))


def test_per_point_arrays_follow_their_points_through_cleaning_and_sorting():
    # unsorted sizes with a missing score: n_test must stay with its own model (the 0.004 at 1e9 is below 1/100,
    # the 0.006 at 1e8 is not below 1/200), and the dropped point is counted
    x = [1e10, 1e9, 1e11, 1e8, 1e12, 1e7]
    y = [0.3, 0.004, np.nan, 0.006, 0.9, 0.001]
    n_test = [1000, 100, 1000, 200, 1000, 2000]
    stats = curves.curve_statistics(x, y, n_test=n_test, proportion=True, n_boot=10)
    assert stats.n_points == 5 and stats.n_below_floor == 1
    assert "1 point(s) with non-finite values left out" in stats.notes
    with pytest.raises(ValueError, match=r"^n_test must have the length of x \(6\), got shape \(2,\)$"):
        curves.curve_statistics(x, y, n_test=[1, 2], proportion=True)


def test_power_law_argument_checks_give_the_shared_messages():
    with pytest.raises(ValueError, match=r"^n_boot must be an integer >= 0, got 1.5$"):
        curves.fit_loss_power_law(SIZES, SIZES**-0.1, n_boot=1.5)
    with pytest.raises(ValueError, match=r"^ci must be a number in \(0, 1\), got 0$"):
        curves.fit_loss_power_law(SIZES, SIZES**-0.1, ci=0)
    with pytest.raises(TypeError, match=r"^higher_is_better must be a bool, got str 'yes'$"):
        curves.emergence_score([1, 2, 3], [1, 2, 3], higher_is_better="yes")
