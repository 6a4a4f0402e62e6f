r"""The prompt families a sweep runs, each with its own control axis and metrics.

A :class:`Task` declares once: its axis (``shots``, ``length`` or ``block``), default axis values,
the metrics it measures (each :class:`SweepMetric` says whether it is *continuous* or
*thresholded*, its direction, range and unit: the distinction Schaeffer et al., NeurIPS 2023,
show decides whether a curve looks emergent), the metric other curves are timed against, and
``evaluate``, which runs every axis value of the task on one loaded model and returns one
:class:`Measurement` (mean over examples, its standard error, the example count) per
(axis value, metric). Every value comes from the project's single-run functions, so a sweep cell
equals what those functions give alone:

* ``arithmetic-2d-mult`` / ``arithmetic-4d-add`` (axis ``shots``):
  :func:`emergence_fast.mirage.tasks.arithmetic_task` scored by
  :func:`emergence_fast.mirage.scoring.score_targets` (one teacher-forced pass): exact match
  (thresholded), token edit distance, target log-probability, per-token probability and the
  next-token entropy at the answer's positions.
* ``entity-animals`` / ``entity-colors`` / ``entity-countries`` (axis ``shots``): ``k`` entities of
  one category in the format of :func:`emergence_fast.datasets.icl_dataset` (``" cat, dog,"``),
  then a multiple choice between an unseen entity of the same category and one of each other
  category: the BIG-bench multiple-choice grade (thresholded), the Brier score, the correct
  option's log-probability and the next-token entropy after the prompt.
* ``binary-concepts`` (axis ``length`` = :math:`|x|`, flips of context): Bigelow et al. (ICLR
  2024), :func:`emergence_fast.icl.concepts.tree_curves`: P(concept | x) from depth-``depth``
  continuation trees, averaged over the concepts, and its thresholded form
  :math:`\mathbb 1[P(\text{concept}) > 1/2]`.
* ``induction`` (axis ``length`` = :math:`L`): ``[BOS] r r`` with ``r`` ``L`` distinct uniform random
  ordinary tokens (not special ones), as in Olsson et al. (2022), "In-context Learning and
  Induction Heads". The first token of the second copy follows ``r_L``, whose earlier
  occurrence is followed by nothing repeated, so no mechanism can know it; the *in-context loss*
  is the mean next-token loss (nats) over the other :math:`L-1` tokens of the second copy, the
  *first-half loss* the same over :math:`r_2..r_L`, and their difference the in-context loss
  reduction (Olsson et al.'s "in-context learning score" is the same kind of difference, between
  token positions). Plus the second copy's greedy token accuracy, its exact match (every one of
  those :math:`L-1` tokens right: thresholded) and the mean next-token entropy there.
* ``ie`` (axis ``block``): Information Emergence (Chen et al., arXiv 2405.12617) per block,
  :func:`emergence_fast.information_emergence`, averaged over positions (bits).

Examples within a cell are drawn with ``seed`` and are the same for every model (given the same
tokenizer), so differences along the model axis are paired.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import distributed
from ..datasets import ICL_ENTITY_FILES, bos_token, entity_list
from ..estimators.token_entropy import token_entropy

AXES = {"shots": "shots", "length": "tokens", "block": "block"}


@dataclass(frozen=True)
class SweepMetric:
    """One metric of a task: ``kind`` is ``"continuous"`` or ``"thresholded"`` (Schaeffer et al.),
    ``value_range`` bounds it (None: unbounded), ``unit`` names its unit."""

    name: str
    kind: str
    higher_is_better: bool
    value_range: tuple | None
    unit: str
    description: str


@dataclass(frozen=True)
class Measurement:
    """A cell's value of one metric: the mean over ``n`` examples and its standard error (NaN for n < 2)."""

    value: float
    stderr: float
    n: int

    @classmethod
    def of(cls, per_example) -> Measurement:
        v = np.asarray(per_example, dtype=np.float64)
        sem = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else math.nan
        return cls(float(v.mean()), sem, int(v.size))


