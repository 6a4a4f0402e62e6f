"""Estimator agreement study: every IE estimator on the same captured states of SmolLM2-135M.

    python -m benchmarks.ie_agreement [--n-samples 256] [--layers 0,14,29] [--out benchmarks/figures]
                                      [--write benchmarks/RESULTS.md]

For each dataset (icl-animal, icl-color, icl-country with 4 shots, and real English text: the
licence texts shipped by Debian's ``base-files`` package in /usr/share/common-licenses, 776 spans),
the model runs once (:func:`~emergence_fast.emergence.capture_states`) and every estimator reads
those states (:func:`~emergence_fast.emergence.estimate_from_states`). Per estimator and dataset:

- ``above``: fraction of macro cells above the exact ceiling (prefix entropy) by more than two
  standard errors (or infinite): where the estimate cannot be information about the prefix;
- ``r(ceiling)``: Pearson correlation over positions of the layer-mean macro estimate with the
  ceiling (the true MI of an injective network has the ceiling's shape); ``r(IE ceiling)`` the
  same for layer-mean IE against the exact IE ceiling (prefix entropy minus the running mean of
  the token entropies), which on the ICL sets rises at separators and falls at entities;
- ICL sets: ``entity step`` the mean rise of layer-mean IE at entity positions and ``sep step``
  the mean absolute change at separators (the paper: IE steps up at entities, flat at
  separators); ``steps ok`` when the first is positive and larger than the second;
- text: ``rank r(position)``, Spearman's correlation of layer-mean IE with position (the paper:
  IE rises token by token on natural text);
- ``time``: the estimate stage in seconds; ``peak``: its peak resident memory above the memory
  held before it (``/proc/self/clear_refs`` resets the high-water mark).

KSG runs on each cell's top-8 principal components per side (full-width KSG on 576-d states
of ~500 distinct prefixes is dominated by its bias); ``chen2024`` at 100 steps instead of the
paper's 10,000 and InfoNCE at 300 (the critics are the cost on two CPU cores). Writes ``ie_agreement.json``, ``ie_agreement.md``
and ``ie_agreement.png`` into ``--out``.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from benchmarks._results import emit, provenance
from emergence_fast import datasets, models
from emergence_fast.emergence import IEResult, capture_states, estimate_from_states
from emergence_fast.ie.estimate import CellEstimates
from emergence_fast.ie.result import _pearson, _result
from emergence_fast.estimators.uncertainty import estimate_with_stderr
from emergence_fast.estimators import MI_METHODS

TEXT_SOURCE = Path("/usr/share/common-licenses")
TEXT_NAME = "the licence texts of Debian's base-files package (/usr/share/common-licenses, GPL, LGPL, GFDL, MPL, Apache, ...)"
ESTIMATORS = {  # label: (estimator, options), cheap first
    **{f"noisy sigma={sigma}": ("noisy", {"sigma": sigma, "n_draws": 2, "seed": 0}) for sigma in (0.03, 0.1, 0.3, 1.0)},
    "gaussian pca=8 (wishart)": ("gaussian", {"pca": 8, "bias_correction": "wishart"}),
    "sliced k=4": ("sliced", {"k": 4, "n_slices": 64, "seed": 0}),
    "ksg on top-8 PCs": ("ksg-pca", {"k": 3, "jitter": 1e-4, "pca": 8}),
    "renyi": ("renyi", {}),
    "infonce (300 steps)": ("infonce", {"steps": 300}),
    "chen2024 (100 steps)": ("chen2024", {"steps": 100}),
    "gaussian (full width)": ("gaussian", {"pca": None, "bias_correction": "none"}),
}


def _rss(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> int:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _rss("VmRSS")


def _top_components(z: torch.Tensor, k: int) -> torch.Tensor:
    """Each cell's rows projected on its top-``k`` principal directions of the standardised states."""
    z = z.double()
    centred = z - z.mean(-2, keepdim=True)
    scale = centred.square().mean(-2, keepdim=True).sqrt()
    standardised = centred / torch.where(scale > 0, scale, torch.ones_like(scale))
    _, _, vh = torch.linalg.svd(standardised, full_matrices=False)
    return standardised @ vh[..., :k, :].transpose(-1, -2)


