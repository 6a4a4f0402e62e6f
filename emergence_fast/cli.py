"""Command line: ``emergence-fast ie | icl | mirage | sweep | make-family | bench | estimators | backends``.

``ie`` runs Information Emergence on a model (the embedded SmolLM2-135M-Instruct by default)
and writes ``ie.json``, ``ie.csv`` and plots. ``icl`` (:mod:`emergence_fast.icl.cli`) runs the
random-binary-sequence experiments of Bigelow et al.; ``mirage`` (:mod:`emergence_fast.mirage.cli`)
scores a model family under several metrics (Schaeffer et al.). ``estimators`` runs every estimator on
synthetic data whose true values are known in closed form, so a reader sees their bias at once.
"""
from __future__ import annotations

import argparse
import ast
import difflib
import math
import sys
import time
from pathlib import Path

import torch

import emergence_fast as ef
from emergence_fast import bench, distributed
from emergence_fast._dispatch import resolve_backend
from emergence_fast._optional import MissingDependency
from emergence_fast.cli_checks import check_backend, check_model_args, check_positive, claim_output, max_memory
from emergence_fast.emergence import DEFAULT_ESTIMATOR, DEFAULT_STATE_MEMORY, checkpoint_path
from emergence_fast.estimators import registry
from emergence_fast.ie.estimate import check_estimator_options
from emergence_fast.report import text_table
from emergence_fast.icl import cli as icl_cli
from emergence_fast.mirage import cli as mirage_cli
from emergence_fast.families import cli as families_cli
from emergence_fast.sweep import cli as sweep_cli


def correlated_gaussian(n: int, dx: int, dy: int, rho: float, generator: torch.Generator):
    """x, y with ``min(dx, dy)`` canonical correlations equal to ``rho``: I = -min(dx,dy)/2 log(1-rho^2)."""
    x = torch.randn(n, dx, generator=generator, dtype=torch.float64)
    noise = torch.randn(n, dy, generator=generator, dtype=torch.float64)
    k = min(dx, dy)
    y = noise.clone()
    y[:, :k] = rho * x[:, :k] + math.sqrt(1 - rho**2) * noise[:, :k]
    return x.float(), y.float(), -0.5 * k * math.log(1 - rho**2)


def demo(seed: int = 0, out=None) -> None:
    out = out or sys.stdout
    generator = torch.Generator().manual_seed(seed)
    backend = resolve_backend(None, torch.device("cpu"))
    print(f"emergence_fast {ef.__version__} estimators: synthetic data with known answers (nats); backend={backend}", file=out)
    print(file=out)

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

    print(text_table(rows, ["quantity", "N", "truth", "plug-in", "wishart", "exp. bias", "ms"]), file=out)
    print("\ntruth: closed form (MI = -k/2 log(1 - rho^2), rho = 0.75; H = 1/2 log((2 pi e)^d det S)); "
          "token-entropy truth is a float64 softmax reference.", file=out)


def show_backends(out=None) -> None:
    out = out or sys.stdout
    for name, status in ef.backends().items():
        mark = "yes" if status.available else "no "
        print(f"{name:7s} {mark} devices={list(status.devices)}  {status.reason}", file=out)


def _parse_option(text: str):
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--option must be KEY=VALUE, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def _parse_layers(text):
    """``--layers 0,5,blocks.3.hook_resid_pre`` -> ``[0, 5, "blocks.3.hook_resid_pre"]`` (None: all blocks).

    Block indices and TransformerLens names, as :class:`~emergence_fast.capture.BlockCapture`
    takes them; the form is checked here, the range once the model is known.
    """
    from .capture.blocks import parse_hook_point

    if text is None:
        return None
    items = [item.strip() for item in text.split(",")]
    layers = []
    for item in items:
        if item.isdigit():
            layers.append(int(item))
            continue
        try:
            parse_hook_point(item, sys.maxsize)
        except ValueError:
            raise ValueError(f"--layers takes comma-separated block indices or TransformerLens names "
                             f"blocks.L.hook_resid_pre|post, got {item!r} in {text!r}") from None
        layers.append(item)
    return layers


