"""The induction checkpoint family: a small attention-only transformer trained on repeated random tokens,
saved along training as Hugging Face checkpoints (Olsson et al. 2022, "In-context Learning and Induction
Heads", transformer-circuits.pub).

Model
    A plain ``transformers`` GPT-2 (``GPT2LMHeadModel``: learned positions, tied embeddings, no dropout),
    so every checkpoint loads with ``AutoModelForCausalLM.from_pretrained(folder)`` without remote code
    and the project's hooks (``transformer.h``) work on it unchanged. It is made attention-only: GPT-2 has
    no switch for that, so each block's MLP has width ``n_inner=1`` with its weights and biases zero and
    frozen (``requires_grad=False``, never updated). Each MLP then adds exactly 0 to the residual stream
    (``gelu_new(0 * x + 0) = 0``, times zero weights, plus a zero bias) and the network computes an
    attention-only transformer. The MLP's layer norm ``ln_2``, which feeds only that MLP, is frozen too.

Tokenizer
    A ``PreTrainedTokenizerFast`` (WordLevel model, whitespace pre-tokenizer): ``<bos>`` is id 0 (the bos,
    eos and pad token), then ``t0 ... t{V-1}`` are ids ``1 ... V``, then ``<unk>`` is id ``V + 1`` (any
    other word; never in the data, so the model learns never to predict it: the project probes
    tokenizers with arbitrary text, e.g. ``"x"`` to find a special prefix, which a tokenizer without an
    unknown token refuses). It puts ``<bos>`` before every text, as every training sequence starts with
    it: ``tokenizer("t3 t17").input_ids == [0, 4, 18]`` (``add_special_tokens=False`` gives ``[4, 18]``).
    The ordinary tokens ``1 ... V`` are exactly the ids not in ``tokenizer.all_special_ids``.

Training data
    Each sequence has ``seq_len`` tokens: ``[bos] + p + r + r + f``, where ``r`` holds ``L`` random ordinary
    tokens with ``L`` uniform in ``half_length_range`` per sequence, and the prefix ``p`` and the filler ``f``
    are further random tokens, the prefix's length uniform in ``[0, seq_len - 1 - 2L]`` per sequence and the
    filler taking the rest. Both the repeat's offset ``L`` and its place vary between sequences, so no head
    can solve the task by attending to a fixed relative or absolute position: only content-based copying
    (an induction head: find the earlier occurrence of the current token, predict the token that followed
    it) brings the loss on the second copy down. Apart from the repeat, a sequence's tokens are distinct
    (drawn without replacement, so ``vocab_size >= seq_len - 1``): with tokens drawn with replacement a model
    first learns the shortcut "predict a token already seen", which lowers the loss on the second copy
    gradually, long before any induction head, and blurs the phase change; without repeats outside the copy
    that shortcut gains nothing, and the loss on the second copy stays at ``log V`` until induction heads
    form, then falls abruptly. The loss is the mean next-token cross-entropy over every position. Training
    uses AdamW (no weight decay) at a constant learning rate.

Evaluation (recorded in ``family.json`` at each checkpoint; the convention of the sweep's ``induction`` task)
    A fixed held-out batch of ``[bos] + r + r`` with ``len(r) = half_length`` (inside the training range)
    and ``r``'s tokens distinct, as in training. *In-context loss*: the mean next-token loss (nats) over
    the second copy of ``r`` after its first token (tokens ``L+2 ... 2L`` of the sequence): the first
    token of the copy follows ``r_L``, whose earlier occurrence nothing repeats, so no mechanism can know
    it, and it is left out. *First-half loss*: the mean loss of predicting ``r``'s own tokens after its
    first (tokens ``2 ... L``), about ``log V`` at any step. The same definitions as
    :func:`emergence_fast.sweep.tasks.induction_scores`, on other random draws.

Output layout (:func:`train_family`)
    ``out/step-000000/``, ``out/step-000150/``, ... (zero-padded, so ``out/step-*`` sorts in training order):
    each a ``from_pretrained`` folder with the tokenizer and ``emergence_fast.json`` (see
    :func:`read_checkpoint_info`); ``out/family.json``, written last, with the whole configuration, the
    versions and per checkpoint its path, step, training loss and evaluation losses.

Determinism: the same configuration, seed and ``num_threads`` give bitwise-identical checkpoints (the
initial weights come from ``torch.manual_seed(seed)``, the data from a ``torch.Generator`` seeded with
``seed``, and the thread count is fixed for the run: CPU kernels may sum in another order on another count).
"""
from __future__ import annotations

