"""Sweep throughput (cells/s) on this machine, against a peer in the same run.

    python -m benchmarks.sweep_throughput [--family DIR] [--models default ...] [--shots 1 2 4 8]
                                          [--n-examples 32] [--write benchmarks/RESULTS.md]

A cell is one (model, task, axis value) with all the task's metrics. Two workloads:

* ``--models`` (default: the embedded SmolLM2-135M-Instruct) x ``arithmetic-2d-mult`` x ``--shots``:
  the sweep against its peer, :func:`emergence_fast.mirage.live.run_family` called once per shot
  count (what a user of ``emergence-fast mirage --models ... --shots K`` runs: every model loaded
  once per K), on the same examples. Both produce the same exact-match values (checked).
* ``--family DIR`` (``make-family induction`` checkpoints): the sweep with its family defaults
  (induction at the family's repeat length and IE per block), alone: the cost of measuring a
  checkpoint family end to end, with the analysis (fits and bootstrap) timed apart.
"""
from __future__ import annotations

import argparse
import glob
import os
import platform
import tempfile
import time

import numpy as np
import torch

from benchmarks._results import emit, provenance


def _sweep(models, **kwargs):
    from emergence_fast.sweep import run_sweep

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        result = run_sweep(models, out=out, **kwargs)
    return result, time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["default"])
    parser.add_argument("--shots", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--n-examples", type=int, default=32)
    parser.add_argument("--family", default=None, help="a make-family induction folder")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--write", default=None)
    args = parser.parse_args(argv)

    lines = ["### Sweep throughput (issue #12)", "", *provenance("sweep_throughput", argv),
             f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads; load average before: "
             + ", ".join(f"{v:.1f}" for v in os.getloadavg()), "",
             "| workload | method | cells | seconds | cells/s | model loads |", "|---|---|---|---|---|---|"]
    # seconds: best of --repeats; the sweep's include its loads and its fits (200 bootstrap replicates a curve)

    from emergence_fast.mirage.live import run_family

    task = "arithmetic-2d-mult"
    sweep_s = peer_s = eval_s = float("inf")
    for _ in range(args.repeats):  # the two take turns, so each sees the same load; best of the repeats
        start = time.perf_counter()
        peer = {k: run_family(args.models, task, n_examples=args.n_examples, shots=k, seed=0) for k in args.shots}
        peer_s = min(peer_s, time.perf_counter() - start)
        result, seconds = _sweep(args.models, tasks=[task], values={task: args.shots}, n_examples=args.n_examples,
                                 x="index" if len(args.models) > 1 else "auto", n_boot=200)
        sweep_s = min(sweep_s, seconds)
        eval_s = min(eval_s, sum(result.provenance["unit_seconds"].values()))
    for k, family in peer.items():  # same examples, same model: the same exact match
        got = sorted(r["value"] for r in result.rows if r["metric"] == "exact_match" and r["axis_value"] == k)
        assert np.allclose(got, sorted(family.values["exact_match"])), (k, got, family.values["exact_match"])
    cells = len(args.models) * len(args.shots)
    label = f"{'+'.join(args.models)} x {task} x shots {args.shots}, {args.n_examples} examples"
    lines.append(f"| {label} | sweep (one load per model, fits included) | {cells} | {sweep_s:.1f} | "
                 f"{cells / sweep_s:.3f} | {len(result.loads)} |")
    lines.append(f"| {label} | run_family per shot count (peer) | {cells} | {peer_s:.1f} | {cells / peer_s:.3f} | "
                 f"{len(args.models) * len(args.shots)} |")
    lines.append(f"| | ratio | | | {peer_s / sweep_s:.2f}x | |")
    lines.append(f"| | of the sweep: evaluating the units | | {eval_s:.1f} | | |")

    if args.family:
        checkpoints = sorted(glob.glob(os.path.join(args.family, "step-*")))
        result, family_s = _sweep(checkpoints, n_boot=200)
        cells = len({(r["model"], r["task"], r["axis_value"]) for r in result.rows})
        lines.append(f"| induction family: {len(checkpoints)} checkpoints x (induction, ie per block) | sweep | {cells} | "
                     f"{family_s:.1f} | {cells / family_s:.3f} | {len(result.loads)} |")
        lines.append(f"| | of which evaluating the units | | {sum(result.provenance['unit_seconds'].values()):.1f} | | |")
    emit(lines, args.write)


if __name__ == "__main__":
    main()
