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
from ..cli_checks import check_model_args, check_positive, claim_output
from .prompts import P_TAILS_PAPER

TASKS = ("judge", "tree", "generate")

# The options that only some tasks read (the rest apply to all three); given to another task, they are refused.
TASK_OPTIONS = {"concepts": ("judge", "tree"), "max_len": ("judge", "tree"), "depth": ("tree",),
                "n_random": ("judge",), "n_samples": ("generate",), "p_tails": ("generate",),
                "max_new_tokens": ("generate",), "crop_length": ("generate",), "no_prefix_cache": ("judge", "tree"),
                "n_boot": ("judge", "tree")}


class _Given(argparse.Action):
    """``store`` (or ``store_true`` with ``nargs=0, const=True``) that also notes the option as given on the
    command line, in ``namespace.icl_given`` ({dest: option string}), so that a default is told from a choice."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)
        namespace.icl_given = {**getattr(namespace, "icl_given", {}), self.dest: option_string}


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``icl`` subcommand to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    if not hasattr(subparsers, "add_parser"):
        raise TypeError(f"subparsers must come from ArgumentParser.add_subparsers, got {type(subparsers).__name__}")
    parser = subparsers.add_parser("icl", help="in-context learning with random binary sequences (Bigelow et al.)",
                                   description=__doc__.split("\n\n")[1].replace("``", ""))
    parser.add_argument("task", choices=TASKS, help="judge: randomness judgments; tree: concept learning; "
                                                     "generate: sampled sequences")
    parser.add_argument("--model", help="local folder or cached Hugging Face id (default: embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--gguf-file", help="GGUF file name inside --model (default: none, the folder's weights)")
    parser.add_argument("--device", default=None, help="cpu | cuda[:i] (default: cpu)")
    parser.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"),
                        help="model weights' dtype (default: float32)")
    parser.add_argument("--concepts", action=_Given, default="01,011",
                        help="comma-separated 0/1 strings, or 'paper' for the 27 of the paper")
    parser.add_argument("--max-len", action=_Given, type=int, default=None,
                        help="longest |x| in flips (default: judge 100, tree 40)")
    parser.add_argument("--depth", action=_Given, type=int, default=4, help="tree depth D (2^D - 1 prompts per |x|)")
    parser.add_argument("--n-random", action=_Given, type=int, default=3, help="judge: seeded random sequences as a baseline")
    parser.add_argument("--n-samples", action=_Given, type=int, default=20, help="generate: samples per p(Tails)")
    parser.add_argument("--p-tails", action=_Given, default=None,
                        help="generate: comma-separated percentages (default: the paper's "
                             f"{','.join(map(str, P_TAILS_PAPER))})")
    parser.add_argument("--max-new-tokens", action=_Given, type=int, default=160, help="generate: token budget per sample")
    parser.add_argument("--crop-length", action=_Given, type=int, default=50,
                        help="generate: flips kept per sequence; shorter sequences are dropped (the paper: 50)")
    parser.add_argument("--chat", action="store_true", help="wrap prompts in the tokenizer's chat template")
    parser.add_argument("--batch-size", type=int, default=32, help="prompts (or samples) per forward pass")
    parser.add_argument("--no-prefix-cache", action=_Given, nargs=0, const=True, default=False,
                        help="run every prompt in full (reference path)")
    parser.add_argument("--n-boot", action=_Given, type=int, default=1000, help="bootstrap replicates for the transition CIs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random baselines, samples and bootstrap")
    parser.add_argument("--out", default="runs/icl", help="output folder (written by rank 0 only); locked while a run "
                                                         "uses it")
    parser.add_argument("--dist-backend", default="auto", choices=distributed.DIST_BACKENDS,
                        help="torch.distributed backend under torchrun: auto (NCCL with CUDA GPUs, else gloo), gloo, nccl")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run, icl_given={})
    return parser


# Arguments that do not change the result: where it goes, and where each rank computes.
_LOCAL_ARGS = ("out", "device", "dist_backend", "func", "command", "icl_given")


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
    distributed.check_agreement(value, world)  # a ValueError naming the key on every rank


def _check_args(args):
    """Every argument that can be checked without the model: ``(concepts, p_tails)``; ValueError naming the flag."""
    from . import concepts as C
    from . import randomness as R

    for dest, option in getattr(args, "icl_given", {}).items():
        if args.task not in TASK_OPTIONS[dest]:
            raise ValueError(f"{option} does not apply to icl {args.task} (only to icl "
                             f"{' and icl '.join(TASK_OPTIONS[dest])}); leave it out")
    check_positive(args, {"max_len": 1, "depth": 1, "n_samples": 1, "batch_size": 1, "max_new_tokens": 1,
                              "crop_length": 1, "n_random": 0, "n_boot": 0})
    check_model_args(args)
    try:
        concepts = C.as_concepts(args.concepts)
    except ValueError as exc:
        raise ValueError(f"--concepts: {exc}") from None
    if args.task == "generate":
        R.check_crop_reachable(args.crop_length, args.max_new_tokens, ("--crop-length", "--max-new-tokens"))
    if args.p_tails is None:
        return concepts, P_TAILS_PAPER
    try:
        values = tuple(int(v) for v in args.p_tails.split(","))
    except ValueError as exc:
        raise ValueError(f"--p-tails must be comma-separated integer percentages in [0, 100], got {args.p_tails!r} "
                         f"({exc})") from None
    try:
        return concepts, R.as_p_tails(values)
    except ValueError as exc:
        raise ValueError(f"--p-tails: {exc}") from None


def run(args, out=None) -> list[Path]:
    """Run the task in ``args`` (parsed by the parser from :func:`add_parser`); return the files written.

    Every argument is checked and ``--out`` locked (:class:`emergence_fast.report.OutputFolder`)
    before the model loads; a ``ValueError`` names the flag, and a run that fails leaves no
    folder it created behind. Joins the launcher's process group when there is one
    (:func:`emergence_fast.distributed.init`); on ranks other than 0 nothing is printed or
    written and the list is empty.
    """
    from ..report import OutputFolder

    out = out or sys.stdout
    concepts, p_tails = _check_args(args)
    try:
        world = distributed.init(getattr(args, "dist_backend", "auto"))
    except ValueError as exc:
        raise ValueError(f"--dist-backend: {exc}") from None
    folder = OutputFolder(args.out)
    try:
        claim_output(folder, world)
        written = _run(args, out, world, concepts, p_tails)
    except BaseException:
        folder.release(failed=True)
        raise
    else:
        folder.release()
    finally:
        distributed.shutdown(world)
    return written


def _run(args, out, world, concepts, p_tails) -> list[Path]:
    from .. import models
    from . import concepts as C
    from . import prompts as P
    from . import randomness as R
    from . import report
    from .runner import PromptRunner

    model, tokenizer = _load_agreed(args, world)
    if args.chat and not P.has_chat_template(tokenizer):
        raise ValueError("--chat needs a tokenizer with a chat template; this one has none")
    runner = PromptRunner(model, tokenizer, batch_size=args.batch_size, prefix_cache=not args.no_prefix_cache,
                          world=world, progress=not getattr(args, "quiet", False))
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