import json
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .._validation import check_int, check_positive_float, check_seed
from .._version import __version__

FAMILY = "induction"
INFO_FILE = "emergence_fast.json"
FAMILY_FILE = "family.json"
# Written when a run starts and removed once family.json is in place: its config lets a rerun of the same
# configuration after a kill start over in the folder, and marks the folder as not finished.
IN_PROGRESS_FILE = ".family-in-progress.json"
BOS_ID = 0


def unk_id(vocab_size: int) -> int:
    """The id of ``<unk>``: after ``<bos>`` and the ``vocab_size`` ordinary tokens."""
    return vocab_size + 1

#: The default configuration of :func:`train_family` (``emergence-fast make-family induction``).
# Measured on a 2-core CPU (seed 0, ~50 s): the in-context loss stays at log V = 3.47 nats to step ~250, falls
# to ~1.6 by step ~500 and stays near 1.4 until a second, smaller fall after step ~1400 (1.0 at step 1600); a
# logistic fit puts the first fall at step ~340, 10-90% width ~330. Short sequences make the induction heads
# form early (seq_len 40 with half lengths 8-16 stays on the plateau for thousands of steps); a batch of 64
# rather than 32 makes the fall about half as wide.
DEFAULTS = {
    "vocab_size": 32,
    "half_length_range": (3, 6),
    "half_length": 5,
    "seq_len": 16,
    "n_layer": 2,
    "n_head": 4,
    "d_model": 128,
    "lr": 1e-3,
    "batch_size": 64,
    "steps": 1600,
    "checkpoints": 33,
    "eval_size": 256,
    "seed": 0,
    "num_threads": 1,
}


def check_config(config: dict, name=lambda key: key) -> dict:
    """``config`` (keys of :data:`DEFAULTS`, missing ones taken from it) checked and normalised.

    ``name(key)`` is how a message names an option (the CLI passes ``--key``). Raises ValueError naming
    the option for an unknown key, a value of the wrong type or out of range, and for options that do
    not fit together; TypeError for a seed that is not an integer.
    """
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown option {name(unknown[0])} for the induction family; known: "
                         f"{', '.join(name(key) for key in DEFAULTS)}")
    config = {**DEFAULTS, **config}
    out = {}
    for key in ("vocab_size", "seq_len", "n_layer", "n_head", "d_model", "batch_size", "steps", "checkpoints",
                "eval_size", "num_threads"):
        out[key] = check_int(config[key], name(key), minimum=2 if key in ("vocab_size", "checkpoints") else 1)
    out["lr"] = check_positive_float(config["lr"], name("lr"))
    out["seed"] = check_seed(config["seed"], name("seed"))
    if not -2**63 <= out["seed"] < 2**64:  # torch.manual_seed's range; beyond it torch fails mid-setup
        raise ValueError(f"{name('seed')} must be an integer in [-2**63, 2**64 - 1], got {out['seed']}")
    bounds = config["half_length_range"]
    if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
        raise ValueError(f"{name('half_length_range')} must be two integers (lo, hi) with 2 <= lo <= hi, got {bounds!r}")
    lo = check_int(bounds[0], f"{name('half_length_range')} lo", minimum=2)
    hi = check_int(bounds[1], f"{name('half_length_range')} hi", minimum=lo)
    out["half_length_range"] = (lo, hi)
    out["half_length"] = check_int(config["half_length"], name("half_length"), minimum=lo, maximum=hi)
    if out["seq_len"] < 1 + 2 * hi:
        raise ValueError(f"{name('seq_len')} must be >= 1 + 2 * {hi} = {1 + 2 * hi} to hold [bos] + r + r for the "
                         f"longest half length ({name('half_length_range')}), got {out['seq_len']}")
    if out["vocab_size"] < out["seq_len"] - 1:
        raise ValueError(f"{name('vocab_size')} must be >= {name('seq_len')} - 1 = {out['seq_len'] - 1}: a training "
                         f"sequence's tokens are distinct apart from the repeat, got {out['vocab_size']}")
    if out["d_model"] % out["n_head"]:
        raise ValueError(f"{name('d_model')} must be a multiple of {name('n_head')} ({out['n_head']}), "
                         f"got {out['d_model']}")
    if out["checkpoints"] > out["steps"] + 1:
        raise ValueError(f"{name('checkpoints')} must be <= {name('steps')} + 1 = {out['steps'] + 1} (one per "
                         f"step at most, step 0 included), got {out['checkpoints']}")
    return {key: out[key] for key in DEFAULTS}


