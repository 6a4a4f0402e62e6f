r"""The fit toolkit shared by :mod:`emergence_fast.transitions`, :mod:`emergence_fast.mirage` and
:mod:`emergence_fast.icl`: curve cleaning, bounded least squares, straight lines and power laws,
the residual bootstrap and percentile intervals.

Everything works on float64 numpy arrays. Nonlinear fits go through
:func:`scipy.optimize.least_squares` (trust-region reflective, which honours box bounds and
reports why it stopped); straight lines are closed-form weighted least squares, batched over
bootstrap replicates. The one exception is the refit of many bootstrap replicates of a
nonlinear curve, :func:`batched_least_squares`: one scipy call per replicate costs 2–12 s per
curve at the default 1000 replicates, 26–200 times the batched Levenberg–Marquardt iteration
kept here (``benchmarks/fits.py``, recorded in ``benchmarks/RESULTS.md``), and a mirage or ICL
report fits one curve per metric or concept.

Residual bootstrap (Efron & Tibshirani 1993, *An Introduction to the Bootstrap*, ch. 9): for a
fixed design (model sizes, shot counts chosen by the experimenter, not sampled) the fitted curve
:math:`\hat y` is kept and its centred residuals are resampled with replacement, rescaled by
:math:`\sqrt{n/(n-k)}` for the :math:`k` parameters the fit used. With per-point standard errors
:math:`\sigma_i` the replicates are parametric instead,
:math:`\hat y_i + \varepsilon_i,\ \varepsilon_i \sim N(0, (\phi\sigma_i)^2)`, with
:math:`\phi = \max(1, \sqrt{\chi^2/(n-k)})` inflating the stated errors when the curve misses
them (the Particle Data Group's scale factor).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy.optimize import least_squares

from ._validation import check_int, check_probability

# ---------------------------------------------------------------------------------------------
# curve cleaning

def as_1d(values, name: str) -> np.ndarray:
    """``values`` as a float64 ``[n]`` array.

    Raises
    ------
    TypeError
        ``"<name> must be a 1-D sequence of numbers..."`` for None, a string or non-numbers.
    ValueError
        ``"<name> must be 1-D, got shape (...)"`` for any other number of dimensions.
    """
    if isinstance(values, (str, bytes)) or values is None:
        raise TypeError(f"{name} must be a 1-D sequence of numbers, got {type(values).__name__}")
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a 1-D sequence of numbers: {exc}") from exc
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    return array


class CleanCurve(NamedTuple):
    """A curve with its non-finite points dropped, sorted by x (see :func:`clean_curve`).

    ``x``, ``y``, ``y_err`` (None when not given) are float64 ``[m]``; ``index`` (int ``[m]``) gives
    the position of each kept point in the input, so that other per-point arrays can be aligned
    with ``values[index]``; ``n_dropped`` counts the points left out.
    """

    x: np.ndarray
    y: np.ndarray
    y_err: np.ndarray | None
    index: np.ndarray
    n_dropped: int


def clean_curve(x, y, y_err=None, *, names: tuple[str, str, str] = ("x", "y", "y_err")) -> CleanCurve:
    """Drop the points where x, y (or y_err) is not finite, or y_err is negative, and sort by x.

    Parameters
    ----------
    x, y : sequence of float, shape [n]
        The curve, in any order.
    y_err : sequence of float, shape [n], optional
        Per-point standard errors (y units); a point whose y_err is NaN, infinite or negative
        is dropped with the others.
    names : (str, str, str)
        How error messages name x, y and y_err.

    Returns
    -------
    CleanCurve
        Float64 copies ``[m]``, ``m <= n``, sorted by x with a stable sort (ties keep their input
        order), with the input positions ``index`` and the count ``n_dropped``.

    Raises
    ------
    TypeError
        An argument that is not a sequence of numbers.
    ValueError
        An argument that is not 1-D, or lengths that differ (``"x and y must have the same
        length, got 3 and 2"``).
    """
    x, y = as_1d(x, names[0]), as_1d(y, names[1])
    if x.shape != y.shape:
        raise ValueError(f"{names[0]} and {names[1]} must have the same length, got {x.size} and {y.size}")
    keep = np.isfinite(x) & np.isfinite(y)
    err = None
    if y_err is not None:
        err = as_1d(y_err, names[2])
        if err.shape != y.shape:
            raise ValueError(f"{names[2]} must have the length of {names[1]} ({y.size}), got {err.size}")
        keep &= np.isfinite(err) & (err >= 0)
    kept = np.flatnonzero(keep)
    index = kept[np.argsort(x[kept], kind="stable")]
    return CleanCurve(x[index], y[index], None if err is None else err[index], index, int(x.size - index.size))


# ---------------------------------------------------------------------------------------------
# least squares

@dataclass(frozen=True)
class LeastSquaresFit:
    """The best of one or more bounded least-squares runs (:func:`least_squares_fit`).

    ``theta`` float64 ``[k]`` (fixed parameters included), ``rss`` the weighted residual sum of
    squares ``sum(weight * (model - y)**2)`` in squared y units (inf when no start gave a finite
    one), ``converged`` whether scipy met a tolerance (``status > 0``) rather than running out of
    evaluations, ``message`` scipy's reason for stopping.
    """

    theta: np.ndarray
    rss: float
    converged: bool
    message: str


def least_squares_fit(model: Callable, jacobian: Callable, t, y, starts, lower, upper, *,
                      weight=None, max_nfev: int | None = None) -> LeastSquaresFit:
    """Minimise ``sum(weight * (model(theta, t) - y)**2)`` inside a box, from one or more starts.

    A thin layer over :func:`scipy.optimize.least_squares` (method ``"trf"``): a parameter whose
    lower and upper bounds are equal is held fixed (scipy needs a non-empty box), and the best
    start by residual sum of squares wins.

    Parameters
    ----------
    model : callable
        ``model(theta [k], t [n]) -> [n]`` (a model written for ``theta [..., k]`` serves
        :func:`batched_least_squares` too).
    jacobian : callable
        ``jacobian(theta [k], t [n]) -> [n, k]``, the derivative of ``model`` by ``theta``.
    t, y : ndarray, shape [n]
        Abscissa and observations.
    starts : array_like, shape [k] or [S, k]
        Starting points; each is clipped into the box first.
    lower, upper : array_like, shape [k]
        The box (``-inf``/``inf`` for no bound); ``lower == upper`` fixes that parameter.
    weight : ndarray, shape [n], optional
        Non-negative weights, e.g. ``1 / y_err**2``; None weighs every point 1.
    max_nfev : int, optional
        Most model evaluations per start (scipy's default when None).

    Returns
    -------
    LeastSquaresFit
        NaN ``theta`` with ``rss=inf`` when every start gives a non-finite residual.
    """
    lower, upper = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
    free = lower < upper
    sqrt_w = np.ones_like(t) if weight is None else np.sqrt(weight)
    best = LeastSquaresFit(np.full(lower.size, math.nan), math.inf, False, "no start gave a finite residual")
    for start in np.atleast_2d(np.asarray(starts, dtype=np.float64)):
        theta = np.clip(start, lower, upper)

        def full(p, theta=theta):
            out = theta.copy()
            out[free] = p
            return out

        def residual(p):
            return sqrt_w * (model(full(p), t) - y)

        def residual_jacobian(p):
            return sqrt_w[:, None] * jacobian(full(p), t)[:, free]

        if not np.isfinite(residual(theta[free])).all():
            continue
        result = least_squares(residual, theta[free], jac=residual_jacobian, bounds=(lower[free], upper[free]),
                               method="trf", max_nfev=max_nfev)
        rss = float(2.0 * result.cost)
        if math.isfinite(rss) and rss < best.rss:
            best = LeastSquaresFit(full(result.x), rss, bool(result.status > 0), str(result.message))
    return best


def batched_least_squares(model: Callable, jacobian: Callable, theta, t, y, lower, upper, *, weight=None,
                          max_iter: int = 100) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Levenberg–Marquardt (Levenberg 1944; Marquardt 1963) on B problems at once, inside a box.

    Meant for bootstrap replicates started near their optimum (the point estimate): every
    iteration is a handful of batched numpy operations over all B problems, where
    :func:`least_squares_fit` would make B scipy calls (module docstring for the measurement).
    A step that leaves the box is clipped to it; a problem stops when a step improves its
    residual sum of squares by at most 1e-9 of it (converged) or its damping exceeds 1e12.

    Parameters
    ----------
    model, jacobian : callable
        As for :func:`least_squares_fit`, but batched: ``model(theta [B, k], t [n]) -> [B, n]``,
        ``jacobian(theta [B, k], t [n]) -> [B, n, k]``.
    theta : ndarray, shape [B, k]
        Starting points.
    t : ndarray, shape [n]
    y : ndarray, shape [B, n]
        One curve per problem, on the same abscissa.
    lower, upper : ndarray, shape [k]
        The box; ``lower == upper`` holds a parameter fixed.
    weight : ndarray, shape [n], optional
        Weights of the squared residuals (None: all 1).
    max_iter : int
        Most iterations.

    Returns
    -------
    theta : ndarray, shape [B, k]
    rss : ndarray, shape [B]
        Weighted residual sums of squares (inf where the start was not finite).
    converged : ndarray of bool, shape [B]
    """
    lower, upper = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
    sqrt_w = (np.ones_like(t) if weight is None else np.sqrt(weight))[None, :]
    mask = (lower < upper).astype(np.float64)
    theta = np.clip(np.array(theta, dtype=np.float64), lower, upper)
    y = np.asarray(y, dtype=np.float64)

    def cost(th, target):
        r = (model(th, t) - target) * sqrt_w
        return (r * r).sum(axis=1)

    rss = cost(theta, y)
    lam = np.full(theta.shape[0], 1e-3)
    done = ~np.isfinite(rss)
    converged = np.zeros(theta.shape[0], dtype=bool)
    eye = np.eye(theta.shape[1])
    for _ in range(max_iter):
        active = ~done
        if not active.any():
            break
        th = theta[active]
        r = (model(th, t) - y[active]) * sqrt_w
        jac = jacobian(th, t) * sqrt_w[..., None] * mask
        jac_t = jac.transpose(0, 2, 1)
        jtj = jac_t @ jac                      # batched matmul: much faster than einsum here
        grad = (jac_t @ r[..., None])[..., 0]
        damp = lam[active][:, None, None] * (jtj * eye + 1e-12 * eye)
        # Fixed parameters get a unit diagonal and zero gradient, so their step is exactly 0.
        system = jtj + damp + (1.0 - mask)[None, :, None] * eye
        try:
            step = np.linalg.solve(system, -grad[..., None])[..., 0]
        except np.linalg.LinAlgError:
            step = np.stack([np.linalg.lstsq(a, -g, rcond=None)[0] for a, g in zip(system, grad)])
        candidate = np.clip(th + step, lower, upper)
        new_rss = cost(candidate, y[active])
        old_rss = rss[active]
        better = np.isfinite(new_rss) & (new_rss <= old_rss)
        idx = np.flatnonzero(active)
        improvement = np.where(better, old_rss - new_rss, 0.0)
        theta[idx[better]] = candidate[better]
        rss[idx[better]] = new_rss[better]
        lam[idx] = np.where(better, lam[idx] / 3.0, lam[idx] * 4.0)
        small = better & (improvement <= 1e-9 * np.maximum(old_rss, 1e-300))
        stuck = lam[idx] > 1e12
        converged[idx[small | (stuck & (rss[idx] < np.inf))]] = True
        done[idx[small | stuck]] = True
    return theta, rss, converged


def fit_line(t, y, weight=None) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least-squares line ``y = intercept + slope * t``, batched over replicates.

    Parameters
    ----------
    t : ndarray, shape [n]
        Abscissa, at least two distinct values (else the slope is NaN or infinite).
    y : ndarray, shape [n] or [B, n]
        One curve or B replicates on the same abscissa.
    weight : ndarray, shape [n], optional
        Non-negative weights (None: all 1).

    Returns
    -------
    (intercept, slope) : float64 ndarrays of shape ``y.shape[:-1]`` (0-d for one curve).
    """
    t, y = np.asarray(t, dtype=np.float64), np.asarray(y, dtype=np.float64)
    w = np.ones_like(t) if weight is None else np.asarray(weight, dtype=np.float64)
    t_mean = float(np.sum(w * t) / np.sum(w))
    tc = t - t_mean
    y_mean = (y * w).sum(axis=-1) / np.sum(w)
    slope = ((y - y_mean[..., None]) * (w * tc)).sum(axis=-1) / float(np.sum(w * tc * tc))
    return y_mean - slope * t_mean, slope


@dataclass(frozen=True)
class PowerLaw:
    """A power law ``y = a * x**b`` (:func:`fit_power_law`).

    ``a`` in y units, ``b`` dimensionless; ``rss`` the (weighted) residual sum of squares in the
    space of the fit (y, or log y); ``converged`` as in :class:`LeastSquaresFit` (always True
    for the closed-form log-space fit); ``note`` says why the fields are NaN, if they are.
    """

    a: float
    b: float
    rss: float
    converged: bool
    note: str = ""

    def predict(self, x) -> np.ndarray:
        """``a * x**b`` at ``x`` (float64, the shape of ``x``)."""
        return self.a * np.asarray(x, dtype=np.float64) ** self.b


def _power(theta, x):
    return theta[0] * x ** theta[1]


def _power_jacobian(theta, x):
    xb = x ** theta[1]
    return np.stack([xb, theta[0] * xb * np.log(x)], axis=-1)


def fit_power_law(x, y, *, weight=None, space: str = "y") -> PowerLaw:
    """Least-squares power law ``y = a * x**b``.

    Parameters
    ----------
    x : ndarray, shape [n]
        Positive abscissa (a model size, a shot count).
    y : ndarray, shape [n]
        Observations of one sign, none zero (``a x^b`` never changes sign).
    weight : ndarray, shape [n], optional
        Weights of the residuals in the space of the fit (e.g. ``1 / y_err**2`` with ``space="y"``).
    space : {"y", "log"}
        ``"log"`` fits the straight line ``log|y| = log|a| + b log x`` (closed form: errors
        multiplicative, as for a loss); ``"y"`` minimises the residuals on the y scale, started
        from the log-space line (errors additive, as for an accuracy).

    Returns
    -------
    PowerLaw
        NaN fields and a ``note`` when x is not positive, y changes sign or is zero, or x has a
        single distinct value.

    Raises
    ------
    ValueError
        ``space`` not one of ``"y"``, ``"log"``.
    """
    if space not in ("y", "log"):
        raise ValueError(f"space must be 'y' or 'log', got {space!r}")
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    nan = math.nan
    if (x <= 0).any():
        return PowerLaw(nan, nan, nan, False, "needs x > 0")
    if not ((y > 0).all() or (y < 0).all()):
        return PowerLaw(nan, nan, nan, False, "needs y of one sign and non-zero (a x^b never changes sign)")
    if np.ptp(x) == 0:
        return PowerLaw(nan, nan, nan, False, "needs at least two distinct x")
    sign = 1.0 if y[0] > 0 else -1.0
    u, v = np.log(x), np.log(np.abs(y))
    intercept, slope = (float(value) for value in fit_line(u, v, weight if space == "log" else None))
    if space == "log":
        w = np.ones_like(u) if weight is None else weight
        rss = float(np.sum(w * (v - intercept - slope * u) ** 2))
        return PowerLaw(sign * math.exp(intercept), slope, rss, True)
    unbounded = np.full(2, np.inf)
    fit = least_squares_fit(_power, _power_jacobian, x, y, [sign * math.exp(intercept), slope], -unbounded,
                            unbounded, weight=weight)
    return PowerLaw(float(fit.theta[0]), float(fit.theta[1]), fit.rss, fit.converged)


# ---------------------------------------------------------------------------------------------
# bootstrap

def residual_bootstrap(y, fitted, n_boot: int, n_params: int, rng: np.random.Generator, y_err=None) -> np.ndarray:
    """Replicates of a fixed-design curve: the fit plus resampled residuals (module docstring).

    Parameters
    ----------
    y, fitted : ndarray, shape [n]
        Observations and the fitted curve at the same points (y units).
    n_boot : int
        Number of replicates, >= 0.
    n_params : int
        Parameters the fit used, ``0 <= n_params < n`` (the degrees-of-freedom rescaling).
    rng : numpy.random.Generator
        The source of the draws (one ``integers`` or one ``standard_normal`` call of
        ``[n_boot, n]``, so a seed gives the same replicates every time).
    y_err : ndarray, shape [n], optional
        Per-point standard errors (> 0): parametric Gaussian replicates instead of resampled
        residuals.

    Returns
    -------
    ndarray, float64, shape [n_boot, n]

    Raises
    ------
    ValueError
        ``n_boot`` negative or ``n_params`` not below the number of points.
    """
    y, fitted = np.asarray(y, dtype=np.float64), np.asarray(fitted, dtype=np.float64)
    n = y.size
    n_boot = check_int(n_boot, "n_boot", minimum=0)
    n_params = check_int(n_params, "n_params", minimum=0, maximum=n - 1)
    if y_err is None:
        resid = (y - fitted) - np.mean(y - fitted)
        resid *= math.sqrt(n / (n - n_params))
        return fitted + resid[rng.integers(0, n, size=(n_boot, n))]
    err = np.asarray(y_err, dtype=np.float64)
    chi2 = float(np.sum(((y - fitted) / err) ** 2))
    phi = max(1.0, math.sqrt(chi2 / (n - n_params)))
    return fitted + rng.standard_normal((n_boot, n)) * (phi * err)


def percentile_interval(values, ci: float) -> tuple[float, float]:
    """The central ``ci`` percentile interval of ``values`` (float ``[B]``); (nan, nan) when empty.

    Raises ValueError unless ``0 < ci < 1``.
    """
    ci = check_probability(ci, "ci", low_open=True, high_open=True)
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return math.nan, math.nan
    tail = 100 * (1 - ci) / 2
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)
