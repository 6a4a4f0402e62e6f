"""``emergence-fast mirage``: the metric-choice report from result files or from live models.

    emergence-fast mirage --results runs/pythia/*.json --task lambada_openai --metrics acc,ppl --out runs/mirage
    emergence-fast mirage --models default path/to/a path/to/b --task arithmetic-2d-mult --n-examples 200

Writes ``mirage.json``, ``mirage.csv`` and ``mirage_curves.png`` to ``--out`` and prints the
table. :func:`add_parser` registers the subcommand on an ``argparse`` subparsers object and sets
``func`` to :func:`run`.

Under ``torchrun --nproc_per_node=K`` each model's scoring batches are shared out across the K
ranks (every rank loads every model); the ranks first check that they run the same configuration
and loaded the same models, the result is the one process's, and only rank 0 prints and writes.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from .. import distributed
from ..cli_checks import check_model_args, check_positive, claim_output
from ..report import optional_figures
from .metrics import LIVE_METRICS
from .tasks import TASKS


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``mirage`` to ``subparsers`` (from ``parser.add_subparsers()``); returns the new parser."""
    parser = subparsers.add_parser("mirage", help="metric choice and apparent emergence across model scale",
                                   description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--results", nargs="+", metavar="PATH",
                        help="result files: lm-evaluation-harness JSON, BIG-bench JSON or CSV (model,params,metric,score)")
    source.add_argument("--models", nargs="+", metavar="MODEL",
                        help="model folders or cached Hugging Face ids; 'default' is the embedded SmolLM2-135M-Instruct")
    parser.add_argument("--task", required=True,
                        help=f"lm-evaluation-harness task or BIG-bench subtask for --results; one of {TASKS} for --models")
    parser.add_argument("--metrics", default=None,
                        help="comma-separated metric names (results: required, e.g. acc,ppl; 'ppl' adds p_target = 1/ppl. "
                             "A piece after a comma that is not a known metric is the lm-evaluation-harness >= 0.4 "
                             "filter of the metric before it: acc,none is one metric, "
                             "acc,none,exact_match,strict-match two; acc alone is the file's one filter of acc. "
                             f"models: default all of {','.join(LIVE_METRICS)})")
    parser.add_argument("--params", nargs="+", default=[], metavar="NAME=COUNT",
                        help="parameter counts by model name or file stem (70426624, 1.4e9, 410m, 1.4b) "
                             "(default: none, the counts in the files)")
    parser.add_argument("--shots", type=int, default=None,
                        help="BIG-bench: number_of_shots to read; --models: solved examples per prompt (default: "
                             "the file's only one; --models: 2)")
    parser.add_argument("--lower-is-better", nargs="+", default=[], metavar="METRIC",
                        help="declare metrics not in the built-in list as lower-is-better (default: none)")
    parser.add_argument("--higher-is-better", nargs="+", default=[], metavar="METRIC",
                        help="declare metrics not in the built-in list as higher-is-better (default: none)")
    parser.add_argument("--n-examples", type=int, default=200, help="--models: generated examples per model")
    parser.add_argument("--batch-size", type=int, default=16, help="--models: examples per forward pass")
    parser.add_argument("--continuation", default="teacher_forced", choices=("teacher_forced", "free_running"),
                        help="--models: greedy tokens from the scoring pass, or a separate greedy generation")
    parser.add_argument("--device", default=None, help="--models: cpu | cuda[:i] (default: cpu)")
    parser.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"),
                        help="--models: weights' dtype (default: float32)")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates for every CI")
    parser.add_argument("--ci", type=float, default=0.95, help="confidence level of every interval, in (0, 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated examples and the bootstrap")
    parser.add_argument("--margin", type=float, default=2.0,
                        help="BIC margin by which a sigmoid must beat the smooth fits to count as sharp")
    parser.add_argument("--out", default="runs/mirage",
                        help="output folder (mirage.json, mirage.csv, mirage_curves.png), written by rank 0 only; "
                             "locked while a run uses it")
    parser.add_argument("--dist-backend", default="auto", choices=distributed.DIST_BACKENDS,
                        help="torch.distributed backend under torchrun: auto (NCCL with CUDA GPUs, else gloo), gloo, nccl")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)
    return parser


# Arguments that do not change the result: where it goes, where each rank computes, what it shows.
_LOCAL_ARGS = ("out", "device", "dist_backend", "func", "command", "quiet")