def checkpoint_steps(steps: int, checkpoints: int) -> list[int]:
    """``checkpoints`` distinct steps from 0 to ``steps`` (both included), as evenly spaced as integers allow."""
    return [round(i * steps / (checkpoints - 1)) for i in range(checkpoints)]


def step_folder_name(step: int, steps: int) -> str:
    """``step-000150``: zero-padded to 6 digits (more when ``steps`` needs them), so names sort by step."""
    return f"step-{step:0{max(6, len(str(steps)))}d}"


def make_tokenizer(vocab_size: int):
    """The family's tokenizer (module docstring): ``<bos>`` = 0, ``t0 ... t{vocab_size-1}``, ``<unk>``."""
    from .._optional import require

    tokenizers = require("tokenizers", "building the induction family's tokenizer")
    transformers = require("transformers", "building the induction family's tokenizer")
    vocab = {"<bos>": BOS_ID, **{f"t{i}": i + 1 for i in range(vocab_size)}, "<unk>": unk_id(vocab_size)}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    backend.post_processor = tokenizers.processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", BOS_ID)])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", eos_token="<bos>",
                                                pad_token="<bos>", unk_token="<unk>")


def make_model(config: dict):
    """A GPT-2 ``GPT2LMHeadModel`` made attention-only (zero, frozen MLPs; see the module docstring).

    ``config`` is a checked configuration (:func:`check_config`); the weights are initialised from
    torch's global generator, so seed it first.
    """
    from .._optional import require

    transformers = require("transformers", "building the induction family's model")
    model_config = transformers.GPT2Config(
        vocab_size=unk_id(config["vocab_size"]) + 1, n_positions=config["seq_len"], n_embd=config["d_model"],
        n_layer=config["n_layer"], n_head=config["n_head"], n_inner=1, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, bos_token_id=BOS_ID, eos_token_id=BOS_ID, pad_token_id=BOS_ID, tie_word_embeddings=True)
    model = transformers.GPT2LMHeadModel(model_config)
    with torch.no_grad():
        for block in model.transformer.h:
            for parameter in block.mlp.parameters():
                parameter.zero_()
                parameter.requires_grad_(False)
            for parameter in block.ln_2.parameters():
                parameter.requires_grad_(False)
    return model


def sample_batch(generator: torch.Generator, n: int, config: dict) -> torch.Tensor:
    """``n`` training sequences ``[bos] + p + r + r + f`` (module docstring): int64 ``[n, seq_len]``.

    Apart from the repeat, a row's tokens are distinct: the first ``seq_len - 1`` of a random
    permutation of the ordinary tokens, with the second copy of ``r`` written over its place.
    """
    vocab, seq_len = config["vocab_size"], config["seq_len"]
    lo, hi = config["half_length_range"]
    half = torch.randint(lo, hi + 1, (n, 1), generator=generator)
    prefix = (torch.rand(n, 1, generator=generator, dtype=torch.float64) * (seq_len - 2 * half)).long()
    distinct = torch.rand(n, vocab, generator=generator).argsort(dim=1)[:, :seq_len - 1] + 1
    tokens = torch.cat([torch.full((n, 1), BOS_ID), distinct], dim=1)
    position = torch.arange(seq_len)
    second = 1 + prefix + half  # where the second copy starts
    repeated = (position >= second) & (position < second + half)
    # The second copy reads the first: position i takes the token at i - L (never itself repeated).
    return tokens.gather(1, torch.where(repeated, position - half, position))


