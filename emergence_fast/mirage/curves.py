r"""How emergent a metric-versus-scale curve looks, and what a power law in loss predicts for it.

Every statistic orients the metric so that higher is better first (:math:`y \to -y` for a
lower-is-better metric such as a Brier score or an edit distance), then sorts the points by x.

Emergence score (Schaeffer, Miranda & Koyejo, NeurIPS 2023, arXiv 2304.15004, in their meta-analysis
of BIG-bench):

.. math::

    \mathrm{ES} = \frac{\operatorname{sign}(\arg\max_i y_i - \arg\min_i y_i)\,(\max_i y_i - \min_i y_i)}
                       {\sqrt{\operatorname{median}_i\,(y_i - y_{i-1})^2}} .

It is invariant to :math:`y \to a y + b` with :math:`a > 0`, changes sign for a decreasing
curve, and is large when the whole change happens in a few of the steps between neighbouring
models, wherever those steps are: a geometric decay such as a power-law loss, whose change is
front-loaded on a log axis, scores as high as a late jump, so the sigmoid test of
:mod:`emergence_fast.transitions` is what tells a transition from a saturating curve.
BIG-bench (Srivastava et al. 2022, arXiv 2206.04615, App. B) defines, with the same numerator
:math:`I = \operatorname{sign}(\arg\max y - \arg\min y)(\max y - \min y)`,

.. math::

    B = \frac{I}{\operatorname{RootMedianSquare}_i(y_{i+1} - y_i)}, \qquad
    L = \frac{I}{\operatorname{RootMeanSquare}_i(y_{i+1} - y_i)} ,

breakthroughness :math:`B` (identical to the emergence score, which Schaeffer et al. adopted from
it) and linearity :math:`L` (both as we read App. B; the appendix text could not be checked
while this was written, so compare with it before quoting :math:`L` against BIG-bench numbers). A curve rising in :math:`n-1` equal steps has :math:`L = B = n-1`;
a single jump has :math:`L = \sqrt{n-1}` and :math:`B = \infty`.

Degenerate curves are reported, never crashed on: fewer than 3 points gives NaN; a flat curve
(:math:`\max y = \min y`) gives NaN; a zero median step with a non-zero range (the curve moves
in fewer than half of its steps) gives :math:`\pm\infty` for ES and B. :func:`curve_statistics`
says which applies.

Resolution floor. A proportion measured on :math:`N_\text{test}` examples moves in steps of
:math:`1/N_\text{test}`, so a true accuracy below about :math:`1/N_\text{test}` cannot be told
from zero (Schaeffer et al.: emergence should fade with better statistics). Points below the
floor are flagged; each point carries a CI (bootstrap over examples when they are available,
else ±z·stderr from the file).

Power law in loss (Schaeffer et al.'s model; Kaplan et al. 2020, arXiv 2001.08361): per-token
cross-entropy :math:`\mathcal L(N) = (N/c)^{\alpha}` with :math:`\alpha < 0`, fitted as the
straight line :math:`\log\mathcal L = \alpha\log N - \alpha\log c`, with residual-bootstrap CIs for
:math:`\alpha` and :math:`c`. With :math:`p(N) = e^{-\mathcal L(N)}` it predicts an exact-match
accuracy :math:`p^L` and a token edit distance :math:`L(1-p)` for targets of :math:`L` tokens,
which :func:`compare_prediction` sets against the observed curves.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .. import transitions
from .._validation import check_bool, check_int, check_probability, check_seed
from ..fits import clean_curve, fit_line, fit_power_law, percentile_interval, residual_bootstrap


def _xy(x, y, higher_is_better: bool):
    """Sorted, finite, higher-is-better float64 copies of x and y."""
    check_bool(higher_is_better, "higher_is_better")
    curve = clean_curve(x, y)
    return curve.x, (curve.y if higher_is_better else -curve.y)


def _improvement(y: np.ndarray) -> float:
    return float(np.sign(int(np.argmax(y)) - int(np.argmin(y))) * (np.max(y) - np.min(y)))


def _ratio(numerator: float, denominator: float) -> float:
    if numerator == 0:
        return math.nan  # flat curve: 0 / anything is no evidence either way
    if denominator == 0:
        return math.copysign(math.inf, numerator)
    return numerator / denominator


def emergence_score(x, y, *, higher_is_better: bool = True) -> float:
    """Schaeffer et al.'s emergence score of y(x); NaN (< 3 points, flat) or ±inf (zero median step)."""
    _, y = _xy(x, y, higher_is_better)
    if y.size < 3:
        return math.nan
    return _ratio(_improvement(y), math.sqrt(float(np.median(np.diff(y) ** 2))))


