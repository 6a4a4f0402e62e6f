"""Kernel rates against peers measured in the same run, as a markdown table.

Gram accumulation is compared with the dense-matmul rate of ``torch.matmul`` at the same
shape and precision; the fused token entropy with the device's copy bandwidth measured by
``Tensor.copy_`` (read + write bytes). Usage::

    python -m benchmarks.roofline                       # print the table
    python -m benchmarks.roofline --write benchmarks/RESULTS.md   # and append it with machine, date, command
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
from emergence_fast.ops.gram import gram
from emergence_fast.ops.softmax_entropy import softmax_entropy


def _timer(fn, device, reps):
    for _ in range(2):
        fn()
    times = []
    for _ in range(reps):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _machine(device):
    if device == "cuda":
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} (CPU)"


def run(device: str, reps: int) -> list[str]:
    names = [n for n, s in backends().items() if s.available and device in s.devices]
    if device == "cpu":
        names = [n for n in names if n != "triton"]  # the interpreter is for correctness only
    gram_cases = [(1, 65536, 1152), (240, 4096, 256)] if device == "cuda" else [(1, 8192, 576), (32, 1024, 64)]
    entropy_cases = [(4096, 50257), (1024, 256000)] if device == "cuda" else [(64, 49152), (8, 256000)]
    dtypes = [torch.float32, torch.bfloat16] if device == "cuda" else [torch.float32]

    lines = ["| op | shape | dtype | backend | time (ms) | rate | peer rate | % of peer |", "|---|---|---|---|---|---|---|---|"]
    for dtype in dtypes:
        for shape in gram_cases:
            a = torch.randn(*shape, device=device).to(dtype)
            flop = 2 * shape[0] * shape[1] * shape[2] ** 2
            peer = flop / _timer(lambda: torch.matmul(a.transpose(-1, -2), a), device, reps) / 1e12
            for name in names:
                seconds = _timer(lambda: gram(a, a, backend=name), device, reps)
                rate = flop / seconds / 1e12
                lines.append(f"| gram | {'x'.join(map(str, shape))} | {str(dtype)[6:]} | {name} | {seconds * 1e3:.2f} "
                             f"| {rate:.2f} TFLOP/s | {peer:.2f} TFLOP/s (matmul) | {100 * rate / peer:.0f}% |")
        for shape in entropy_cases:
            logits = torch.randn(*shape, device=device).to(dtype)
            scratch = torch.empty_like(logits)
            nbytes = logits.numel() * logits.element_size()
            peer = 2 * nbytes / _timer(lambda: scratch.copy_(logits), device, reps) / 1e9
            for name in names:
                seconds = _timer(lambda: softmax_entropy(logits, backend=name), device, reps)
                rate = nbytes / seconds / 1e9
                lines.append(f"| token entropy | {'x'.join(map(str, shape))} | {str(dtype)[6:]} | {name} | "
                             f"{seconds * 1e3:.2f} | {rate:.1f} GB/s | {peer:.1f} GB/s (copy) | {100 * rate / peer:.0f}% |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", help="append the table to this markdown file")
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    table = run(device, args.reps)
    header = [f"### {_machine(device)}", "", *provenance("roofline", argv), f"- threads: {torch.get_num_threads()}", ""]
    emit(header + table, args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
