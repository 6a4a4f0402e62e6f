"""IE scoring throughput against a bare forward pass of the same model on the same batches.

    python -m benchmarks.ie_overhead [--n-samples 512] [--batch-size 64] [--write benchmarks/RESULTS.md]

The bare pass is ``model(input_ids)`` under ``torch.no_grad`` (logits included); the IE pass
is hook capture at every block and position plus the streaming Gaussian accumulation, then
the micro pass and the estimates, timed separately.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from benchmarks._results import emit, provenance
from emergence_fast import datasets, models
from emergence_fast.emergence import information_emergence


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=512)
    parser.add_argument("--k-shots", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--backend", default=None)
    parser.add_argument("--write", help="append the table to this markdown file")
    args = parser.parse_args(argv)

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

    result = information_emergence(model, tokenizer, data, batch_size=args.batch_size, backend=args.backend)
    t = result.provenance["timings"]
    macro = t["macro_pass_s"]
    machine = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    lines = [
        f"### IE overhead: SmolLM2-135M-Instruct, {machine}",
        "",
        *provenance("ie_overhead", argv),
        f"- data: icl-animal, N={args.n_samples}, T={ids.shape[1]}, batch {args.batch_size}, all "
        f"{len(result.layers)} blocks x {len(result.positions)} positions, backend={args.backend or 'auto'}",
        "",
        "| pass | seconds | tokens/s | overhead vs bare |",
        "|---|---|---|---|",
        f"| bare forward | {bare:.2f} | {tokens / bare:.0f} | - |",
        f"| IE macro pass (capture + accumulate) | {macro:.2f} | {tokens / macro:.0f} | {100 * (macro / bare - 1):.0f}% |",
        f"| of which accumulate | {t['accumulate_s']:.2f} | | |",
        f"| IE micro pass (distinct tokens) | {t['micro_pass_s']:.2f} | | |",
        f"| IE estimates (log-dets, PCA) | {t['estimate_s']:.2f} | | |",
    ]
    emit(lines, args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