def _check_dataset(spec: str, n_samples: int):
    """A ``--dataset`` spec checked without the tokenizer; ``ids:`` files are read now (they need none)."""
    from . import datasets

    kind, sep, path = spec.partition(":")
    if spec in datasets.ICL_ENTITY_FILES:
        return None
    if sep and kind in ("text", "ids") and path:
        if not Path(path).is_file():
            raise ValueError(f"--dataset {spec}: {path!r} is not a file")
        if kind == "ids":
            return datasets.ids_dataset(path, n_samples)
        datasets.read_documents(Path(path))  # readable, UTF-8, valid JSONL, not empty: all but the tokenizing
        return None
    raise ValueError(f"--dataset must be one of {', '.join(datasets.ICL_ENTITY_FILES)}, text:PATH or ids:PATH, "
                     f"got {spec!r}")


def _check_ie_args(args):
    """Every ``ie`` argument that can be checked without the model: ``(estimator options, layers, ids dataset)``."""
    from ._validation import parse_bytes

    if args.device is not None and args.device_map is not None:
        raise ValueError("pass --device or --device-map, not both")
    check_positive(args, {"n_samples": 2, "k_shots": 1, "seq_len": 1, "batch_size": 1, "update_samples": 1,
                          "reservoir_size": 1, "pca": 0})
    if args.checkpoint_every < 0 or (args.resume and args.checkpoint_every == 0):
        raise ValueError(f"--checkpoint-every must be >= 0 (0: no checkpoints, which --resume cannot use), got "
                         f"{args.checkpoint_every}")
    check_model_args(args)
    check_backend(args.backend, args.device, args.device_map)
    parse_bytes(args.state_memory, "--state-memory")
    layers = _parse_layers(args.layers)
    options = _estimator_options(args)
    return options, layers, _check_dataset(args.dataset, args.n_samples)


# Shorthand flags of ``ie`` for estimator options: flag -> (option, how the flag's value becomes the option's).
# A flag applies to whichever estimator declares that option; the defaults are the registry's.
OPTION_FLAGS = {
    "--pca": ("pca", lambda v: v or None),  # 0 = full width
    "--bias-correction": ("bias_correction", None),
    "--shrinkage": ("shrinkage", None),
    "--slice-k": ("k", None),
    "--n-slices": ("n_slices", None),
    "--sigma": ("sigma", None),
    "--n-draws": ("n_draws", None),
}


def _ie_default(option: str) -> str:
    """``"gaussian: 8"``-style text: the IE default of ``option`` for each estimator declaring it."""
    found = []
    for name in registry.names("ie"):
        spec = registry.get(name)
        if option in spec.ie_options():
            found.append(f"{name}: {spec.resolve_ie_options(None).get(option, spec.ie_options()[option])}")
    return "; ".join(found)


def _estimator_options(args) -> dict:
    """The estimator's options from the shorthand flags, ``--option`` and ``--seed``, checked as
    information_emergence checks them (a sample estimator's values tried on as many rows as it keeps)."""
    spec = registry.get(args.estimator, "ie", "--estimator")
    accepted = spec.ie_options()
    options = {}
    for flag, (option, convert) in OPTION_FLAGS.items():
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is None:
            continue
        if option not in accepted:
            raise ValueError(f"{flag} sets the option {option}, which --estimator {args.estimator} does not take "
                             f"(its options: {', '.join(sorted(accepted))})")
        options[option] = convert(value) if convert else value
    extra = dict(_parse_option(text) for text in args.option or [])
    flags = {option: flag for flag, (option, _) in OPTION_FLAGS.items()}
    clash = [key for key in extra if key in options]
    if clash:
        raise ValueError(f"--option {clash[0]}=... repeats {flags[clash[0]]}: give it once")
    options.update(extra)
    options.setdefault("seed", args.seed)
    return check_estimator_options(args.estimator, options, args.n_samples,
                                    rows=min(args.reservoir_size, args.n_samples))


