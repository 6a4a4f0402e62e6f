"""Report: results to files and pictures. Nothing upstream writes or prints."""
from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json(result, path) -> Path:
    path = Path(path)
    _atomic_write_text(path, json.dumps(_json_safe(result.to_dict()), indent=1))
    return path


def write_csv(result, path) -> Path:
    path = Path(path)
    rows = result.to_rows()
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
    return path


def plot_result(result, out_dir, layers=None) -> list[Path]:
    """Heatmap of E over layers x positions; E, macro and the ceiling against position for chosen layers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []

    fig, ax = plt.subplots(figsize=(1.2 + 0.5 * len(result.positions), 1.5 + 0.18 * len(result.layers)))
    image = ax.imshow(result.emergence.numpy(), aspect="auto", cmap="RdBu_r", origin="lower",
                      vmin=-float(result.emergence.abs().nan_to_num(posinf=0, neginf=0).max()),
                      vmax=float(result.emergence.abs().nan_to_num(posinf=0, neginf=0).max()))
    ax.set_xticks(range(len(result.positions)), result.positions)
    ax.set_yticks(range(len(result.layers)), result.layers)
    ax.set_xlabel("position t")
    ax.set_ylabel("block l")
    ax.set_title(f"Information Emergence E(l, t) [{result.unit}]")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    paths.append(out_dir / "ie_heatmap.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    chosen = layers if layers is not None else sorted({result.layers[0], result.layers[len(result.layers) // 2],
                                                        result.layers[-1]})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for layer in chosen:
        row = result.layers.index(layer)
        axes[0].errorbar(result.positions, result.emergence[row].numpy(), yerr=result.emergence_stderr[row].numpy(),
                         marker="o", capsize=2, label=f"E, block {layer}")
        axes[1].plot(result.positions, result.macro[row].numpy(), marker="o", label=f"macro MI, block {layer}")
    axes[0].plot(result.positions, result.ceiling_emergence.numpy(), "k--", label="ceiling of E")
    axes[1].plot(result.positions, result.ceiling_macro.numpy(), "k--", label="ceiling: prefix entropy")
    for ax, title in zip(axes, ("emergence", "sequence-level MI")):
        ax.set_xlabel("position t")
        ax.set_ylabel(result.unit)
        ax.set_title(title)
        ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out_dir / "ie_positions.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths


def summary_table(result) -> str:
    """Per-layer means, and how the estimate's shape compares with the ceiling's."""
    summary = result.layer_summary()
    lines = [f"Information Emergence [{result.unit}], {result.config['n_samples']} samples x {result.config['seq_len']} "
             f"tokens, estimator={result.config['estimator']} {result.config['estimator_options']}",
             f"{'block':>5}  {'mean E':>9}  {'mean macro':>10}  {'mean micro':>10}"]
    for layer, e, macro, micro in zip(summary["layer"], summary["mean_emergence"], summary["mean_macro"],
                                      summary["mean_micro"]):
        lines.append(f"{layer:>5}  {e:>9.3f}  {macro:>10.3f}  {micro:>10.3f}")
    ceiling = ", ".join(f"{v:.2f}" for v in result.ceiling_macro.tolist())
    lines.append(f"peak block: {summary['peak_layer']}; ceiling (prefix entropy) by position: [{ceiling}]")
    shape = result.shape_agreement()
    lines.append(f"shape vs ceiling: pearson={shape['pearson_with_ceiling']}, "
                 f"steps agree at {shape['steps_where_ceiling_steps']} of positions")
    lines += [f"note: {note}" for note in result.notes]
    return "\n".join(lines)
