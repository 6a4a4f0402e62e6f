"""ICL prompt throughput: batched + shared-prefix KV cache against one prompt per forward pass.

    python -m benchmarks.icl_throughput [--model smollm2|tiny] [--max-len 40] [--paper-len 100] [--depth 4]
                                        [--tree-len 12] [--batch-size 32] [--repeats 3] [--chat]
                                        [--threads N] [--write benchmarks/RESULTS.md]

Same model, same prompts, same threads, same run. Workloads: judgment curves for (01)^n and
(011)^n, n = 1..--max-len; the judgment curve of (01)^n at n = 1..--paper-len (100: the paper's
length and :func:`~emergence_fast.icl.concepts.judgment_curves`' default ``max_len``); the
depth---depth continuation tree of (011)^n, n = 1..--tree-len. ``--chat`` puts every prompt in the
tokenizer's chat template. ``--model tiny`` is a randomly initialised 2-layer Llama (width 64) on
SmolLM2's tokenizer: the same prompts and token counts, where per-call overhead weighs more. Four
ways to get every prompt's next-token readout:

* one prompt per forward: ``model(ids)`` for each prompt in turn, as the paper's code queried
  one prompt per API call (duplicates included);
* batched: :class:`PromptRunner` without the prefix cache (distinct prompts, full length, batched);
* prefix cache, tails as rows: :class:`PromptRunner` with ``pack_tails=False`` (the runner before
  packing: the trunk cache expanded to a row per tail);
* prefix cache, packed tails: :class:`PromptRunner` as the module uses it (a batch's tails in one
  row against the one-row trunk cache).

Each method runs ``--repeats`` times, the methods interleaved (so load changes on a shared machine
hit them alike), and the best time is kept. The readouts are compared with the one-prompt-per-forward
readout (max |difference| of P), so a speed-up never hides a wrong answer.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from benchmarks._results import emit, provenance
from emergence_fast import models
from emergence_fast.icl import prompts as P
from emergence_fast.icl.concepts import continuation_prefixes
from emergence_fast.icl.readout import BinaryReadout, ReadoutBatch
from emergence_fast.icl.runner import PromptRunner

METHODS = (("one prompt per forward", None), ("batched", dict(prefix_cache=False)),
           ("prefix cache, tails as rows", dict(pack_tails=False)), ("prefix cache, packed tails", {}))


def one_per_forward(model, seqs, readout):
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for ids in seqs:
            logits = model(torch.tensor([ids], device=device), logits_to_keep=1).logits[:, -1].float()
            out.append(readout(logits))
    return ReadoutBatch.cat(out)


def measure(name, model, tokenizer, texts, readout, batch_size, repeats, chat):
    """Rows ``(workload, method, prompts, best seconds, tokens fed, forward calls, max |dP|)``."""
    encoded = PromptRunner(model, tokenizer).encode(P.format_prompts(tokenizer, texts, chat), chat=chat)
    best = {label: float("inf") for label, _ in METHODS}
    work, result = {}, {}
    for _ in range(repeats):
        for label, options in METHODS:
            start = time.perf_counter()
            if options is None:
                out = one_per_forward(model, encoded, readout)
                work[label] = (sum(map(len, encoded)), len(encoded))
            else:
                runner = PromptRunner(model, tokenizer, batch_size=batch_size, **options)
                out = runner.map_last_logits(encoded, readout)
                work[label] = (runner.stats.tokens_fed, runner.stats.forward_calls)
            best[label] = min(best[label], time.perf_counter() - start)
            result[label] = out.p
    reference = result[METHODS[0][0]]
    return [(name, label, len(texts), best[label], *work[label], float((result[label] - reference).abs().max()))
            for label, _ in METHODS]


def tiny_llama(tokenizer):
    import transformers as tf

    torch.manual_seed(0)
    config = tf.LlamaConfig(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                            num_key_value_heads=2, vocab_size=len(tokenizer), max_position_embeddings=2048)
    return tf.LlamaForCausalLM(config).eval()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("smollm2", "tiny"), default="smollm2")
    parser.add_argument("--max-len", type=int, default=40)
    parser.add_argument("--paper-len", type=int, default=100)
    parser.add_argument("--tree-len", type=int, default=12)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chat", action="store_true", help="prompts in the tokenizer's chat template")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--write", help="append the table to this markdown file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    load_at_start = os.getloadavg()[0]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer = models.load_model(device=device)
    if args.model == "tiny":
        model = tiny_llama(tokenizer).to(device)
    judge = [P.judgment_prompt(P.concept_context(c, n)) for c in ((0, 1), (0, 1, 1)) for n in range(1, args.max_len + 1)]
    paper = [P.judgment_prompt(P.concept_context((0, 1), n)) for n in range(1, args.paper_len + 1)]
    tree = [P.tree_prompt(P.concept_context((0, 1, 1), n), prefix) for n in range(1, args.tree_len + 1)
            for prefix in continuation_prefixes(args.depth)]
    with torch.no_grad():  # warm-up: first calls pay for allocator and kernel setup
        model(torch.tensor([PromptRunner(model, tokenizer).encode(judge[:1])[0]], device=device))
    run = (args.batch_size, args.repeats, args.chat)
    rows = measure(f"judge (01, 011), n = 1..{args.max_len}", model, tokenizer, judge,
                   BinaryReadout(tokenizer, "n", "r"), *run)
    rows += measure(f"judge (01), n = 1..{args.paper_len}", model, tokenizer, paper,
                    BinaryReadout(tokenizer, "n", "r"), *run)
    rows += measure(f"tree (011), n = 1..{args.tree_len}, depth {args.depth}", model, tokenizer, tree,
                    BinaryReadout(tokenizer, "h", "t"), *run)

    name = "SmolLM2-135M-Instruct" if args.model == "smollm2" else "tiny random Llama (2 layers, width 64)"
    machine = (torch.cuda.get_device_name() if device == "cuda"
               else f"CPU, {torch.get_num_threads()} threads, load average {load_at_start:.1f} at start")
    lines = [f"### ICL prompt throughput: {name}{', chat template' if args.chat else ''}, {machine}", "",
             *provenance("icl_throughput", argv),
             (f"- batch size {args.batch_size}; best of {args.repeats} interleaved repeats; readout over the full "
              f"{len(tokenizer):,}-token vocabulary; `max abs dP` is the largest difference from the "
              "one-prompt-per-forward readout"), "",
             "| workload | method | prompts | best s | prompts/s | tokens fed | forward calls | speed-up | max abs dP |",
             "|---|---|---|---|---|---|---|---|---|"]
    base = {}
    for workload, method, n, seconds, tokens, calls, diff in rows:
        base.setdefault(workload, seconds)
        lines.append(f"| {workload} | {method} | {n} | {seconds:.2f} | {n / seconds:.1f} | {tokens} | {calls} | "
                     f"{base[workload] / seconds:.1f}x | {diff:.1e} |")
    emit(lines, args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