def run_ie(args, out=None) -> None:
    """The ``ie`` command: every argument checked, ``--out`` locked, then the model loaded and the run made."""
    from . import datasets, models, report
    from .emergence import information_emergence

    out = out or sys.stdout
    options, layers, data = _check_ie_args(args)  # a mistake fails here, before the model loads
    world = distributed.init(args.dist_backend)
    out_dir = Path(args.out)
    folder = report.OutputFolder(out_dir)
    try:
        claim_output(folder, world)  # one lock for the run; every rank checkpoints into --out
        if world.is_main and not args.resume:
            _note_stale_checkpoint(checkpoint_path(out_dir, world))
        if world.distributed and args.model in (None, models.DEFAULT_MODEL):
            if world.is_main:
                models.fetch_default_model()  # once, not once per rank
            distributed.barrier(world)
        model, tokenizer = models.load_model(args.model, gguf_file=args.gguf_file,
                                             device=distributed.rank_device(args.device, world), dtype=args.dtype,
                                             device_map=args.device_map, max_memory=max_memory(args.max_memory),
                                             offload_folder=args.offload_folder)
        if data is None:
            data = datasets.load_dataset(args.dataset, tokenizer, args.n_samples, k_shots=args.k_shots,
                                         seq_len=args.seq_len, seed=args.seed)
        result = information_emergence(model, tokenizer, data, layers=layers, estimator=args.estimator,
                                       estimator_options=options, batch_size=args.batch_size,
                                       update_samples=args.update_samples, reservoir_size=args.reservoir_size,
                                       base=None if args.nats else 2,
                                       checkpoint_dir=out_dir if args.checkpoint_every else None,
                                       resume=args.resume, checkpoint_every=max(1, args.checkpoint_every),
                                       progress=not args.quiet,
                                       backend=args.backend, state_memory=args.state_memory, world=world,
                                       stack=args.stack)
        result.config["model_source"] = args.model or models.DEFAULT_MODEL
        if world.is_main:
            written = [report.write_json(result, out_dir / "ie.json"), report.write_csv(result, out_dir / "ie.csv")]
            written += report.optional_figures(result.plot, out_dir)
        distributed.barrier(world)  # the results are on disk before any rank drops its checkpoint
        checkpoint = checkpoint_path(out_dir, world)
        checkpoint.with_suffix(".tmp").unlink(missing_ok=True)  # a save cut short by a killed earlier run
        if not args.keep_checkpoint and checkpoint.exists():
            checkpoint.unlink()  # the results are written; the state (d^2 per cell, GBs for real models) is not needed
        if world.is_main:
            print(report.summary_table(result), file=out)
            print("wrote " + ", ".join(str(p) for p in written), file=out)
    except BaseException:
        folder.release(failed=True)  # a folder this run created and left empty goes again
        raise
    else:
        folder.release()
    finally:
        distributed.shutdown(world)


def _note_stale_checkpoint(checkpoint: Path) -> None:
    """One line on stderr when a run without --resume is about to overwrite an earlier run's checkpoint."""
    if not checkpoint.exists():
        return
    try:  # mmap: the state may be GBs, and only two numbers are wanted
        payload = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
        config = payload["config"]
        done = min(payload["batches_done"] * config["batch_size"], config["n_samples"])
        progress = f"{done} of {config['n_samples']} samples done"
    except Exception:  # a save cut short: it says nothing, and is discarded all the same
        progress = "unreadable"
    print(f"emergence-fast ie: note: discarding the checkpoint {checkpoint} of an earlier run ({progress}); "
          f"pass --resume to continue it instead", file=sys.stderr)


def _user_error(command: str, exc: Exception) -> int:
    """A user's mistake as one line on stderr (its first line: no traceback), exit code 2."""
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    print(f"emergence-fast {command}: error: {message}", file=sys.stderr)
    return 2


class HelpWithDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows every option's default: ``(default: X)`` is appended unless the help text
    already says what the default is (the options whose default ``None`` means "decided later")."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default is None:
            return text
        return super()._get_help_string(action)


