"""Transition statistics against closed forms and hand-built curves."""
import math

import numpy as np
import pytest

from emergence_fast import transitions as tr


def logistic(t, location, scale, lower, upper):
    return lower + (upper - lower) / (1 + np.exp(-(t - location) / scale))


# ---------------------------------------------------------------------------------------------
# logistic fit

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_logistic_fit_recovers_location_and_width_inside_cis(seed):
    rng = np.random.default_rng(seed)
    x = np.logspace(7, 11, 14)
    y = logistic(np.log10(x), 9.2, 0.3, 0.1, 0.9) + rng.normal(0, 0.02, x.size)
    fit = tr.logistic_fit(x, y, log_x=True, n_boot=500, seed=seed)
    true_width = 2 * math.log(9) * 0.3
    assert fit.converged and fit.note == ""
    assert fit.location_ci[0] < 9.2 < fit.location_ci[1]
    assert fit.width_ci[0] < true_width < fit.width_ci[1]
    assert abs(fit.location - 9.2) < 0.1 and abs(fit.width - true_width) < 0.3
    assert abs(fit.lower - 0.1) < 0.05 and abs(fit.upper - 0.9) < 0.05
    assert fit.n_boot == 500
    assert fit.location_x() == pytest.approx(10**fit.location)


def test_noise_free_logistic_is_recovered_exactly_on_a_linear_axis():
    x = np.linspace(0, 20, 11)
    fit = tr.logistic_fit(x, logistic(x, 8.5, 1.5, 2.0, -1.0), n_boot=0)
    assert fit.location == pytest.approx(8.5, abs=1e-6)
    assert fit.scale == pytest.approx(1.5, abs=1e-6)
    assert (fit.lower, fit.upper) == pytest.approx((2.0, -1.0), abs=1e-6)   # a decreasing curve: upper < lower
    assert fit.width == pytest.approx(2 * math.log(9) * 1.5, abs=1e-5)
    assert np.allclose(fit.predict(x), logistic(x, 8.5, 1.5, 2.0, -1.0), atol=1e-6)


def test_fixed_asymptotes_and_weighted_fit():
    rng = np.random.default_rng(3)
    t = np.linspace(0, 10, 12)
    err = np.full(t.size, 0.01)
    y = logistic(t, 4.0, 0.8, 0.0, 1.0) + rng.normal(0, 0.01, t.size)
    fixed = tr.logistic_fit(t, y, bounds=(0.0, 1.0), n_boot=400, y_err=err)
    assert (fixed.lower, fixed.upper) == (0.0, 1.0)
    assert fixed.location_ci[0] < 4.0 < fixed.location_ci[1]
    assert fixed.width_ci[0] < 2 * math.log(9) * 0.8 < fixed.width_ci[1]


def test_bootstrap_is_seeded():
    x = np.arange(1.0, 13.0)
    y = logistic(x, 6, 1, 0, 1) + np.random.default_rng(0).normal(0, 0.03, x.size)
    a = tr.logistic_fit(x, y, n_boot=200, seed=5)
    b = tr.logistic_fit(x, y, n_boot=200, seed=5)
    c = tr.logistic_fit(x, y, n_boot=200, seed=6)
    assert a.location_ci == b.location_ci and a.location_ci != c.location_ci


def test_step_between_two_points_is_only_bracketed():
    x = np.logspace(7, 11, 12)
    y = (np.log10(x) > 9.1).astype(float)
    fit = tr.logistic_fit(x, y, log_x=True, n_boot=100)
    left, right = np.log10(x[np.searchsorted(np.log10(x), 9.1) - 1]), np.log10(x[np.searchsorted(np.log10(x), 9.1)])
    assert left <= fit.location <= right
    assert fit.location_ci[0] <= left and fit.location_ci[1] >= right
    assert "bracketed" in fit.note