def breakthroughness(x, y, *, higher_is_better: bool = True) -> float:
    """BIG-bench breakthroughness ``I / RootMedianSquare(Δy)``: the same number as :func:`emergence_score`."""
    return emergence_score(x, y, higher_is_better=higher_is_better)


def linearity(x, y, *, higher_is_better: bool = True) -> float:
    """BIG-bench linearity ``I / RootMeanSquare(Δy)``; NaN with fewer than 3 points or a flat curve."""
    _, y = _xy(x, y, higher_is_better)
    if y.size < 3:
        return math.nan
    return _ratio(_improvement(y), math.sqrt(float(np.mean(np.diff(y) ** 2))))


def resolution_floor(n_test) -> np.ndarray:
    """``1 / n_test``: the smallest non-zero proportion a test set of that size can show."""
    n = np.asarray(n_test, dtype=np.float64)
    if np.any(n[np.isfinite(n)] < 1):
        raise ValueError(f"n_test must be at least 1, got {n.tolist()}")
    return 1.0 / n


def below_floor(values, n_test) -> np.ndarray:
    """True where a proportion is below ``1 / n_test`` (unknown n_test: False)."""
    values = np.asarray(values, dtype=np.float64)
    floor = resolution_floor(n_test)
    return np.isfinite(floor) & (values < floor)


@dataclass(frozen=True)
class CurveStatistics:
    """Every curve statistic of one metric across a model family (metric oriented higher-is-better).

    ``verdict`` is the transition verdict of :func:`emergence_fast.transitions.summarize`
    (``"sharp"``, ``"sharp drop"``, ``"smooth"``, ``"no transition"``, ``"undetermined"``) on a log10(parameters)
    axis; ``sharp`` is the same as a bool (None when undetermined). Locations and their CIs in
    ``transition.logistic`` are in log10(parameters), its widths in decades (log10(parameters));
    :meth:`location_x` and :meth:`bracket_x` give parameters.
    """

    metric: str
    n_points: int
    higher_is_better: bool
    emergence_score: float
    linearity: float
    breakthroughness: float
    transition: transitions.TransitionSummary
    sharp: bool | None
    n_below_floor: int = 0
    notes: list = field(default_factory=list)
    verdict: str = "undetermined"

    def location_x(self) -> tuple[float, float, float]:
        """The logistic location and its CI in parameters (the fit's own are in log10(parameters))."""
        fit = self.transition.logistic
        lo, hi = fit.location_ci
        return fit.location_x(), 10.0 ** lo, 10.0 ** hi

    def bracket_x(self) -> tuple[float, float]:
        """The two adjacent model sizes (parameters) between which a one-step rise happens; NaN otherwise."""
        return self.transition.bracket

    def to_dict(self) -> dict:
        return {"metric": self.metric, "n_points": self.n_points, "higher_is_better": self.higher_is_better,
                "emergence_score": self.emergence_score, "linearity": self.linearity,
                "breakthroughness": self.breakthroughness, "verdict": self.verdict, "sharp": self.sharp,
                "n_below_floor": self.n_below_floor, "transition": self.transition.to_dict(), "notes": list(self.notes)}


