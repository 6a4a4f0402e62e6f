"""The shared fit toolkit against closed forms, numpy and hand-computed draws."""
import math

import numpy as np
import pytest

from emergence_fast import fits


def _exp_model(theta, t):
    """theta [..., 2] = (a, b) -> a exp(b t) [..., n]."""
    return theta[..., :1] * np.exp(theta[..., 1:2] * t)


def _exp_jacobian(theta, t):
    e = np.exp(theta[..., 1:2] * t)
    return np.stack([e, theta[..., :1] * t * e], axis=-1)


# ---------------------------------------------------------------------------------------------
# curve cleaning

def test_clean_curve_drops_nonfinite_and_negative_errors_and_sorts_stably():
    x = [3.0, 1.0, np.nan, 2.0, 1.0, 5.0, 4.0]
    y = [30.0, 10.0, 0.0, 20.0, 11.0, np.inf, 40.0]
    err = [0.1, 0.1, 0.1, -0.1, 0.1, 0.1, np.nan]
    curve = fits.clean_curve(x, y, err)
    assert curve.x.tolist() == [1.0, 1.0, 3.0]
    assert curve.y.tolist() == [10.0, 11.0, 30.0]          # the tie at x=1 keeps its input order
    assert curve.index.tolist() == [1, 4, 0]
    assert curve.n_dropped == 4
    no_err = fits.clean_curve(x, y)
    assert no_err.x.tolist() == [1.0, 1.0, 2.0, 3.0, 4.0] and no_err.y_err is None and no_err.n_dropped == 2
    # index aligns any other per-point array with the cleaned curve
    assert (np.asarray(y)[no_err.index] == no_err.y).all()