def test_straight_line_pushes_the_asymptotes_to_their_box_edges():
    # y = 0.1 log10 x on 7..11 (y from 0.7 to 1.1, range 0.4): a logistic can only follow a straight line
    # with its plateaus out of sight, so both asymptotes end one y-range beyond the data (the box edge),
    # centred by symmetry, with a width wider than the 4 observed decades, and the fit says so.
    x = np.logspace(7, 11, 10)
    fit = tr.logistic_fit(x, 0.1 * np.log10(x), log_x=True, n_boot=0)
    assert fit.converged is False
    assert (fit.lower, fit.upper) == pytest.approx((0.7 - 0.4, 1.1 + 0.4), abs=1e-6)
    assert fit.location == pytest.approx(9.0, abs=1e-6)
    assert fit.width > 4
    assert fit.note == ("an asymptote ended on the edge of its box (one y-range beyond the data): the plateau on "
                        "that side is not observed, so the fitted location and width lean on the box; the fitted "
                        "10–90% width is wider than the observed x range")


@pytest.mark.parametrize("x, y, reason", [
    ([1, 2, 3], [0, 0.5, 1], "at least 4 points"),
    ([1, 2, 3, 4, 5], [0.3] * 5, "flat curve"),
    ([2, 2, 2, 2], [0, 1, 0, 1], "one x value"),
    ([1, 2, np.nan, 4], [0, 0.2, 0.5, 1], "at least 4 points"),
])
def test_degenerate_curves_give_nan_and_a_reason(x, y, reason):
    fit = tr.logistic_fit(x, y, n_boot=10)
    assert math.isnan(fit.location) and math.isnan(fit.width_ci[0])
    assert reason in fit.note


def test_nonfinite_points_are_dropped_with_a_note():
    x = np.arange(1.0, 11.0)
    y = logistic(x, 5, 1, 0, 1)
    y[3] = np.nan
    fit = tr.logistic_fit(x, y, n_boot=0)
    assert fit.n_points == 9 and "dropped 1 point" in fit.note
    assert fit.location == pytest.approx(5, abs=1e-5)


