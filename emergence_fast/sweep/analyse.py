r"""A sweep's units as one tidy table, and what the curves through it say.

Curves. Along the model axis, one curve per (task, axis value, metric), x = the models' x; along a
task's axis, one curve per (model, task, metric) when the axis has at least 3 values (shots in
log10 when every shot count is at least 1, since they are usually doubled; lengths and blocks linear). Each curve
gets :func:`emergence_fast.transitions.summarize`: the logistic location and 10–90 % width with
residual-bootstrap CIs, the smooth-versus-sigmoid test and the verdict (``sharp``, ``sharp drop``,
``smooth``, ``no transition``, ``undetermined``), with the metric's range and the cells' standard
errors for the minimum-amplitude rule. As in :mod:`emergence_fast.mirage`, each curve is oriented
by its metric's declared direction before the fit (y for higher-is-better metrics, -y for losses,
Brier scores, edit distances and entropies), so ``sharp`` is a sharp *improvement* (a loss that
falls abruptly) and ``sharp drop`` a sharp change for the worse, whatever the metric's sign; the
table keeps the measured y. A transition's ``location_ci`` is in x units: the
bootstrap CI of the logistic location, or, for a one-step change (no point on the rise), the
bracket of the two points around the step, with the location in its middle.

Metric-choice check (Schaeffer et al., NeurIPS 2023). For each group of curves that differ only
in the metric, the verdicts of thresholded metrics (exact match, multiple-choice grade, ...) are
set against those of continuous ones (log-probability, Brier, loss ...): a transition that only
thresholded metrics show while every continuous one is judged smooth or flat is reported as
*apparent* (the metric makes it), one that continuous metrics show too as *in the behaviour*, and
one whose continuous curves cannot be judged (too few points, or none kept by ``metrics``) as *undetermined*.

Timing (Holtzman et al. 2023: where, along a controlled change, does each measurement move?).
Every along-models curve is set against one reference curve (by default the in-context loss of
the induction task): ``with`` when the two location CIs overlap, ``ahead`` / ``after`` when its
whole CI lies before / after the reference's, ``smooth``, ``no transition`` or ``undetermined``
after its own verdict.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from .. import __version__
from ..transitions import summarize
from .grid import X_KINDS, unfinished_family
from .tasks import AXES, Task

SHARP = ("sharp", "sharp drop")
X_UNITS = {"step": "steps", "params": "parameters", "index": "model index", "values": "x"}


@dataclass
class SweepResult:
    """Everything a sweep found: ``rows`` (the tidy table), ``transitions``, ``agreement``
    (metric-choice check), ``timing`` (against ``reference``), the models with their x, and notes."""

    models: list
    tasks: dict
    rows: list
    transitions: list
    agreement: list
    timing: list
    reference: dict | None
    config: dict
    notes: list = field(default_factory=list)
    loads: list = field(default_factory=list)
    summaries: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"models": self.models, "tasks": self.tasks, "reference": self.reference,
                "transitions": self.transitions, "agreement": self.agreement, "timing": self.timing,
                "notes": self.notes, "config": self.config, "provenance": self.provenance}

    def to_rows(self) -> list:
        return self.rows

    def to_dataframe(self):
        from .._optional import require

        return require("pandas", "SweepResult.to_dataframe").DataFrame(self.rows)

    def transition(self, direction: str, task: str, metric: str, **at) -> dict:
        """The transition record of one curve (``at``: ``value=`` along models, ``model=`` along an axis)."""
        for t in self.transitions:
            if t["direction"] == direction and t["task"] == task and t["metric"] == metric and all(
                    t["at"].get(k) == v for k, v in at.items()):
                return t
        raise KeyError((direction, task, metric, at))


def _x_of_models(specs, records, x, steps, x_values):
    """Each model's x and the notes it needs; ValueError when two models share one."""
    infos = {}
    for r in records:
        infos.setdefault(r["model"], r["model_info"])
    if x == "step":
        xs = [float(s) for s in steps]
    elif x == "params":
        xs = [float(infos[s.label]["params"]) for s in specs]
    elif x == "index":
        xs = [float(i) for i in range(len(specs))]
    else:
        xs = [float(v) for v in x_values]
        if not all(math.isfinite(v) for v in xs):
            raise ValueError(f"x_values must be finite numbers, got {list(x_values)}")
    seen = {}
    for spec, value in zip(specs, xs):
        seen.setdefault(value, []).append(spec.label)
    shared = [labels for labels in seen.values() if len(labels) > 1]
    if shared:
        raise ValueError(f"x={x!r}: models {shared[0]} share the x value {xs[[s.label for s in specs].index(shared[0][0])]:g}; "
                         f"curves need one x per model (another x: "
                         f"{', '.join(repr(k) for k in X_KINDS if k != x)})")
    notes = []
    if xs != sorted(xs):
        notes.append(f"the declared model order is not increasing in x ({x}); curves are fitted in x order")
    return xs, infos, notes