@dataclass(frozen=True)
class Settings:
    """What a task's examples depend on besides the model and the axis value (part of a cell's key)."""

    n_examples: int = 64
    seed: int = 0
    batch_size: int = 16
    concepts: tuple = ("01", "011")
    depth: int = 3
    ie_samples: int = 256
    ie_dataset: str = "induction:8"
    ie_estimator: str | None = None

    def for_task(self, task: Task) -> dict:
        """The settings ``task`` reads, as a JSON-like dict (a changed setting makes its cells new)."""
        return {name: getattr(self, name) if not isinstance(getattr(self, name), tuple) else list(getattr(self, name))
                for name in task.settings}


@dataclass(frozen=True)
class Task:
    """A prompt family: its axis, default values, metrics, reference metric and evaluation."""

    name: str
    axis: str
    defaults: tuple
    metrics: tuple
    reference: str
    evaluate: Callable
    settings: tuple
    description: str
    needs: dict = field(default_factory=dict)

    def metric(self, name: str) -> SweepMetric:
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(name)

    @property
    def metric_names(self) -> tuple:
        return tuple(m.name for m in self.metrics)


def _m(name, kind, higher, value_range, unit, description):
    return SweepMetric(name, kind, higher, value_range, unit, description)


ENTROPY = _m("next_token_entropy", "continuous", False, None, "nats",
             "entropy of the next-token distribution where the answer is predicted")


# --------------------------------------------------------------------------------------------- arithmetic

def _arithmetic(task_name):
    def evaluate(model, tokenizer, values, settings: Settings, world):
        from ..mirage.scoring import score_targets
        from ..mirage.tasks import arithmetic_task

        out = {}
        for shots in values:
            ex = arithmetic_task(task_name, settings.n_examples, shots=int(shots), seed=settings.seed)
            scored = score_targets(model, tokenizer, ex.prompts, ex.targets, batch_size=settings.batch_size,
                                   world=world)
            m = scored.metrics()
            out[shots] = {"exact_match": Measurement.of(m["exact_match"]),
                          "token_edit_distance": Measurement.of(m["token_edit_distance"]),
                          "target_log_prob": Measurement.of(m["loglik"]),
                          "token_prob": Measurement.of(m["token_prob"]),
                          "next_token_entropy": Measurement.of([h.mean() for h in scored.token_entropies])}
        return out

    return Task(task_name, "shots", (0, 1, 2, 4, 8), (
        _m("exact_match", "thresholded", True, (0.0, 1.0), "fraction", "greedy answer equals the target"),
        _m("token_edit_distance", "continuous", False, None, "tokens", "Levenshtein distance of the greedy answer's tokens"),
        _m("target_log_prob", "continuous", True, None, "nats", "log-probability of the whole answer"),
        _m("token_prob", "continuous", True, (0.0, 1.0), "probability", "per-token probability of the answer"),
        ENTROPY), "token_edit_distance", evaluate, ("n_examples", "seed", "batch_size"),
        f"BIG-bench {task_name} in its few-shot format (Schaeffer et al. 2023's arithmetic)")


# --------------------------------------------------------------------------------------------- entity sets

def entity_examples(category: str, shots: int, n_examples: int, seed: int):
    """Prompts ``" e1, ..., ek,"`` of ``shots`` distinct entities of ``category`` and the options that
    follow: one unseen entity of ``category`` and one of each other category, in a seeded order.

    Returns ``(prompts, options, correct)`` with ``correct[i]`` the index of the same-category option.
    """
    rng = np.random.default_rng([seed, shots])
    own = entity_list(category)
    others = [entity_list(c) for c in sorted(set(ICL_ENTITY_FILES.values()) - {category})]
    if shots + 1 > len(own):
        raise ValueError(f"shots={shots} leaves no unseen entity of {category!r} ({len(own)} entities) to choose")
    prompts, options, correct = [], [], []
    for _ in range(n_examples):
        draw = rng.choice(len(own), size=shots + 1, replace=False)
        prompts.append("".join(f" {own[i]}," for i in draw[:shots]))
        opts = [own[draw[shots]]] + [lst[int(rng.integers(len(lst)))] for lst in others]
        order = rng.permutation(len(opts))
        options.append([" " + opts[j] for j in order])
        correct.append(int(np.argmax(order == 0)))
    return prompts, options, correct


