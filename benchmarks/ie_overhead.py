"""IE scoring throughput against a bare forward pass of the same model on the same batches.

    python -m benchmarks.ie_overhead [--n-samples 512] [--batch-size 64] [--estimator noisy --estimator gaussian:pca=8]
                                     [--write benchmarks/RESULTS.md]

The bare pass is ``model(input_ids)`` under ``torch.no_grad`` (logits included), timed in the same
run; each IE run (one per ``--estimator``, default the IE default) is hook capture at every block
and position plus the streaming state (Gaussian moments or the reservoir), then the micro pass and
the estimates, timed separately, and its end-to-end time as a multiple of the bare pass.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import torch

from benchmarks._results import emit, provenance
from emergence_fast import datasets, models
from emergence_fast.emergence import information_emergence
from emergence_fast.estimators import gaussian


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=512)
    parser.add_argument("--k-shots", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--backend", default=None)
    parser.add_argument("--estimator", action="append",
                        help="NAME or NAME:key=value,... (values are ints or floats where they parse); repeatable")
    parser.add_argument("--eigh-only", action="store_true",
                        help="time only the pca=k eigenvectors: top_eigenvectors against a full torch.linalg.eigh")
    parser.add_argument("--write", help="append the table to this markdown file")
    args = parser.parse_args(argv)
    if args.eigh_only:
        emit(_eigh_table(argv), args.write)
        return 0

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer = models.load_model(device=device)
    data = datasets.load_dataset("icl-animal", tokenizer, args.n_samples, k_shots=args.k_shots)
    ids = data.input_ids.to(device)
    tokens = ids.numel()

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    with torch.no_grad():
        model(ids[: args.batch_size])  # warm-up
        sync()
        start = time.perf_counter()
        for lo in range(0, ids.shape[0], args.batch_size):
            model(ids[lo:lo + args.batch_size])
        sync()
        bare = time.perf_counter() - start

    machine = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    lines = [
        f"### IE overhead: SmolLM2-135M-Instruct, {machine}",
        "",
        *provenance("ie_overhead", argv),
        f"- load average (1, 5, 15 min) before the IE runs: {', '.join(f'{v:.1f}' for v in os.getloadavg())}",
        f"- data: icl-animal, N={args.n_samples}, T={ids.shape[1]}, batch {args.batch_size}, "
        f"backend={args.backend or 'auto'}; bare forward {bare:.2f} s ({tokens / bare:.0f} tokens/s)",
        "",
        "| estimator | macro pass (s) | of which accumulate (s) | micro pass (s) | estimates (s) | end to end (s) "
        "| end to end / bare |",
        "|---|---|---|---|---|---|---|",
    ]
    for spec in args.estimator or ["noisy"]:
        name, options = _parse_estimator(spec)
        result = information_emergence(model, tokenizer, data, batch_size=args.batch_size, backend=args.backend,
                                       estimator=name, estimator_options=options)
        t = result.provenance["timings"]
        total = t["pilot_s"] + t["macro_pass_s"] + t["merge_s"] + t["micro_pass_s"] + t["estimate_s"]
        lines.append(f"| {spec} | {t['macro_pass_s']:.2f} | {t['accumulate_s']:.2f} | {t['micro_pass_s']:.2f} | "
                     f"{t['estimate_s']:.2f} | {total:.2f} | {total / bare:.2f} |")
        print(lines[-1], flush=True)
    emit(lines, args.write)
    return 0


def _eigh_table(argv, cells=16, width=576, k=8, repeats=3):
    """The Gaussian ``pca=k`` step alone: ``cells`` correlation matrices of ``width`` columns (1024 samples of
    a power-law spectrum, as hidden states have), top-``k`` eigenvectors by :func:`top_eigenvectors` against the
    full ``torch.linalg.eigh`` it replaced, best of ``repeats``; and the sine of the largest principal angle."""
    generator = torch.Generator().manual_seed(0)
    scales = torch.arange(1, width + 1, dtype=torch.float64) ** -0.8
    rows = torch.randn(cells, 1024, width, generator=generator, dtype=torch.float64) * scales
    rows = rows @ torch.linalg.qr(torch.randn(width, width, generator=generator, dtype=torch.float64))[0]
    cov = rows.transpose(-1, -2) @ rows
    std = cov.diagonal(dim1=-2, dim2=-1).sqrt()
    corr = cov / (std.unsqueeze(-1) * std.unsqueeze(-2))
    best = {"eigh": math.inf, "top": math.inf}
    for _ in range(repeats):
        start = time.perf_counter()
        exact = torch.linalg.eigh(corr)[1][..., -k:]
        best["eigh"] = min(best["eigh"], time.perf_counter() - start)
        start = time.perf_counter()
        fast = gaussian.top_eigenvectors(corr, k)
        best["top"] = min(best["top"], time.perf_counter() - start)
    sine = float(torch.linalg.matrix_norm(fast - exact @ (exact.transpose(-1, -2) @ fast), ord=2).max())
    return [f"### Gaussian pca={k}: top-{k} eigenvectors of {cells} correlation matrices {width} x {width}, "
            f"CPU, {torch.get_num_threads()} threads", "", *provenance("ie_overhead", argv),
            f"- load average (1, 5, 15 min): {', '.join(f'{v:.1f}' for v in os.getloadavg())}", "",
            "| path | seconds (best of 3) | per matrix (ms) | largest sin(angle) to eigh's subspace |", "|---|---|---|---|",
            f"| torch.linalg.eigh (all {width}) | {best['eigh']:.3f} | {1000 * best['eigh'] / cells:.0f} | - |",
            f"| top_eigenvectors (syevr, {k}) | {best['top']:.3f} | {1000 * best['top'] / cells:.0f} | {sine:.1e} |",
            f"| ratio | {best['eigh'] / best['top']:.1f}x | | |"]


def _parse_estimator(spec: str):
    """``"gaussian:pca=8"`` -> ``("gaussian", {"pca": 8})``."""
    name, _, rest = spec.partition(":")
    options = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        for kind in (int, float):
            try:
                value = kind(value)
                break
            except ValueError:
                pass
        options[key] = value
    return name, options or None


if __name__ == "__main__":
    sys.exit(main())