def _rows(specs, xs, x, tasks: dict, records, metrics):
    rows = []
    index = {s.label: i for i, s in enumerate(specs)}
    for r in records:
        task = tasks[r["task"]]
        for value, cell in r["cells"].items():
            for metric in task.metrics:
                if metric.name not in cell or (metrics is not None and metric.name not in metrics):
                    continue
                v, se, n = cell[metric.name]
                rows.append({"model": r["model"], "model_index": index[r["model"]], "x": xs[index[r["model"]]],
                             "x_kind": x, "task": r["task"], "axis": r["axis"], "axis_value": int(value),
                             "metric": metric.name, "kind": metric.kind, "unit": metric.unit,
                             "value": math.nan if v is None else v, "stderr": math.nan if se is None else se, "n": n})
    return rows


def _summary_record(direction, task: Task, metric, at, x_unit, log_x, xs, ys, errs, n_boot, ci, seed):
    order = np.argsort(xs)
    xs, ys, errs = np.asarray(xs)[order], np.asarray(ys)[order], np.asarray(errs)[order]
    y_err = errs if np.isfinite(errs).all() and len(errs) else None
    sign = 1.0 if metric.higher_is_better else -1.0   # oriented: up is better (module docstring)
    value_range = None if metric.value_range is None else tuple(sorted(sign * v for v in metric.value_range))
    s = summarize(xs, sign * ys, log_x=log_x, n_boot=n_boot, seed=seed, y_err=y_err, ci=ci,
                  value_range=value_range, x_unit=x_unit)
    fit = s.logistic
    lo, hi = fit.location_ci
    to_x = (lambda t: 10.0 ** t) if log_x else (lambda t: t)
    ci_x = [to_x(lo), to_x(hi)] if math.isfinite(lo) and math.isfinite(hi) else [math.nan, math.nan]
    location = fit.location_x()
    notes = [n for n in s.notes if not n.startswith("y never reaches level")]  # level 0.5 means nothing here
    if not metric.higher_is_better:
        notes.append("lower is better: fitted on -y, so 'sharp' is a sharp fall of y")
    if s.verdict in SHARP and all(math.isfinite(b) for b in s.bracket):
        # A one-step change: no point lies on it, so a logistic's location there is an extrapolation;
        # the bracket of the two points around the step is all the data say.
        ci_x = list(s.bracket)
        location = math.sqrt(ci_x[0] * ci_x[1]) if log_x else (ci_x[0] + ci_x[1]) / 2
        notes.append("one-step change: location = the middle of the bracket" + (" in log10 x" if log_x else "")
                     + ", CI = the bracket")
    lo_x, hi_x = float(xs.min()), float(xs.max())
    if all(math.isfinite(c) for c in ci_x) and (ci_x[0] < lo_x or ci_x[1] > hi_x):
        notes.append(f"the location CI reaches beyond the data ({lo_x:g} to {hi_x:g}): the points do not pin the "
                     f"transition down on that side")
    record = {"direction": direction, "task": task.name, "metric": metric.name, "kind": metric.kind, "at": at,
              "oriented": "y" if metric.higher_is_better else "-y",
              "x_unit": x_unit, "log_x": log_x, "n_points": s.n_points, "verdict": s.verdict,
              "location": location, "location_ci": ci_x, "width": fit.width, "width_ci": list(fit.width_ci),
              "width_unit": f"log10({x_unit})" if log_x else x_unit, "bracket": list(s.bracket),
              "x_range": [float(xs.min()), float(xs.max())] if xs.size else [math.nan, math.nan],
              "notes": notes}
    return record, s


def _curves(rows, tasks, x_kind, log_x, n_boot, ci, seed):
    transitions, summaries = [], {}
    along_models = {}
    along_axis = {}
    for r in rows:
        along_models.setdefault((r["task"], r["axis_value"], r["metric"]), []).append(r)
        along_axis.setdefault((r["model"], r["task"], r["metric"]), []).append(r)
    for (task_name, value, metric_name), group in along_models.items():
        task = tasks[task_name]
        group = [g for g in group if math.isfinite(g["value"])]
        if len(group) < 2:
            continue
        record, s = _summary_record("models", task, task.metric(metric_name), {task.axis: value}, X_UNITS[x_kind],
                                    log_x, [g["x"] for g in group], [g["value"] for g in group],
                                    [g["stderr"] for g in group], n_boot, ci, seed)
        transitions.append(record)
        summaries[("models", task_name, metric_name, value)] = s
    for (model, task_name, metric_name), group in along_axis.items():
        task = tasks[task_name]
        group = [g for g in group if math.isfinite(g["value"])]
        if len(group) < 3:
            continue
        xs = [g["axis_value"] for g in group]
        # Shot counts are usually doubled (1, 2, 4, 8): fitted in log10(shots) unless 0 shots is among them.
        axis_log = task.axis == "shots" and min(xs) >= 1
        record, s = _summary_record(task.axis, task, task.metric(metric_name), {"model": model}, AXES[task.axis],
                                    axis_log,
                                    [g["axis_value"] for g in group], [g["value"] for g in group],
                                    [g["stderr"] for g in group], n_boot, ci, seed)
        transitions.append(record)
        summaries[(task.axis, task_name, metric_name, model)] = s
    return transitions, summaries


