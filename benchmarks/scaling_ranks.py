"""IE on 1 process vs K gloo ranks (torchrun) on this machine: wall time, scaling efficiency, same answer.

    .venv/bin/python benchmarks/scaling_ranks.py [--n-samples 512] [--ranks 2] [--model FOLDER]

Runs ``emergence-fast ie`` on the embedded SmolLM2-135M (or ``--model``) three ways, each with
the same data, batches and folds: one process with one thread, one process with K threads
(the peer a user would otherwise run), and K ranks of one thread under torchrun. Prints a
markdown table for benchmarks/RESULTS.md. Scaling efficiency = t(1 rank, 1 thread) / (K t(K ranks)).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def run(command, threads, out):
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    done = subprocess.run(command + ["--out", str(out)], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    result = json.loads((out / "ie.json").read_text())
    return wall, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=512)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--model", default=None)
    parser.add_argument("--state-memory", default=None, help="passed to ie (e.g. 512MB for the subspace state)")
    args = parser.parse_args()
    ie = ["-m", "emergence_fast.cli", "ie", "--dataset", "icl-animal", "--k-shots", "4", "--n-samples",
          str(args.n_samples), "--batch-size", "32", "--update-samples", "128", "--quiet"]
    if args.model:
        ie += ["--model", args.model]
    if args.state_memory:
        ie += ["--state-memory", args.state_memory]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = []
        for label, command, threads in (
                ("1 process, 1 thread", [sys.executable, *ie], 1),
                (f"1 process, {args.ranks} threads", [sys.executable, *ie], args.ranks),
                (f"{args.ranks} ranks x 1 thread (torchrun, gloo)",
                 [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.ranks}",
                  *ie], 1)):
            wall, result = run(command, threads, tmp / label.replace(" ", "_"))
            rows.append((label, wall, result))
    base = rows[0][1]
    print(f"IE, SmolLM2-135M, icl-animal, N = {args.n_samples}, T = 8, 30 blocks, batch 32, folds of 128 samples; "
          f"torch {torch.__version__}, {os.cpu_count()} CPUs")
    print(f"state: {rows[0][2]['config']['state']}")
    print("| run | wall s (incl. load) | state setup s | macro pass s | checkpoint s | merge s | estimate s | "
          "speed-up (wall) | max rel. diff vs 1 process |")
    print("|---|---|---|---|---|---|---|---|---|")
    def macro(result):  # ie.json writes non-finite values as null (compared only where finite)
        return torch.tensor([[float("nan") if v is None else v for v in row] for row in result["macro"]],
                            dtype=torch.float64)

    reference = macro(rows[0][2])
    for label, wall, result in rows:
        same = torch.isfinite(reference) & torch.isfinite(macro(result))
        diff = float(((macro(result) - reference).abs() / reference.abs().clamp_min(1e-12))[same].max())
        timings = result["provenance"]["timings"]
        print(f"| {label} | {wall:.1f} | {timings['pilot_s']:.1f} | {timings['macro_pass_s']:.1f} | "
              f"{timings['checkpoint_s']:.1f} | {timings['merge_s']:.1f} | {timings['estimate_s']:.1f} | "
              f"{base / wall:.2f}x | {diff:.1e} |")
    print(f"scaling efficiency ({args.ranks} ranks vs 1 rank, wall): {base / (args.ranks * rows[2][1]):.0%}")


if __name__ == "__main__":
    main()