def test_bad_input_raises_naming_the_argument():
    with pytest.raises(ValueError, match="same length"):
        tr.logistic_fit([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="positive for log_x"):
        tr.logistic_fit([0, 1, 2, 3], [0, 1, 2, 3], log_x=True)
    with pytest.raises(ValueError, match="bounds"):
        tr.logistic_fit([1, 2, 3, 4], [0, 1, 2, 3], bounds=(1, 1))
    with pytest.raises(ValueError, match="n_boot"):
        tr.logistic_fit([1, 2, 3, 4], [0, 1, 2, 3], n_boot=-1)
    with pytest.raises(ValueError, match="ci"):
        tr.logistic_fit([1, 2, 3, 4], [0, 1, 2, 3], ci=1.5)
    with pytest.raises(TypeError, match="x must be"):
        tr.logistic_fit("abc", [1, 2, 3])
    with pytest.raises(ValueError, match="1-D"):
        tr.logistic_fit([[1, 2]], [[1, 2]])


def test_argument_checks_give_the_shared_messages():
    x, y = [1, 2, 3, 4], [0, 1, 2, 3]
    with pytest.raises(ValueError, match=r"^n_boot must be an integer >= 0, got -1$"):
        tr.logistic_fit(x, y, n_boot=-1)
    with pytest.raises(ValueError, match=r"^n_boot must be an integer >= 0, got True$"):
        tr.logistic_fit(x, y, n_boot=True)
    with pytest.raises(ValueError, match=r"^ci must be a number in \(0, 1\), got 1.5$"):
        tr.logistic_fit(x, y, ci=1.5)
    with pytest.raises(TypeError, match=r"^seed must be an integer, got float 1.0$"):
        tr.logistic_fit(x, y, seed=1.0)
    with pytest.raises(TypeError, match=r"^log_x must be a bool, got int 1$"):
        tr.crossing(x, y, log_x=1)
    with pytest.raises(ValueError, match=r"^period must be a finite number > 0, got -1$"):
        tr.summarize(x, y, period=-1)


# ---------------------------------------------------------------------------------------------
# crossings, widths, steepest segment: hand-built piecewise-linear curves

def test_crossing_interpolates_linearly():
    x, y = [0, 1, 2, 3], [0, 0.2, 0.6, 1.0]
    assert tr.crossing(x, y, 0.5) == pytest.approx(1 + 0.3 / 0.4)
    assert tr.crossing(x[::-1], y[::-1], 0.5) == pytest.approx(1.75)   # order of the input does not matter
    assert tr.crossing(x, [1.0, 0.6, 0.2, 0.0], 0.5) == pytest.approx(1.25)  # falling through the level
    assert tr.crossing(x, y, 0.2) == 1.0                                   # a point exactly on the level
    assert math.isnan(tr.crossing(x, y, 2.0))
    assert tr.crossing([1, 10, 100], [0, 1, 2], 0.5, log_x=True) == pytest.approx(10**0.5)
    assert math.isnan(tr.crossing([1], [1], 0.5))


def test_crossing_takes_the_first_of_several():
    assert tr.crossing([0, 1, 2, 3, 4], [0, 1, 0, 1, 0], 0.5) == pytest.approx(0.5)


def test_transition_width_normalised_and_absolute():
    x, y = [0, 1, 2, 3, 4], [0, 0, 0.5, 1, 1]
    assert tr.transition_width(x, y) == pytest.approx(2.8 - 1.2)
    assert tr.transition_width(x, [1, 1, 0.5, 0, 0]) == pytest.approx(1.6)  # a fall has a positive width too
    scaled = 10 + 4 * np.array(y)
    assert tr.transition_width(x, scaled) == pytest.approx(1.6)             # normalised: affine invariant
    assert tr.transition_width(x, scaled, lo=11, hi=13, normalize=False) == pytest.approx(2.5 - 1.5)
    assert tr.transition_width([1, 10, 100, 1000], [0, 0, 1, 1], log_x=True) == pytest.approx(0.8)
    assert math.isnan(tr.transition_width(x, [2] * 5))
    with pytest.raises(ValueError, match="lo and hi"):
        tr.transition_width(x, y, lo=0.9, hi=0.1)


def test_steepest_segment():
    mid, slope = tr.steepest_segment([1, 2, 4, 5], [0, 1, 5, 5.5])
    assert (mid, slope) == (3.0, 2.0)
    mid, slope = tr.steepest_segment([1, 10, 100, 1000], [0, 0.1, 0.9, 1.0], log_x=True)
    assert mid == pytest.approx(10**1.5) and slope == pytest.approx(0.8)
    assert tr.steepest_segment([1, 2, 3], [3, 1, 0])[1] == -2.0               # sign kept
    assert all(math.isnan(v) for v in tr.steepest_segment([1, 1], [0, 1]))


# ---------------------------------------------------------------------------------------------
# smooth versus sigmoid

def test_sharp_logistic_is_a_sigmoid():
    rng = np.random.default_rng(0)
    x = np.logspace(7, 11, 12)
    y = logistic(np.log10(x), 9.0, 0.15, 0.0, 1.0) + rng.normal(0, 0.02, x.size)
    test = tr.smooth_vs_sigmoid(x, y)
    assert test.verdict == "sigmoid" and test.preferred == "sigmoid" and test.delta > 10
    assert set(test.fits) == {"linear", "power", "sigmoid"}


def test_linear_in_log_x_is_smooth():
    rng = np.random.default_rng(1)
    x = np.logspace(7, 11, 12)
    y = 0.2 + 0.1 * np.log10(x) + rng.normal(0, 0.01, x.size)
    test = tr.smooth_vs_sigmoid(x, y)
    assert test.verdict == "smooth" and test.preferred == "linear"
    assert test.fits["linear"].params["slope"] == pytest.approx(0.1, abs=0.01)


def test_power_law_is_smooth_and_recovered():
    x = np.logspace(1, 5, 10)
    y = 3.0 * x**-0.4 * np.exp(np.random.default_rng(2).normal(0, 0.01, x.size))
    test = tr.smooth_vs_sigmoid(x, y)
    assert test.verdict == "smooth" and test.preferred == "power"
    assert test.fits["power"].params["b"] == pytest.approx(-0.4, abs=0.02)


def test_information_criteria_by_hand():
    x = np.logspace(0, 2, 8)
    y = 1.0 + 0.5 * np.log10(x) + np.array([0.01, -0.02, 0.015, 0.0, -0.01, 0.02, -0.015, 0.005])
    fit = tr.smooth_vs_sigmoid(x, y).fits["linear"]
    n, p = 8, 3   # two coefficients and the noise variance
    assert fit.bic == pytest.approx(n * math.log(fit.rss / n) + p * math.log(n))
    assert fit.aic == pytest.approx(n * math.log(fit.rss / n) + 2 * p)
    assert fit.aicc == pytest.approx(fit.aic + 2 * p * (p + 1) / (n - p - 1))


def test_smoothness_needs_enough_points():
    test = tr.smooth_vs_sigmoid([1, 10, 100, 1000, 10000], [0, 0.1, 0.5, 0.9, 1.0])
    assert test.verdict == "undetermined" and "at least 6 points" in test.note
    assert tr.smooth_vs_sigmoid([1, 10], [0, 1]).verdict == "undetermined"
    with pytest.raises(ValueError, match="criterion"):
        tr.smooth_vs_sigmoid([1, 2, 3], [1, 2, 3], criterion="r2")


# ---------------------------------------------------------------------------------------------
# summarize

def test_summarize_reports_everything_and_periods():
    x = np.arange(0.0, 40.0, 2.0)
    y = logistic(x, 17.0, 2.0, 0.0, 1.0)
    s = tr.summarize(x, y, n_boot=100, level=0.5, period=4.0)
    assert s.crossing == pytest.approx(17.0, abs=0.1)
    assert s.logistic.location == pytest.approx(17.0, abs=1e-4)
    assert s.crossing_periods == pytest.approx(s.crossing / 4)
    assert s.location_periods == pytest.approx(17.0 / 4, abs=1e-4)
    assert s.width_periods == pytest.approx(2 * math.log(9) * 2.0 / 4, abs=1e-4)
    assert 16 <= s.steepest_x <= 18 and s.steepest_slope > 0
    assert s.smoothness.verdict == "sigmoid"
    d = s.to_dict()
    assert d["logistic"]["location"] == s.logistic.location and d["smoothness"]["verdict"] == "sigmoid"


def test_summarize_on_log_axis_does_not_convert_width_to_periods():
    x = np.logspace(0, 3, 10)
    s = tr.summarize(x, logistic(np.log10(x), 1.5, 0.2, 0, 1), log_x=True, n_boot=0, period=10.0)
    assert math.isnan(s.width_periods) and any("periods" in n for n in s.notes)
    assert s.location_periods == pytest.approx(10**1.5 / 10, rel=1e-4)


def test_summarize_never_crashes_on_degenerate_input():
    for x, y in (([], []), ([1.0], [1.0]), ([1, 2, 3], [1, 1, 1]), ([1, 2, 3, 4], [np.nan] * 4)):
        s = tr.summarize(x, y, n_boot=10)
        assert math.isnan(s.logistic.location) and s.smoothness.verdict == "undetermined"
    with pytest.raises(ValueError, match="period"):
        tr.summarize([1, 2, 3, 4], [0, 1, 2, 3], period=-1)


# ---------------------------------------------------------------------------------------------
# verdicts: minimum amplitude, one-step bracket, units

PYTHIA = np.array([70_426_624, 162_322_944, 405_334_016, 1_011_781_632, 1_414_647_808, 2_775_208_960,
                   6_857_302_016, 11_846_072_320], dtype=float)


def test_amplitude_check_values_and_thresholds():
    check = tr.amplitude_check([0.30, 0.25, 0.40], [0.01, 0.02, 0.03], value_range=(0, 1))
    assert check.rise == pytest.approx(0.15)
    assert check.noise_threshold == pytest.approx(3 * math.hypot(0.03, 0.02))   # se of the max and of the min
    assert check.range_threshold == pytest.approx(0.05) and check.passed is True
    small = tr.amplitude_check([0.25, 0.27, 0.29], value_range=(0, 1))
    assert small.passed is False and small.note == "no transition: the rise 0.04 is not above 5% of the metric's range (0.05)"
    noisy = tr.amplitude_check([0.2, 0.4], [0.05, 0.05])
    assert noisy.passed is False and "3 combined standard errors (0.212)" in noisy.note
    assert tr.amplitude_check([1.0, 1.0, 1.0]).passed is False                    # flat: no transition
    unknown = tr.amplitude_check([0.0, 5.0, 9.0])
    assert unknown.passed is None and "could not be applied" in unknown.note
    with pytest.raises(ValueError, match=r"value_range must have low < high, got \(1, 0\)"):
        tr.amplitude_check([0, 1], value_range=(1, 0))
    with pytest.raises(ValueError, match="value_range must be None or a"):
        tr.amplitude_check([0, 1], value_range=1.0)
    with pytest.raises(ValueError, match=r"y_err must have the length of y \(2\), got 3"):
        tr.amplitude_check([0, 1], [0.1, 0.1, 0.1])


def test_rise_between_two_adjacent_points_is_sharp_with_its_bracket():
    # plateaus with scatter, the whole rise between the 4th and 5th size: no point on the rise
    y = [0.02, 0.06, 0.03, 0.05, 0.71, 0.68, 0.74, 0.70]
    s = tr.summarize(PYTHIA, y, log_x=True, n_boot=100, value_range=(0, 1), x_unit="parameters")
    assert s.verdict == "sharp"
    assert s.bracket == (PYTHIA[3], PYTHIA[4])
    assert s.width_bound == pytest.approx(math.log10(PYTHIA[4] / PYTHIA[3]))
    assert any("sharp at the resolution of the sweep" in n for n in s.notes)
    d = s.to_dict()
    assert d["verdict"] == "sharp" and d["bracket"] == [PYTHIA[3], PYTHIA[4]]
    assert d["units"]["bracket"] == "parameters" and d["units"]["width_bound"] == "log10(parameters)"
    assert d["logistic"]["units"]["location_ci"] == "log10(parameters)"
    assert d["logistic"]["units"]["location_x"] == "parameters"


def test_three_points_give_a_bracket_or_no_transition():
    x = PYTHIA[2:5]
    sharp = tr.summarize(x, [0.05, 0.70, 0.72], log_x=True, n_boot=0, value_range=(0, 1))
    assert sharp.verdict == "sharp" and sharp.bracket == (x[0], x[1])
    assert any("single point" in n for n in sharp.notes)
    none = tr.summarize(x, [0.25, 0.26, 0.24], log_x=True, n_boot=0, value_range=(0, 1))
    assert none.verdict == "no transition" and math.isnan(none.bracket[0])
    # a middle point on the rise is evidence against a step, but 3 points are too few to say more
    middle = tr.summarize(x, [0.05, 0.40, 0.75], log_x=True, n_boot=0, value_range=(0, 1))
    assert middle.verdict == "undetermined" and any("points lie on the rise" in n for n in middle.notes)
    assert tr.summarize(x[:2], [0.05, 0.7], log_x=True, n_boot=0).verdict == "undetermined"


def test_a_rise_that_goes_on_after_its_largest_step_is_not_a_step():
    # Pythia LAMBADA perplexity: a front-loaded drop (142 -> 38 -> 11 -> ...), not a jump
    ppl = [142.43, 38.06, 10.83, 7.41, 6.09, 5.04, 4.45, 3.92]
    s = tr.summarize(PYTHIA, -np.array(ppl), log_x=True, n_boot=0)
    assert s.verdict == "smooth" and math.isnan(s.bracket[0])
    # a steady rise has points on it; the smooth fits explain it
    steady = tr.summarize(PYTHIA, 0.1 * np.log10(PYTHIA), log_x=True, n_boot=0, value_range=(0, 1))
    assert steady.verdict == "smooth"


def test_resolved_sigmoid_is_sharp_and_units_follow_x_unit():
    x = np.arange(1.0, 61.0)
    s = tr.summarize(x, logistic(x, 30.0, 2.0, 0.1, 0.9), n_boot=0, value_range=(0, 1), x_unit="flips")
    assert s.verdict == "sharp" and math.isnan(s.bracket[0])      # points on the rise: located by the fit
    assert s.to_dict()["logistic"]["units"]["width"] == "flips" and s.units()["crossing"] == "flips"
    with pytest.raises(TypeError, match="x_unit must be a non-empty str"):
        tr.summarize(x, x, x_unit="")


@pytest.mark.parametrize("y", [[0.30, 0.50, 0.40], [-2.375, -2.625, -2.0]])
def test_three_points_with_the_middle_beyond_both_ends_are_not_a_step(y):
    # issue #13: a live token_edit_distance (2.375, 2.625, 2.0, lower is better) was called a step
    x = PYTHIA[2:5]
    s = tr.summarize(x, y, log_x=True, n_boot=0, y_err=[0.01, 0.01, 0.01])
    assert s.verdict == "undetermined" and math.isnan(s.bracket[0])


def test_a_one_step_rise_without_noise_or_range_is_undetermined():
    x = PYTHIA[2:5]
    s = tr.summarize(x, [0.05, 0.70, 0.72], log_x=True, n_boot=0)
    assert s.verdict == "undetermined" and math.isnan(s.bracket[0])
    assert any("could not be applied" in n for n in s.notes)
    assert any(n.startswith("a one-step rise between x=4.053e+08 and x=1.012e+09 cannot be told from noise")
               for n in s.notes)


def test_a_zero_stderr_still_gives_the_amplitude_rule_its_noise():
    x = PYTHIA[2:5]
    s = tr.summarize(x, [0.05, 0.70, 0.72], log_x=True, n_boot=0, y_err=[0.01, 0.02, 0.0])
    assert s.verdict == "sharp" and s.amplitude.passed is True
    assert s.amplitude.noise_threshold == pytest.approx(3 * 0.01)
    assert "a zero y_err cannot weight a fit: the fits are unweighted" in s.notes
    noisy = tr.summarize(x, [0.05, 0.70, 0.72], log_x=True, n_boot=0, y_err=[0.3, 0.0, 0.0])
    assert noisy.verdict == "no transition"


@pytest.mark.parametrize("y, verdict", [([0.8, 0.8, 0.2], "sharp drop"), ([0.2, 0.2, 0.8], "sharp")])
def test_a_one_step_fall_is_a_sharp_drop_not_a_sharp_rise(y, verdict):
    x = PYTHIA[2:5]
    s = tr.summarize(x, y, log_x=True, n_boot=0, value_range=(0, 1))
    assert s.verdict == verdict and s.bracket == (x[1], x[2])
    change = "fall" if verdict == "sharp drop" else "rise"
    assert any(n.startswith(f"{verdict} at the resolution of the sweep: the whole {change} happens") for n in s.notes)


def test_crossing_level_must_be_a_finite_number():
    with pytest.raises(ValueError, match=r"^level must be a finite number, got nan$"):
        tr.crossing([1, 2, 3], [0.1, 0.5, 0.9], float("nan"))
