"""A sweep's files: the tidy table (CSV, Parquet when pyarrow is present), the JSON report, curves and heatmaps.

* ``sweep.csv`` (and ``sweep.parquet``): one row per (model, task, axis value, metric): model,
  model_index (declared order), x, x_kind, task, axis, axis_value, metric, kind (continuous or
  thresholded), unit, value (mean over examples), stderr, n.
* ``transitions.csv``: one row per curve: direction (``models`` or the task's axis), task,
  metric, where it was taken, verdict, location and its CI (x units), width and its CI.
* ``sweep.json``: models with their x and tokenizer, tasks and metric declarations, every
  transition with its full record, the metric-choice check, the timing against the reference,
  notes, the configuration and provenance.
* ``curves_<task>.png`` (at least 2 models): each metric along the model axis, one line per axis
  value, located transitions' CIs shaded; ``axis_<task>.png``: each metric along the task's own axis (shots,
  length, block), one line per model (tasks with at least 2 axis values); ``heatmap_<task>.png``: models x axis values, one panel per metric
  (tasks with at least 2 axis values).
"""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

from .._optional import require
from ..report import atomic_write, text_table, write_csv, write_figure, write_json
from .analyse import SHARP, SweepResult


def _transition_rows(result: SweepResult) -> list:
    return [{"direction": t["direction"], "task": t["task"], "metric": t["metric"], "kind": t["kind"],
             "at": ";".join(f"{k}={v}" for k, v in t["at"].items()), "verdict": t["verdict"],
             "location": t["location"], "location_ci_low": t["location_ci"][0], "location_ci_high": t["location_ci"][1],
             "x_unit": t["x_unit"], "width": t["width"], "width_ci_low": t["width_ci"][0],
             "width_ci_high": t["width_ci"][1], "width_unit": t["width_unit"], "n_points": t["n_points"]}
            for t in result.transitions]


def write_report(result: SweepResult, out) -> list[Path]:
    """Write every file of the module docstring into ``out`` (atomically, each); returns their paths."""
    out = Path(out)
    written = [write_json(result, out / "sweep.json")]
    if result.rows:
        written.append(write_csv(result.rows, out / "sweep.csv"))
        if importlib.util.find_spec("pandas") and importlib.util.find_spec("pyarrow"):
            frame = require("pandas", "writing sweep.parquet").DataFrame(result.rows)
            written.append(atomic_write(out / "sweep.parquet", lambda tmp: frame.to_parquet(tmp, index=False)))
    if result.transitions:
        written.append(write_csv(_transition_rows(result), out / "transitions.csv"))
    return written


def _g(value, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.{digits}g}"


def summary_table(result: SweepResult) -> str:
    """The along-models transitions and their timing as plain text (what the CLI prints)."""
    timing = {(t["task"], tuple(t["at"].items()), t["metric"]): t["relation"] for t in result.timing}
    ref = result.reference
    if ref and ref.get("found"):
        timing[(ref["task"], ((result.tasks[ref["task"]]["axis"], ref["value"]),), ref["metric"])] = "reference"
    rows = []
    for t in result.transitions:
        if t["direction"] != "models":
            continue
        at = ",".join(f"{k}={v}" for k, v in t["at"].items())
        rel = timing.get((t["task"], tuple(t["at"].items()), t["metric"]), "-")  # "-": no reference curve
        ci = f"[{_g(t['location_ci'][0])}, {_g(t['location_ci'][1])}]" if t["verdict"] in SHARP else "-"
        rows.append([t["task"], at, t["metric"], t["kind"], t["verdict"],
                     _g(t["location"]) if t["verdict"] in SHARP else "-", ci, rel])
    level = f"{result.config['ci']:.0%} CI"  # a one-step change's "CI" is its bracket (analyse module)
    header = ["task", "at", "metric", "kind", "verdict", f"location ({result.config['x']})", level, "vs reference"]
    lines = [text_table(rows, header, left=5)] if rows else ["(no curve along the models: fewer than 2 models)"]
    axis_rows = [t for t in result.transitions if t["direction"] != "models"]
    if axis_rows and len(result.models) <= 4:
        lines.append(text_table([[t["task"], t["at"]["model"], t["metric"], t["kind"], t["verdict"],
                                  _g(t["location"]) if t["verdict"] in SHARP else "-",
                                  f"[{_g(t['location_ci'][0])}, {_g(t['location_ci'][1])}]" if t["verdict"] in SHARP
                                  else "-", t["x_unit"]] for t in axis_rows],
                                ["task", "model", "metric", "kind", "verdict along the task's axis", "location", level,
                                 "unit"], left=5))
    elif axis_rows:
        counts = {}
        for t in axis_rows:
            counts.setdefault((t["task"], t["metric"]), {}).setdefault(t["verdict"], 0)
            counts[(t["task"], t["metric"])][t["verdict"]] += 1
        lines.append(text_table([[task, metric, ", ".join(f"{v}: {n}" for v, n in sorted(c.items()))]
                                 for (task, metric), c in counts.items()],
                                ["task", "metric", "verdicts along the task's axis (models)"], left=3))
    ref = result.reference
    if ref and ref.get("found"):
        lines.append(f"reference: {ref['task']}:{ref['metric']} at {ref['value']} ({ref['verdict']})")
    for a in result.agreement:
        if a["reading"] in ("apparent", "undetermined") and any(v in SHARP for v in a["verdicts"].values()):
            at = ", ".join(f"{k}={v}" for k, v in a["at"].items())
            lines.append(f"metric choice ({a['task']} along {a['direction']}, {at}): {a['note']}")
    lines += [f"note: {n}" for n in result.notes]
    return "\n".join(lines)