def _agreement(transitions):
    groups = {}
    for t in transitions:
        key = (t["direction"], t["task"], tuple(sorted(t["at"].items())))
        groups.setdefault(key, []).append(t)
    out = []
    for (direction, task, at), group in groups.items():
        verdicts = {t["metric"]: t["verdict"] for t in group}
        kinds = {t["metric"]: t["kind"] for t in group}
        sharp_thr = [m for m, v in verdicts.items() if v in SHARP and kinds[m] == "thresholded"]
        sharp_cont = [m for m, v in verdicts.items() if v in SHARP and kinds[m] == "continuous"]
        open_cont = [m for m, v in verdicts.items() if v == "undetermined" and kinds[m] == "continuous"]
        if sharp_thr and "continuous" not in kinds.values():
            reading = "undetermined"
            note = (f"thresholded metrics ({', '.join(sharp_thr)}) show a sharp transition, but no continuous metric "
                    f"was kept to set them against: whether the metric makes it cannot be told")
        elif sharp_thr and not sharp_cont and open_cont:
            reading = "undetermined"
            note = (f"thresholded metrics ({', '.join(sharp_thr)}) show a sharp transition, but the continuous ones "
                    f"({', '.join(open_cont)}) cannot be judged (undetermined): more points along this axis would say "
                    f"whether the metric makes it")
        elif sharp_thr and not sharp_cont:
            reading = "apparent"
            note = (f"only thresholded metrics ({', '.join(sharp_thr)}) show a sharp transition; the continuous ones "
                    f"do not: the metric makes it look emergent (Schaeffer et al. 2023)")
        elif sharp_cont:
            reading = "in the behaviour"
            note = f"continuous metrics ({', '.join(sharp_cont)}) show a sharp transition too"
        else:
            reading = "none"
            note = "no metric shows a sharp transition"
        out.append({"direction": direction, "task": task, "at": dict(at), "verdicts": verdicts, "reading": reading,
                    "note": note})
    return out


def _parse_reference(reference, tasks: dict, values: dict):
    if reference is None:
        if "induction" in tasks:
            return "induction", values["induction"][0], "in_context_loss"
        first = next(iter(tasks.values()))
        if values[first.name] == ("all",):
            return None
        return first.name, max(values[first.name]), first.reference
    text, _, at = str(reference).partition("@")
    task_name, _, metric = text.partition(":")
    if task_name not in tasks:
        raise ValueError(f"reference: {task_name!r} is not a task of this sweep ({', '.join(tasks)})")
    task = tasks[task_name]
    if metric not in task.metric_names:
        raise ValueError(f"reference: {task_name!r} has no metric {metric!r}; it has {', '.join(task.metric_names)}")
    if at:
        try:
            value = int(at)
        except ValueError:
            raise ValueError(f"reference: the axis value after '@' must be an integer, got {at!r}") from None
        if value not in values[task_name] and values[task_name] != ("all",):  # "all" blocks: known on loading
            raise ValueError(f"reference: {task_name!r} runs at {task.axis} {list(values[task_name])}, not {value}")
    else:
        value = values[task_name][0] if values[task_name] != ("all",) else 0
    return task_name, value, metric


