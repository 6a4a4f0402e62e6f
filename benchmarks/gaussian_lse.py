"""The fused Gaussian-kernel log-sum-exp (``ops.gaussian_lse``) against ``torch.cdist`` + ``torch.logsumexp``.

    python -m benchmarks.gaussian_lse [--sizes 256,1024] [--batch 30] [--dim 1152] [--dtype float32]
                                      [--reps 3] [--torch-max 256] [--offset 0] [--write benchmarks/RESULTS.md]

The shapes are the noisy-channel MI's: B = 30 layers, M = N query / key rows, D = 2 x hidden
width (x and y halves, dx = D / 2). The peer computes the same three outputs the way one would
in plain torch: ``torch.cdist`` over the x columns, the y columns and all columns, squared, then
``torch.logsumexp`` of the weights minus half of each, materialising three [B, M, N] matrices
(cdist takes the |q|^2 + |k|^2 - 2 q.k matmul route at these sizes, which is faster but loses
accuracy far from the origin). Every backend available for the device is timed in the same run
(not the Triton interpreter on a CPU: it is a correctness tool); the pure-torch reference only up
to ``--torch-max`` rows, as it takes tens of seconds a call beyond. The rate is pairs x D per
second (B M N D / seconds). "max |err|" is the largest absolute difference from a float64
evaluation of the same inputs by the direct-difference native backend (cpp on a CPU, cuda on a
GPU; the torch reference where neither is built). ``--offset`` adds a constant to every
coordinate of the queries and keys: the distances stay the same, and the accuracy column shows
what the expansion loses for states far from the origin.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import torch

from benchmarks._results import emit, provenance
from emergence_fast import backends
from emergence_fast.ops.gaussian_lse import gaussian_lse


def peer(q: torch.Tensor, k: torch.Tensor, w: torch.Tensor, dx: int) -> torch.Tensor:
    """The same [B, M, 3] from torch.cdist and torch.logsumexp."""
    sq_x = torch.cdist(q[..., :dx], k[..., :dx]).square()
    sq_y = torch.cdist(q[..., dx:], k[..., dx:]).square()
    sq = torch.cdist(q, k).square()
    return torch.stack([torch.logsumexp(w[:, None, :, c] - 0.5 * s, dim=-1) for c, s in enumerate((sq_x, sq_y, sq))], -1)


def _timer(fn, device: str, reps: int, warmup: bool = True):
    """(median seconds per call, the last call's result)."""
    if warmup:  # allocator, Triton / CUDA compilation, page faults
        fn()
    times = []
    for _ in range(reps):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def _machine(device: str) -> str:
    if device == "cuda":
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__} (CPU)"


def _reference(q, k, w, dx, device):
    """float64 direct differences: the native backend for the device, else the torch reference."""
    name = "cuda" if device == "cuda" else "cpp"
    if not backends()[name].available:
        name = "torch"
    return gaussian_lse(q.double(), k.double(), w.double(), dx, backend=name)


def run(device: str, sizes, batch: int, dim: int, dtype: torch.dtype, reps: int, torch_max: int,
        offset: float = 0.0) -> list[str]:
    names = [n for n, s in backends().items() if s.available and device in s.devices]
    if device == "cpu":
        names = [n for n in names if n != "triton"]  # the interpreter is for correctness only
    generator = torch.Generator().manual_seed(0)
    dx = dim // 2
    lines = ["| B x M x N x D | dtype | backend | s / call | G pair·dims/s | vs peer | max \\|err\\| |",
             "|---|---|---|---|---|---|---|"]
    for size in sizes:
        q = (torch.randn(batch, size, dim, generator=generator) + offset).to(device, dtype)
        k = (torch.randn(batch, size, dim, generator=generator) + offset).to(device, dtype)
        w = torch.log_softmax(torch.randn(batch, size, 3, generator=generator), dim=1).to(device, dtype)
        work = batch * size * size * dim
        ref = _reference(q, k, w, dx, device)
        shape = f"{batch} x {size} x {size} x {dim}"
        peer_s, out = _timer(lambda q=q, k=k, w=w: peer(q, k, w, dx), device, reps)
        peer_err = (out.double() - ref).abs().max().item()
        lines.append(f"| {shape} | {str(dtype)[6:]} | peer: cdist + logsumexp | {peer_s:.4g} | {work / peer_s / 1e9:.3g} "
                     f"| 1.00x | {peer_err:.1e} |")
        for name in names:
            if name == "torch" and size > torch_max:
                continue
            slow = name == "torch"  # one call, no warm-up: it takes tens of seconds a call
            seconds, out = _timer(lambda q=q, k=k, w=w, name=name: gaussian_lse(q, k, w, dx, backend=name),
                                  device, 1 if slow else reps, warmup=not slow)
            err = (out.double() - ref).abs().max().item()
            lines.append(f"| {shape} | {str(dtype)[6:]} | {name} | {seconds:.4g} | {work / seconds / 1e9:.3g} "
                         f"| {peer_s / seconds:.2f}x | {err:.1e} |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256,1024", help="M = N values, comma-separated")
    parser.add_argument("--batch", type=int, default=30)
    parser.add_argument("--dim", type=int, default=1152)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--torch-max", type=int, default=256, help="largest M = N the pure-torch reference is timed at")
    parser.add_argument("--offset", type=float, default=0.0, help="added to every coordinate (states far from 0)")
    parser.add_argument("--write", help="append the table to this markdown file")
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    sizes = [int(s) for s in args.sizes.split(",")]
    table = run(device, sizes, args.batch, args.dim, getattr(torch, args.dtype), args.reps, args.torch_max, args.offset)
    header = [f"### gaussian_lse against cdist + logsumexp: {_machine(device)}", "",
              *provenance("gaussian_lse", argv), f"- threads: {torch.get_num_threads()}", ""]
    emit(header + table, args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
