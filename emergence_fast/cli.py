"""Command line: ``emergence-fast demo`` and ``emergence-fast backends``.

The demo runs every estimator of the library on synthetic data whose true values are known
in closed form and prints them side by side, so a reader sees the estimators' bias at once.
"""
from __future__ import annotations

import argparse
import math
import sys
import time

import torch

import emergence_fast as ef
from emergence_fast._dispatch import resolve_backend


def correlated_gaussian(n: int, dx: int, dy: int, rho: float, generator: torch.Generator):
    """x, y with ``min(dx, dy)`` canonical correlations equal to ``rho``: I = -min(dx,dy)/2 log(1-rho^2)."""
    x = torch.randn(n, dx, generator=generator, dtype=torch.float64)
    noise = torch.randn(n, dy, generator=generator, dtype=torch.float64)
    k = min(dx, dy)
    y = noise.clone()
    y[:, :k] = rho * x[:, :k] + math.sqrt(1 - rho**2) * noise[:, :k]
    return x.float(), y.float(), -0.5 * k * math.log(1 - rho**2)


def _table(rows, header) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).rjust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def demo(seed: int = 0, out=None) -> None:
    out = out or sys.stdout
    generator = torch.Generator().manual_seed(seed)
    backend = resolve_backend(None, torch.device("cpu"))
    print(f"emergence_fast {ef.__version__} demo: synthetic data with known answers (nats); backend={backend}", file=out)
    print("Native Information Emergence on the embedded model arrives with the IE metric; this is the estimator core.\n",
          file=out)

    rows = []
    for n, d in ((2000, 1), (2000, 8), (2000, 32), (20000, 128)):
        x, y, truth = correlated_gaussian(n, d, d, 0.75, generator)
        start = time.perf_counter()
        plug_in, diag = ef.mutual_information(x, y, details=True)
        wishart = ef.mutual_information(x, y, bias_correction="wishart")
        elapsed = time.perf_counter() - start
        rows.append([f"MI gaussian d={d}", n, f"{truth:.4f}", f"{float(plug_in):.4f}", f"{float(wishart):.4f}",
                     f"{float(diag.expected_bias):.4f}", f"{elapsed * 1e3:.1f}"])

    x, y, truth = correlated_gaussian(20000, 1, 1, 0.75, generator)
    start = time.perf_counter()
    binned = ef.mutual_information(x, y, method="binned", bins=32)
    rows.append(["MI binned d=1 (32 bins)", 20000, f"{truth:.4f}", f"{float(binned):.4f}", "-", "-",
                 f"{(time.perf_counter() - start) * 1e3:.1f}"])

    cov = torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.0, 0.3], [0.0, 0.3, 0.5]], dtype=torch.float64)
    truth = 0.5 * math.log((2 * math.pi * math.e) ** 3 * float(torch.linalg.det(cov)))
    z = torch.distributions.MultivariateNormal(torch.zeros(3, dtype=torch.float64), cov).sample((5000,))
    start = time.perf_counter()
    h_plug = ef.entropy(z)
    h_wishart = ef.entropy(z, bias_correction="wishart")
    rows.append(["H gaussian d=3", 5000, f"{truth:.4f}", f"{float(h_plug):.4f}", f"{float(h_wishart):.4f}", "-",
                 f"{(time.perf_counter() - start) * 1e3:.1f}"])

    vocab = 49152
    logits = torch.randn(64, vocab, generator=generator)
    logits[:, vocab // 2:] = -math.inf
    start = time.perf_counter()
    h_tokens = ef.token_entropy(logits)
    elapsed = time.perf_counter() - start
    reference = -(torch.softmax(logits.double(), -1) * torch.log_softmax(logits.double(), -1)).nan_to_num().sum(-1)
    rows.append([f"token entropy V={vocab}, half masked", 64, f"{float(reference.mean()):.4f}",
                 f"{float(h_tokens.mean()):.4f}", "-", "-", f"{elapsed * 1e3:.1f}"])

    print(_table(rows, ["quantity", "N", "truth", "plug-in", "wishart", "exp. bias", "ms"]), file=out)
    print("\ntruth: closed form (MI = -k/2 log(1 - rho^2), rho = 0.75; H = 1/2 log((2 pi e)^d det S)); "
          "token-entropy truth is a float64 softmax reference.", file=out)


def show_backends(out=None) -> None:
    out = out or sys.stdout
    for name, status in ef.backends().items():
        mark = "yes" if status.available else "no "
        print(f"{name:7s} {mark} devices={list(status.devices)}  {status.reason}", file=out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="emergence-fast", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo_parser = sub.add_parser("demo", help="run the estimators on synthetic data with known answers")
    demo_parser.add_argument("--seed", type=int, default=0)
    sub.add_parser("backends", help="list the backends and why any is unavailable")
    args = parser.parse_args(argv)
    if args.command == "demo":
        demo(seed=args.seed)
    else:
        show_backends()
    return 0


if __name__ == "__main__":
    sys.exit(main())
