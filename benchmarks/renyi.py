"""Matrix-based Rényi: the exact paths against the fast ones, both kernels, in one run (issue #14).

    python -m benchmarks.renyi [--sizes 1024,4096] [--dim 32] [--reps 2] [--write benchmarks/RESULTS.md]

For each N: the exact value of S(X) and I(X;Y) (``approx=None``) and each fast path's relative
error against it and its speed ratio (exact time / fast time, best of ``--reps`` each, timed on
the same inputs in the same process). RBF kernel at the default (median-heuristic) bandwidth:
Lanczos (``n_probes=32, n_steps=40``), Nyström at several landmark counts, and random Fourier
features (Rahimi & Recht 2007; cos/sin pairs, so the approximate Gram keeps a unit diagonal and
tr A = 1), which the package does not ship and which is measured here only as the alternative
to Nyström. Linear kernel: the exact d×d / Kronecker form against the N×N Gram form it
replaced (the peer), and Lanczos. Data: x with a power-law spectrum (column j scaled by
j^-1/2, like a language model's hidden states), y = x M / sqrt(d) + 0.5 noise.
"""
from __future__ import annotations

import argparse
import math
import platform
import time

import torch

from benchmarks._results import emit, provenance
from emergence_fast.estimators import renyi

ALPHA = 1.01


def best_of(fn, reps: int):
    times, value = [], None
    for _ in range(reps):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return value, min(times)


def rff_entropy(z: torch.Tensor, n_features: int, seed: int) -> torch.Tensor:
    """S_alpha of the unit-bandwidth RBF Gram of ``z [N, D]`` by ``n_features`` random Fourier features."""
    half = n_features // 2
    omega = torch.randn(z.shape[-1], half, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    phase = z @ omega
    phi = torch.cat([phase.cos(), phase.sin()], -1) / math.sqrt(half)  # |phi_i|^2 = 1: tr of the Gram is N
    small = phi.transpose(-1, -2) @ phi / z.shape[-2]
    return renyi._spectral_entropy(torch.linalg.eigvalsh(small), ALPHA, size=z.shape[-2])


def rff_mi(x, y, n_features: int, seed: int = 0):
    zx, _ = renyi._rbf_features(x, "median", seed)
    zy, _ = renyi._rbf_features(y, "median", seed)
    return (rff_entropy(zx, n_features, seed) + rff_entropy(zy, n_features, seed)
            - rff_entropy(torch.cat([zx, zy], -1), n_features, seed))


def gram_form_mi(x, y):
    """The linear kernel's N×N definition (the exact path before issue #14)."""
    ax, _ = renyi.gram_matrix(x, kernel="linear")
    ay, _ = renyi.gram_matrix(y, kernel="linear")
    return (renyi.matrix_entropy(ax, ALPHA) + renyi.matrix_entropy(ay, ALPHA)
            - renyi.matrix_entropy(renyi.joint_matrix(ax, ay), ALPHA))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1024,4096")
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--landmarks", default="256,512,1024")
    parser.add_argument("--features", default="512,1024")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--write", help="append the table to this markdown file")
    args = parser.parse_args(argv)
    d = args.dim
    rows = ["| N | kernel | path | S(X) | rel. err. S | I(X;Y) | rel. err. I | time I (s) | speed-up on I |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for n in (int(s) for s in args.sizes.split(",")):
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(n, d, generator=generator, dtype=torch.float64) * torch.arange(1, d + 1) ** -0.5
        y = (x @ torch.randn(d, d, generator=generator, dtype=torch.float64) / math.sqrt(d)
             + 0.5 * torch.randn(n, d, generator=generator, dtype=torch.float64))
        for kernel in ("rbf", "linear"):
            options = {"alpha": ALPHA, "kernel": kernel}
            h_exact = float(renyi.entropy(x, **options))
            i_exact, t_exact = best_of(lambda: float(renyi.mutual_information(x, y, **options)), args.reps)
            # The speed reference is the N×N eigendecomposition: the exact RBF path, and for the linear kernel
            # the Gram form that the d×d / Kronecker form replaced.
            t_reference = t_exact
            if kernel == "linear":
                i_gram, t_reference = best_of(lambda: float(gram_form_mi(x, y)), args.reps)
                h_gram = float(renyi.matrix_entropy(renyi.gram_matrix(x, kernel="linear")[0], ALPHA))

            def row(path, h, i, t):
                rows.append(f"| {n:,} | {kernel} | {path} | {h:.6f} | {h / h_exact - 1:+.2%} | {i:.6f} | "
                            f"{i / i_exact - 1:+.2%} | {t:.3f} | {t_reference / t:.1f}× |")

            if kernel == "linear":
                row("N×N Gram form (exact before #14; the reference)", h_gram, i_gram, t_reference)
                diff = max(abs(h_gram - h_exact), abs(i_gram - i_exact))
                row(f"exact, d×d / Kronecker form (abs. diff. from the Gram form {diff:.0e})", h_exact, i_exact, t_exact)
            else:
                row("exact, eigvalsh N×N (the reference)", h_exact, i_exact, t_exact)
            paths = [("lanczos 32×40", lambda: renyi.mutual_information(x, y, approx="lanczos", **options),
                      lambda: float(renyi.entropy(x, approx="lanczos", **options)))]
            if kernel == "rbf":
                for m in (int(s) for s in args.landmarks.split(",")):
                    _, info = renyi.mutual_information(x, y, approx="nystrom", n_landmarks=m, details=True, **options)
                    paths.append((f"nystrom m={m} (residual ε = {float(info.residual):.2f})",
                                  lambda m=m: renyi.mutual_information(
                        x, y, approx="nystrom", n_landmarks=m, **options),
                        lambda m=m: float(renyi.entropy(x, approx="nystrom", n_landmarks=m, **options))))
                for f in (int(s) for s in args.features.split(",")):
                    paths.append((f"rff D={f} (not shipped)", lambda f=f: rff_mi(x, y, f),
                                  lambda f=f: float(rff_entropy(renyi._rbf_features(x, "median", 0)[0], f, 0))))
            for name, mi, h in paths:
                value, seconds = best_of(lambda: float(mi()), args.reps)
                row(name, h(), value, seconds)
                print(rows[-1], flush=True)
    lines = [f"### Matrix-based Rényi: exact vs fast paths, d = {d}, alpha = {ALPHA} "
             f"({platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s))", "",
             *provenance("renyi", argv), "", *rows]
    emit(lines, args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