def eval_seed(seed: int) -> int:
    """The seed of the held-out batch's own random stream: the family's seed plus a fixed odd constant
    (splitmix64's golden-ratio increment), so the held-out batch never changes the training data."""
    return (seed + 0x9E3779B97F4A7C15) % 2**63


def eval_batch(generator: torch.Generator, n: int, vocab_size: int, half_length: int) -> torch.Tensor:
    """``n`` evaluation sequences ``[bos] + r + r`` with ``len(r) = half_length`` distinct ordinary tokens
    (as in training): int64 ``[n, 1 + 2 * half_length]``."""
    # The first half_length columns of a uniform random permutation per row: distinct, uniform draws.
    r = torch.rand(n, vocab_size, generator=generator).argsort(dim=1)[:, :half_length] + 1
    return torch.cat([torch.full((n, 1), BOS_ID), r, r], dim=1)


@torch.no_grad()
def induction_losses(model, ids: torch.Tensor, half_length: int) -> tuple[float, float]:
    """``(in_context_loss, first_half_loss)`` in nats of ``model`` on ``[bos] + r + r`` sequences.

    Parameters
    ----------
    model
        A causal LM returning ``.logits`` ``[N, T, vocab]``.
    ids : torch.Tensor
        int64 ``[N, 1 + 2 * half_length]``, each row ``[bos] + r + r``.
    half_length : int
        ``len(r)``, at least 2.

    Returns
    -------
    (float, float)
        The mean next-token loss over the second copy's tokens after its first, and over ``r``'s
        tokens after its first (module docstring, Evaluation).
    """
    half_length = check_int(half_length, "half_length", minimum=2)
    if ids.ndim != 2 or ids.shape[1] != 1 + 2 * half_length:
        raise ValueError(f"ids must have shape [N, 1 + 2 * half_length] = [N, {1 + 2 * half_length}], "
                         f"got {list(ids.shape)}")
    logits = model(ids, attention_mask=torch.ones_like(ids)).logits[:, :-1].float()
    # loss[:, j] is the loss of predicting token j + 1 of the sequence.
    loss = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
    return float(loss[:, half_length + 1:].mean()), float(loss[:, 1:half_length].mean())


def read_checkpoint_info(folder) -> dict | None:
    """The parsed ``emergence_fast.json`` of a checkpoint folder, or None when it has none.

    Returns
    -------
    dict or None
        ``{"family": "induction", "step": int, "steps_total": int, "seed": int, "task": {"half_length": int,
        "half_length_range": [lo, hi], "vocab_size": int, "bos_id": 0}, "version": str}``.

    Raises
    ------
    ValueError
        Naming the file, when it is not valid JSON or lacks ``family``, ``step`` or ``steps_total`` as
        expected (a string family, non-negative integer steps).
    """
    path = Path(folder) / INFO_FILE
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    steps = [info.get(key) for key in ("step", "steps_total")] if isinstance(info, dict) else [None]
    if not (isinstance(info, dict) and isinstance(info.get("family"), str)
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in steps)):
        raise ValueError(f"{path} must be a JSON object with a string 'family' and non-negative integers 'step' and "
                         f"'steps_total'")
    return info


def read_family(out) -> dict:
    """The parsed ``family.json`` of a finished family folder ``out`` (module docstring, Output layout).

    Raises ValueError naming the file when it is missing (the run did not finish), not valid JSON, or
    not an object with a ``checkpoints`` list.
    """
    path = Path(out) / FAMILY_FILE
    if not path.is_file():
        raise ValueError(f"{path} does not exist: {str(out)!r} holds no finished family")
    try:
        family = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(family, dict) or not isinstance(family.get("checkpoints"), list):
        # A malformed file (its content, not an argument's type): ValueError, as for invalid JSON.
        raise ValueError(f"{path} must be a JSON object with a 'checkpoints' list")  # noqa: TRY004
    return family


