"""Files and pictures for the ICL module (Bigelow et al., arXiv 2310.17639): JSON, CSV, PNG, tables.

Every file is written to a temporary name and renamed into place, so a reader never sees half a
file. Curves are drawn against |x| (flips) with the 0.5 crossing of every concept curve marked
by a dashed vertical line in the curve's colour; random baselines are grey.
"""
from __future__ import annotations

import math
from pathlib import Path

from .._optional import require
from ..report import optional_figures, write_csv, write_figure, write_json


def _pyplot():
    matplotlib = require("matplotlib", "writing PNGs")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_concept_curves(result, path, title: str | None = None) -> Path:
    """The curves of a judge or tree result (top) and the on-task mass (bottom), transitions marked."""
    plt = _pyplot()
    path = Path(path)
    judge = result.task == "judge"
    fig, (ax, ax_mass) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    concept_index = 0
    for curve in result.curves:
        if curve.kind == "random":
            style = {"color": "0.6", "lw": 1, "alpha": 0.8,
                     "label": "random sequences" if curve is _first_random(result) else None}
        else:
            style = {"color": colours[concept_index % len(colours)], "lw": 2, "label": f"({curve.label})$^n$"}
            concept_index += 1
        ax.plot(curve.lengths, curve.value, **style)
        ax_mass.plot(curve.lengths, curve.mass, **{**style, "label": None})
        t = curve.transition
        if curve.kind == "concept" and t is not None and math.isfinite(t.crossing):
            ax.axvline(t.crossing, color=style["color"], ls="--", lw=1)
            ax.annotate(f"{t.crossing:.1f}", (t.crossing, 0.5), xytext=(3, 4), textcoords="offset points",
                        color=style["color"], fontsize=8)
        if curve.chance is not None:
            ax.axhline(curve.chance, color=style["color"], ls=":", lw=1)
    ax.axhline(0.5, color="k", lw=0.6)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("p(random | x)" if judge else "P(concept | x)")
    ax.set_title(title or ("Randomness judgment: p(random) = P_r / (P_r + P_n)" if judge else
                           f"Concept learning, depth-{result.config['depth']} trees (dotted: fair-coin chance)"))
    ax.legend(fontsize=8, ncol=2)
    ax_mass.set_ylim(0, 1.02)
    ax_mass.set_xlabel("|x| (flips)")
    ax_mass.set_ylabel("on-task mass")
    fig.tight_layout()
    write_figure(fig, path)
    return path


def _first_random(result):
    return next((c for c in result.curves if c.kind == "random"), None)


def plot_generation(result, path) -> Path:
    """Mean, alternation rate and longest run against the requested p(Tails), per source."""
    plt = _pyplot()
    path = Path(path)
    rows = result.to_rows()
    sources = list(dict.fromkeys(r["source"] for r in rows))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    drawn = False
    for metric, ax, label in zip(("mean", "alternation", "longest_run"), axes,
                                 ("mean of flips (P(Tails))", "alternation rate", "longest run")):
        for source in sources:
            mine = [r for r in rows if r["source"] == source and r["n"] > 0]
            if not mine:
                continue
            ax.errorbar([r["p_tails"] for r in mine], [r[f"{metric}_mean"] for r in mine],
                        yerr=[r[f"{metric}_std"] for r in mine], marker="o", capsize=2, label=source,
                        lw=2 if source == "llm" else 1)
            drawn = True
        if metric == "mean":
            ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set_xlabel("requested p(Tails)")
        ax.set_title(label)
    if drawn:
        axes[0].legend(fontsize=8)
    else:
        axes[1].text(0.5, 0.5, f"no sampled sequence reached {result.config['crop_length']} flips",
                     ha="center", va="center", transform=axes[1].transAxes)
    fig.tight_layout()
    write_figure(fig, path)
    return path