class _OneLineErrors(argparse.ArgumentParser):
    """A bad flag is one line on stderr (``emergence-fast ie: error: ...``), not the usage block; --help has it.

    Subcommand parsers are of this class too (``add_subparsers`` makes them so), with defaults in ``--help``.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpWithDefaults)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``emergence-fast`` parser with every subcommand (their defaults shown in ``--help``)."""
    parser = _OneLineErrors(prog="emergence-fast", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    ie = sub.add_parser("ie", help="Information Emergence of a model on a dataset")
    ie.add_argument("--model", help="local folder or cached Hugging Face id (default: embedded SmolLM2-135M-Instruct)")
    ie.add_argument("--gguf-file", help="GGUF file name inside --model (default: none, the folder's weights)")
    ie.add_argument("--stack", default=None, choices=("encoder", "decoder"),
                    help="encoder-decoder models (BART, T5) only, and required for them: score the encoder's or the "
                         "decoder's blocks, fed the same ids; both are scored as non-causal (default: none: a "
                         "decoder-only model)")
    ie.add_argument("--device", default=None, help="where to put the model (default: cpu); or use --device-map")
    ie.add_argument("--device-map", default=None,
                    help="accelerate placement for models larger than one device, e.g. auto (with --max-memory) "
                         "(default: none, the whole model on --device)")
    ie.add_argument("--max-memory", default=None,
                    help="with --device-map: DEVICE=SIZE,... e.g. cpu=8GB,0=70GB (default: accelerate's choice)")
    ie.add_argument("--offload-folder", default=None,
                    help="with --device-map: folder for weights offloaded to disk (default: none)")
    ie.add_argument("--state-memory", default=DEFAULT_STATE_MEMORY,
                    help="budget for the streaming state per rank, e.g. 256MB or 8GB; above it IE runs on a "
                         "principal-subspace state and says so")
    ie.add_argument("--dist-backend", default="auto", choices=distributed.DIST_BACKENDS,
                    help="torch.distributed backend under torchrun/accelerate launch")
    ie.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"),
                    help="model weights' dtype (default: float32)")
    ie.add_argument("--dataset", default="icl-animal",
                    help="icl-animal | icl-country | icl-color | text:PATH (.txt or .jsonl) | ids:PATH (.pt or .npy "
                         "integer tensor [N, T])")
    ie.add_argument("--n-samples", type=int, default=1024, help="sequences N")
    ie.add_argument("--k-shots", type=int, default=4, help="entities per ICL sample (T = 2k tokens)")
    ie.add_argument("--seq-len", type=int, default=8, help="tokens per text span (text:PATH datasets)")
    ie.add_argument("--seed", type=int, default=0, help="seed of the dataset draw and the estimators")
    ie.add_argument("--layers", help="comma-separated block indices or TransformerLens names "
                                     "blocks.L.hook_resid_pre|post, e.g. 0,5,blocks.3.hook_resid_post (default: all)")
    ie.add_argument("--estimator", default=DEFAULT_ESTIMATOR, choices=registry.names("ie"),
                    help="MI estimator (emergence_fast.estimators.registry)")
    ie.add_argument("--option", action="append", metavar="KEY=VALUE",
                    help="estimator option, repeatable (e.g. --option k=5 --option jitter=1e-3) (default: none)")
    ie.add_argument("--reservoir-size", type=int, default=1024, help="rows kept per cell for sample-based estimators")
    ie.add_argument("--pca", type=int, default=None,
                    help=f"option pca: principal components per side, 0 = full width (default: {_ie_default('pca')})")
    ie.add_argument("--bias-correction", default=None,
                    help=f"option bias_correction (default: {_ie_default('bias_correction')})")
    ie.add_argument("--shrinkage", type=float, default=None,
                    help=f"option shrinkage: covariance shrinkage in [0, 1) (default: {_ie_default('shrinkage')})")
    ie.add_argument("--slice-k", type=int, default=None,
                    help=f"option k: sliced's projection dimension per side, KSG's neighbours (default: {_ie_default('k')})")
    ie.add_argument("--n-slices", type=int, default=None,
                    help=f"option n_slices: random slices averaged (default: {_ie_default('n_slices')})")
    ie.add_argument("--sigma", type=float, default=None,
                    help="option sigma: channel noise relative to each cell's RMS radius, the resolution (default: "
                         f"{_ie_default('sigma')})")
    ie.add_argument("--n-draws", type=int, default=None,
                    help=f"option n_draws: Monte-Carlo noise draws per distinct state (default: {_ie_default('n_draws')})")
    ie.add_argument("--batch-size", type=int, default=32, help="sequences per forward pass")
    ie.add_argument("--update-samples", type=int, default=512,
                    help="samples folded into the state at once (a fold, rounded up to whole batches; smaller when "
                         "--state-memory needs): the unit of work per rank and of checkpoints")
    ie.add_argument("--nats", action="store_true", help="report nats instead of bits")
    ie.add_argument("--backend", default=None, help="kernel backend: torch | cpp | cuda | triton (default: the "
                                                    "fastest available; see emergence-fast backends)")
    ie.add_argument("--out", default="runs/ie", help="output folder (checkpoint, ie.json, ie.csv, PNGs); locked "
                                                     "while a run uses it")
    ie.add_argument("--resume", action="store_true",
                    help="continue from the checkpoint in --out; without it a checkpoint left there by an earlier "
                         "(killed) run is discarded, with a note on stderr saying how far it had come")
    ie.add_argument("--checkpoint-every", type=int, default=32,
                    help="N: write a checkpoint (one per rank) once N or more batches have been folded into the state "
                         "since the last one, and at the end of the pass. Checkpoints fall between folds "
                         "(--update-samples), so they come every max(N, fold) batches rounded up to whole folds: with "
                         "--batch-size 32 and --update-samples 512, every 32 batches (1024 samples). 0 writes none, "
                         "e.g. when the state is GBs and a rerun is cheap")
    ie.add_argument("--keep-checkpoint", action="store_true",
                    help="keep ie_checkpoint*.pt (one per rank) after a finished run (it is removed once the results "
                         "are written)")
    ie.add_argument("--quiet", action="store_true", help="no progress bars")

    estimators = sub.add_parser("estimators", help="run the estimators on synthetic data with known answers")
    estimators.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    sub.add_parser("backends", help="list the backends and why any is unavailable")
    icl_cli.add_parser(sub)
    mirage_cli.add_parser(sub)
    families_cli.add_parser(sub)
    sweep_cli.add_parser(sub)
    bench.add_parser(sub)
    return parser


