"""Measured peak memory of the sample-based estimators against IE's cost model.

Each measurement runs in a fresh subprocess: it builds float32 inputs ``x, y [cells, m, d]``
(the reservoir rows IE passes), warms the estimator up on a tiny input (lazy imports, native
kernels), resets the kernel's peak-RSS mark (``/proc/self/clear_refs``), runs the call IE makes
(the value and, where IE uses it, the delete-half jackknife with ``resamples`` subsets per call)
and reads ``VmHWM`` minus the RSS before the call. tracemalloc would not see torch's allocations.
The model is :func:`emergence_fast.estimate_memory.chunk_bytes` less the micro rows (which the
call does not gather here), allocator margin included. Linux only.

    python -m benchmarks.estimate_memory            # the sweep recorded in benchmarks/RESULTS.md
    python -m benchmarks.estimate_memory --quick    # small shapes only
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, re, sys, torch
spec = json.loads(sys.argv[1])
torch.set_num_threads(spec["threads"])
from emergence_fast.estimators import MI_METHODS, registry
from emergence_fast.estimators.uncertainty import estimate_with_stderr

def status(key):
    return int(re.search(key + r":\s+(\d+)", open("/proc/self/status").read()).group(1)) * 1024

name, options = spec["estimator"], spec["options"]
estimate = MI_METHODS[name]

def run(x, y):
    declared = registry.get(name)  # as IE runs it: a standard error unless one costs a training per resample
    if declared.ie_jackknife or declared.uncertainty == "own":
        return estimate_with_stderr(estimate, name, (x, y), {"base": 2, **options},
                                    resamples_per_call=spec["resamples"])
    return estimate(x, y, base=2, **options)

generator = torch.Generator().manual_seed(0)
run(torch.randn(2, 64, 4, generator=generator), torch.randn(2, 64, 4, generator=generator))
x = torch.randn(spec["cells"], spec["m"], spec["d"], generator=generator)
y = torch.randn(spec["cells"], spec["m"], spec["d"], generator=generator)
open("/proc/self/clear_refs", "w").write("5")
before = status("VmRSS")
run(x, y)
print(json.dumps({"peak": status("VmHWM") - before}))
"""

QUICK = [(256, 64), (100, 32)]
FULL = [(1024, 576), (512, 576), (1024, 64)] + QUICK
ESTIMATORS = [
    ("ksg", {"jitter": 1e-4}),
    ("renyi", {}),
    ("renyi", {"approx": "lanczos"}),
    ("infonce", {"steps": 40}),
    ("mine", {"steps": 40, "critic": "concat", "hidden": 32, "batch_size": 64}),
    ("chen2024", {"steps": 20}),
]


def measure(estimator: str, options: dict, cells: int, m: int, d: int, resamples: int | None = None,
            threads: int = 2) -> int:
    """Peak bytes the call allocates on top of its inputs, measured in a fresh subprocess."""
    spec = {"estimator": estimator, "options": options, "cells": cells, "m": m, "d": d, "resamples": resamples,
            "threads": threads}
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": str(threads)}, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak"]


def modelled(estimator: str, options: dict, cells: int, m: int, d: int, resamples: int | None) -> int:
    from emergence_fast.estimate_memory import ITEMSIZE, chunk_bytes
    from emergence_fast.estimators.knn import native_knn_for

    micro = ITEMSIZE * cells * m * 2 * d
    return chunk_bytes(estimator, options, m, d, cells, resamples or 1, native_knn=native_knn_for("cpu")) - micro


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes only")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shapes", help="comma-separated MxD (rows x width), e.g. 1024x576,100x32")
    parser.add_argument("--estimators", help="comma-separated names from: " + ", ".join(sorted({e for e, _ in ESTIMATORS})))
    args = parser.parse_args(argv)
    shapes = ([tuple(int(v) for v in shape.split("x")) for shape in args.shapes.split(",")] if args.shapes
              else QUICK if args.quick else FULL)
    chosen = [(e, o) for e, o in ESTIMATORS if not args.estimators or e in args.estimators.split(",")]
    from emergence_fast.estimate_memory import JACKKNIFE_RESAMPLES, uses_jackknife

    print("| estimator | options | cells x m x d | resamples/call | measured MB | model MB | measured / model |")
    print("|---|---|---|---|---|---|---|")
    worst = 0.0
    for m, d in shapes:
        for estimator, options in chosen:
            for resamples in ((JACKKNIFE_RESAMPLES, 4) if uses_jackknife(estimator) else (None,)):
                for cells in (2, 4):
                    peak = measure(estimator, options, cells, m, d, resamples, args.threads)
                    model = modelled(estimator, options, cells, m, d, resamples)
                    worst = max(worst, peak / model)
                    print(f"| {estimator} | {json.dumps(options)} | {cells}x{m}x{d} | {resamples or '-'} | "
                          f"{peak / 1e6:.1f} | {model / 1e6:.1f} | {peak / model:.2f} |", flush=True)
    print(f"\nlargest measured / model: {worst:.2f}")


if __name__ == "__main__":
    main()
