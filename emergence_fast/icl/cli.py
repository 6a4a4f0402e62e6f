"""``emergence-fast icl judge|tree|generate``: in-context learning with random binary sequences
(Bigelow et al., arXiv 2310.17639) on a model, the embedded SmolLM2-135M-Instruct by default.

``judge``: p(random | C^n) for n = 1..--max-len per concept, plus --n-random seeded random
sequences. ``tree``: P(concept | C^n) from depth --depth continuation trees. ``generate``:
--n-samples sampled sequences per p(Tails), with metrics against Bernoulli, Window Average and
a fitted Markov chain. Each writes JSON, CSV and a PNG (transitions marked) under --out.

Under ``torchrun --nproc_per_node=K`` (or any launcher that sets RANK, WORLD_SIZE, MASTER_ADDR,
MASTER_PORT) the prompts' batches are shared out across the K ranks and the result is the one
process's, bit for bit; the ranks first check that they run the same configuration on the same
model, and only rank 0 prints and writes files.

Register it with :func:`add_parser` on the main parser's subparsers; it sets ``func=run``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import distributed

TASKS = ("judge", "tree", "generate")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``icl`` subcommand to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    if not hasattr(subparsers, "add_parser"):
        raise TypeError(f"subparsers must come from ArgumentParser.add_subparsers, got {type(subparsers).__name__}")
    parser = subparsers.add_parser("icl", help="in-context learning with random binary sequences (Bigelow et al.)",
                                   description=__doc__.split("\n\n")[1].replace("``", ""))
    parser.add_argument("task", choices=TASKS)
    parser.add_argument("--model", help="local folder or cached Hugging Face id (default: embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--gguf-file", help="GGUF file name inside --model")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16")
    parser.add_argument("--concepts", default="01,011", help="comma-separated 0/1 strings, or 'paper' for the 27 of the paper")
    parser.add_argument("--max-len", type=int, default=None, help="longest |x| in flips (default: judge 100, tree 40)")
    parser.add_argument("--depth", type=int, default=4, help="tree depth D (2^D - 1 prompts per |x|)")
    parser.add_argument("--n-random", type=int, default=3, help="judge: seeded random sequences as a baseline")
    parser.add_argument("--n-samples", type=int, default=20, help="generate: samples per p(Tails)")
    parser.add_argument("--p-tails", default=None, help="generate: comma-separated percentages (default: the paper's 13)")
    parser.add_argument("--max-new-tokens", type=int, default=160, help="generate: token budget per sample")
    parser.add_argument("--crop-length", type=int, default=50,
                        help="generate: flips kept per sequence; shorter sequences are dropped (the paper: 50)")
    parser.add_argument("--chat", action="store_true", help="wrap prompts in the tokenizer's chat template")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--no-prefix-cache", action="store_true", help="run every prompt in full (reference path)")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates for the transition CIs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/icl", help="output folder (written by rank 0 only)")
    parser.add_argument("--dist-backend", default="auto", choices=distributed.DIST_BACKENDS,
                        help="torch.distributed backend under torchrun: auto (NCCL with CUDA GPUs, else gloo), gloo, nccl")
    parser.set_defaults(func=run)
    return parser


def _positive(value, name):
    if value is not None and value < 1:
        raise SystemExit(f"--{name} must be >= 1, got {value}")


# Arguments that do not change the result: where it goes, and where each rank computes.
_LOCAL_ARGS = ("out", "device", "dist_backend", "func", "command")


def model_identity(model, tokenizer) -> dict:
    """What the ranks of one job must agree on about the loaded model (cheap to compare)."""
    config = getattr(model, "config", None)
    return {"model_class": type(model).__name__, "model_type": getattr(config, "model_type", None),
            "n_parameters": int(sum(p.numel() for p in model.parameters())),
            "param_dtype": str(next(model.parameters()).dtype), "vocab": len(tokenizer)}


def _load_agreed(args, world):
    """Load the model on every rank; check that every rank runs the same configuration on the same model.

    A rank whose load failed still takes part in the check (with its error), so the others fail
    at once instead of waiting for it.
    """
    from .. import models

    config = {key: value for key, value in sorted(vars(args).items()) if key not in _LOCAL_ARGS}
    try:
        model, tokenizer = models.load_model(args.model, gguf_file=args.gguf_file,
                                             device=distributed.rank_device(args.device, world), dtype=args.dtype)
    except Exception as exc:
        if world.distributed:
            _agree({**config, "error": f"{type(exc).__name__}: {exc}"}, world)
        raise
    _agree({**config, **model_identity(model, tokenizer)}, world)
    return model, tokenizer


def _agree(value, world):
    try:
        distributed.check_agreement(value, world)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None


def run(args, out=None) -> list[Path]:
    """Run the task in ``args`` (parsed by the parser from :func:`add_parser`); return the files written.

    Joins the launcher's process group when there is one (:func:`emergence_fast.distributed.init`);
    on ranks other than 0 nothing is printed or written and the list is empty.
    """
    from . import prompts as P

    out = out or sys.stdout
    for name in ("max_len", "depth", "n_samples", "batch_size", "max_new_tokens", "crop_length"):
        _positive(getattr(args, name), name.replace("_", "-"))
    if args.n_random < 0 or args.n_boot < 0:
        raise SystemExit("--n-random and --n-boot must be >= 0")
    try:
        concepts = P.parse_concepts(args.concepts)
        p_tails = (tuple(int(v) for v in args.p_tails.split(",")) if args.p_tails else P.P_TAILS_PAPER)
    except ValueError as exc:
        raise SystemExit(f"bad argument: {exc}") from exc
    try:
        world = distributed.init(getattr(args, "dist_backend", "auto"))
    except ValueError as exc:
        raise SystemExit(f"bad argument --dist-backend: {exc}") from None
    try:
        return _run(args, out, world, concepts, p_tails)
    finally:
        distributed.shutdown(world)


def _run(args, out, world, concepts, p_tails) -> list[Path]:
    from .. import models
    from . import concepts as C
    from . import prompts as P
    from . import randomness as R
    from . import report
    from .runner import PromptRunner

    model, tokenizer = _load_agreed(args, world)
    if args.chat and not P.has_chat_template(tokenizer):
        raise SystemExit("--chat needs a tokenizer with a chat template; this one has none")
    runner = PromptRunner(model, tokenizer, batch_size=args.batch_size, prefix_cache=not args.no_prefix_cache,
                          world=world)
    source = args.model or models.DEFAULT_MODEL
    out_dir = Path(args.out)
    if args.task == "judge":
        result = C.judgment_curves(model, tokenizer, concepts, args.max_len or 100, n_random=args.n_random,
                                   seed=args.seed, chat=args.chat, runner=runner, n_boot=args.n_boot)
    elif args.task == "tree":
        result = C.tree_curves(model, tokenizer, concepts, args.max_len or 40, args.depth, chat=args.chat,
                               runner=runner, n_boot=args.n_boot, seed=args.seed)
    else:
        result = R.generate_flips(model, tokenizer, p_tails, args.n_samples, max_new_tokens=args.max_new_tokens,
                                  crop_length=args.crop_length, seed=args.seed, chat=args.chat, runner=runner)
    result.config["model_source"] = source
    result.provenance["distributed"] = {"world_size": world.world_size, "backend": world.backend}
    if not world.is_main:
        return []
    if args.task == "generate":
        written = report.write_generation_result(result, out_dir)
        for row in result.to_rows():
            print(f"{row['source']:>15s} p={row['p_tails']:.2f} n={row['n']:3d} "
                  + (f"mean={row['mean_mean']:.3f} alternation={row['alternation_mean']:.3f} "
                     f"longest_run={row['longest_run_mean']:.2f}" if row["n"] else "(no sequence reached the crop length)"),
                  file=out)
        print("wrote " + ", ".join(str(p) for p in written), file=out)
        return written
    written = report.write_concept_result(result, out_dir)
    print(report.transition_table(result), file=out)
    ranks = f" on {world.world_size} ranks" if world.distributed else ""
    print(f"{result.provenance['runner']['prompts']} prompts, {result.provenance['runner']['forward_calls']} forward "
          f"calls{ranks}, {result.provenance['seconds']:.1f} s", file=out)
    print("wrote " + ", ".join(str(p) for p in written), file=out)
    return written


def main(argv=None) -> int:
    """Stand-alone entry (``python -m emergence_fast.icl.cli judge ...``) until the main CLI registers ``icl``."""
    parser = argparse.ArgumentParser(prog="emergence-fast")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["icl", *(argv if argv is not None else sys.argv[1:])])
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