def _ksg_on_components(states, options, base) -> IEResult:
    """KSG with its jackknife on each cell's top principal components (macro and micro cells alike)."""
    k_pcs = options["pca"]
    ksg_options = {"k": options["k"], "jitter": options["jitter"], "base": base}
    x, y, micro_x, micro_y = states.sample_pairs()
    out = []
    for a, b in ((x, y), (micro_x, micro_y)):
        values, errors = [], []
        for layer in range(a.shape[0]):  # one layer's cells at a time bounds the jackknife's copies
            pa, pb = _top_components(a[layer], k_pcs), _top_components(b[layer], k_pcs)
            value, stderr = estimate_with_stderr(MI_METHODS["ksg"], "ksg", (pa, pb), ksg_options)
            values.append(value)
            errors.append(stderr)
        out += [torch.stack(values), torch.stack(errors), torch.full_like(torch.stack(values), float("nan"))]
    options = {**options, "pca": k_pcs}
    config = {**states.config, "estimator": "ksg-pca", "estimator_options": options, "base": base}
    return _result(states.layers, CellEstimates(*out), states.input_ids, "ksg", options, base, config, {}, [])


def _metrics(result: IEResult, entity_positions, text: bool) -> dict:
    macro, stderr, ceiling = result.macro, result.macro_stderr.nan_to_num(0.0), result.ceiling_macro
    above = (~torch.isfinite(macro)) | (macro > ceiling + 2 * stderr + 1e-6)
    shape = result.shape_agreement()
    ie = result.emergence.mean(0)
    rises = ie.diff()
    out = {"above": float(above.double().mean()), "r_ceiling": shape["pearson_with_ceiling"],
           "r_ie_ceiling": _pearson(ie, result.ceiling_emergence),
           "mean_macro": float(macro[torch.isfinite(macro)].mean()), "mean_ie": float(ie[torch.isfinite(ie)].mean())}
    if text:
        from scipy.stats import spearmanr

        out["rank_r_position"] = float(spearmanr(range(ie.numel()), ie.numpy()).statistic) \
            if bool(torch.isfinite(ie).all()) else float("nan")
    else:
        entity = [t - 1 for t in entity_positions if t > 0]
        separator = [t - 1 for t in range(1, ie.numel()) if t not in entity_positions]
        out["entity_step"] = float(rises[entity].mean())
        out["separator_step"] = float(rises[separator].abs().mean())
        out["steps_ok"] = bool(out["entity_step"] > 0 and out["entity_step"] > out["separator_step"])
    return out


DATASETS = ("text", "icl-animal", "icl-color", "icl-country")


def _datasets(tokenizer, n_samples, seq_len, names):
    if "text" not in names:
        yield from ((name, datasets.load_dataset(name, tokenizer, n_samples, k_shots=4, seed=0)) for name in names)
        return
    with tempfile.TemporaryDirectory() as folder:
        text = Path(folder) / "licenses.txt"  # text_dataset reads .txt files; symlinked names counted once
        sources = sorted({path.resolve() for path in TEXT_SOURCE.iterdir() if path.is_file()})
        text.write_text("\n\n".join(path.read_text() for path in sources))
        yield "text (licences)", datasets.load_dataset(f"text:{text}", tokenizer, n_samples, seq_len=seq_len, seed=0)
    for name in names:
        if name != "text":
            yield name, datasets.load_dataset(name, tokenizer, n_samples, k_shots=4, seed=0)


