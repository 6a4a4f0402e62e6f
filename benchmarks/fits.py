"""The logistic fit through scipy.optimize.least_squares against the hand-written batched
Levenberg–Marquardt (issue #15), on the same curves in the same run, at the defaults the package
uses (``n_boot=1000``, ``seed=0``, ``ci=0.95``).

Two tables. (1) The bootstrap refits alone, on the same replicates: one
``scipy.optimize.least_squares`` call per replicate (``fits.least_squares_fit``) against all
replicates at once (``fits.batched_least_squares``): wall time and the largest difference in the
CI ends. (2) ``logistic_fit`` as it is now (scipy point fit, batched bootstrap) against the old
all-Levenberg–Marquardt version, read from git (``transitions.py`` at ``OLD_COMMIT``) rather
than kept as a copy: wall time, largest differences in location, width and CI ends (t units),
and the ``summarize`` verdicts.

    python -m benchmarks.fits [--repeats 3] [--results benchmarks/RESULTS.md]
"""
from __future__ import annotations

import argparse
import math
import platform
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import scipy

from emergence_fast import fits, transitions

from ._results import emit, provenance

OLD_COMMIT = "4667cd0"   # transitions.py with the batched Levenberg–Marquardt solver
PYTHIA = np.array([70_426_624, 162_322_944, 405_334_016, 1_011_781_632, 1_414_647_808, 2_775_208_960,
                   6_857_302_016, 11_846_072_320], dtype=float)


def old_transitions() -> types.ModuleType:
    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(["git", "show", f"{OLD_COMMIT}:emergence_fast/transitions.py"], cwd=root, check=True,
                            capture_output=True, text=True).stdout
    module = types.ModuleType("transitions_lm")
    sys.modules[module.__name__] = module    # dataclasses look their module up by name
    # our own file from our own history, loaded to time it, not input from outside
    exec(compile(source, f"transitions.py@{OLD_COMMIT}", "exec"), module.__dict__)  # noqa: S102
    return module


def _logistic(t, location, scale, lower, upper):
    return lower + (upper - lower) / (1 + np.exp(-(t - location) / scale))


def curves() -> dict:
    """name -> (x, y, keyword arguments): the shapes the mirage and ICL modules fit."""
    rng = np.random.default_rng(0)
    jump = np.array([0.04, 0.08, 0.0, 0.13, 0.01, 0.14, 0.05, 0.7])
    x14 = np.logspace(7, 11, 14)
    flips = np.arange(1.0, 101.0)
    return {
        "mirage: Pythia 8 sizes, sigmoid + noise": (
            PYTHIA, _logistic(np.log10(PYTHIA), 9.3, 0.25, 0.05, 0.8) + rng.normal(0, 0.02, 8), {"log_x": True}),
        "mirage: Pythia 8 sizes, one-step jump, y_err": (
            PYTHIA, jump, {"log_x": True, "y_err": np.sqrt(np.maximum(jump * (1 - jump), 1 / 200) / 200)}),
        "14 sizes, sigmoid + noise": (
            x14, _logistic(np.log10(x14), 9.2, 0.3, 0.1, 0.9) + rng.normal(0, 0.02, 14), {"log_x": True}),
        "icl: 100 flips, concept curve": (
            flips, _logistic(flips, 30.0, 4.0, 0.9, 0.1) + rng.normal(0, 0.03, 100), {}),
        "straight line (no transition)": (x14, 0.1 * np.log10(x14), {"log_x": True}),
    }