def plot_model_selection(results: dict, path) -> Path:
    """Posterior curves of several model-selection results (e.g. proper vs paper_compat), crossings marked."""
    if not isinstance(results, dict) or not results:
        raise ValueError("results must be a non-empty dict of label -> ModelSelectionResult")
    plt = _pyplot()
    path = Path(path)
    fig, ax = plt.subplots(figsize=(8, 4))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, res) in enumerate(results.items()):
        colour = colours[i % len(colours)]
        ax.plot(res.lengths, res.p_concept, color=colour, lw=2, label=f"{label}: P(concept | x)")
        if not res.paper_compat:
            ax.plot(res.lengths, 1 - res.p_random, color=colour, lw=1, ls="-.", label=f"{label}: P(non-random | x)")
        cross = res.crossing("p_concept")
        if math.isfinite(cross):
            ax.axvline(cross, color=colour, ls="--", lw=1)
            ax.annotate(f"{cross:.1f}", (cross, 0.5), xytext=(3, 4), textcoords="offset points", color=colour,
                        fontsize=8)
    ax.axhline(0.5, color="k", lw=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("|x| (flips)")
    ax.set_ylabel("posterior")
    ax.set_title("Bayesian model selection, x = C$^n$")
    ax.legend(fontsize=8)
    fig.tight_layout()
    write_figure(fig, path)
    return path


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_fmt(v, digits) for v in value) + "]"
    if isinstance(value, float) and not math.isfinite(value):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _verdict(row: dict) -> str:
    """The verdict with its one-step bracket (flips) when the whole rise lies between two adjacent lengths."""
    lo, hi = row["bracket_lower_flips"], row["bracket_upper_flips"]
    if row["verdict"] in ("sharp", "sharp drop") and math.isfinite(lo):  # a judgment curve falls: "sharp drop"
        return f"{row['verdict']}, between {lo:g} and {hi:g} flips"
    return row["verdict"]


def transition_table(result) -> str:
    """Markdown table of the transitions of a judge or tree result (flips and concept periods).

    The logistic's asymptotes are listed so that a fit to a small bump is not read as a transition;
    the verdict (sharp, with its bracket when the rise lies between two adjacent lengths; smooth; no
    transition; undetermined) is :func:`emergence_fast.transitions.summarize`'s. Under the table, one line
    per curve whose logistic location lies outside its own CI (an unstable fit), then a footnote that
    states the minimum-amplitude rule it shares with the metric-choice report.
    """
    from ..transitions import amplitude_rule_text

    rows = result.transition_rows()
    header = ("| curve | period (flips) | 0.5 crossing (flips) | crossing (periods) | 10-90% width (flips) | "
              "logistic location (flips) [95% CI] | logistic 10-90% width (flips) [95% CI] | logistic from -> to | "
              "verdict |")
    lines = [header, "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['label']} | {_fmt(r['period'])} | {_fmt(r['crossing_flips'])} | "
                     f"{_fmt(r['crossing_periods'], 2)} | {_fmt(r['width_10_90_flips'])} | "
                     f"{_fmt(r['logistic_location_flips'])} "
                     f"{_fmt((r['location_ci_lower_flips'], r['location_ci_upper_flips']))} | "
                     f"{_fmt(r['logistic_width_flips'])} {_fmt((r['width_ci_lower_flips'], r['width_ci_upper_flips']))} | "
                     f"{_fmt(r['logistic_lower'], 2)} -> {_fmt(r['logistic_upper'], 2)} | {_verdict(r)} |")
    lines.append("")
    lines += [f"{r['label']}: {r['note']}" for r in rows if r["note"]]
    lines.append(amplitude_rule_text())
    return "\n".join(lines)


def write_concept_result(result, out_dir, prefix: str | None = None) -> list[Path]:
    """``{prefix}.json``, ``{prefix}.csv`` (one row per curve point), ``{prefix}_transitions.csv``, ``{prefix}.png``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = prefix or f"icl_{result.task}"
    written = [write_json(result.to_dict(), out_dir / f"{prefix}.json"),
               write_csv(result.to_rows(), out_dir / f"{prefix}.csv")]
    transitions = result.transition_rows()
    if transitions:
        written.append(write_csv(transitions, out_dir / f"{prefix}_transitions.csv"))
    return written + optional_figures(plot_concept_curves, result, out_dir / f"{prefix}.png")


def write_generation_result(result, out_dir, prefix: str = "icl_generate") -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [write_json(result.to_dict(), out_dir / f"{prefix}.json"),
            write_csv(result.to_rows(), out_dir / f"{prefix}.csv"),
            *optional_figures(plot_generation, result, out_dir / f"{prefix}.png")]