def _figure(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4), squeeze=False)
    for ax, (name, (ceiling, per_estimator)) in zip(axes[0], curves.items()):
        ax.plot(ceiling, "k--", lw=2, label="exact ceiling")
        for i, (label, curve) in enumerate(per_estimator.items()):  # tab20: distinct colours for up to 20 estimators
            ax.plot([min(v, 2 * max(ceiling) + 1) for v in curve], label=label, lw=1.5 if "noisy" in label else 1,
                    color=plt.cm.tab20(i % 20), ls="-" if "noisy" in label else "--")
        ax.set_title(name)
        ax.set_xlabel("position")
        ax.set_ylabel("layer-mean macro MI (bits, clipped)")
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _run(args, chosen, names, layers) -> dict:
    """Capture each dataset once and run every chosen estimator on it; rows and curves as JSON-ready data."""
    model, tokenizer = models.load_model()
    rows, curves = [], {}
    record = {"text_source": TEXT_NAME, "n_samples": args.n_samples, "layers": layers}
    for name, data in _datasets(tokenizer, args.n_samples, args.seq_len, names):
        states = capture_states(model, tokenizer, data, layers=layers, batch_size=args.batch_size)
        curves[name] = [None, {}]
        for label in chosen:
            estimator, options = ESTIMATORS[label]
            baseline = _reset_peak()
            start = time.perf_counter()
            if estimator == "ksg-pca":
                result = _ksg_on_components(states, options, base=2)
            else:
                result = estimate_from_states(states, estimator, options)
            seconds = time.perf_counter() - start
            peak = max(0, _rss("VmHWM") - baseline)
            metrics = _metrics(result, data.entity_positions, text=name.startswith("text"))
            rows.append({"dataset": name, "estimator": label, "seconds": seconds, "peak_bytes": peak, **metrics})
            curves[name] = [result.ceiling_macro.tolist(), {**curves[name][1], label: result.macro.mean(0).tolist()}]
            print(json.dumps(rows[-1]), flush=True)
        record[name] = {"seq_len": data.input_ids.shape[1], "entity_positions": data.entity_positions,
                        "distinct_prefixes": [int(torch.unique(data.input_ids[:, : t + 1], dim=0).shape[0])
                                              for t in range(data.input_ids.shape[1])]}
        del states
    return {**record, "rows": rows, "curves": curves}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=256)
    parser.add_argument("--seq-len", type=int, default=8, help="tokens per text span")
    parser.add_argument("--layers", default="0,14,29")
    parser.add_argument("--estimators", default=",".join(ESTIMATORS), help="comma-separated labels (default: all)")
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated subset of %(default)s")
    parser.add_argument("--merge", nargs="+", metavar="JSON", help="only combine ie_agreement.json files of runs on "
                        "parts of the datasets into one table and figure in --out")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", default="benchmarks/figures")
    parser.add_argument("--write", help="append the table to this markdown file")
    args = parser.parse_args(argv)
    chosen = [label.strip() for label in args.estimators.split(",")]
    unknown = [label for label in chosen if label not in ESTIMATORS]
    if unknown:
        parser.error(f"--estimators: unknown {unknown}; choose from {list(ESTIMATORS)}")
    names = [name.strip() for name in args.datasets.split(",")]
    if any(name not in DATASETS for name in names):
        parser.error(f"--datasets: choose from {DATASETS}, got {names}")
    layers = [int(v) for v in args.layers.split(",")]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.merge:
        record = {"rows": [], "curves": {}}
        for path in args.merge:
            part = json.loads(Path(path).read_text())
            record = {**part, **record, "rows": record["rows"] + part["rows"],
                      "curves": {**record["curves"], **part["curves"]}}
    else:
        record = _run(args, chosen, names, layers)
    (out_dir / "ie_agreement.json").write_text(json.dumps(record, indent=1))
    _figure(record["curves"], out_dir / "ie_agreement.png")
    rows = record["rows"]
    args.n_samples, layers = record["n_samples"], record["layers"]

    lines = ["### IE estimator agreement: SmolLM2-135M-Instruct, every estimator on the same captured states", "",
             *provenance("ie_agreement", argv),
             f"- data: icl-animal, icl-color, icl-country (4 shots), and {TEXT_NAME}, {args.seq_len}-token spans; "
             f"N={args.n_samples}; blocks {layers}; bits",
             "- above: macro cells above the exact ceiling by > 2 stderr (or infinite); r(ceiling): Pearson over "
             "positions of the layer-mean macro curve with the ceiling; steps: mean IE rise at entities vs mean |change| "
             "at separators; text: Spearman of IE with position; peak: resident memory above the captured states", "",
             "| dataset | estimator | above | r(ceiling) | r(IE ceiling) | mean macro | entity step / sep step "
             "| text: r(position) | time (s) | peak |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        steps = "" if "entity_step" not in row else \
            f"{row['entity_step']:+.2f} / {row['separator_step']:.2f} {'yes' if row['steps_ok'] else 'no'}"
        r, r_ie = (("n/a" if v is None else f"{v:+.2f}") for v in (row["r_ceiling"], row["r_ie_ceiling"]))
        lines.append(f"| {row['dataset']} | {row['estimator']} | {row['above']:.0%} | {r} | {r_ie} | "
                     f"{row['mean_macro']:.3g} | {steps} | "
                     f"{row.get('rank_r_position', float('nan')):+.2f} | {row['seconds']:.1f} | "
                     f"{row['peak_bytes'] / 1e9:.2f} GB |".replace("| +nan |", "| |"))
    (out_dir / "ie_agreement.md").write_text("\n".join(lines) + "\n")
    emit(lines, args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