def _time(fn, repeats):
    best, out = math.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def _diff(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    both_nan = np.isnan(a) & np.isnan(b)
    return float(np.max(np.where(both_nan, 0.0, np.abs(a - b))))


def bootstrap_paths(x, y, n_boot, log_x=False, y_err=None, repeats=1):
    """(seconds scipy, seconds batched, max |difference| of the location and width CI ends)."""
    xs, ys, err, _ = transitions._clean(x, y, y_err)
    t = transitions._to_t(xs, log_x, "x")
    weight = None if err is None else 1.0 / err**2
    point, (lower, upper) = transitions._fit_logistic_point(t, ys, weight, None)
    replicates = fits.residual_bootstrap(ys, transitions._logistic(point.theta, t), n_boot, 4,
                                         np.random.default_rng(0), err)
    model, jac = transitions._logistic, transitions._logistic_jacobian

    def scipy_path():
        return np.array([fits.least_squares_fit(model, jac, t, r, point.theta, lower, upper, weight=weight).theta
                         for r in replicates])

    def batched_path():
        return fits.batched_least_squares(model, jac, np.tile(point.theta, (n_boot, 1)), t, replicates, lower,
                                          upper, weight=weight)[0]

    t_scipy, a = _time(scipy_path, repeats)
    t_batch, b = _time(batched_path, repeats)

    def ends(theta):
        ok = np.isfinite(theta).all(axis=1)
        return [*fits.percentile_interval(theta[ok, 0], 0.95),
                *fits.percentile_interval(2 * transitions.LN9 * np.exp(theta[ok, 1]), 0.95)]

    return t_scipy, t_batch, _diff(ends(a), ends(b))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--results", help="append the table to this markdown file")
    args = parser.parse_args(argv)
    old = old_transitions()
    lines = ["#### Logistic fit: scipy.optimize.least_squares against the old batched Levenberg–Marquardt (issue #15)",
             "", (f"- machine: {platform.machine()}, 2 vCPU shared, numpy {np.__version__}, "
             f"scipy {scipy.__version__}; OMP_NUM_THREADS=1"),
             *provenance("fits", argv), (f"- n_boot={args.n_boot}, seed=0, ci=0.95; times are the best of "
             f"{args.repeats} repeat(s)"), "",
             "Bootstrap refits only, the same replicates (free asymptotes):", "",
             ("| curve | one scipy call per replicate (s) | batched LM (s) | ratio | max |Δ| CI ends |"),
             "|---|---:|---:|---:|---:|"]
    for name, (x, y, kwargs) in curves().items():
        t_scipy, t_batch, delta = bootstrap_paths(x, y, args.n_boot, repeats=args.repeats, **kwargs)
        lines.append(f"| {name} | {t_scipy:.3f} | {t_batch:.3f} | {t_scipy / t_batch:.0f} | {delta:.2g} |")
    lines += ["", (f"Whole `logistic_fit` (point fit + bootstrap): now (scipy point fit, batched bootstrap) against the "
              f"all-LM version at {OLD_COMMIT}:"), "",
              ("| curve | old LM (s) | now (s) | max |Δ| location, width | max |Δ| CI ends | converged old/new | "
              "verdict old/new |"), "|---|---:|---:|---:|---:|---|---|"]
    for name, (x, y, kwargs) in curves().items():
        t_old, f_old = _time(lambda x=x, y=y, kw=kwargs: old.logistic_fit(x, y, n_boot=args.n_boot, **kw),
                             args.repeats)
        t_new, f_new = _time(lambda x=x, y=y, kw=kwargs: transitions.logistic_fit(x, y, n_boot=args.n_boot, **kw),
                             args.repeats)
        point = _diff([f_old.location, f_old.width], [f_new.location, f_new.width])
        cis = _diff([*f_old.location_ci, *f_old.width_ci], [*f_new.location_ci, *f_new.width_ci])
        summary = {"value_range": (0.0, 1.0), "n_boot": 0, **kwargs}
        v_old, v_new = old.summarize(x, y, **summary).verdict, transitions.summarize(x, y, **summary).verdict
        lines.append(f"| {name} | {t_old:.3f} | {t_new:.3f} | {point:.2g} | {cis:.2g} | "
                     f"{f_old.converged}/{f_new.converged} | {v_old}/{v_new} |")
    emit(lines, args.results)


if __name__ == "__main__":
    main()
