"""``emergence-fast make-family induction --out DIR``: train an offline checkpoint family on this CPU.

``induction``: a small attention-only GPT-2 trained on repeated random tokens, saved as Hugging Face
checkpoints DIR/step-NNNNNN/ along training, with DIR/family.json (config, versions, and each
checkpoint's training loss and in-context loss) written last. See emergence_fast.families.induction.

Register it with :func:`add_parser` on the main parser's subparsers; it sets ``func=run``.
"""
from __future__ import annotations

import sys

from . import FAMILIES
from .induction import DEFAULTS

# The options that take one number: dest -> (type, help). Their defaults are DEFAULTS'.
_NUMBERS = {
    "steps": (int, "optimizer steps"),
    "checkpoints": (int, "checkpoints saved, evenly spaced, step 0 and the last step included"),
    "seed": (int, "seed of the initial weights and of the data"),
    "vocab_size": (int, "ordinary tokens V (t0 ... t{V-1}; <bos> is id 0)"),
    "half_length": (int, "len(r) of the held-out evaluation [bos] + r + r (inside the training range)"),
    "seq_len": (int, "tokens per training sequence [bos] + prefix + r + r + filler"),
    "n_layer": (int, "attention-only blocks"),
    "n_head": (int, "attention heads per block"),
    "d_model": (int, "residual width (a multiple of --n-head)"),
    "lr": (float, "AdamW learning rate (constant, no weight decay)"),
    "batch_size": (int, "sequences per step"),
    "eval_size": (int, "held-out evaluation sequences"),
    "num_threads": (int, "torch CPU threads during the run (the same count reproduces the same bits)"),
}


def add_parser(subparsers):
    """Add the ``make-family`` subcommand to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    if not hasattr(subparsers, "add_parser"):
        raise TypeError(f"subparsers must come from ArgumentParser.add_subparsers, got {type(subparsers).__name__}")
    parser = subparsers.add_parser("make-family", help="train an offline checkpoint family (induction heads)",
                                   description=__doc__.split("\n\n")[1].replace("``", ""))
    parser.add_argument("family", choices=FAMILIES, help="induction: repeated random tokens, attention-only")
    parser.add_argument("--out", required=True,
                        help="folder of the family: new or empty, left by a killed run of the same options (it "
                             "starts over), or a finished family of the same options (kept as it is); locked while a "
                             "run uses it")
    for dest, (kind, text) in _NUMBERS.items():
        parser.add_argument(f"--{dest.replace('_', '-')}", type=kind, default=DEFAULTS[dest],
                            help=f"{text} (default: {DEFAULTS[dest]})")
    lo, hi = DEFAULTS["half_length_range"]
    parser.add_argument("--half-length-min", type=int, default=lo, help=f"shortest r in training (default: {lo})")
    parser.add_argument("--half-length-max", type=int, default=hi, help=f"longest r in training (default: {hi})")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)
    return parser


def _flag(key: str) -> str:
    if key == "half_length_range":
        return "--half-length-min/--half-length-max"
    return f"--{key.replace('_', '-')}"


def run(args, out=None):
    """Train the family of ``args`` (parsed by the parser from :func:`add_parser`); return its folder.

    Every option is checked before anything is created: a ``ValueError`` names the flag.
    """
    from . import induction

    out = out or sys.stdout
    config = {dest: getattr(args, dest) for dest in _NUMBERS}
    config["half_length_range"] = (args.half_length_min, args.half_length_max)
    for bound, flag in ((args.half_length_min, "--half-length-min"), (args.half_length_max, "--half-length-max")):
        if bound < 2:
            raise ValueError(f"{flag} must be >= 2, got {bound}")
    if args.half_length_max < args.half_length_min:
        raise ValueError(f"--half-length-max must be >= --half-length-min ({args.half_length_min}), "
                         f"got {args.half_length_max}")
    folder = induction.run(args.out, config, progress=not args.quiet, name=_flag, flag="--out")
    family = induction.read_family(folder)
    rows = family["checkpoints"]
    print(f"{len(rows)} checkpoints in {folder} (steps {rows[0]['step']} ... {rows[-1]['step']}); in-context loss "
          f"{rows[0]['in_context_loss']:.3f} -> {rows[-1]['in_context_loss']:.3f} nats "
          f"(log V = {family['log_vocab_size']:.3f})", file=out)
    return folder