def _write_json(path: Path, value) -> None:
    """Write ``value`` to ``path`` atomically (a temporary file renamed over it)."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, path)


def _as_json(config: dict) -> dict:
    return json.loads(json.dumps(config))  # tuples as lists: what family.json holds


def _prepare(out: Path, config: dict, flag: str) -> bool:
    """Check a claimed ``out`` against ``config``: True when it already holds this finished family.

    A folder left by a killed run of the same configuration is cleared (the run starts over); anything
    else that is not empty is refused with a ``ValueError`` naming ``flag``.
    """
    family_file, marker = out / FAMILY_FILE, out / IN_PROGRESS_FILE
    if family_file.is_file():
        try:
            found = json.loads(family_file.read_text(encoding="utf-8")).get("config")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            found = None
        if found == _as_json(config):
            return True
        raise ValueError(f"{flag} {str(out)!r} holds another family ({family_file.name} of another configuration); "
                         f"choose another {flag}")
    others = [entry.name for entry in out.iterdir() if entry.name not in (".emergence-fast.lock", IN_PROGRESS_FILE)]
    if marker.is_file():
        try:
            started = json.loads(marker.read_text(encoding="utf-8")).get("config")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            started = None
        if started != _as_json(config):
            raise ValueError(f"{flag} {str(out)!r} holds an unfinished family of another configuration; remove it or "
                             f"choose another {flag}")
        for name in others:  # a killed run of this configuration: start over
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    elif others:
        raise ValueError(f"{flag} {str(out)!r} is not empty and holds no induction family; choose an empty or new "
                         f"{flag}")
    return False


def _save_checkpoint(model, tokenizer, out: Path, step: int, config: dict) -> str:
    """Save the checkpoint of ``step`` atomically (a hidden folder renamed into place); return its name."""
    name = step_folder_name(step, config["steps"])
    partial = out / f".{name}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    from .._optional import require

    progress_bars = require("transformers", "saving the induction family").utils.logging
    shown = progress_bars.is_progress_bar_enabled()
    progress_bars.disable_progress_bar()  # a bar per save would bury the run's own
    try:
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
    finally:
        if shown:
            progress_bars.enable_progress_bar()
    lo, hi = config["half_length_range"]
    info = {"family": FAMILY, "step": step, "steps_total": config["steps"], "seed": config["seed"],
            "task": {"half_length": config["half_length"], "half_length_range": [lo, hi],
                     "vocab_size": config["vocab_size"], "bos_id": BOS_ID},
            "version": __version__}
    (partial / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, out / name)
    return name


def _versions() -> dict:
    from .._optional import require

    tokenizers = require("tokenizers", "building the induction family's tokenizer")
    transformers = require("transformers", "building the induction family's model")
    return {"emergence_fast": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__, "python": platform.python_version()}


def _train(out: Path, config: dict, progress: bool) -> dict:
    from tqdm.auto import tqdm

    started = time.perf_counter()
    _write_json(out / IN_PROGRESS_FILE, {"family": FAMILY, "config": _as_json(config)})
    torch.manual_seed(config["seed"])
    model = make_model(config)
    tokenizer = make_tokenizer(config["vocab_size"])
    generator = torch.Generator().manual_seed(config["seed"])
    held_out = eval_batch(torch.Generator().manual_seed(eval_seed(config["seed"])), config["eval_size"],
                          config["vocab_size"], config["half_length"])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config["lr"], weight_decay=0.0)
    saves = set(checkpoint_steps(config["steps"], config["checkpoints"]))
    rows, window = [], []  # window: the training losses of the updates since the previous checkpoint
    bar = tqdm(total=config["steps"], desc="induction family", unit="step", disable=not progress, file=sys.stderr)
    try:
        for step in range(config["steps"] + 1):
            loss = None
            if step < config["steps"]:
                batch = sample_batch(generator, config["batch_size"], config)
                model.train()
                logits = model(batch, attention_mask=torch.ones_like(batch)).logits[:, :-1]
                loss = F.cross_entropy(logits.transpose(1, 2), batch[:, 1:])
            if step in saves:
                # Step 0 has no update behind it: its training loss is the first batch's under the initial weights.
                train_loss = sum(window) / len(window) if window else float(loss.detach())
                window = []
                model.eval()
                in_context, first_half = induction_losses(model, held_out, config["half_length"])
                path = _save_checkpoint(model, tokenizer, out, step, config)
                rows.append({"path": path, "step": step, "train_loss": train_loss, "in_context_loss": in_context,
                             "first_half_loss": first_half})
                bar.set_postfix(in_context=f"{in_context:.3f}")
            if loss is None:
                break
            window.append(float(loss.detach()))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.update(1)
    finally:
        bar.close()
    return {"family": FAMILY, "config": _as_json(config), "seed": config["seed"], "versions": _versions(),
            "log_vocab_size": math.log(config["vocab_size"]), "bos_id": BOS_ID, "unk_id": unk_id(config["vocab_size"]),
            "eval": {"half_length": config["half_length"], "n_sequences": config["eval_size"],
                     "sequence": "[bos] + r + r, r distinct uniform ordinary tokens",
                     "in_context_loss": "mean next-token loss (nats) over the second copy's tokens after its first",
                     "first_half_loss": "mean next-token loss (nats) over r's tokens after its first"},
            "seconds": time.perf_counter() - started, "checkpoints": rows}


def run(out, config: dict, *, progress: bool = True, name=lambda key: key, flag: str = "out") -> Path:
    """Check ``config`` (naming options with ``name``), claim ``out`` (naming it ``flag``) and train into it.

    The shared body of :func:`train_family` and the CLI, which differ only in how messages name things.
    """
    from ..report import OutputFolder

    config = check_config(config, name)
    folder = OutputFolder(out, flag=flag)
    folder.claim()
    try:
        out = folder.path
        if not _prepare(out, config, flag):
            threads = torch.get_num_threads()
            torch.set_num_threads(config["num_threads"])
            try:
                family = _train(out, config, progress)
            finally:
                torch.set_num_threads(threads)
            _write_json(out / FAMILY_FILE, family)
            (out / IN_PROGRESS_FILE).unlink()
    except BaseException:
        folder.release(failed=True)
        raise
    folder.release()
    return out


def train_family(out, *, progress: bool = True, **config) -> Path:
    """Train the induction family into the folder ``out`` and return its path (module docstring for the design).

    Parameters
    ----------
    out : str or os.PathLike
        The family's folder: created if missing; it must be empty, hold a family left by a killed run of the
        same configuration (removed: the run starts over, it does not resume), or hold the finished family
        of the same configuration (then nothing is done). Locked while the run uses it.
    progress : bool
        Show a tqdm bar on stderr.
    **config
        Options of :data:`DEFAULTS` (the rest keep their defaults): ``vocab_size`` V ordinary tokens (>= 2 and >= ``seq_len - 1``);
        ``half_length_range`` (lo, hi), the lengths of ``r`` in training (2 <= lo <= hi); ``half_length`` the
        evaluation's ``len(r)`` in ``[lo, hi]``; ``seq_len`` tokens per training sequence (>= 1 + 2 hi);
        ``n_layer``, ``n_head``, ``d_model`` (a multiple of ``n_head``); ``lr`` AdamW's learning rate;
        ``batch_size`` sequences per step; ``steps`` optimizer steps; ``checkpoints`` saved checkpoints
        (2 ... steps + 1, evenly spaced, step 0 and ``steps`` included); ``eval_size`` held-out sequences;
        ``seed``; ``num_threads`` torch CPU threads during the run (restored after).

    Returns
    -------
    pathlib.Path
        ``out``, holding ``step-*/`` checkpoints and ``family.json`` (module docstring, Output layout).

    Raises
    ------
    ValueError
        An option unknown, out of range or not fitting the others (named), or ``out`` not usable (named
        ``out``): a file, in use by another run, or not empty and not this family.
    TypeError
        A seed that is not an integer.
    MissingDependency
        Without transformers or tokenizers (``pip install 'emergence_fast[models]'``).
    """
    from .._validation import check_bool

    check_bool(progress, "progress")
    return run(out, config, progress=progress)