def curve_statistics(x, y, *, metric: str = "y", higher_is_better: bool = True, y_err=None, n_test=None,
                     proportion: bool = False, n_boot: int = 1000, ci: float = 0.95, seed: int = 0,
                     margin: float = 2.0) -> CurveStatistics:
    """Emergence score, BIG-bench linearity and breakthroughness, and the transition statistics and
    verdict of :func:`emergence_fast.transitions.summarize` on a log10(parameters) axis, for one metric.

    ``verdict`` (module docstring of :mod:`emergence_fast.transitions`): ``"sharp"`` (``"sharp drop"``
    when the metric gets worse with scale in its declared direction) when the whole
    rise happens between two adjacent model sizes (``transition.bracket``, in parameters; the
    width is then at most their gap in decades), or when a sigmoid beats both smooth fits by more
    than ``margin`` in BIC with its transition inside the observed sizes and a 10–90 % width of at
    most half their range; ``"smooth"`` when points lie on the rise and the smooth fits are as
    good, or the transition is broad or outside the data; ``"no transition"`` when the rise fails
    the shared minimum-amplitude rule (:func:`emergence_fast.transitions.amplitude_check`, with
    ``y_err`` as the noise and (0, 1) as the range of a ``proportion``) or the curve is flat;
    ``"undetermined"`` otherwise (fewer than 3 models, or points on the rise but fewer than 6).
    ``sharp`` is ``verdict == "sharp"``, None when undetermined. ``y_err`` (per-point standard
    errors) also weights the fits; ``n_test`` with ``proportion=True`` counts the points below
    the resolution floor.
    """
    if not isinstance(metric, str):
        raise TypeError(f"metric must be a str, got {type(metric).__name__}")
    check_bool(higher_is_better, "higher_is_better")
    xs, y_raw, _, index, n_dropped = clean_curve(x, y)
    n_all = xs.size + n_dropped

    def aligned(values, name):
        values = np.broadcast_to(np.asarray(values, dtype=np.float64), (n_all,)) if np.ndim(values) == 0 \
            else np.asarray(values, dtype=np.float64)
        if values.shape != (n_all,):
            raise ValueError(f"{name} must have the length of x ({n_all}), got shape {values.shape}")
        return values[index]

    ys = y_raw if higher_is_better else -y_raw
    err = None if y_err is None else aligned(y_err, "y_err")
    if err is not None and not (np.isfinite(err) & (err >= 0)).all():
        err = None  # an unknown stderr gives no noise level (a zero one still does; summarize then fits unweighted)
    notes = []
    n = int(xs.size)
    if n_dropped:
        notes.append(f"{n_dropped} point(s) with non-finite values left out")
    es, lin = emergence_score(xs, ys), linearity(xs, ys)
    if n < 3:
        notes.append(f"a family of {n} model(s): the emergence score, linearity and transition need at least 3")
    elif np.max(ys) == np.min(ys):
        notes.append("flat curve: every model scores the same, so there is no transition (and no emergence score)")
    elif math.isinf(es):
        notes.append("the median step between neighbouring models is zero (the curve moves in fewer than half of "
                     "its steps): emergence score and breakthroughness are infinite")
    n_below = 0
    if proportion and n_test is not None:
        n_below = int(below_floor(y_raw, aligned(n_test, "n_test")).sum())
        if n_below:
            notes.append(f"{n_below} point(s) below the resolution floor 1/N_test: not distinguishable from zero")
    if n and (xs <= 0).any():
        raise ValueError(f"x must be positive (it is read on a log axis), got {xs[xs <= 0][:3].tolist()}")
    summary = transitions.summarize(xs, ys, log_x=True, n_boot=n_boot, seed=seed, ci=ci, y_err=err, margin=margin,
                                    level=float(np.mean([np.min(ys), np.max(ys)])) if n else 0.5,
                                    value_range=(0.0, 1.0) if proportion else None, x_unit="parameters")
    sharp = None if summary.verdict == "undetermined" else summary.verdict == "sharp"
    notes += [note for note in summary.notes if n >= 3]
    return CurveStatistics(metric, n, higher_is_better, es, lin, breakthroughness(xs, ys), summary, sharp, n_below,
                           notes, summary.verdict)


# ---------------------------------------------------------------------------------------------
# power law in loss

@dataclass(frozen=True)
class PowerLawFit:
    """``L(N) = (N / c) ** alpha`` fitted to per-token losses; CIs from a residual bootstrap in log space.

    ``alpha`` (and ``alpha_ci``) is dimensionless, ``c`` (and ``c_ci``) is in parameters, like N.
    """

    alpha: float
    c: float
    alpha_ci: tuple[float, float]
    c_ci: tuple[float, float]
    r2: float
    n_points: int
    note: str = ""

    def loss(self, n_params) -> np.ndarray:
        return (np.asarray(n_params, dtype=np.float64) / self.c) ** self.alpha

    def token_prob(self, n_params) -> np.ndarray:
        return np.exp(-self.loss(n_params))

    def predicted_accuracy(self, n_params, length) -> np.ndarray:
        """Exact-match accuracy ``p ** L``; ``length`` may be per example (``[M]``), averaged over them."""
        return _over_lengths(self.token_prob(n_params), length, lambda p, L: p**L)

    def predicted_edit_distance(self, n_params, length) -> np.ndarray:
        """Token edit distance ``L (1 - p)``, averaged over per-example lengths if given."""
        return _over_lengths(self.token_prob(n_params), length, lambda p, L: L * (1 - p))

    def to_dict(self) -> dict:
        return {"alpha": self.alpha, "c": self.c, "alpha_ci": list(self.alpha_ci), "c_ci": list(self.c_ci),
                "r2": self.r2, "n_points": self.n_points, "note": self.note,
                "units": {"alpha": "dimensionless (d ln L / d ln N)", "alpha_ci": "dimensionless",
                          "c": "parameters", "c_ci": "parameters"}}