def _panels(plt, n: int, height: float):
    """A figure of ``n`` panels, at most 3 a row; returns ``(fig, axes)`` with the unused axes hidden."""
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.8 * cols, height * rows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _axis_figure(plt, result, name, task, rows, metrics, out) -> Path:
    """``axis_<task>.png``: every metric along the task's own axis, one line per model (in x order)."""
    ticker = require("matplotlib.ticker", "plotting a sweep")
    fig, axes = _panels(plt, len(metrics), 3.2)
    for ax, metric in zip(axes, metrics):
        for model in sorted(result.models, key=lambda m: m["x"]):
            pts = sorted((r["axis_value"], r["value"], r["stderr"]) for r in rows
                         if r["metric"] == metric and r["model"] == model["label"])
            if not pts:
                continue
            x, y, e = zip(*pts)
            ax.errorbar(x, y, yerr=[v if math.isfinite(v) else 0.0 for v in e], marker="o", ms=3, capsize=2,
                        label=model["label"])
        ax.set_title(f"{metric} ({task['metrics'][metric]['kind']})", fontsize=9)
        if task["axis"] == "shots" and min(r["axis_value"] for r in rows) >= 1:
            ax.set_xscale("log", base=2)  # as the fits along shots (analyse module)
            ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
        else:
            ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))  # shots, lengths and blocks are counts
        unit = task["axis_unit"]
        ax.set_xlabel(task["axis"] if unit == task["axis"] else f"{task['axis']} ({unit})")
        ax.set_ylabel(task["metrics"][metric]["unit"])
    if len(result.models) <= 8:
        axes[0].legend(fontsize=7)
    fig.suptitle(f"{name} along {task['axis']}", fontsize=10)
    fig.tight_layout()
    return write_figure(fig, out / f"axis_{name}.png")


def plot(result: SweepResult, out) -> list[Path]:
    """``curves_<task>.png``, ``axis_<task>.png`` and ``heatmap_<task>.png`` into ``out``; needs matplotlib."""
    plt = require("matplotlib.pyplot", "plotting a sweep")
    out = Path(out)
    written = []
    for name, task in result.tasks.items():
        rows = [r for r in result.rows if r["task"] == name]
        if not rows:
            continue
        metrics = [m for m in task["metrics"] if any(r["metric"] == m for r in rows)]  # those --metrics kept
        values = sorted({r["axis_value"] for r in rows})
        if len(values) >= 2:
            written.append(_axis_figure(plt, result, name, task, rows, metrics, out))
        if len(result.models) < 2:
            continue
        fig, axes = _panels(plt, len(metrics), 3.2)
        for ax, metric in zip(axes, metrics):
            for value in values:
                pts = sorted((r["x"], r["value"], r["stderr"]) for r in rows if r["metric"] == metric
                             and r["axis_value"] == value)
                if not pts:
                    continue
                x, y, e = zip(*pts)
                ax.errorbar(x, y, yerr=[v if math.isfinite(v) else 0.0 for v in e], marker="o", ms=3, capsize=2,
                            label=f"{task['axis']}={value}")
                for t in result.transitions:
                    if (t["direction"] == "models" and t["task"] == name and t["metric"] == metric
                            and t["at"].get(task["axis"]) == value and t["verdict"] in SHARP
                            and all(math.isfinite(c) for c in t["location_ci"])):
                        ax.axvspan(*t["location_ci"], alpha=0.15, color=ax.lines[-1].get_color())
            if result.config["log_x"]:
                ax.set_xscale("log")
            ax.set_title(f"{metric} ({task['metrics'][metric]['kind']})", fontsize=9)
            ax.set_xlabel(result.config["x"])
            ax.set_ylabel(task["metrics"][metric]["unit"])
        if len(values) > 1:
            axes[0].legend(fontsize=7)
        fig.suptitle(f"{name} across models", fontsize=10)
        fig.tight_layout()
        written.append(write_figure(fig, out / f"curves_{name}.png"))
        if len(values) < 2:
            continue
        labels = [m["label"] for m in sorted(result.models, key=lambda m: m["x"])]
        fig, axes = _panels(plt, len(metrics), 0.4 * len(labels) + 2)
        for ax, metric in zip(axes, metrics):
            import numpy as np

            grid = np.full((len(labels), len(values)), np.nan)
            for r in rows:
                if r["metric"] == metric:
                    grid[labels.index(r["model"]), values.index(r["axis_value"])] = r["value"]
            image = ax.imshow(grid, aspect="auto", origin="lower", cmap="viridis")
            ax.set_xticks(range(len(values)), [str(v) for v in values], fontsize=7)
            ax.set_yticks(range(len(labels)), labels, fontsize=6)
            ax.set_xlabel(task["axis"])
            ax.set_title(metric, fontsize=9)
            fig.colorbar(image, ax=ax, label=task["metrics"][metric]["unit"])
        fig.suptitle(f"{name}: models (by {result.config['x']}) x {task['axis']}", fontsize=10)
        fig.tight_layout()
        written.append(write_figure(fig, out / f"heatmap_{name}.png"))
    return written