def _entity(category):
    def evaluate(model, tokenizer, values, settings: Settings, world):
        from ..mirage import metrics as mm
        from ..mirage.scoring import score_targets

        out = {}
        for shots in values:
            prompts, options, correct = entity_examples(category, int(shots), settings.n_examples, settings.seed)
            flat_p = [p for p, opts in zip(prompts, options) for _ in opts]
            flat_o = [o for opts in options for o in opts]
            scored = score_targets(model, tokenizer, flat_p, flat_o, batch_size=settings.batch_size, world=world)
            totals = np.array([lp.sum() for lp in scored.token_log_probs])
            k = len(options[0])
            option_lp = totals.reshape(-1, k)
            first_entropy = np.array([h[0] for h in scored.token_entropies]).reshape(-1, k)[:, 0]
            out[shots] = {"mc_grade": Measurement.of(mm.multiple_choice_grade(option_lp, correct)),
                          "brier": Measurement.of(mm.brier_score(option_lp, correct)),
                          "target_log_prob": Measurement.of(option_lp[np.arange(len(correct)), correct]),
                          "next_token_entropy": Measurement.of(first_entropy)}
        return out

    name = f"entity-{category}"
    return Task(name, "shots", (1, 2, 4, 8), (
        _m("mc_grade", "thresholded", True, (0.0, 1.0), "fraction", "the same-category option scores highest"),
        _m("brier", "continuous", False, (0.0, 1.0), "squared probability", "Brier score over the options"),
        _m("target_log_prob", "continuous", True, None, "nats", "log-probability of the same-category option"),
        ENTROPY), "brier", evaluate, ("n_examples", "seed", "batch_size"),
        f"continue a list of {category} after k of them: multiple choice against other categories")


# --------------------------------------------------------------------------------------------- binary concepts

def _binary(model, tokenizer, values, settings: Settings, world):
    from ..icl.concepts import tree_curves

    # tree_curves computes every length up to the largest; its own transition fits are not used here.
    result = tree_curves(model, tokenizer, concepts=list(settings.concepts), max_len=int(max(values)),
                         depth=settings.depth, batch_size=settings.batch_size, n_boot=1, seed=settings.seed)
    out = {}
    for length in values:
        p = np.array([c.value[int(length) - 1] for c in result.curves])
        h = np.array([c.entropy[int(length) - 1] for c in result.curves])
        out[length] = {"p_concept": Measurement.of(p), "concept_hit": Measurement.of((p > 0.5).astype(float)),
                       "next_token_entropy": Measurement.of(h)}
    return out


BINARY = Task("binary-concepts", "length", tuple(range(1, 25)), (
    _m("p_concept", "continuous", True, (0.0, 1.0), "probability", "P(concept | x) from the continuation tree"),
    _m("concept_hit", "thresholded", True, (0.0, 1.0), "fraction", "P(concept | x) > 1/2"),
    ENTROPY), "p_concept", _binary, ("concepts", "depth", "seed", "batch_size"),
    "random binary sequences with concepts in context (Bigelow et al. 2024), length = flips of context")


# --------------------------------------------------------------------------------------------- induction