def _over_lengths(p: np.ndarray, length, formula) -> np.ndarray:
    lengths = np.asarray(length, dtype=np.float64)
    if lengths.ndim > 1 or (lengths.size and np.any(lengths <= 0)):
        raise ValueError(f"length must be a positive number or a 1-D array of them, got {length!r}")
    if lengths.ndim == 0:
        return formula(p, float(lengths))
    return formula(p[:, None], lengths[None, :]).mean(axis=1)


def fit_loss_power_law(n_params, loss, *, n_boot: int = 1000, ci: float = 0.95, seed: int = 0) -> PowerLawFit:
    """Least-squares ``log L = alpha log N - alpha log c`` with residual-bootstrap CIs.

    Parameters
    ----------
    n_params, loss : sequence of float, shape [n]
        Model sizes (parameters) and per-token cross-entropies (nats); points that are not finite
        or not positive are left out.
    n_boot : int
        Bootstrap replicates (0: no CIs).
    ci : float
        Coverage of the percentile intervals, in (0, 1).
    seed : int
        Seed of the bootstrap.

    Returns
    -------
    PowerLawFit
        NaN fields and a note on degenerate input (fewer than 3 usable points, one size).

    Raises
    ------
    TypeError, ValueError
        Malformed or mismatched ``n_params``/``loss``, or a bad ``n_boot``, ``ci`` or ``seed``.
    """
    n_boot = check_int(n_boot, "n_boot", minimum=0)
    check_probability(ci, "ci", low_open=True, high_open=True)
    seed = check_seed(seed)
    n_params, loss, *_ = clean_curve(n_params, loss, names=("n_params", "loss", ""))
    nan2 = (math.nan, math.nan)
    keep = (n_params > 0) & (loss > 0)
    n = int(keep.sum())
    if n < 3:
        return PowerLawFit(math.nan, math.nan, nan2, nan2, math.nan, n,
                           f"a power law needs at least 3 points with positive N and loss, got {n}")
    u, v = np.log(n_params[keep]), np.log(loss[keep])
    if np.ptp(u) == 0:
        return PowerLawFit(math.nan, math.nan, nan2, nan2, math.nan, n, "all models have the same size")
    # L = (N / c)^alpha = a N^alpha with log a = -alpha log c: a power law fitted in log space.
    power = fit_power_law(n_params[keep], loss[keep], space="log")
    slope, intercept = power.b, math.log(power.a)
    fitted = intercept + slope * u
    tss = float(np.sum((v - v.mean()) ** 2))
    r2 = 1 - power.rss / tss if tss > 0 else math.nan
    alpha, c = float(slope), (math.exp(-intercept / slope) if slope != 0 else math.nan)
    notes = [] if slope < 0 else ["loss does not fall with N (alpha >= 0)"]
    alpha_ci = c_ci = nan2
    if n_boot:
        boot_v = residual_bootstrap(v, fitted, n_boot, 2, np.random.default_rng(seed))
        intercepts, slopes = fit_line(u, boot_v)
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            log_cs = -intercepts / slopes
        alpha_ci = percentile_interval(slopes, ci)
        finite = np.isfinite(log_cs)
        if finite.any():
            c_ci = tuple(math.exp(min(q, 700.0)) for q in percentile_interval(log_cs[finite], ci))
    return PowerLawFit(alpha, c, alpha_ci, c_ci, r2, n, "; ".join(notes))


def compare_prediction(observed, predicted) -> dict:
    """How a predicted curve matches the observed one: RMSE, largest absolute gap, Pearson r."""
    observed, predicted = np.asarray(observed, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    if observed.shape != predicted.shape:
        raise ValueError(f"observed and predicted must have the same shape, got {observed.shape} and {predicted.shape}")
    keep = np.isfinite(observed) & np.isfinite(predicted)
    if keep.sum() < 2:
        return {"rmse": math.nan, "max_abs": math.nan, "pearson": math.nan, "n": int(keep.sum())}
    diff = observed[keep] - predicted[keep]
    pearson = (float(np.corrcoef(observed[keep], predicted[keep])[0, 1])
               if np.ptp(observed[keep]) > 0 and np.ptp(predicted[keep]) > 0 else math.nan)
    return {"rmse": float(np.sqrt(np.mean(diff**2))), "max_abs": float(np.max(np.abs(diff))), "pearson": pearson,
            "n": int(keep.sum())}
