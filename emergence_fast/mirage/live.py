"""Run a generated task on several models and collect every metric from one scoring pass each.

Models load one at a time (:func:`emergence_fast.models.load_model`; ``"default"`` or None is
the embedded SmolLM2-135M-Instruct) and are released before the next, so a family never has to
fit in memory at once. A model's size is its parameter count (``model.parameters()`` counts
tied embeddings once).

Under torch.distributed every rank loads every model (a replica per rank) and scores a share of
the examples' batches (:func:`.scoring.score_targets`); before scoring a model, the ranks check
that they loaded the same one (name, class, parameter count, vocabulary), and a model that failed
to load on some ranks only makes every rank fail at once instead of waiting on the others.
"""
from __future__ import annotations

import gc
import math
import os
from pathlib import Path

import numpy as np

from .. import distributed
from .metrics import LIVE_METRICS
from .readers import Family
from .scoring import score_targets
from .tasks import arithmetic_task

DEFAULT_ALIASES = ("default", None)


def count_parameters(model) -> int:
    """Parameters of a torch model, shared (tied) tensors counted once."""
    if not hasattr(model, "parameters"):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return int(sum(p.numel() for p in model.parameters()))


class RanksDisagree(ValueError):
    """The ranks of one job loaded different models, or some failed to load theirs."""


def _check(value: dict, world) -> None:
    try:
        distributed.check_agreement(value, world, "model")
    except ValueError as exc:
        raise RanksDisagree(str(exc)) from None


def model_identity(name, model, tokenizer) -> dict:
    """What the ranks of one job must agree on about a loaded model (JSON-like, cheap to compare)."""
    config = getattr(model, "config", None)
    return {"model": None if name is None else str(name), "class": type(model).__name__,
            "n_parameters": count_parameters(model), "dtype": str(next(model.parameters()).dtype),
            "model_type": getattr(config, "model_type", None), "vocab": len(tokenizer)}


def load_agreed(loader, name, world: distributed.World):
    """``loader(name)`` on every rank, then a check that every rank loaded the same model
    (:class:`RanksDisagree` when not).

    A rank whose load failed still takes part in the check (with its error), so the others fail
    at once instead of waiting for it; when every rank failed alike, the load's own error is raised.
    """
    try:
        model, tokenizer = loader(name)
    except Exception as exc:  # re-raised below, after the ranks compare notes
        if not world.distributed:
            raise
        _check({"model": None if name is None else str(name), "error": f"{type(exc).__name__}: {exc}"}, world)
        raise
    _check(model_identity(name, model, tokenizer), world)
    return model, tokenizer


def check_distinct(models) -> None:
    """Refuse a model named twice: ValueError naming the repeats. Names of existing folders are
    compared as resolved paths, so ``g2`` and ``./g2`` are the same model."""
    seen = {}
    for name in models:
        key = "default" if name in DEFAULT_ALIASES else str(name)
        if os.path.exists(key):
            key = str(Path(key).resolve())
        seen.setdefault(key, []).append("default" if name is None else str(name))
    repeated = [names for names in seen.values() if len(names) > 1]
    if repeated:
        raise ValueError("models must be distinct; named more than once: "
                         + "; ".join(" and ".join(map(repr, names)) for names in repeated))


def run_family(models, task: str, *, n_examples: int = 200, shots: int = 2, seed: int = 0, batch_size: int = 16,
               continuation: str = "teacher_forced", device=None, dtype=None, loader=None, world=None) -> Family:
    """Score ``task`` (see :mod:`.tasks`) on every model of ``models`` (folders, cached hub ids,
    ``"default"``) and return the :class:`~.readers.Family` with per-example values of every
    metric in :data:`~.metrics.LIVE_METRICS`, the per-token loss and the target lengths.

    ``loader(name) -> (model, tokenizer)`` replaces :func:`emergence_fast.models.load_model`
    (tests pass tiny in-memory models this way). ``world`` (an
    :class:`emergence_fast.distributed.World`; None: the current process group, if any) shares
    each model's scoring out across ranks; every rank returns the whole family.
    """
    if isinstance(models, str):
        models = [models]
    models = list(models)
    if not models:
        raise ValueError("models is empty: name at least one model")
    check_distinct(models)
    examples = arithmetic_task(task, n_examples, shots=shots, seed=seed)
    if loader is None:
        from .. import models as model_loading

        def loader(name):
            return model_loading.load_model(None if name in DEFAULT_ALIASES else name, device=device, dtype=dtype)

    world = world if world is not None else distributed.current()
    rows = []
    for name in models:
        model, tokenizer = load_agreed(loader, name, world)
        scored = score_targets(model, tokenizer, examples.prompts, examples.targets, batch_size=batch_size,
                               continuation=continuation, world=world)
        rows.append((str(name) if name is not None else "default", count_parameters(model), scored.metrics(),
                     scored.per_token_loss(), scored.target_lengths(), _prefix_note(scored.special_prefix)))
        del model, tokenizer, scored
        gc.collect()
    rows.sort(key=lambda r: r[1])
    per_example = {m: [r[2][m] for r in rows] for m in LIVE_METRICS}
    n = len(rows)
    return Family(task=task, models=[r[0] for r in rows], params=np.array([float(r[1]) for r in rows]),
                  values={m: np.array([v.mean() for v in per_example[m]]) for m in LIVE_METRICS},
                  stderr={m: np.full(n, math.nan) for m in LIVE_METRICS}, n_test=np.full(n, float(n_examples)),
                  sources=[f"{task} x{n_examples} (seed {seed}, {shots}-shot)"] * n, per_example=per_example,
                  loss=np.array([r[3] for r in rows]), target_length=np.array([r[4].mean() for r in rows]),
                  target_lengths=[r[4] for r in rows],
                  loss_note="per-token loss: mean -log p over all answer tokens, teacher-forced",
                  notes=["special prefix (BOS) of each model's prompts: " + "; ".join(f"{r[0]}: {r[5]}" for r in rows)])


def _prefix_note(special_prefix: dict) -> str:
    """What the scorer did with the tokenizer's special prefix, in words, e.g. ``"[1] added to 200 prompts"``."""
    ids = special_prefix.get("ids") or []
    if not ids:
        return "none (the tokenizer adds no BOS)"
    done = {k: v for k, v in special_prefix.items() if k != "ids"}
    return f"{ids} " + ", ".join(f"{status} in {count} prompts" if status != "added" else f"added to {count} prompts"
                                 for status, count in sorted(done.items()))
