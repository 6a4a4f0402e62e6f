"""1-D KSG (k = 3, variant 1): the sorted-array path against scikit-learn's ``mutual_info_regression``, one run.

    python -m benchmarks.knn_1d [--sizes 1000,10000,50000,200000] [--reps 5] [--brute-max 50000]
                                [--crossover 250,500,1000,2000,5000] [--write benchmarks/RESULTS.md]

Data: x ~ N(0, 1), y = 0.75 x + 0.66 e (float64, seed 0). Timed: scikit-learn's whole call
(``n_neighbors=3, random_state=0``: it scales x and y by their standard deviation, adds
``1e-10 * max(1, mean|.|)`` Gaussian noise, then runs KSG variant 1 with a chebyshev
``NearestNeighbors`` and two ``KDTree`` radius counts) against ours on the same raw arrays
(``algorithm="sorted"``, ``"kd_tree"`` and, up to ``--brute-max``, the C++ brute force).
Each timing is the best of ``--reps`` turns, the functions taking turns (wall clock, and CPU
time of every thread of the process: the steadier figure on a shared, loaded machine; scipy's
tree query in ours runs on every core, scikit-learn's on one). Values: ours is also run on scikit-learn's own preprocessed arrays (the same scaling and the
same noise draw) and must give scikit-learn's number to 1e-12 (scikit-learn clips a negative
estimate to 0; the data here has I = 0.41 nats). The crossover table times the sorted path
against the C++ brute force on 1 and 64 batch cells: the measurement behind ``algorithm="auto"``
(:data:`emergence_fast.estimators.knn._SORTED_MIN_N`).
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from functools import partial

import numpy as np
import torch

from benchmarks._results import emit, provenance
from emergence_fast.estimators import knn


def interleaved(fns: dict, reps: int) -> dict:
    """Best wall and best CPU time (ms, all threads of this process) of each function, the functions taking turns
    in every repeat so that each sees the same load on a shared machine."""
    best = {name: [float("inf"), float("inf")] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            best[name][0] = min(best[name][0], (time.perf_counter() - wall) * 1e3)
            best[name][1] = min(best[name][1], (time.process_time() - cpu) * 1e3)
    return best


def data(n: int, cells: int = 1, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(cells, n, 1, generator=generator, dtype=torch.float64)
    return x, 0.75 * x + 0.66 * torch.randn(cells, n, 1, generator=generator, dtype=torch.float64)


def sklearn_inputs(x: np.ndarray, y: np.ndarray, seed: int = 0):
    """What ``mutual_info_regression(x[:, None], y, random_state=seed)`` hands to its KSG: scaled and jittered."""
    rng = np.random.RandomState(seed)
    xs = x / x.std()
    xs = xs + 1e-10 * max(1.0, np.mean(np.abs(xs))) * rng.standard_normal(size=(x.size, 1))[:, 0]
    ys = y / y.std()
    ys = ys + 1e-10 * max(1.0, np.mean(np.abs(ys))) * rng.standard_normal(size=y.size)
    return xs, ys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,50000,200000")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--brute-max", type=int, default=10000, help="largest N timed with the O(N^2) brute force")
    parser.add_argument("--crossover", default="500,1000,2000,5000", help="N for the sorted-vs-brute table")
    parser.add_argument("--write", help="append the tables to this markdown file")
    args = parser.parse_args(argv)
    from sklearn.feature_selection import mutual_info_regression

    rows = [("| N | sklearn wall / CPU (ms) | ours, sorted wall / CPU (ms) | ours, kd_tree wall / CPU (ms) "
             "| ours, brute cpp wall / CPU (ms) | sklearn / sorted, wall / CPU | auto picks "
             "| value: sklearn, ours on its inputs |"), "|---|---|---|---|---|---|---|---|"]
    for n in (int(s) for s in args.sizes.split(",")):
        x, y = (t[0] for t in data(n))
        xn, yn = x.numpy(), y[:, 0].numpy()
        peer = float(mutual_info_regression(xn, yn, n_neighbors=3, random_state=0)[0])
        xs, ys = sklearn_inputs(xn[:, 0], yn)
        same = float(knn.mutual_information(torch.from_numpy(xs), torch.from_numpy(ys), k=3, algorithm="sorted"))
        if abs(same - peer) > 1e-12:
            raise AssertionError(f"N={n}: ours {same!r} on scikit-learn's inputs, scikit-learn {peer!r}")
        ours = {alg: partial(knn.mutual_information, x, y, k=3, algorithm=alg) for alg in ("sorted", "kd_tree")}
        if float(ours["sorted"]()) != float(ours["kd_tree"]()):
            raise AssertionError(f"N={n}: the sorted and KD-tree paths disagree")
        fns = {"sklearn": partial(mutual_info_regression, xn, yn, n_neighbors=3, random_state=0), **ours}
        if n <= args.brute_max:
            fns["brute"] = partial(knn.mutual_information, x, y, k=3, algorithm="brute", backend="cpp")
            if float(fns["brute"]()) != float(ours["sorted"]()):
                raise AssertionError(f"N={n}: the sorted and brute-force paths disagree")
        t = interleaved(fns, args.reps)
        cell = {name: f"{wall:,.1f} / {cpu:,.1f}" for name, (wall, cpu) in t.items()}
        ratio = f"{t['sklearn'][0] / t['sorted'][0]:.2f}x / {t['sklearn'][1] / t['sorted'][1]:.2f}x"
        rows.append(f"| {n:,} | {cell['sklearn']} | {cell['sorted']} | {cell['kd_tree']} | {cell.get('brute', '–')} | {ratio} "
                    f"| {knn._pick_algorithm('auto', x, 2, True)} | {peer:.15f}, {same:.15f} |")

    cross = ["| batch cells | N | ours, sorted wall / CPU (ms) | ours, brute cpp wall / CPU (ms) | faster (wall) | auto picks |",
             "|---|---|---|---|---|---|"]
    for cells in (1, 64):
        for n in (int(s) for s in args.crossover.split(",") if s):
            x, y = data(n, cells)
            sort = partial(knn.mutual_information, x, y, k=3, algorithm="sorted")
            brute = partial(knn.mutual_information, x, y, k=3, algorithm="brute", backend="cpp")
            if not torch.equal(sort(), brute()):
                raise AssertionError(f"{cells} cells, N={n}: the sorted and brute-force paths disagree")
            t = interleaved({"sorted": sort, "brute": brute}, args.reps)
            cross.append(f"| {cells} | {n:,} | {t['sorted'][0]:,.1f} / {t['sorted'][1]:,.1f} "
                         f"| {t['brute'][0]:,.1f} / {t['brute'][1]:,.1f} "
                         f"| {'sorted' if t['sorted'][0] < t['brute'][0] else 'brute'} "
                         f"| {knn._pick_algorithm('auto', x, 2, True)} |")

    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    lines = [(f"### 1-D KSG: sorted path vs scikit-learn ({platform.processor() or platform.machine()}, "
              f"{len(os.sched_getaffinity(0))} CPUs usable, torch {torch.get_num_threads()} threads)"), "",
             *provenance("knn_1d", argv), f"- load average (1, 5, 15 min) at the end: {load}", "", *rows, *(["", *cross] if len(cross) > 2 else [])]
    emit(lines, args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