def _timing(transitions, ref):
    if ref is None:
        return None, []
    task, value, metric = ref
    reference = next((t for t in transitions if t["direction"] == "models" and t["task"] == task
                      and t["metric"] == metric and next(iter(t["at"].values())) == value), None)
    out = []
    if reference is None:
        return {"task": task, "value": value, "metric": metric, "found": False}, out
    located = reference["verdict"] in SHARP and all(math.isfinite(v) for v in reference["location_ci"])
    r_lo, r_hi = reference["location_ci"]
    for t in transitions:
        if t["direction"] != "models" or t is reference:
            continue
        if not located:
            relation = "undetermined"
        elif t["verdict"] not in SHARP:
            relation = t["verdict"]
        elif not all(math.isfinite(v) for v in t["location_ci"]):
            relation = "undetermined"
        elif t["location_ci"][1] < r_lo:
            relation = "ahead"
        elif t["location_ci"][0] > r_hi:
            relation = "after"
        else:
            relation = "with"
        out.append({"task": t["task"], "at": t["at"], "metric": t["metric"], "kind": t["kind"], "verdict": t["verdict"],
                    "location": t["location"], "location_ci": t["location_ci"], "relation": relation})
    return {"task": task, "value": value, "metric": metric, "found": True, "verdict": reference["verdict"],
            "location": reference["location"], "location_ci": reference["location_ci"]}, out


def analyse(specs, tasks, values, settings, records, *, x, steps, x_values, log_x, n_boot, ci, reference,
            family, loads, metrics=None, evaluated=()) -> SweepResult:
    """The :class:`SweepResult` of finished unit ``records`` (see the module docstring)."""
    from .._validation import check_int, check_probability

    n_boot = check_int(n_boot, "n_boot", minimum=0)
    check_probability(ci, "ci")
    tasks = {t.name: t for t in tasks}
    ref = _parse_reference(reference, tasks, values)
    xs, infos, notes = _x_of_models(specs, records, x, steps, x_values)
    log_x = (x == "params") if log_x is None else bool(log_x)
    rows = _rows(specs, xs, x, tasks, records, metrics)
    failed = {}  # one note per (task, reason), naming every model it holds for (33 checkpoints: one line)
    for r in records:
        if r["status"] != "ok":
            failed.setdefault((r["task"], r["status"], r["note"]), []).append(r["model"])
    for (task, status, note), labels in failed.items():
        notes.append(f"{task} does not apply to {', '.join(labels)}" + (f" at {note}" if status == "partial" else
                                                                         f": {note}"))
    tokenizers = {}
    for s in specs:
        tokenizers.setdefault(infos[s.label]["tokenizer"], []).append(s.label)
    if len(tokenizers) > 1:
        notes.append(f"the models use {len(tokenizers)} different tokenizers ("
                     + "; ".join(", ".join(v) for v in tokenizers.values())
                     + "): per-token metrics (losses, entropies, token edit distance) count different tokens, and "
                       "induction's random tokens differ between them")
    unfinished = sorted({f for f in map(unfinished_family, specs) if f is not None})
    if unfinished:
        notes.append(f"the make-family run in {', '.join(unfinished)} has not finished (no family.json: killed, or "
                     f"still training): its later checkpoints are missing from this sweep")
    short = [t.name for t in tasks.values() if len(values[t.name]) < 3 and values[t.name] != ("all",)]
    if short:
        notes.append(f"no curves along the axis of {', '.join(short)}: fewer than 3 values")
    transitions, summaries = _curves(rows, tasks, x, log_x, n_boot, ci, settings.seed)
    reference_record, timing = _timing(transitions, ref)
    if reference_record is not None and not reference_record["found"] and len(specs) > 1:
        notes.append(f"the reference curve {ref[0]}:{ref[2]} at {ref[1]} has no values: nothing is timed against it")
    models = [{"label": s.label, "source": s.source, "revision": s.revision, "gguf_file": s.gguf_file, "x": xv,
               "step": st, **infos[s.label]} for s, xv, st in zip(specs, xs, steps)]
    config = {"x": x, "log_x": log_x, "values": {k: list(v) for k, v in values.items()},
              "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.__dict__.items()},
              "metrics": None if metrics is None else list(metrics), "n_boot": n_boot, "ci": ci, "family": family}
    task_info = {name: {"axis": t.axis, "axis_unit": AXES[t.axis], "description": t.description,
                        "reference_metric": t.reference,
                        "metrics": {m.name: {"kind": m.kind, "higher_is_better": m.higher_is_better,
                                             "range": m.value_range, "unit": m.unit, "description": m.description}
                                    for m in t.metrics}} for name, t in tasks.items()}
    return SweepResult(models, task_info, rows, transitions, _agreement(transitions), timing, reference_record, config,
                       notes, loads, summaries, _provenance(records, loads, evaluated))


def _provenance(records, loads, evaluated) -> dict:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import torch

    try:
        transformers = version("transformers")
    except PackageNotFoundError:
        transformers = None
    return {"emergence_fast": __version__, "torch": torch.__version__, "transformers": transformers,
            "python": platform.python_version(), "analysed": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "models_loaded_this_run": loads, "units_evaluated_this_run": len(evaluated),
            "units_from_earlier_runs": len(records) - len(evaluated),
            "unit_seconds": {f"{r['model']}|{r['task']}": r["seconds"] for r in records}}
