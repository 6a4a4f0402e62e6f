"""``emergence-fast sweep``: behaviour across models, checkpoints, shots and lengths, in one report.

    emergence-fast make-family induction --out runs/induction
    emergence-fast sweep --models runs/induction/step-* --out runs/induction-sweep
    emergence-fast sweep --models default --tasks entity-animals arithmetic-2d-mult --shots 0 1 2 4 8

Writes ``sweep.json``, ``sweep.csv`` (and ``sweep.parquet`` with pyarrow), ``transitions.csv``,
``curves_<task>.png`` and ``heatmap_<task>.png`` to ``--out``, keeps finished units in
``units.jsonl`` (rerun the same command to resume), and prints the transitions along the models.
Under ``torchrun`` every task's batches are shared out across the ranks; rank 0 writes.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from .. import distributed
from ..cli_checks import check_positive, claim_output
from ..report import optional_figures
from .grid import X_KINDS
from .tasks import TASKS


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``sweep`` to ``subparsers``; returns the new parser (``func`` = :func:`run`)."""
    parser = subparsers.add_parser("sweep", help="behaviour across models/checkpoints x shots x lengths, with transitions",
                                   description=__doc__.splitlines()[0].replace("``", ""))
    parser.add_argument("--models", nargs="+", required=True, metavar="MODEL",
                        help="model folders (e.g. make-family checkpoints), .gguf files, cached Hugging Face ids "
                             "(ID@REVISION for a revision such as step1000) or 'default', in the declared order")
    parser.add_argument("--tasks", nargs="+", default=None, metavar="TASK",
                        help=f"prompt families, of {', '.join(TASKS)} (default: induction ie for a make-family "
                             f"induction family, else entity-animals induction)")
    parser.add_argument("--shots", nargs="+", type=int, default=None, metavar="K",
                        help="shots axis of the arithmetic and entity tasks (default: each task's own)")
    parser.add_argument("--lengths", nargs="+", type=int, default=None, metavar="L",
                        help="length axis of binary-concepts (flips) and induction (repeat length) "
                             "(default: each task's own; a family's repeat length for induction)")
    parser.add_argument("--blocks", nargs="+", default=None, metavar="B",
                        help="blocks of the ie task (default: all)")
    parser.add_argument("--x", default="auto", choices=("auto", *X_KINDS),
                        help="the models' x: training step, parameter count, list position or --x-values "
                             "(auto: step when every model records one, else params)")
    parser.add_argument("--x-values", nargs="+", type=float, default=None, metavar="X",
                        help="one x per model, with --x values (default: none)")
    parser.add_argument("--log-x", default=None, choices=("yes", "no"),
                        help="fit along the models in log10 x (default: yes for params, no otherwise)")
    parser.add_argument("--reference", default=None, metavar="TASK:METRIC[@VALUE]",
                        help="the curve every other is timed against (default: induction:in_context_loss, "
                             "else the first task's reference metric; under --metrics, the first kept one)")
    parser.add_argument("--metrics", nargs="+", default=None, metavar="METRIC",
                        help="keep only these metrics; a task with none of them is not run (default: every metric "
                             "of every task)")
    parser.add_argument("--n-examples", type=int, default=64, help="examples per cell")
    parser.add_argument("--batch-size", type=int, default=16, help="sequences per forward pass")
    parser.add_argument("--seed", type=int, default=0, help="seed of every task's examples and of the bootstrap")
    parser.add_argument("--concepts", nargs="+", default=["01", "011"], help="binary-concepts: the concepts")
    parser.add_argument("--depth", type=int, default=3, help="binary-concepts: continuation tree depth")
    parser.add_argument("--ie-samples", type=int, default=256, help="ie: sequences per model")
    parser.add_argument("--ie-dataset", default=None,
                        help="ie: 'induction:L' (the induction sequences) or a dataset spec of `emergence-fast ie` "
                             "(icl-animal, text:PATH, ids:PATH) (default: the family's induction sequences, else induction:8)")
    parser.add_argument("--ie-estimator", default=None, help="ie: the estimator (default: IE's default)")
    parser.add_argument("--n-boot", type=int, default=200, help="bootstrap replicates of every transition CI")
    parser.add_argument("--ci", type=float, default=0.95, help="confidence level of every interval, in (0, 1)")
    parser.add_argument("--device", default=None, help="cpu | cuda[:i] (default: cpu)")
    parser.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"),
                        help="weights' dtype (default: float32)")
    parser.add_argument("--out", default="runs/sweep",
                        help="output folder; holds units.jsonl, so rerunning the command resumes")
    parser.add_argument("--dist-backend", default="auto", choices=distributed.DIST_BACKENDS,
                        help="torch.distributed backend under torchrun: auto, gloo, nccl")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)
    return parser


