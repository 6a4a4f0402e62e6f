"""KSG (k = 3, variant 1): exact brute force (C++) against the KD-tree path, by dimension and N.

    python -m benchmarks.knn_algorithms [--sizes 5000,20000,50000] [--dims 1,2,4] [--write benchmarks/RESULTS.md]

This is the measurement behind ``algorithm="auto"`` in :mod:`emergence_fast.estimators.knn`
(tree when the searched dimension D <= 4 and N >= 2500 D). Both paths are checked to give the
same estimate in the same run; scikit-learn's 1-D KSG is timed beside them where it applies.
"""
from __future__ import annotations

import argparse
import platform
import time

import torch

from benchmarks._results import emit, provenance
from emergence_fast.estimators import knn


def best_of(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5000,20000,50000")
    parser.add_argument("--dims", default="1,2,4")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--write", help="append the table to this markdown file")
    args = parser.parse_args(argv)
    from sklearn.feature_selection import mutual_info_regression

    generator = torch.Generator().manual_seed(0)
    rows = ["| N | dims of x, y | brute, cpp (ms) | kd_tree (ms) | sklearn (ms) | auto picks |", "|---|---|---|---|---|---|"]
    for n in (int(s) for s in args.sizes.split(",")):
        for d in (int(s) for s in args.dims.split(",")):
            x = torch.randn(n, d, generator=generator, dtype=torch.float64)
            y = x + torch.randn(n, d, generator=generator, dtype=torch.float64)
            brute = lambda: knn.mutual_information(x, y, algorithm="brute", backend="cpp")  # noqa: E731
            tree = lambda: knn.mutual_information(x, y, algorithm="kd_tree")  # noqa: E731
            if float(brute()) != float(tree()):
                raise AssertionError(f"brute force and KD-tree disagree at N={n}, d={d}")
            t_brute, t_tree = best_of(brute, args.reps), best_of(tree, args.reps)
            t_sk = "–"
            if d == 1:
                t_sk = f"{best_of(lambda: mutual_info_regression(x.numpy(), y[:, 0].numpy(), n_neighbors=3), args.reps):,.1f}"
            picks = knn._pick_algorithm("auto", x, 2 * d, d == 1)
            rows.append(f"| {n:,} | {d}, {d} | {t_brute:,.1f} | {t_tree:,.1f} | {t_sk} | {picks} |")
    lines = [f"### KSG: brute force vs KD-tree ({platform.processor() or platform.machine()}, "
             f"{torch.get_num_threads()} threads)", "", *provenance("knn_algorithms", argv), "", *rows]
    emit(lines, args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