def ordinary_ids(tokenizer, model=None) -> np.ndarray:
    """Token ids that are not special tokens (and lie inside the model's vocabulary), ascending."""
    from ..capture.blocks import vocab_size

    n = len(tokenizer)
    if model is not None and vocab_size(model) is not None:
        n = min(n, vocab_size(model))
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    ids = np.array([i for i in range(n) if i not in special], dtype=np.int64)
    if ids.size < 2:
        raise ValueError(f"the tokenizer has {ids.size} ordinary (non-special) tokens: induction needs at least 2")
    return ids


def induction_ids(tokenizer, length: int, n_examples: int, seed: int, model=None) -> torch.Tensor:
    """``[n_examples, (1 +) 2 length]`` int64: the tokenizer's BOS (when it adds one), then ``r r``, with
    ``r`` ``length`` distinct ordinary tokens drawn uniformly (seeded by ``seed`` and ``length``)."""
    rng = np.random.default_rng([seed, length])
    ids = ordinary_ids(tokenizer, model)
    if ids.size < length:
        raise ValueError(f"induction length {length} needs {length} distinct ordinary tokens; the tokenizer has {ids.size}")
    # Distinct tokens within r: a token repeated inside r could be predicted by "copy a token seen
    # before" without an induction head, which is not what the second copy is meant to measure.
    r = np.stack([ids[rng.choice(ids.size, size=length, replace=False)] for _ in range(n_examples)])
    seq = np.concatenate([r, r], axis=1)
    bos = bos_token(tokenizer)
    if bos is not None:
        seq = np.concatenate([np.full((n_examples, 1), bos, dtype=np.int64), seq], axis=1)
    return torch.from_numpy(seq)


def induction_scores(model, input_ids: torch.Tensor, length: int, batch_size: int, world=None) -> dict:
    """Per-example first-half loss, in-context loss (nats), second-copy token accuracy and exact
    match, and mean next-token entropy there, of ``input_ids`` from :func:`induction_ids`."""
    world = world if world is not None else distributed.current()
    start = input_ids.shape[1] - 2 * length                   # 1 with a BOS, else 0
    first = torch.arange(start + 1, start + length)            # r_2..r_L
    second = torch.arange(start + length + 1, start + 2 * length)  # r_2'..r_L'
    device = next(model.parameters()).device
    batches = [range(i, min(i + batch_size, input_ids.shape[0])) for i in range(0, input_ids.shape[0], batch_size)]
    local = []
    with torch.inference_mode():
        for b in distributed.shard(len(batches), world):
            ids = input_ids[batches[b].start:batches[b].stop].to(device)
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.float()  # no padding
            logp = torch.log_softmax(logits[:, :-1], dim=-1)
            target = ids[:, 1:]
            nll = -logp.gather(-1, target[..., None])[..., 0].double().cpu()
            hit = (logits[:, :-1].argmax(-1) == target).cpu()
            ent = token_entropy(logits[:, :-1]).double().cpu()
            # logits at position j predict token j + 1
            local.append((nll[:, first - 1].mean(1), nll[:, second - 1].mean(1), hit[:, second - 1].double(),
                          ent[:, second - 1].mean(1)))
    parts = distributed.gather_ordered(local, world)
    first_loss = torch.cat([p[0] for p in parts]).numpy()
    icl_loss = torch.cat([p[1] for p in parts]).numpy()
    hits = torch.cat([p[2] for p in parts]).numpy()
    entropy = torch.cat([p[3] for p in parts]).numpy()
    return {"first_half_loss": first_loss, "in_context_loss": icl_loss, "icl_loss_reduction": first_loss - icl_loss,
            "repeat_token_accuracy": hits.mean(1), "repeat_exact_match": hits.all(1).astype(np.float64),
            "next_token_entropy": entropy}


def _check_length(model, length: int, with_bos: bool) -> None:
    from ..mirage.scoring import _max_positions

    limit = _max_positions(model)
    need = 2 * length + int(with_bos)
    if length < 2:
        raise ValueError(f"induction length must be at least 2 (one token of the second copy is predictable from "
                         f"L >= 2), got {length}")
    if limit is not None and need > limit:
        raise ValueError(f"induction length {length} needs {need} positions, over the model's {limit}")


