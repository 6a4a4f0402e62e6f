r"""The metric-choice report: per-metric curve statistics, a verdict, a table, JSON/CSV and a figure.

For each metric of a :class:`~.readers.Family` :func:`analyse` computes the point CIs (bootstrap
over examples for live runs, :math:`\pm z\,\mathrm{se}` from the result file otherwise), the
curve statistics of :func:`~.curves.curve_statistics` on a log-parameter axis, and a verdict that
compares the metrics of the same outputs, from each metric's transition verdict
(:mod:`emergence_fast.transitions`: sharp, smooth, no transition, undetermined):

* ``"sharp under all"``: every metric whose verdict could be decided is sharp;
* ``"sharp under this metric only"``: this metric is sharp and every other decided one is smooth
  or has no transition, the signature of a metric-made transition (Schaeffer et al. 2023);
* ``"sharp under k of n metrics"``: in between;
* ``"sharp drop"``: the metric gets worse with scale (in its declared direction) in one step or
  a resolved sigmoid, a degradation rather than an emergence;
* ``"smooth"``, ``"no transition"`` (the rise fails the minimum-amplitude rule of
  :func:`emergence_fast.transitions.amplitude_check`, or the curve is flat) and ``"undetermined"``
  (fewer than 3 models, or points on the rise but too few for the smooth-versus-sigmoid test).

A metric is sharp when the whole rise happens between two adjacent model sizes (the table shows
that bracket, in parameters) or when a resolved sigmoid beats the smooth fits (the table shows
its location and CI, in parameters). Widths are in decades, log10(parameters). The noise of the
amplitude rule is the result file's stderr, or for live runs the standard error of the mean over
examples.

When a per-token loss is available (live runs: the mean :math:`-\log p` of the answer tokens;
lm-evaluation-harness perplexity: :math:`\log\mathrm{ppl}` per target word, so :math:`L = 1`), the
power law :math:`\mathcal L(N) = (N/c)^\alpha` is fitted and its predicted exact-match accuracy
:math:`p^L` and edit distance :math:`L(1-p)` are compared with the observed curves.

Files are written through a temporary name and ``os.replace`` so a reader never sees half a file.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist

import numpy as np

from .. import transitions
from .._optional import require
from ..report import text_table, write_csv, write_figure, write_json  # noqa: F401 (write_csv, write_json: this module's API)
from . import curves
from .metrics import aggregate, metric_spec
from .readers import Family

_ACCURACY_NAMES = ("exact_match", "acc", "exact_str_match", "em")
_EDIT_NAMES = ("token_edit_distance",)


@dataclass
class MetricCurve:
    """One metric across the family: values, CI per point and how the CI was obtained."""

    name: str
    values: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    higher_is_better: bool
    proportion: bool
    interval: str


@dataclass
class MirageReport:
    """Everything :func:`analyse` found; ``table()`` for people, ``to_dict()`` / ``to_rows()`` for files."""

    task: str
    models: list
    params: np.ndarray
    n_test: np.ndarray
    curves: dict
    stats: dict
    verdicts: dict
    power_law: curves.PowerLawFit | None
    predictions: dict
    config: dict
    notes: list = field(default_factory=list)

    def table(self) -> str:
        return summary_table(self)

    def to_dict(self) -> dict:
        return {
            "task": self.task, "models": list(self.models), "params": self.params.tolist(),
            "n_test": self.n_test.tolist(), "config": self.config, "notes": list(self.notes),
            "metrics": {name: {"values": c.values.tolist(), "lo": c.lo.tolist(), "hi": c.hi.tolist(),
                               "higher_is_better": c.higher_is_better, "proportion": c.proportion,
                               "interval": c.interval, "verdict": self.verdicts[name],
                               "statistics": self.stats[name].to_dict()} for name, c in self.curves.items()},
            "power_law": None if self.power_law is None else self.power_law.to_dict(),
            "predictions": {name: {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in p.items()}
                            for name, p in self.predictions.items()},
        }

    def to_rows(self) -> list:
        """One row per (model, metric): the value, its CI and the metric's statistics.

        Column names carry their units: ``transition_location_params`` (and ``_lo``/``_hi``, the
        CI) and the one-step ``transition_bracket_lo_params``/``_hi_params`` are in parameters,
        ``transition_width_log10_params`` (the logistic's 10–90 % width) and
        ``transition_width_bound_log10_params`` (the bracket's gap) in decades.
        """
        rows = []
        for name, c in self.curves.items():
            s = self.stats[name]
            location, loc_lo, loc_hi = s.location_x()
            bracket_lo, bracket_hi = s.bracket_x()
            for i, model in enumerate(self.models):
                rows.append({"model": model, "params": float(self.params[i]), "metric": name,
                             "value": float(c.values[i]), "lo": float(c.lo[i]), "hi": float(c.hi[i]),
                             "higher_is_better": c.higher_is_better, "emergence_score": s.emergence_score,
                             "linearity": s.linearity, "transition_location_params": location,
                             "transition_location_lo_params": loc_lo, "transition_location_hi_params": loc_hi,
                             "transition_width_log10_params": s.transition.logistic.width,
                             "transition_bracket_lo_params": bracket_lo, "transition_bracket_hi_params": bracket_hi,
                             "transition_width_bound_log10_params": s.transition.width_bound,
                             "transition_verdict": s.verdict, "verdict": self.verdicts[name]})
        return rows


def _point_intervals(family: Family, name: str, n_boot: int, ci: float, seed: int):
    values = np.asarray(family.values[name], dtype=np.float64)
    if name in family.per_example:
        aggs = [aggregate(v, n_boot=n_boot, ci=ci, seed=seed + i) for i, v in enumerate(family.per_example[name])]
        return (np.array([a.lo for a in aggs]), np.array([a.hi for a in aggs]),
                f"bootstrap over examples ({n_boot} replicates)")
    se = np.asarray(family.stderr.get(name, np.full(values.shape, np.nan)), dtype=np.float64)
    if np.isfinite(se).any():
        z = NormalDist().inv_cdf(0.5 + ci / 2)
        return values - z * se, values + z * se, "value ± z·stderr from the result file"
    nan = np.full(values.shape, np.nan)
    return nan, nan, "no per-point interval (no per-example values or stderr)"


def _standard_errors(family: Family, name: str):
    """Per-model standard errors of a metric: the file's stderr, else (live runs) std / sqrt(n) over examples."""
    se = family.stderr.get(name)
    if name in family.per_example and (se is None or not np.isfinite(np.asarray(se, dtype=np.float64)).all()):
        se = np.array([np.std(v, ddof=1) / math.sqrt(len(v)) if len(v) > 1 else math.nan
                       for v in family.per_example[name]])
    return se


def _verdicts(stats: dict) -> dict:
    """The cross-metric verdict of every metric from its own transition verdict (module docstring)."""
    decided = {name: s.verdict == "sharp" for name, s in stats.items() if s.verdict != "undetermined"}
    n_sharp = sum(decided.values())
    out = {}
    for name, s in stats.items():
        if s.verdict != "sharp":
            out[name] = s.verdict
        elif n_sharp == len(decided):
            out[name] = "sharp under all"
        elif n_sharp == 1:
            out[name] = "sharp under this metric only"
        else:
            out[name] = f"sharp under {n_sharp} of {len(decided)} metrics"
    return out


def _power_law(family: Family, n_boot: int, ci: float, seed: int):
    """The power law and what it predicts, from the family's loss (live) or its perplexity (files)."""
    if family.loss is not None:
        loss, lengths, note = family.loss, family.target_lengths, family.loss_note
        if lengths is None and family.target_length is not None:
            lengths = [float(v) for v in family.target_length]
    elif "ppl" in family.values or "p_target" in family.values:
        p_target = family.values.get("p_target")
        loss = -np.log(p_target) if p_target is not None else np.log(family.values["ppl"])
        lengths, note = None, ("per-target loss log(ppl) with L = 1: ppl is the perplexity of whole targets "
                               "(for lm-evaluation-harness LAMBADA, one word)")
    else:
        return None, {}, []
    fit = curves.fit_loss_power_law(family.params, loss, n_boot=n_boot, ci=ci, seed=seed)
    predictions = {}
    if not math.isfinite(fit.alpha):
        return fit, predictions, [f"power law not fitted: {fit.note}"]
    if lengths is None:
        lengths = [1.0] * len(family.models)
    one = [family.params[j:j + 1] for j in range(len(family.models))]
    predicted_acc = np.array([float(fit.predicted_accuracy(n, length)[0]) for n, length in zip(one, lengths)])
    predicted_ted = np.array([float(fit.predicted_edit_distance(n, length)[0]) for n, length in zip(one, lengths)])
    for names, predicted, formula in ((_ACCURACY_NAMES, predicted_acc, "p^L"), (_EDIT_NAMES, predicted_ted, "L(1-p)")):
        observed = next((n for n in names if n in family.values), None)
        if observed is not None:
            predictions[observed] = {"formula": formula, "predicted": predicted, "observed_loss": np.asarray(loss),
                                     "comparison": curves.compare_prediction(family.values[observed], predicted)}
    return fit, predictions, [note]


def analyse(family: Family, *, n_boot: int = 1000, ci: float = 0.95, seed: int = 0, margin: float = 2.0,
            lower_is_better=(), higher_is_better=()) -> MirageReport:
    """Curve statistics, verdicts and the power-law comparison for every metric of ``family``."""
    if not isinstance(family, Family):
        raise TypeError(f"family must be a readers.Family, got {type(family).__name__}")
    curves_out, stats = {}, {}
    notes = list(family.notes)     # what the reader decided (input formats, filters, unknown stderrs)
    if len(family.models) < 3:
        notes.append(f"only {len(family.models)} model(s): curve statistics need at least 3, so they are NaN")
    for name, values in family.values.items():
        spec = metric_spec(name, lower_is_better, higher_is_better)
        lo, hi, interval = _point_intervals(family, name, n_boot, ci, seed)
        curves_out[name] = MetricCurve(name, np.asarray(values, dtype=np.float64), lo, hi, spec.higher_is_better,
                                       spec.proportion, interval)
        se = _standard_errors(family, name)
        stats[name] = curves.curve_statistics(family.params, values, metric=name,
                                              higher_is_better=spec.higher_is_better, y_err=se, n_test=family.n_test,
                                              proportion=spec.proportion, n_boot=n_boot, ci=ci, seed=seed,
                                              margin=margin)
    fit, predictions, fit_notes = _power_law(family, n_boot, ci, seed)
    config = {"n_boot": n_boot, "ci": ci, "seed": seed, "margin": margin, "sources": list(family.sources),
              "formats": list(family.formats)}
    return MirageReport(family.task, list(family.models), np.asarray(family.params, dtype=np.float64),
                        np.asarray(family.n_test, dtype=np.float64), curves_out, stats, _verdicts(stats), fit,
                        predictions, config, notes + fit_notes)


# ---------------------------------------------------------------------------------------------
# text

def _g(value, digits=3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}g}"


def _where(s: curves.CurveStatistics) -> tuple[str, str]:
    """(where the transition is, its width) as the table shows them: a bracket or a location [CI], in parameters."""
    if s.verdict in ("sharp", "sharp drop") and math.isfinite(s.transition.width_bound):
        lo, hi = s.bracket_x()
        return f"between {_g(lo)} and {_g(hi)}", f"<= {_g(s.transition.width_bound, 2)}"
    location, lo, hi = s.location_x()
    return f"{_g(location)} [{_g(lo)}, {_g(hi)}]", _g(s.transition.logistic.width, 2)


def summary_table(report: MirageReport) -> str:
    """Values per model, then one row per metric: emergence score, linearity, sigmoid evidence,
    where the transition is (a one-step bracket, or the logistic location with its CI; parameters),
    its 10–90 % width or the bracket's upper bound on it (decades, log10(parameters)) and the verdict."""
    names = list(report.curves)
    value_rows = [[m, _g(float(report.params[i]))] + [_g(float(report.curves[n].values[i]), 4) for n in names]
                  for i, m in enumerate(report.models)]
    out = [f"task {report.task}: {len(report.models)} models", text_table(value_rows, ["model", "params"] + names), ""]
    rows = []
    for n in names:
        s = report.stats[n]
        where, width = _where(s)
        rows.append([n, "up" if s.higher_is_better else "down", _g(s.emergence_score), _g(s.linearity),
                     _g(s.transition.smoothness.delta, 3), where, width, report.verdicts[n]])
    out.append(text_table(rows, ["metric", "better", "emergence", "linearity", "dBIC(sig)", "transition (params) [CI]",
                             "width (decades)", "verdict"]))
    if report.power_law is not None and math.isfinite(report.power_law.alpha):
        fit = report.power_law
        out.append(f"\nper-token loss power law L(N) = (N/c)^alpha: alpha = {fit.alpha:.4f} "
                   f"[{_g(fit.alpha_ci[0], 4)}, {_g(fit.alpha_ci[1], 4)}], c = {_g(fit.c)} "
                   f"[{_g(fit.c_ci[0])}, {_g(fit.c_ci[1])}] parameters, R^2 = {fit.r2:.4f}")
        for name, p in report.predictions.items():
            cmp = p["comparison"]
            out.append(f"  {p['formula']} vs observed {name}: rmse {_g(cmp['rmse'])}, max gap {_g(cmp['max_abs'])}, "
                       f"pearson {_g(cmp['pearson'])}")
    out.append("\ndBIC(sig) = BIC(best smooth fit) - BIC(sigmoid); > margin favours a sigmoid. "
               "Transition = the two adjacent sizes a one-step rise lies between, else the logistic location, "
               "in parameters; width = log10(parameters) from 10 to 90 % (<= bound for a bracket).\n"
               + transitions.amplitude_rule_text())
    for n in names:
        for note in report.stats[n].notes:
            out.append(f"note [{n}]: {note}")
    out += [f"note: {note}" for note in report.notes]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# files

def plot(report: MirageReport, path, *, title: str | None = None) -> Path:
    """One panel per metric on a log-parameter axis: values with CIs, the logistic fit where
    the curve is sharp, the resolution floor of proportions and the power law's prediction."""
    matplotlib = require("matplotlib", "writing PNGs")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report.curves)
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    x = report.params
    grid = np.logspace(np.log10(x.min()), np.log10(x.max()), 200) if x.size else x
    for ax, name in zip(axes.flat, names):
        c, s = report.curves[name], report.stats[name]
        lo = np.where(np.isfinite(c.lo), c.values - c.lo, 0.0)
        hi = np.where(np.isfinite(c.hi), c.hi - c.values, 0.0)
        ax.errorbar(x, c.values, yerr=[np.maximum(lo, 0), np.maximum(hi, 0)], marker="o", capsize=2, lw=1.2,
                    label="observed")
        fit = s.transition.logistic
        if math.isfinite(fit.location) and x.size:
            sign = 1.0 if c.higher_is_better else -1.0
            ax.plot(grid, sign * fit.predict(grid), "--", lw=1, color="C1",
                    label=f"logistic, centre {_g(fit.location_x())}")
        if c.proportion and np.isfinite(report.n_test).any():
            ax.axhline(float(np.nanmax(1.0 / report.n_test)), color="grey", lw=0.8, ls=":", label="1/N_test floor")
        if name in report.predictions:
            p = report.predictions[name]
            ax.plot(x, p["predicted"], ":", marker="x", color="C2", label=f"power law {p['formula']}")
        ax.set_xscale("log")
        ax.set_xlabel("parameters")
        ax.set_ylabel(name + ("" if c.higher_is_better else " (lower is better)"))
        ax.set_title(f"{name}: {report.verdicts[name]}\nES={_g(s.emergence_score)}, linearity={_g(s.linearity)}",
                     fontsize=9)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    fig.suptitle(title or f"{report.task}: the same outputs under each metric", fontsize=10)
    fig.tight_layout()
    return write_figure(fig, path)