def test_clean_curve_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"^x and y must have the same length, got 3 and 2$"):
        fits.clean_curve([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match=r"^n_params and loss must have the same length, got 1 and 2$"):
        fits.clean_curve([1], [1, 2], names=("n_params", "loss", ""))
    with pytest.raises(ValueError, match=r"^y_err must have the length of y \(2\), got 1$"):
        fits.clean_curve([1, 2], [1, 2], [0.1])
    with pytest.raises(ValueError, match=r"^x must be 1-D, got shape \(1, 2\)$"):
        fits.clean_curve([[1, 2]], [1, 2])
    with pytest.raises(TypeError, match=r"^y must be a 1-D sequence of numbers, got str$"):
        fits.clean_curve([1, 2], "ab")


# ---------------------------------------------------------------------------------------------
# least squares

def test_least_squares_fit_recovers_an_exact_curve_and_reports_convergence():
    t = np.linspace(0, 2, 9)
    y = 1.5 * np.exp(-0.7 * t)
    fit = fits.least_squares_fit(_exp_model, _exp_jacobian, t, y, [[1.0, 0.0], [3.0, -2.0]], [-10, -10], [10, 10])
    assert fit.theta == pytest.approx([1.5, -0.7], abs=1e-7)
    assert fit.rss < 1e-14 and fit.converged is True
    short = fits.least_squares_fit(_exp_model, _exp_jacobian, t, y, [1.0, 0.0], [-10, -10], [10, 10], max_nfev=1)
    assert short.converged is False and "maximum number of function evaluations" in short.message


def test_least_squares_fit_holds_equal_bounds_fixed_and_stays_in_the_box():
    t = np.linspace(0, 2, 9)
    y = 1.5 * np.exp(-0.7 * t)
    fixed = fits.least_squares_fit(_exp_model, _exp_jacobian, t, y, [2.0, 0.0], [2.0, -10], [2.0, 10])
    assert fixed.theta[0] == 2.0
    # with a fixed at 2 the best b minimises sum (2 e^{bt} - y)^2: check the gradient vanishes there
    e = np.exp(fixed.theta[1] * t)
    assert np.sum((2 * e - y) * 2 * t * e) == pytest.approx(0, abs=1e-4)   # scipy stops at ftol 1e-8
    boxed = fits.least_squares_fit(_exp_model, _exp_jacobian, t, y, [1.0, 0.0], [-10, -0.5], [10, 10])
    assert boxed.theta[1] == pytest.approx(-0.5, abs=1e-8)          # the optimum -0.7 is outside: on the edge


def test_least_squares_fit_with_no_finite_start():
    t = np.linspace(0, 2, 5)
    fit = fits.least_squares_fit(lambda th, t: np.full_like(t, np.nan), _exp_jacobian, t, t, [1.0, 0.0],
                                 [-1, -1], [2, 2])
    assert fit.rss == math.inf and np.isnan(fit.theta).all() and fit.converged is False


def test_batched_least_squares_agrees_with_scipy_on_each_problem():
    rng = np.random.default_rng(0)
    t = np.linspace(0, 2, 12)
    truth = np.array([1.5, -0.7])
    y = _exp_model(truth, t) + rng.normal(0, 0.01, (20, t.size))
    weight = np.linspace(1, 2, t.size)
    theta, rss, converged = fits.batched_least_squares(_exp_model, _exp_jacobian, np.tile(truth, (20, 1)), t, y,
                                                       [-10, -10], [10, 10], weight=weight)
    assert converged.all()
    for b in range(20):
        one = fits.least_squares_fit(_exp_model, _exp_jacobian, t, y[b], truth, [-10, -10], [10, 10], weight=weight)
        assert theta[b] == pytest.approx(one.theta, abs=1e-5)
        assert rss[b] == pytest.approx(one.rss, rel=1e-6)
    held, _, _ = fits.batched_least_squares(_exp_model, _exp_jacobian, np.tile(truth, (20, 1)), t, y,
                                            [1.5, -10], [1.5, 10])
    assert (held[:, 0] == 1.5).all()


def test_fit_line_matches_numpy_weighted_and_batched():
    rng = np.random.default_rng(1)
    t = rng.random(10)
    y = 2.0 - 3.0 * t + rng.normal(0, 0.1, (4, 10))
    w = rng.random(10) + 0.5
    intercept, slope = fits.fit_line(t, y, w)
    assert intercept.shape == slope.shape == (4,)
    for b in range(4):
        # np.polyfit weighs the residuals, not their squares: sqrt(w)
        ref_slope, ref_intercept = np.polyfit(t, y[b], 1, w=np.sqrt(w))
        assert (intercept[b], slope[b]) == pytest.approx((ref_intercept, ref_slope), rel=1e-10)


def test_fit_power_law_in_both_spaces():
    x = np.logspace(1, 4, 8)
    exact = fits.fit_power_law(x, -3.0 * x**-0.4, space="log")
    assert (exact.a, exact.b) == pytest.approx((-3.0, -0.4), rel=1e-10) and exact.rss < 1e-20
    noisy_y = 3.0 * x**-0.4 + np.random.default_rng(2).normal(0, 0.01, x.size)
    on_y = fits.fit_power_law(x, noisy_y)
    # the y-space fit minimises the residuals on the y scale: no worse there than the log-space line
    log_fit = fits.fit_power_law(x, noisy_y, space="log")
    assert on_y.rss <= np.sum((log_fit.predict(x) - noisy_y) ** 2)
    assert on_y.converged and on_y.b == pytest.approx(-0.4, abs=0.05)
    assert fits.fit_power_law([0.0, 1.0, 2.0], [1.0, 2.0, 3.0]).note == "needs x > 0"
    assert "one sign" in fits.fit_power_law([1.0, 2.0, 3.0], [1.0, -2.0, 3.0]).note
    assert math.isnan(fits.fit_power_law([2.0, 2.0], [1.0, 3.0]).a)
    with pytest.raises(ValueError, match=r"^space must be 'y' or 'log', got 'ln'$"):
        fits.fit_power_law(x, x, space="ln")


# ---------------------------------------------------------------------------------------------
# bootstrap

def test_residual_bootstrap_resamples_centred_rescaled_residuals():
    y = np.array([1.0, 2.5, 2.9, 4.2, 5.0])
    fitted = np.array([1.1, 2.0, 3.0, 4.0, 5.1])
    replicates = fits.residual_bootstrap(y, fitted, 6, 2, np.random.default_rng(7))
    resid = (y - fitted) - np.mean(y - fitted)
    draws = np.random.default_rng(7).integers(0, 5, size=(6, 5))
    assert replicates == pytest.approx(fitted + resid[draws] * math.sqrt(5 / 3))


def test_parametric_bootstrap_inflates_errors_the_curve_misses():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    fitted = np.array([1.0, 2.2, 2.8, 4.0])
    err = np.full(4, 0.1)
    replicates = fits.residual_bootstrap(y, fitted, 3, 1, np.random.default_rng(3), y_err=err)
    phi = math.sqrt(np.sum(((y - fitted) / err) ** 2) / 3)          # chi2 = 8 over 3 dof: phi > 1
    assert phi > 1
    assert replicates == pytest.approx(fitted + np.random.default_rng(3).standard_normal((3, 4)) * phi * err)
    calm = fits.residual_bootstrap(y, y, 2, 1, np.random.default_rng(3), y_err=err)   # chi2 = 0: phi = 1
    assert calm == pytest.approx(y + np.random.default_rng(3).standard_normal((2, 4)) * err)


def test_residual_bootstrap_argument_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"^n_params must be an integer in \[0, 2\], got 3$"):
        fits.residual_bootstrap([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], 5, 3, rng)
    with pytest.raises(ValueError, match=r"^n_boot must be an integer >= 0, got -1$"):
        fits.residual_bootstrap([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], -1, 1, rng)


def test_percentile_interval():
    values = np.arange(101.0)
    assert fits.percentile_interval(values, 0.9) == pytest.approx((5.0, 95.0))
    assert all(math.isnan(v) for v in fits.percentile_interval([], 0.9))
    with pytest.raises(ValueError, match=r"^ci must be a number in \(0, 1\), got 1$"):
        fits.percentile_interval(values, 1)