def _check_args(args) -> list[str] | None:
    """Every argument that can be checked before a file is read or a model loads; ValueError naming the flag.

    Returns the metrics to keep for ``--models`` (None for ``--results``).
    """
    from .readers import parse_params

    check_positive(args, {"n_examples": 1, "batch_size": 1, "n_boot": 0, "shots": 0})
    if not 0 < args.ci < 1:
        raise ValueError(f"--ci must be a confidence level in (0, 1), got {args.ci}")
    if not math.isfinite(args.margin) or args.margin < 0:
        raise ValueError(f"--margin must be a finite number >= 0, got {args.margin}")
    try:
        parse_params(args.params)
    except ValueError as exc:
        raise ValueError(f"--params: {exc}") from None
    if args.results:
        if not args.metrics:
            raise ValueError("mirage --results needs --metrics (e.g. --metrics acc,ppl)")
        missing = [path for path in args.results if not Path(path).exists()]
        if missing:
            raise ValueError(f"--results: {missing[0]!r} does not exist")
        return None
    check_model_args(args)
    from .live import check_distinct
    try:
        check_distinct(args.models)
    except ValueError as exc:
        raise ValueError(f"--models: {exc}") from None
    if args.task not in TASKS:
        raise ValueError(f"--task for --models must be one of {', '.join(TASKS)}, got {args.task!r}")
    wanted = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else list(LIVE_METRICS)
    repeated = sorted({m for m in wanted if wanted.count(m) > 1})
    if repeated:
        raise ValueError(f"--metrics names {repeated} more than once; name each metric once")
    unknown = [m for m in wanted if m not in LIVE_METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown} for --models: known are {list(LIVE_METRICS)}")
    return wanted


def run(args, out=None) -> int:
    """Build the family (files or live models), analyse it, write the files and print the table.

    Every argument is checked and ``--out`` locked (:class:`emergence_fast.report.OutputFolder`)
    before a file is read or a model loads; a ``ValueError`` names the flag, and a run that
    fails leaves no folder it created behind. Joins the launcher's process group when there is
    one (:func:`emergence_fast.distributed.init`); ranks other than 0 compute the same result
    but print and write nothing.
    """
    from ..report import OutputFolder

    wanted = _check_args(args)
    try:
        world = distributed.init(getattr(args, "dist_backend", "auto"))
    except ValueError as exc:
        raise ValueError(f"--dist-backend: {exc}") from None
    folder = OutputFolder(args.out)
    try:
        claim_output(folder, world)
        code = _run(args, out or sys.stdout, world, wanted)
    except BaseException:
        folder.release(failed=True)
        raise
    else:
        folder.release()
    finally:
        distributed.shutdown(world)
    return code


def _scoring_loader(args, world):
    """The model loader of :func:`.live.run_family`, with a bar over the models on stderr (rank 0, unless --quiet).

    Returns ``(loader, bar)``; the bar advances as the next model loads, and the caller closes it.
    """
    from tqdm.auto import tqdm

    from .. import models
    from .live import DEFAULT_ALIASES

    bar = tqdm(total=len(args.models), desc="mirage: scoring models", unit="model",
               disable=args.quiet or not world.is_main)
    device = distributed.rank_device(args.device, world)
    loaded = []

    def loader(name):
        if loaded:  # the previous model is scored
            bar.update(1)
        loaded.append(name)
        bar.set_postfix_str(f"{name}: {args.n_examples} examples")
        return models.load_model(None if name in DEFAULT_ALIASES else name, device=device, dtype=args.dtype)
    return loader, bar


def _run(args, out, world, wanted) -> int:
    from . import readers, report
    from .live import run_family

    declared = {"lower_is_better": tuple(args.lower_is_better), "higher_is_better": tuple(args.higher_is_better)}
    distributed.check_agreement({key: value for key, value in sorted(vars(args).items())
                                 if key not in _LOCAL_ARGS}, world)  # a ValueError naming the key on every rank
    if args.results:
        family = readers.load_family(args.results, args.task, args.metrics, params=readers.parse_params(args.params),
                                     shots=args.shots, **declared)
    else:
        loader, bar = _scoring_loader(args, world)
        try:
            family = run_family(args.models, args.task, n_examples=args.n_examples,
                                shots=2 if args.shots is None else args.shots, seed=args.seed,
                                batch_size=args.batch_size, continuation=args.continuation, loader=loader,
                                world=world)  # RanksDisagree is a ValueError
            bar.update(1)
        finally:
            bar.close()
        family.values = {m: family.values[m] for m in wanted}
    result = report.analyse(family, n_boot=args.n_boot, ci=args.ci, seed=args.seed, margin=args.margin, **declared)
    if not world.is_main:
        return 0
    out_dir = Path(args.out)
    written = [report.write_json(result, out_dir / "mirage.json"), report.write_csv(result, out_dir / "mirage.csv"),
               *optional_figures(report.plot, result, out_dir / "mirage_curves.png")]
    print(result.table(), file=out)
    print("wrote " + ", ".join(str(p) for p in written), file=out)
    return 0