def main(argv=None) -> int:
    """``emergence-fast ...``: 0 on success, 2 on a user error (one line on stderr, nothing created)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # the subcommand's parser says it, so the message names the subcommand
        subparser = parser._subparsers._group_actions[0].choices[args.command]
        subparser.error(_unrecognized(subparser, extra))
    try:
        if args.command == "estimators":
            demo(seed=args.seed)
        elif args.command == "backends":
            show_backends()
        elif args.command == "ie":
            run_ie(args)
        elif args.command == "bench" and distributed.launched():
            raise ValueError("bench measures one process; run it without torchrun/accelerate launch "
                             "(benchmarks/scaling_ranks.py compares 1 and K ranks)")
        else:
            args.func(args)
    except (ValueError, TypeError, OSError, MissingDependency) as exc:
        return _user_error(args.command, exc)
    except KeyboardInterrupt:
        print(f"emergence-fast {args.command}: interrupted{_kept_after_interrupt(args)}", file=sys.stderr)
        return 130  # 128 + SIGINT, what a shell reports for a process killed by Ctrl-C
    return 0


def _unrecognized(parser: argparse.ArgumentParser, extra: list[str]) -> str:
    """``unrecognized arguments: ...`` with the closest option of ``parser`` for a misspelt one."""
    message = f"unrecognized arguments: {' '.join(extra)}"
    options = [option for action in parser._actions for option in action.option_strings]
    for text in extra:
        if text.startswith("--"):
            close = difflib.get_close_matches(text.partition("=")[0], options, n=1, cutoff=0.8)
            if close:
                return f"{message} (did you mean {close[0]}?)"
    return message


def _kept_after_interrupt(args) -> str:
    """What an interrupted ``ie`` leaves for ``--resume`` (other commands keep no partial state)."""
    if args.command != "ie":
        return ""
    out = Path(args.out)
    if args.checkpoint_every and any(out.glob("ie_checkpoint*.pt")):
        return f"; the checkpoint in {out} is kept: rerun with --resume to continue"
    return "; nothing was kept (no checkpoint had been written)"


if __name__ == "__main__":
    sys.exit(main())