def _induction(model, tokenizer, values, settings: Settings, world):
    out = {}
    for length in values:
        _check_length(model, int(length), bos_token(tokenizer) is not None)
        ids = induction_ids(tokenizer, int(length), settings.n_examples, settings.seed, model)
        scores = induction_scores(model, ids, int(length), settings.batch_size, world)
        out[length] = {name: Measurement.of(v) for name, v in scores.items()}
    return out


INDUCTION = Task("induction", "length", (8, 16, 32), (
    _m("in_context_loss", "continuous", False, None, "nats", "mean loss on the repeated tokens r_2'..r_L'"),
    _m("first_half_loss", "continuous", False, None, "nats", "mean loss on r_2..r_L (nothing to copy yet)"),
    _m("icl_loss_reduction", "continuous", True, None, "nats", "first-half loss minus in-context loss"),
    _m("repeat_token_accuracy", "continuous", True, (0.0, 1.0), "fraction", "greedy accuracy on r_2'..r_L'"),
    _m("repeat_exact_match", "thresholded", True, (0.0, 1.0), "fraction", "every token of r_2'..r_L' right"),
    ENTROPY), "in_context_loss", _induction, ("n_examples", "seed", "batch_size"),
    "random tokens whose second half repeats the first (Olsson et al. 2022), length = L")


# --------------------------------------------------------------------------------------------- IE

def ie_dataset(spec: str, tokenizer, settings: Settings, model=None):
    """IE's input for a sweep: ``"induction:L"`` (the induction task's sequences at length L) or any
    :func:`emergence_fast.datasets.load_dataset` spec (``icl-animal``, ``text:PATH``, ``ids:PATH``)."""
    from ..datasets import load_dataset

    if spec.startswith("induction:"):
        length = int(spec.split(":", 1)[1])
        _check_length(model, length, bos_token(tokenizer) is not None)
        return induction_ids(tokenizer, length, settings.ie_samples, settings.seed, model)
    return load_dataset(spec, tokenizer, settings.ie_samples, seed=settings.seed)


def _ie(model, tokenizer, values, settings: Settings, world):
    from ..emergence import DEFAULT_ESTIMATOR, information_emergence

    data = ie_dataset(settings.ie_dataset, tokenizer, settings, model)
    layers = None if values == ("all",) else [int(v) for v in values]
    result = information_emergence(model, tokenizer, data, layers=layers,
                                   estimator=settings.ie_estimator or DEFAULT_ESTIMATOR,
                                   batch_size=settings.batch_size, world=world)
    out = {}
    positions = len(result.positions)
    for i, layer in enumerate(result.layers):
        e = result.emergence[i]
        se = result.emergence_stderr[i]
        stderr = float(torch.sqrt((se**2).sum()) / positions) if bool(torch.isfinite(se).all()) else math.nan
        out[layer] = {"ie": Measurement(float(e.mean()), stderr, int(data.shape[0] if torch.is_tensor(data)
                                                                       else data.input_ids.shape[0]))}
    return out


IE = Task("ie", "block", ("all",), (
    _m("ie", "continuous", True, None, "bits", "Information Emergence of the block, mean over positions"),),
    "ie", _ie, ("ie_samples", "ie_dataset", "ie_estimator", "seed", "batch_size"),
    "Information Emergence per block (Chen et al. 2024), the block index as the axis")

TASKS = {t.name: t for t in (
    _arithmetic("arithmetic-2d-mult"), _arithmetic("arithmetic-4d-add"),
    *(_entity(c) for c in ("animals", "colors", "countries")), BINARY, INDUCTION, IE)}


def get(name: str) -> Task:
    """The task called ``name``; ValueError naming ``tasks`` and the known names otherwise."""
    if name not in TASKS:
        raise ValueError(f"tasks: unknown task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[name]