def _values(args, tasks) -> dict:
    """``{task: values}`` from --shots/--lengths/--blocks for the tasks that have that axis; ValueError
    naming a flag that no chosen task reads."""
    from .run import plan

    names = [t.name for t in plan(args.models, tasks)[1]]
    by_axis = {"shots": args.shots, "length": args.lengths, "block": args.blocks}
    flags = {"shots": "--shots", "length": "--lengths", "block": "--blocks"}
    values = {}
    for axis, given in by_axis.items():
        if given is None:
            continue
        readers = [n for n in names if TASKS[n].axis == axis]
        if not readers:
            raise ValueError(f"{flags[axis]}: no task of this sweep ({', '.join(names)}) has a {axis} axis")
        if axis == "block" and given != ["all"]:
            try:
                given = [int(b) for b in given]
            except ValueError:
                raise ValueError(f"--blocks must be block indices or 'all', got {given}") from None
        for n in readers:
            values[n] = given
    return values


_FLAGS = {"models": "--models", "tasks": "--tasks", "metrics": "--metrics", "reference": "--reference", "x_values": "--x-values",
          "x": "--x", "log_x": "--log-x", "seed": "--seed", "concepts": "--concepts", "ie_dataset": "--ie-dataset",
          "ie_estimator": "--ie-estimator"}
_AXIS_FLAGS = {"shots": "--shots", "length": "--lengths", "block": "--blocks"}


def _flags(function):
    """``function`` with its argument names in ValueError messages replaced by the flags that set them."""
    def call(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except ValueError as exc:
            message = str(exc)
            match = re.match(r"values\[['\"]([^'\"]+)['\"]\]", message)
            if match and match.group(1) in TASKS:  # the task too: arithmetic reads --shots from 0, entity sets from 1
                message = f"{_AXIS_FLAGS[TASKS[match.group(1)].axis]} of {match.group(1)}{message[match.end():]}"
            else:
                name = re.match(r"[a-z_]+", message)
                if name and name.group(0) in _FLAGS:
                    message = _FLAGS[name.group(0)] + message[name.end():]
            raise ValueError(message) from None
    return call


def run(args, out=None) -> int:
    """Check every argument, lock ``--out``, run the sweep, write the report and print the table."""
    from ..report import OutputFolder
    from . import report
    from .run import run_sweep

    check_positive(args, {"n_examples": 1, "batch_size": 1, "n_boot": 0, "depth": 1, "ie_samples": 2})
    if not 0 < args.ci < 1:
        raise ValueError(f"--ci must be a confidence level in (0, 1), got {args.ci}")
    if args.x_values is not None and args.x != "values":
        raise ValueError("--x-values needs --x values")
    values = _flags(_values)(args, args.tasks)
    world = distributed.init(args.dist_backend)
    folder = OutputFolder(args.out)
    try:
        claim_output(folder, world)
        result = _flags(run_sweep)(args.models, args.tasks, values=values, x=args.x, x_values=args.x_values,
                           log_x=None if args.log_x is None else args.log_x == "yes", out=args.out,
                           n_examples=args.n_examples, seed=args.seed, batch_size=args.batch_size,
                           concepts=args.concepts, depth=args.depth, ie_samples=args.ie_samples,
                           ie_dataset=args.ie_dataset, ie_estimator=args.ie_estimator, n_boot=args.n_boot,
                           ci=args.ci, reference=args.reference, metrics=args.metrics, device=args.device, dtype=args.dtype, world=world,
                           progress=not args.quiet)
        if world.is_main:
            written = [*report.write_report(result, args.out), *optional_figures(report.plot, result, args.out)]
            print(report.summary_table(result), file=out or sys.stdout)
            print("wrote " + ", ".join(str(p) for p in written), file=out or sys.stdout)
    except BaseException:
        folder.release(failed=not any(Path(args.out).glob("units.jsonl")))
        raise
    else:
        folder.release()
    finally:
        distributed.shutdown(world)
    return 0
