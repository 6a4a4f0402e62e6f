r"""Transitions in a curve y(x): where it happens, how wide it is, and whether it is sharp at all.

Shared by the metric-choice module (:mod:`emergence_fast.mirage`, x = parameters) and the ICL
module (x = shots or tokens). Every function takes plain sequences, works in float64 numpy,
and never crashes on a degenerate curve: too few points, a flat curve or a fit that does not
converge give NaN fields and a ``note`` that says why. Mismatched or malformed input raises.

Logistic fit. With :math:`t = x` or :math:`t = \log_{10} x` (``log_x=True``),

.. math::

    y(t) = \ell + \frac{u - \ell}{1 + e^{-(t - m)/s}}, \qquad
    w_{10\text{–}90} = 2 \ln 9 \; s ,

where :math:`m` is the location (the curve is halfway between its asymptotes there), :math:`s > 0`
the scale and :math:`w` the distance over which it rises from 10 % to 90 % of :math:`u - \ell`
(:math:`\sigma(z) = 0.1 \Leftrightarrow z = -\ln 9`). A decreasing curve has :math:`u < \ell`.
``bounds=(lower, upper)`` fixes the asymptotes (e.g. chance and 1 for an accuracy).

The fit is bounded least squares (:func:`emergence_fast.fits.least_squares_fit`, i.e.
:func:`scipy.optimize.least_squares`, trust-region reflective) from several starting points; the
bootstrap replicates are refitted from the point estimate all at once
(:func:`emergence_fast.fits.batched_least_squares`, measured faster than one scipy call each). The
parameters stay in a box around the data (location within one x-span of the data, scale
between 10⁻³ and 10 spans, asymptotes within one y-range of the observed values): a curve with
no visible transition then ends on the box edge, which is reported (``converged=False``),
instead of drifting to infinite asymptotes.

Bootstrap. Model sizes, shot counts and training steps are chosen by design, not sampled, so
the points are not resampled (a resample of 8 model sizes often drops the very points that
bracket the transition and leaves the fit unidentified). Instead the fitted curve is kept and
its residuals are resampled (:func:`emergence_fast.fits.residual_bootstrap`: residual bootstrap
for fixed-design regression, rescaled for the degrees of freedom the fit used). With per-point
standard errors ``y_err`` the fit is weighted by :math:`1/\sigma_i^2` and the replicates are
parametric, with the stated errors inflated when the curve misses them. CIs are percentile
intervals. When the fitted transition is narrower than the gap
between the two x values around it, the data only bracket its location, and the location CI
is widened to that bracket.

Smooth versus sigmoid. A linear-in-t line :math:`a + b t` (2 parameters), a power law
:math:`a x^b` (2) and the logistic (4, or 2 with fixed asymptotes) are fitted by least squares
and compared by an information criterion with Gaussian errors of unknown variance,
:math:`\mathrm{BIC} = n \ln(\mathrm{RSS}/n) + (k+1)\ln n` (Schwarz 1978; AIC and the
small-sample AICc of Hurvich & Tsai 1989 are reported too). The sigmoid is preferred only
when its criterion beats the best smooth fit by more than ``margin`` (2 = "positive evidence"
on the Kass & Raftery 1995 scale); ties go to the simpler smooth curve. A residual sum of
squares is floored at 10⁻¹² of the total so an exact fit does not give :math:`-\infty`.

Crossings and widths use straight-line interpolation between neighbouring points (in
:math:`\log_{10} x` when ``log_x``), after sorting by x.

Verdict (:func:`summarize`, shared by the metric-choice and ICL modules), decided in this order:

1. ``"undetermined"``: fewer than 3 finite points.
2. ``"no transition"``: the rise fails the minimum-amplitude rule (:func:`amplitude_check`,
   defined here once): :math:`|\max y - \min y|` must exceed :data:`MIN_RISE_Z` = 3 combined
   standard errors of those two points, :math:`3\sqrt{\sigma_{\max}^2 + \sigma_{\min}^2}`
   (about the 95th percentile of the range of 8 points of pure noise), and
   :data:`MIN_RISE_FRACTION` = 5 % of the metric's range (``value_range``, e.g. (0, 1) for an
   accuracy). A flat curve has no transition. Without standard errors only the range test
   applies; with neither, the rule cannot be applied and says so in a note (and a one-step
   change is then ``"undetermined"``: two plateaus of unknown noise may be one level).
3. ``"sharp"`` with a ``bracket``: the whole rise happens between two adjacent points
   (``"sharp drop"`` when the curve falls, i.e. its maximum comes before its minimum in x: a
   degradation with scale, not an emergence). With the
   curve oriented upward, the largest step :math:`x_i \to x_{i+1}` splits the points into a lower
   and an upper side with mean levels :math:`\ell` and :math:`u` (the plateaus); it brackets the
   rise when every point lies within :data:`PLATEAU_SCATTER` = 25 % of :math:`u - \ell` of its
   side's level (scatter on the plateaus) and the two points of the step within
   :data:`STEP_END_TOLERANCE` = 10 % of it, on either side (so the 10 % and the 90 % levels are both crossed
   inside the bracket, and a rise that goes on beyond it, like a front-loaded perplexity drop, is
   not a step). No point then lies on the rise, and a sigmoid's width cannot be resolved below
   the spacing: the honest statement is "sharp at the resolution of the sweep, between
   :math:`x_i` and :math:`x_{i+1}`", with the width bounded above by the gap
   :math:`t_{i+1} - t_i` (``width_bound``), whatever an information criterion says about a fit
   that has no point on its rise.
4. Otherwise some point lies on the rise, which is the evidence a smooth verdict needs, and the
   smooth-versus-sigmoid test decides: ``"sharp"`` (``"sharp drop"`` for a fall) when the sigmoid beats the smooth fits by more
   than ``margin`` and its transition lies inside the observed x range with a 10–90 % width of at
   most half that range; ``"smooth"`` when the smooth fits are as good or the sigmoid is broad or
   outside the data; ``"undetermined"`` when the test cannot be run (fewer than 6 points for 4
   free parameters).

Units. ``t`` is x, or :math:`\log_{10} x` under ``log_x``; locations, scales, widths, width
bounds and their CIs are in t units, crossings and brackets in x units. Every ``to_dict`` carries
a ``units`` map that names them with ``x_unit`` (e.g. ``"parameters"`` gives
``"log10(parameters)"`` for the location CI of a scaling curve, ``"flips"`` for an ICL curve).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ._validation import check_bool, check_finite, check_int, check_positive_float, check_probability, check_seed
from .fits import (
    as_1d,
    batched_least_squares,
    clean_curve,
    fit_line,
    fit_power_law,
    least_squares_fit,
    percentile_interval,
    residual_bootstrap,
)

LN9 = math.log(9.0)
#: Minimum-amplitude rule (:func:`amplitude_check`): a rise must exceed this many combined
#: standard errors of the highest and lowest points ...
MIN_RISE_Z = 3.0
#: ... and this fraction of the metric's range, when the metric has one; else "no transition".
MIN_RISE_FRACTION = 0.05
#: One-step rise (module docstring): every point may scatter this fraction of the rise around the
#: mean level of its side (the plateau) ...
PLATEAU_SCATTER = 0.25
#: ... and the two points of the step must lie within this fraction of the rise of their plateau
#: levels, so that the 10 % and 90 % levels of the rise are both crossed inside the bracket.
STEP_END_TOLERANCE = 0.1
VERDICTS = ("sharp", "sharp drop", "smooth", "no transition", "undetermined")
_MIN_POINTS_FREE = 4     # four free parameters: fewer points cannot pin a logistic down
_MIN_POINTS_FIXED = 3
_RSS_FLOOR = 1e-12
_CRITERIA = ("bic", "aic", "aicc")


@dataclass(frozen=True)
class LogisticFit:
    """A logistic fit ``y = lower + (upper - lower) / (1 + exp(-(t - location) / scale))``.

    ``t`` is ``x`` or ``log10(x)`` (``log_x``); ``location``, ``scale``, ``width`` (the 10–90 %
    width ``2 ln 9 * scale``) and their CIs are in ``t`` units, i.e. ``log10(x_unit)`` under
    ``log_x`` (:meth:`units` names them); :meth:`location_x` is in ``x_unit``. ``n_boot`` counts
    the bootstrap replicates that gave a finite fit.
    """

    location: float
    scale: float
    lower: float
    upper: float
    width: float
    location_ci: tuple[float, float]
    width_ci: tuple[float, float]
    log_x: bool
    n_boot: int
    converged: bool
    note: str
    rss: float = math.nan
    n_points: int = 0
    x_unit: str = "x"

    def units(self) -> dict:
        """The unit of every location, scale and width field (and CI) of :meth:`to_dict`."""
        t = _t_unit(self.x_unit, self.log_x)
        return {"location": t, "location_ci": t, "scale": t, "width": t, "width_ci": t, "location_x": self.x_unit}

    def predict(self, x) -> np.ndarray:
        """The fitted curve at ``x`` (in x units, not t)."""
        t = _to_t(as_1d(x, "x"), self.log_x, "x")
        return _logistic(np.array([self.location, math.log(self.scale) if self.scale > 0 else math.nan,
                                   self.lower, self.upper]), t)

    def location_x(self) -> float:
        """The location back in x units (``10**location`` when ``log_x``)."""
        return 10.0 ** self.location if self.log_x else self.location

    def to_dict(self) -> dict:
        return {"location": self.location, "scale": self.scale, "lower": self.lower, "upper": self.upper,
                "width": self.width, "location_ci": list(self.location_ci), "width_ci": list(self.width_ci),
                "location_x": self.location_x(), "log_x": self.log_x, "n_boot": self.n_boot,
                "converged": self.converged, "rss": self.rss, "n_points": self.n_points, "note": self.note,
                "units": self.units()}


def _t_unit(x_unit: str, log_x: bool) -> str:
    return f"log10({x_unit})" if log_x else x_unit


@dataclass(frozen=True)
class AmplitudeCheck:
    """The minimum-amplitude rule applied to one curve (see :func:`amplitude_check`).

    ``rise`` is ``max y - min y`` (y units); ``noise_threshold`` is ``MIN_RISE_Z`` combined
    standard errors and ``range_threshold`` ``MIN_RISE_FRACTION`` of the metric's range (NaN when
    unknown); ``passed`` is True when the rise exceeds every known threshold, False when it does
    not (the curve has no transition), None when neither threshold is known.
    """

    rise: float
    noise_threshold: float
    range_threshold: float
    passed: bool | None
    note: str

    def to_dict(self) -> dict:
        return {"rise": self.rise, "noise_threshold": self.noise_threshold, "range_threshold": self.range_threshold,
                "passed": self.passed, "note": self.note, "z": MIN_RISE_Z, "fraction": MIN_RISE_FRACTION}


@dataclass(frozen=True)
class ModelFit:
    """One least-squares fit in a smoothness comparison; ``params`` are named."""

    name: str
    params: dict
    k: int
    rss: float
    aic: float
    aicc: float
    bic: float
    note: str = ""


@dataclass(frozen=True)
class SmoothnessTest:
    """Smooth fits against a sigmoid; ``verdict`` is ``"sigmoid"``, ``"smooth"`` or ``"undetermined"``."""

    fits: dict
    criterion: str
    margin: float
    preferred: str
    delta: float          # criterion(best smooth) - criterion(sigmoid): > margin means sigmoid
    verdict: str
    note: str

    def to_dict(self) -> dict:
        return {"criterion": self.criterion, "margin": self.margin, "preferred": self.preferred,
                "delta": self.delta, "verdict": self.verdict, "note": self.note,
                "fits": {name: {"params": fit.params, "k": fit.k, "rss": fit.rss, "aic": fit.aic, "aicc": fit.aicc,
                                "bic": fit.bic, "note": fit.note} for name, fit in self.fits.items()}}


@dataclass(frozen=True)
class TransitionSummary:
    """Every transition statistic of one curve; see :func:`summarize`.

    ``verdict`` is one of :data:`VERDICTS` (module docstring). ``bracket`` (x units) is the pair of
    adjacent x values between which a one-step rise happens, ``width_bound`` (t units) the gap
    between them, the upper bound on the width of that rise; both NaN otherwise. ``units`` names
    the unit of every location, width and crossing field.
    """

    n_points: int
    log_x: bool
    level: float
    crossing: float
    width: float
    logistic: LogisticFit
    steepest_x: float
    steepest_slope: float
    smoothness: SmoothnessTest
    period: float | None = None
    crossing_periods: float = math.nan
    location_periods: float = math.nan
    width_periods: float = math.nan
    notes: list = field(default_factory=list)
    verdict: str = "undetermined"
    bracket: tuple[float, float] = (math.nan, math.nan)
    width_bound: float = math.nan
    amplitude: AmplitudeCheck | None = None
    x_unit: str = "x"

    def units(self) -> dict:
        """The unit of every location, width and crossing field of :meth:`to_dict` (the logistic's in its own)."""
        t = _t_unit(self.x_unit, self.log_x)
        return {"crossing": self.x_unit, "width": t, "steepest_x": self.x_unit, "steepest_slope": f"y per {t}",
                "bracket": self.x_unit, "width_bound": t, "period": self.x_unit, "crossing_periods": "periods",
                "location_periods": "periods", "width_periods": "periods"}

    def to_dict(self) -> dict:
        return {"n_points": self.n_points, "log_x": self.log_x, "level": self.level, "crossing": self.crossing,
                "width": self.width, "logistic": self.logistic.to_dict(), "steepest_x": self.steepest_x,
                "steepest_slope": self.steepest_slope, "smoothness": self.smoothness.to_dict(), "period": self.period,
                "crossing_periods": self.crossing_periods, "location_periods": self.location_periods,
                "width_periods": self.width_periods, "verdict": self.verdict, "bracket": list(self.bracket),
                "width_bound": self.width_bound,
                "amplitude": None if self.amplitude is None else self.amplitude.to_dict(),
                "units": self.units(), "notes": list(self.notes)}


# ---------------------------------------------------------------------------------------------
# input handling

def _clean(x, y, y_err=None):
    """Validated float64 copies of x, y (and y_err) with non-finite points dropped, sorted by x; and notes."""
    curve = clean_curve(x, y, y_err)
    notes = []
    if curve.n_dropped:
        notes.append(f"dropped {curve.n_dropped} point(s) with non-finite values"
                     + (" or negative y_err" if y_err is not None else ""))
    return curve.x, curve.y, curve.y_err, notes


def _to_t(x: np.ndarray, log_x: bool, name: str) -> np.ndarray:
    if not log_x:
        return x
    finite = x[np.isfinite(x)]
    if (finite <= 0).any():
        raise ValueError(f"{name} must be positive for log_x=True, got {finite[finite <= 0][:3].tolist()}")
    return np.log10(x)


def _check_unit(x_unit) -> None:
    if not isinstance(x_unit, str) or not x_unit:
        raise TypeError(f"x_unit must be a non-empty str naming the unit of x (e.g. 'parameters'), got {x_unit!r}")


# ---------------------------------------------------------------------------------------------
# crossings, widths, steepest segment

def crossing(x, y, level: float = 0.5, *, log_x: bool = False) -> float:
    """The first x (in increasing x) where y reaches ``level``, by straight-line interpolation.

    Either direction counts (rising through or falling through ``level``); a point exactly at
    ``level`` is its own crossing. With ``log_x`` the interpolation is in log10 x and the result is
    returned in x units. NaN if the curve never reaches ``level`` or has fewer than 2 finite points.
    """
    check_finite(level, "level")
    check_bool(log_x, "log_x")
    x, y, _, _ = _clean(x, y)
    if x.size < 2:
        return math.nan
    t = _to_t(x, log_x, "x")
    value = _first_crossing(t, y, float(level))
    return float(10.0 ** value) if (log_x and math.isfinite(value)) else value


def _first_crossing(t: np.ndarray, y: np.ndarray, level: float) -> float:
    d = y - level
    exact = np.flatnonzero(d == 0)
    sign_change = np.flatnonzero(d[:-1] * d[1:] < 0)
    first_exact = exact[0] if exact.size else None
    first_change = sign_change[0] if sign_change.size else None
    if first_exact is None and first_change is None:
        return math.nan
    if first_change is None or (first_exact is not None and first_exact <= first_change):
        return float(t[first_exact])
    i = first_change
    return float(t[i] + (level - y[i]) * (t[i + 1] - t[i]) / (y[i + 1] - y[i]))


def _normalised(y: np.ndarray) -> np.ndarray:
    """y mapped onto [0, 1] by its own range, oriented so the curve's overall change is upward."""
    lo, hi = float(np.min(y)), float(np.max(y))
    u = (y - lo) / (hi - lo)
    return u if int(np.argmax(y)) >= int(np.argmin(y)) else 1.0 - u


def transition_width(x, y, lo: float = 0.1, hi: float = 0.9, *, normalize: bool = True,
                     log_x: bool = False) -> float:
    """Distance in t (x, or log10 x with ``log_x``) from the first crossing of ``lo`` to the first of ``hi``.

    ``normalize=True`` (default) reads ``lo`` and ``hi`` as fractions of the curve's own range,
    :math:`\\tilde y = (y - \\min y)/(\\max y - \\min y)`, flipped for a curve whose minimum comes
    after its maximum, so the width of a rise and of a fall are both positive. With
    ``normalize=False`` they are absolute y levels and the sign tells the direction. NaN when
    either level is never crossed, the curve is flat, or there are fewer than 2 finite points.
    """
    check_finite(lo, "lo")
    check_finite(hi, "hi")
    check_bool(normalize, "normalize")
    check_bool(log_x, "log_x")
    if normalize and not 0 <= lo < hi <= 1:
        raise ValueError(f"with normalize=True, lo and hi must satisfy 0 <= lo < hi <= 1, got lo={lo}, hi={hi}")
    x, y, _, _ = _clean(x, y)
    if x.size < 2:
        return math.nan
    t = _to_t(x, log_x, "x")
    if normalize:
        if np.max(y) == np.min(y):
            return math.nan
        y = _normalised(y)
    return _first_crossing(t, y, float(hi)) - _first_crossing(t, y, float(lo))


def steepest_segment(x, y, *, log_x: bool = False) -> tuple[float, float]:
    """``(midpoint x, slope)`` of the neighbouring pair with the largest ``|Δy/Δt|``.

    t is x or log10 x; the slope is in y per t unit and keeps its sign; the midpoint is the
    arithmetic midpoint in t, returned in x units (the geometric mean of the pair with
    ``log_x``). Pairs with equal x are skipped. ``(nan, nan)`` with fewer than 2 distinct x.
    """
    check_bool(log_x, "log_x")
    x, y, _, _ = _clean(x, y)
    t = _to_t(x, log_x, "x")
    dt = np.diff(t)
    valid = dt > 0
    if not valid.any():
        return math.nan, math.nan
    slopes = np.where(valid, np.diff(y) / np.where(valid, dt, 1.0), 0.0)
    i = int(np.argmax(np.where(valid, np.abs(slopes), -1.0)))
    mid = 0.5 * (t[i] + t[i + 1])
    return (float(10.0 ** mid) if log_x else float(mid)), float(slopes[i])


# ---------------------------------------------------------------------------------------------
# the logistic and its derivatives

def _logistic(theta: np.ndarray, t: np.ndarray) -> np.ndarray:
    """theta [..., 4] = (location, log scale, lower, upper) -> curves [..., n]."""
    z = (t - theta[..., :1]) / np.exp(theta[..., 1:2])
    sig = 0.5 * (1.0 + np.tanh(0.5 * z))   # overflow-free logistic
    return theta[..., 2:3] + (theta[..., 3:4] - theta[..., 2:3]) * sig


def _logistic_jacobian(theta: np.ndarray, t: np.ndarray) -> np.ndarray:
    """d curve / d theta: [..., n, 4]."""
    scale = np.exp(theta[..., 1:2])
    z = (t - theta[..., :1]) / scale
    sig = 0.5 * (1.0 + np.tanh(0.5 * z))
    amp = (theta[..., 3:4] - theta[..., 2:3]) * sig * (1.0 - sig)
    return np.stack([-amp / scale, -amp * z, 1.0 - sig, sig], axis=-1)


# ---------------------------------------------------------------------------------------------
# logistic fit

def _nan_fit(log_x: bool, note: str, n_points: int = 0, x_unit: str = "x") -> LogisticFit:
    nan = math.nan
    return LogisticFit(nan, nan, nan, nan, nan, (nan, nan), (nan, nan), log_x, 0, False, note, nan, n_points, x_unit)


def _logistic_starts(t, y, fixed):
    """Starting points: several locations and scales, asymptotes from the data's ends."""
    span = float(t[-1] - t[0])
    third = max(1, t.size // 3)
    rising = float(np.mean(y[-third:])) >= float(np.mean(y[:third]))
    lo, hi = (float(np.min(y)), float(np.max(y))) if rising else (float(np.max(y)), float(np.min(y)))
    if fixed is not None:
        lo, hi = fixed
    mid_t, _ = steepest_segment(t, y)
    half = _first_crossing(t, y, 0.5 * (lo + hi))
    locations = {mid_t, float(np.median(t)), t[0] + 0.25 * span, t[0] + 0.75 * span}
    if math.isfinite(half):
        locations.add(half)
    starts = [(m, math.log(span * f), lo, hi) for m in locations for f in (1 / 20, 1 / 8, 1 / 3)]
    return np.array(starts, dtype=np.float64)


def _fit_logistic_point(t, y, weight, fixed):
    """Best of the least-squares runs from several starts; returns the fit and the box (lower, upper)."""
    span = float(t[-1] - t[0])
    y_range = float(np.max(y) - np.min(y))
    lower = np.array([t[0] - span, math.log(span * 1e-3), np.min(y) - y_range, np.min(y) - y_range])
    upper = np.array([t[-1] + span, math.log(span * 10.0), np.max(y) + y_range, np.max(y) + y_range])
    if fixed is not None:  # equal bounds hold the asymptotes fixed
        lower[2] = upper[2] = fixed[0]
        lower[3] = upper[3] = fixed[1]
    fit = least_squares_fit(_logistic, _logistic_jacobian, t, y, _logistic_starts(t, y, fixed), lower, upper,
                            weight=weight)
    return fit, (lower, upper)


def logistic_fit(x, y, *, log_x: bool = False, bounds=None, n_boot: int = 1000, ci: float = 0.95, seed: int = 0,
                 y_err=None, x_unit: str = "x") -> LogisticFit:
    """Least-squares logistic fit of y(x) with bootstrap CIs for its location and 10–90 % width.

    ``bounds=(lower, upper)`` fixes the asymptotes (2 free parameters instead of 4). ``y_err``
    (per-point standard errors) switches to a weighted fit and a parametric bootstrap (see the
    module docstring). ``n_boot=0`` skips the bootstrap (CIs are NaN). Location, scale, width and
    their CIs are in t units: x, or log10(x) under ``log_x``; ``x_unit`` names x (e.g.
    ``"parameters"``) so that :meth:`LogisticFit.units` can say so. Degenerate curves (too few
    finite points, a flat curve) return NaN fields and a ``note``; mismatched lengths raise.
    """
    check_bool(log_x, "log_x")
    _check_unit(x_unit)
    n_boot = check_int(n_boot, "n_boot", minimum=0)
    ci = check_probability(ci, "ci", low_open=True, high_open=True)
    seed = check_seed(seed)
    fixed = None
    if bounds is not None:
        if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
            raise ValueError(f"bounds must be None or a (lower, upper) pair, got {bounds!r}")
        for name, value in zip(("bounds[0]", "bounds[1]"), bounds):
            check_finite(value, name)
        if bounds[0] == bounds[1]:
            raise ValueError(f"bounds must have lower != upper, got {bounds!r}")
        fixed = (float(bounds[0]), float(bounds[1]))

    x, y, err, notes = _clean(x, y, y_err)
    t = _to_t(x, log_x, "x")
    n = t.size
    k = 2 if fixed is not None else 4
    minimum = _MIN_POINTS_FIXED if fixed is not None else _MIN_POINTS_FREE
    if n < minimum:
        reason = f"a logistic with {k} free parameters needs at least {minimum} points, got {n}"
        return _nan_fit(log_x, "; ".join(notes + [reason]), n, x_unit)
    if np.unique(t).size < 2:
        return _nan_fit(log_x, "; ".join(notes + ["all points share one x value"]), n, x_unit)
    if fixed is None and np.max(y) == np.min(y):
        return _nan_fit(log_x, "; ".join(notes + ["flat curve: y is constant, so there is no transition to locate"]), n,
                        x_unit)

    weight = None if err is None else 1.0 / err**2
    point, (lower, upper) = _fit_logistic_point(t, y, weight, fixed)
    theta, rss, converged = point.theta, point.rss, point.converged
    scale = math.exp(theta[1])
    span = float(t[-1] - t[0])
    on_edge = (np.isclose(theta[0], lower[0]) or np.isclose(theta[0], upper[0])
               or np.isclose(theta[1], upper[1]))
    plateau_edge = fixed is None and bool(np.any(np.isclose(theta[2:], lower[2:]) | np.isclose(theta[2:], upper[2:])))
    if on_edge:
        converged = False
        notes.append("the fit ended on the edge of its parameter box: no transition is resolved inside the data "
                     "(the location lies outside the observed x range or the curve is too straight for a sigmoid)")
    elif plateau_edge:
        converged = False
        notes.append("an asymptote ended on the edge of its box (one y-range beyond the data): the plateau on that "
                     "side is not observed, so the fitted location and width lean on the box")
    elif not converged:
        notes.append(f"the least-squares fit stopped before converging: {point.message}")

    location, width = float(theta[0]), 2 * LN9 * scale
    location_ci = width_ci = (math.nan, math.nan)
    n_ok = 0
    if n_boot and n > k:
        replicates = residual_bootstrap(y, _logistic(theta, t), n_boot, k, np.random.default_rng(seed), err)
        # All replicates at once, each started at the point estimate (close to its own optimum):
        # one scipy call per replicate is 26-200x slower at the defaults (benchmarks/fits.py).
        boot, boot_rss, _ = batched_least_squares(_logistic, _logistic_jacobian, np.tile(theta, (n_boot, 1)), t,
                                                  replicates, lower, upper, weight=weight)
        ok = np.isfinite(boot_rss) & np.isfinite(boot).all(axis=1)
        n_ok = int(ok.sum())
        if n_ok:
            location_ci = percentile_interval(boot[ok, 0], ci)
            width_ci = percentile_interval(2 * LN9 * np.exp(boot[ok, 1]), ci)
        if n_ok < n_boot:
            notes.append(f"{n_boot - n_ok} of {n_boot} bootstrap fits failed and were left out")
    elif n_boot:
        notes.append(f"no residual degrees of freedom ({n} points, {k} parameters): no bootstrap CI")

    # A transition narrower than the spacing of the data around it is only bracketed by the data.
    inside = np.searchsorted(t, location)
    if 0 < inside < n and width < t[inside] - t[inside - 1] and not on_edge:
        a, b = float(t[inside - 1]), float(t[inside])
        notes.append(f"the transition is narrower than the gap between neighbouring points; its location is only "
                     f"bracketed by [{_fmt_t(a, log_x)}, {_fmt_t(b, log_x)}]")
        location_ci = (min(a, location_ci[0]) if math.isfinite(location_ci[0]) else a,
                       max(b, location_ci[1]) if math.isfinite(location_ci[1]) else b)
    if width > span and not on_edge:
        notes.append("the fitted 10–90% width is wider than the observed x range")
    return LogisticFit(location, scale, float(theta[2]), float(theta[3]), width, location_ci, width_ci, log_x, n_ok,
                       converged, "; ".join(notes), rss, n, x_unit)


def _fmt_t(t: float, log_x: bool) -> str:
    return f"x={10.0 ** t:.4g}" if log_x else f"x={t:.4g}"


# ---------------------------------------------------------------------------------------------
# smooth versus sigmoid

def _information_criteria(rss: float, tss: float, n: int, k: int):
    rss = max(rss, _RSS_FLOOR * tss, 1e-300)
    p = k + 1  # the noise variance is estimated too
    loglik_term = n * math.log(rss / n)
    aic = loglik_term + 2 * p
    aicc = aic + (2 * p * (p + 1) / (n - p - 1) if n - p - 1 > 0 else math.inf)
    bic = loglik_term + p * math.log(n)
    return aic, aicc, bic


def _linear_fit(t, y, weight):
    intercept, slope = (float(value) for value in fit_line(t, y, weight))
    w = np.ones_like(t) if weight is None else weight
    rss = float(np.sum(w * (y - (intercept + slope * t)) ** 2))
    return {"intercept": intercept, "slope": slope}, rss


def smooth_vs_sigmoid(x, y, *, log_x: bool = True, bounds=None, criterion: str = "bic", margin: float = 2.0,
                      y_err=None) -> SmoothnessTest:
    """Does a smooth curve explain y(x) as well as a sigmoid?

    Fits ``linear`` (a + b t, t = log10 x when ``log_x``), ``power`` (a x^b) and ``sigmoid``
    (the logistic in t, asymptotes fixed by ``bounds`` if given) and compares them by
    ``criterion`` (``"bic"``, ``"aic"`` or ``"aicc"``). ``verdict="sigmoid"`` when the sigmoid
    beats the best smooth fit by more than ``margin``; ``"smooth"`` otherwise; ``"undetermined"``
    when the sigmoid cannot be fitted (too few points, flat curve). ``delta`` is the best smooth
    criterion minus the sigmoid's. ``y_err`` weights every fit by 1/y_err^2.
    """
    check_bool(log_x, "log_x")
    if criterion not in _CRITERIA:
        raise ValueError(f"criterion must be one of {_CRITERIA}, got {criterion!r}")
    check_finite(margin, "margin")
    xs, ys, err, notes = _clean(x, y, y_err)
    sigmoid = logistic_fit(xs, ys, log_x=log_x, bounds=bounds, n_boot=0, y_err=err)
    return _compare(xs, ys, err, log_x, bounds, criterion, margin, sigmoid, notes)


def _compare(xs, ys, err, log_x, bounds, criterion, margin, sigmoid, notes) -> SmoothnessTest:
    """The comparison of :func:`smooth_vs_sigmoid` on clean, sorted data with the sigmoid already fitted."""
    t = _to_t(xs, log_x, "x")
    n = t.size
    weight = None if err is None else 1.0 / err**2
    if n < 3 or not math.isfinite(sigmoid.rss):
        reason = sigmoid.note or f"too few points ({n})"
        return SmoothnessTest({}, criterion, float(margin), "", math.nan, "undetermined", "; ".join(notes + [reason]))
    k_sig = 2 if bounds is not None else 4
    if n < k_sig + 2:
        reason = (f"a {k_sig}-parameter sigmoid needs at least {k_sig + 2} points to leave residual degrees of "
                  f"freedom for the comparison, got {n}")
        return SmoothnessTest({}, criterion, float(margin), "", math.nan, "undetermined", "; ".join(notes + [reason]))
    w = np.ones_like(ys) if weight is None else weight
    tss = float(np.sum(w * (ys - np.average(ys, weights=w)) ** 2))
    fits = {}
    params, rss = _linear_fit(t, ys, weight)
    fits["linear"] = ModelFit("linear", params, 2, rss, *_information_criteria(rss, tss, n, 2))
    power = fit_power_law(xs, ys, weight=weight)   # on the y scale, like the other two
    if power.note:
        nan = math.nan
        fits["power"] = ModelFit("power", {}, 2, nan, nan, nan, nan, f"not fitted: {power.note}")
    else:
        fits["power"] = ModelFit("power", {"a": power.a, "b": power.b}, 2, power.rss,
                                 *_information_criteria(power.rss, tss, n, 2))
    fits["sigmoid"] = ModelFit("sigmoid", {"location": sigmoid.location, "scale": sigmoid.scale,
                                           "lower": sigmoid.lower, "upper": sigmoid.upper}, k_sig, sigmoid.rss,
                               *_information_criteria(sigmoid.rss, tss, n, k_sig), sigmoid.note)
    value = {name: getattr(fit, criterion) for name, fit in fits.items()}
    smooth = {name: v for name, v in value.items() if name != "sigmoid" and math.isfinite(v)}
    best_smooth = min(smooth, key=smooth.get)
    delta = smooth[best_smooth] - value["sigmoid"]
    if not math.isfinite(value["sigmoid"]):
        verdict, preferred = "undetermined", best_smooth
        notes.append(f"{criterion} of the sigmoid is not finite with {n} points")
    elif delta > margin:
        verdict, preferred = "sigmoid", "sigmoid"
    else:
        verdict, preferred = "smooth", best_smooth
    return SmoothnessTest(fits, criterion, float(margin), preferred, float(delta), verdict, "; ".join(notes))


# ---------------------------------------------------------------------------------------------
# verdicts: the minimum-amplitude rule and the one-step bracket

def amplitude_check(y, y_err=None, *, value_range=None) -> AmplitudeCheck:
    """The minimum-amplitude rule shared by every verdict of this package (``transitions``,
    ``mirage``, ``icl``): is the rise of y large enough to be a transition at all?

    ``y`` [n] float, ``y_err`` [n] standard errors (or None), ``value_range`` a ``(low, high)``
    pair bounding the metric (``(0, 1)`` for an accuracy or a probability; None for an unbounded
    metric). The rise ``max y - min y`` (in y units) passes when it exceeds both
    ``MIN_RISE_Z * sqrt(se[argmax]**2 + se[argmin]**2)`` (when both standard errors are finite)
    and ``MIN_RISE_FRACTION * (high - low)`` (when ``value_range`` is given). A flat curve never
    passes; with neither threshold known ``passed`` is None and the note says the rule could not
    be applied. Non-finite points are left out. Raises ValueError/TypeError on malformed input.
    """
    y = as_1d(y, "y")
    err = None
    if y_err is not None:
        err = as_1d(y_err, "y_err")
        if err.shape != y.shape:
            raise ValueError(f"y_err must have the length of y ({y.size}), got {err.size}")
    low = high = math.nan
    if value_range is not None:
        if not isinstance(value_range, (tuple, list)) or len(value_range) != 2:
            raise ValueError(f"value_range must be None or a (low, high) pair, got {value_range!r}")
        for name, value in zip(("value_range[0]", "value_range[1]"), value_range):
            check_finite(value, name)
        low, high = float(value_range[0]), float(value_range[1])
        if not low < high:
            raise ValueError(f"value_range must have low < high, got {value_range!r}")
    keep = np.isfinite(y)
    nan = math.nan
    if keep.sum() < 2:
        return AmplitudeCheck(nan, nan, nan, None, f"the amplitude rule needs 2 finite points, got {int(keep.sum())}")
    yk = y[keep]
    i_max, i_min = int(np.argmax(yk)), int(np.argmin(yk))
    rise = float(yk[i_max] - yk[i_min])
    noise = nan
    if err is not None:
        ek = err[keep]
        pair = np.array([ek[i_max], ek[i_min]])
        if np.isfinite(pair).all() and (pair >= 0).all() and pair.any():
            noise = MIN_RISE_Z * float(np.hypot(*pair))
    by_range = MIN_RISE_FRACTION * (high - low) if value_range is not None else nan
    if rise == 0:
        return AmplitudeCheck(rise, noise, by_range, False, "no transition: the curve is flat")
    failed = []
    if math.isfinite(noise) and rise <= noise:
        failed.append(f"{MIN_RISE_Z:g} combined standard errors ({noise:.3g})")
    if math.isfinite(by_range) and rise <= by_range:
        failed.append(f"{MIN_RISE_FRACTION:.0%} of the metric's range ({by_range:.3g})")
    if failed:
        return AmplitudeCheck(rise, noise, by_range, False,
                              f"no transition: the rise {rise:.3g} is not above " + " nor ".join(failed))
    if not (math.isfinite(noise) or math.isfinite(by_range)):
        return AmplitudeCheck(rise, noise, by_range, None,
                              "the minimum-amplitude rule could not be applied: no standard errors and no metric range")
    return AmplitudeCheck(rise, noise, by_range, True, "")


def amplitude_rule_text() -> str:
    """One line that states the minimum-amplitude rule, for the footnotes of printed tables."""
    return (f"No transition: a rise max - min not above {MIN_RISE_Z:g} combined standard errors of those two points "
            f"or {MIN_RISE_FRACTION:.0%} of the metric's range (0-1 for proportions), or a flat curve.")


def _one_step(t: np.ndarray, y: np.ndarray):
    """Index i such that the whole rise of y happens between t[i] and t[i + 1], else None (module docstring)."""
    if t.size < 3 or np.max(y) == np.min(y):
        return None
    u = _normalised(y)
    step = np.diff(u)
    i = int(np.argmax(step))
    if step[i] <= 0 or t[i + 1] <= t[i]:
        return None
    below, above = u[:i + 1], u[i + 1:]
    low, high = float(np.mean(below)), float(np.mean(above))
    rise = high - low
    scatter = PLATEAU_SCATTER * rise
    ends = STEP_END_TOLERANCE * rise
    on_plateaus = np.max(below) <= low + scatter and np.min(above) >= high - scatter
    # Both sides: a step end below its plateau (a dip before the jump) is as far from a step as one above.
    ends_on_plateaus = abs(u[i] - low) <= ends and abs(u[i + 1] - high) <= ends
    return i if on_plateaus and ends_on_plateaus else None


def _verdict(t, x, y, fit: LogisticFit, smooth: SmoothnessTest, amplitude: AmplitudeCheck, x_unit: str):
    """(verdict, bracket, width_bound, notes) of one clean, sorted curve; see the module docstring."""
    nan2 = (math.nan, math.nan)
    n = t.size
    if n < 3:
        return "undetermined", nan2, math.nan, [f"a verdict needs at least 3 points, got {n}"]
    if amplitude.passed is False:
        return "no transition", nan2, math.nan, [amplitude.note]
    notes = [amplitude.note] if amplitude.passed is None else []
    falls = int(np.argmax(y)) < int(np.argmin(y))
    change, sharp = ("fall", "sharp drop") if falls else ("rise", "sharp")
    i = _one_step(t, y)
    if i is not None and amplitude.passed is None:
        # Without a noise level or a range, two plateaus may be two draws of the same noise.
        notes.append(f"a one-step {change} between x={x[i]:.4g} and x={x[i + 1]:.4g} cannot be told from noise "
                     f"without standard errors or a metric range, so no verdict")
        return "undetermined", nan2, math.nan, notes
    if i is not None:
        bound = float(t[i + 1] - t[i])
        bracket = (float(x[i]), float(x[i + 1]))
        unit = _t_unit(x_unit, fit.log_x)
        notes.append(f"{sharp} at the resolution of the sweep: the whole {change} happens between x={bracket[0]:.4g} "
                     f"and x={bracket[1]:.4g} (no point on it), so its width is at most the gap, {bound:.3g} {unit}")
        if i == 0 or i == n - 2:
            notes.append(f"one side of the {change} is a single point: whether the curve levels off there is not "
                         f"observed")
        return sharp, bracket, bound, notes
    if smooth.verdict == "undetermined" or not math.isfinite(fit.location):
        notes.append(f"points lie on the {change}, but too few for the smooth-versus-sigmoid test"
                     if smooth.verdict == "undetermined" else "no logistic fit to place the transition")
        return "undetermined", nan2, math.nan, notes
    span = float(t[-1] - t[0])
    resolved = t[0] <= fit.location <= t[-1] and fit.width <= span / 2
    if falls:
        notes.append("the curve falls with x (it gets worse in its declared direction)")
    return (sharp if smooth.verdict == "sigmoid" and resolved else "smooth"), nan2, math.nan, notes


# ---------------------------------------------------------------------------------------------
# everything at once

def summarize(x, y, *, log_x: bool = False, n_boot: int = 1000, seed: int = 0, level: float = 0.5, period=None,
              bounds=None, y_err=None, ci: float = 0.95, margin: float = 2.0, value_range=None,
              x_unit: str = "x") -> TransitionSummary:
    """Crossing of ``level`` (absolute y), normalised 10–90 % width, logistic fit with bootstrap
    CIs, steepest segment, the smooth-versus-sigmoid test (``margin`` as there) and the verdict
    (``"sharp"`` with a bracket or a fitted location, ``"smooth"``, ``"no transition"`` or
    ``"undetermined"``; module docstring) of one curve.

    ``value_range`` bounds the metric for the minimum-amplitude rule (:func:`amplitude_check`);
    ``y_err`` gives it the noise and weights the fits. ``x_unit`` names x for the ``units`` maps
    (crossings and brackets in x units; locations, widths and width bounds in x, or log10 x under
    ``log_x``). ``period`` (a positive number in x units, e.g. the length of a concept period in
    tokens) also reports the crossing, the logistic location and the width in periods; the width
    is in log10 units when ``log_x``, so it is not converted then (NaN, with a note).
    """
    if period is not None:
        check_positive_float(period, "period")
    _check_unit(x_unit)
    xs, ys, err, notes = _clean(x, y, y_err)
    amplitude = amplitude_check(ys, err, value_range=value_range)
    if err is not None and not (err > 0).all():
        # A zero stderr (every example scored the same) still bounds the noise of the amplitude
        # rule, but a weight 1/0 would pin the fits to that point: fit unweighted instead.
        notes.append("a zero y_err cannot weight a fit: the fits are unweighted")
        err = None
    fit = logistic_fit(xs, ys, log_x=log_x, bounds=bounds, n_boot=n_boot, ci=ci, seed=seed, y_err=err, x_unit=x_unit)
    cross = crossing(xs, ys, level, log_x=log_x)
    width = transition_width(xs, ys, log_x=log_x)
    steep_x, steep_slope = steepest_segment(xs, ys, log_x=log_x)
    check_finite(margin, "margin")
    smooth = _compare(xs, ys, err, log_x, bounds, "bic", margin, fit, [])
    if not math.isfinite(cross):
        notes.append(f"y never reaches level {level}")
    if fit.note:
        notes.append(f"logistic: {fit.note}")
    verdict, bracket, width_bound, verdict_notes = _verdict(_to_t(xs, log_x, "x"), xs, ys, fit, smooth, amplitude,
                                                            x_unit)
    notes += verdict_notes
    crossing_p = location_p = width_p = math.nan
    if period is not None:
        crossing_p = cross / period
        location_p = fit.location_x() / period
        if log_x:
            notes.append("width is in log10(x) units under log_x, so it is not expressed in periods")
        else:
            width_p = fit.width / period
    return TransitionSummary(int(xs.size), log_x, float(level), cross, width, fit, steep_x, steep_slope, smooth,
                             None if period is None else float(period), crossing_p, location_p, width_p, notes,
                             verdict, bracket, width_bound, amplitude, x_unit)
