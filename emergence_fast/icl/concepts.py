r"""Concept learning: judgment curves and formal-language trees (Bigelow et al., arXiv 2310.17639).

Judgment. For a sequence ``x`` (a concept context ``C^n`` cut to ``|x|`` flips, or a seeded
random sequence as a baseline), the judgment prompt's next-token distribution gives

.. math::  p(\text{random} \mid x_{1:n}) = \frac{P_r}{P_r + P_n}, \qquad n = 1, \dots, L .

Tree. With context ``x = C^{|x|}`` and every continuation prefix ``y_{<d}`` of length
``0..D-1`` (``2^D - 1`` prompts per ``|x|``), the readout ``q(y_{<d}) = P(\text{Tails} \mid x, y_{<d})``
defines a depth-``D`` tree of continuations with path probabilities

.. math::

    P(y \mid x) = \prod_{d=1}^{D} q(y_{<d})^{y_d} \, (1 - q(y_{<d}))^{1 - y_d}, \qquad
    P(C \mid x) = \sum_{y \in \mathrm{rot}_D(C)} P(y \mid x),

where ``rot_D(C)`` holds the distinct depth-``D`` continuations that follow some cyclic shift of
``C`` (``rotations((0, 1, 1), 4) = {0110, 1101, 1011}``). A model that flips a fair coin scores
the chance level ``|rot_D(C)| / 2^D``.

All prompts of one curve share the prompt of the longest context as a prefix, so each curve
costs one forward pass over its longest prompt plus short batched tails
(:class:`~emergence_fast.icl.runner.PromptRunner`).
"""
from __future__ import annotations

import itertools
import math
import numbers
import time
from dataclasses import dataclass, field

import numpy as np

from .._validation import check_fits_in_memory, check_int, check_positive_int, check_seed
from . import prompts as P
from .readout import BinaryReadout
from .runner import PromptRunner


def rotations(concept, depth: int) -> list[tuple[int, ...]]:
    """Distinct length-``depth`` continuations of the cyclic shifts of ``concept``, in shift order."""
    concept = P.parse_concept(concept)
    depth = check_positive_int(depth, "depth")
    out = []
    for shift in range(len(concept)):
        rotated = concept[shift:] + concept[:shift]
        path = (rotated * (depth // len(concept) + 1))[:depth]
        if path not in out:
            out.append(path)
    return out


def chance_level(concept, depth: int) -> float:
    """P(concept | x) of a fair coin: ``|rotations(concept, depth)| / 2**depth``."""
    return len(rotations(concept, depth)) / 2 ** check_positive_int(depth, "depth")


# Measured for tree_curves (81,840 prompts at depth 10, max_len 40): a prompt's text and token ids take
# about 1.2 KB for 330 characters, 3.6 bytes per character, before the runner adds its own plan.
_TREE_BYTES_PER_CHAR = 4
# A path or prefix of d flips held in a list or dict: its tuple (40 + 8 d bytes), the slot, a float value.
_PATH_BYTES = 96


_LOWER_DEPTH = "lower depth (each step down halves it)"


def _prompt_bytes(n_prompts: int, template_chars: int, mean_flips: float) -> int:
    """Memory of ``n_prompts`` prompts of ``template_chars`` plus ``mean_flips`` flips each, text and token ids."""
    return int(n_prompts * (template_chars + len(P.tree_flips_text((0,))) * mean_flips) * _TREE_BYTES_PER_CHAR)


def continuation_prefixes(depth: int) -> list[tuple[int, ...]]:
    """The ``2**depth - 1`` prefixes of length ``0..depth-1``, shortest first (the paper's order).

    Raises ValueError naming ``depth`` when the ``2**depth - 1`` prefixes cannot fit in memory.
    """
    depth = check_positive_int(depth, "depth")
    check_fits_in_memory("depth", depth, (2**depth - 1) * (_PATH_BYTES + 8 * depth),
                          f"{2**depth - 1:,} continuation prefixes", _LOWER_DEPTH)
    return [prefix for n in range(depth) for prefix in itertools.product((0, 1), repeat=n)]


def path_probabilities(p_tails, depth: int) -> dict[tuple[int, ...], float]:
    """Probability of every depth-``depth`` path from ``p_tails[prefix]`` = P(next = 1 | prefix).

    ``p_tails`` maps each of the ``2**depth - 1`` prefixes to a probability; the result maps
    each of the ``2**depth`` paths to the product of its step probabilities (they sum to 1).
    Raises ValueError naming ``depth`` when the ``2**depth`` paths cannot fit in memory.
    """
    depth = check_positive_int(depth, "depth")
    check_fits_in_memory("depth", depth, 2**depth * (_PATH_BYTES + 8 * depth), f"{2**depth:,} paths", _LOWER_DEPTH)
    if not isinstance(p_tails, dict):
        raise TypeError(f"p_tails must be a dict mapping prefixes to P(next = 1), got {type(p_tails).__name__}")
    for prefix in continuation_prefixes(depth):
        if prefix not in p_tails:
            raise ValueError(f"p_tails has no entry for the prefix {prefix}")
        q = float(p_tails[prefix])
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"p_tails[{prefix}] must be a probability, got {q}")
    out = {}
    for path in itertools.product((0, 1), repeat=depth):
        value = 1.0
        for d in range(depth):
            q = float(p_tails[path[:d]])
            value *= q if path[d] == 1 else 1.0 - q
        out[path] = value
    return out


def concept_probability(p_tails, concept, depth: int) -> float:
    """P(concept | x): the mass of the depth-``depth`` paths that continue some shift of ``concept``.

    Only those paths are multiplied out (``len(concept) * depth`` steps at most), not all ``2**depth``.
    """
    depth = check_positive_int(depth, "depth")
    if not isinstance(p_tails, dict):
        raise TypeError(f"p_tails must be a dict mapping prefixes to P(next = 1), got {type(p_tails).__name__}")
    total = 0.0
    for path in rotations(concept, depth):
        value = 1.0
        for d in range(depth):
            if path[:d] not in p_tails:
                raise ValueError(f"p_tails has no entry for the prefix {path[:d]}")
            q = float(p_tails[path[:d]])
            if not 0.0 <= q <= 1.0:
                raise ValueError(f"p_tails[{path[:d]}] must be a probability, got {q}")
            value *= q if path[d] == 1 else 1.0 - q
        total += value
    return total


def random_sequences(n: int, length: int, seed: int = 0) -> list[tuple[int, ...]]:
    """``n`` fair-coin sequences of ``length`` flips from ``numpy.random.default_rng(seed)``."""
    n = check_positive_int(n, "n")
    length = check_positive_int(length, "length")
    draws = np.random.default_rng(check_seed(seed)).integers(0, 2, size=(n, length))
    return [tuple(int(v) for v in row) for row in draws]


def concept_label(concept) -> str:
    return "".join(str(v) for v in P.parse_concept(concept))


# ---------------------------------------------------------------------------------------------
# curves from a model


@dataclass
class Curve:
    """One curve over ``lengths`` (flips): ``value`` (p(random) or P(concept | x)) and the readout diagnostics.

    ``mass`` is the next-token mass on the two answers (mean over a curve point's prompts for
    trees), ``entropy`` the next-token entropy in nats (likewise averaged); ``kind`` is
    ``"concept"`` or ``"random"``; ``period`` is the concept length (None for random baselines).
    """

    label: str
    kind: str
    sequence: tuple
    lengths: np.ndarray
    value: np.ndarray
    mass: np.ndarray
    entropy: np.ndarray
    period: int | None
    chance: float | None = None
    transition: object | None = None

    def rows(self, task: str) -> list[dict]:
        return [{"task": task, "label": self.label, "kind": self.kind, "length": int(n), "value": float(v),
                 "mass": float(m), "entropy": float(h), "chance": self.chance}
                for n, v, m, h in zip(self.lengths, self.value, self.mass, self.entropy)]

    def to_dict(self) -> dict:
        return {"label": self.label, "kind": self.kind, "sequence": "".join(map(str, self.sequence)),
                "period": self.period, "chance": self.chance, "lengths": self.lengths.tolist(),
                "value": self.value.tolist(), "mass": self.mass.tolist(), "entropy": self.entropy.tolist(),
                "transition": None if self.transition is None else self.transition.to_dict()}


@dataclass
class ConceptResult:
    """Curves of one task (``"judge"`` or ``"tree"``) with the run's configuration and timings."""

    task: str
    curves: list[Curve]
    config: dict
    provenance: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"task": self.task, "config": self.config, "provenance": self.provenance,
                "curves": [c.to_dict() for c in self.curves]}

    def to_rows(self) -> list[dict]:
        return [row for curve in self.curves for row in curve.rows(self.task)]

    def transition_rows(self) -> list[dict]:
        """One row per curve: 0.5 crossing, 10-90 % width, logistic fit (location, width, asymptotes), the
        one-step bracket and the verdict of :func:`emergence_fast.transitions.summarize`; each key names its
        unit (``_flips`` or ``_periods``; ``period`` is in flips). Every interval is two numeric columns
        (``_lower`` / ``_upper``), so a CSV of the rows holds numbers only; ``note`` says when the logistic
        location lies outside its own bootstrap CI (empty otherwise)."""
        rows = []
        for c in self.curves:
            t = c.transition
            if t is None:
                continue
            fit = t.logistic
            rows.append({"label": c.label, "kind": c.kind, "period": c.period, "crossing_flips": t.crossing,
                         "crossing_periods": t.crossing_periods, "width_10_90_flips": t.width,
                         "logistic_location_flips": fit.location, "location_ci_lower_flips": fit.location_ci[0],
                         "location_ci_upper_flips": fit.location_ci[1], "location_periods": t.location_periods,
                         "logistic_width_flips": fit.width, "width_ci_lower_flips": fit.width_ci[0],
                         "width_ci_upper_flips": fit.width_ci[1], "width_periods": t.width_periods,
                         "logistic_lower": fit.lower, "logistic_upper": fit.upper,
                         "bracket_lower_flips": t.bracket[0], "bracket_upper_flips": t.bracket[1],
                         "width_bound_flips": t.width_bound, "verdict": t.verdict, "note": _ci_note(fit)})
        return rows


def _ci_note(fit) -> str:
    """A note when the logistic's location lies outside its percentile-bootstrap CI, else ``""``.

    The CI is the percentile interval of refits to residual-bootstrap replicates; when those refits
    land mostly on one side of the point estimate (a flat or barely identified likelihood, or too
    few replicates), the interval can exclude the estimate: the location is then not well determined.
    """
    lo, hi = fit.location_ci
    if not (math.isfinite(fit.location) and math.isfinite(lo) and math.isfinite(hi)) or lo <= fit.location <= hi:
        return ""
    return (f"the logistic location {fit.location:.3g} lies outside its bootstrap CI [{lo:.3g}, {hi:.3g}]: the "
            "refits of the bootstrap replicates land on one side of it, so the fit is unstable and its location "
            "poorly determined (raise n_boot, or read the crossing instead)")


def as_concepts(concepts) -> list[tuple[int, ...]]:
    """The concepts a curve function runs, each a non-empty binary tuple, none repeated.

    A string is spelled as on the command line (:func:`~emergence_fast.icl.prompts.parse_concepts`):
    one concept (``"01"`` -> ``[(0, 1)]``, never the two concepts ``"0"`` and ``"1"``), several
    separated by commas (``"01,011"``), or ``"paper"`` for the paper's 27. A flat sequence of 0/1
    numbers (``(0, 1, 1)``) is one concept; a list or tuple of strings or of sequences is several
    (``["01", "011"]``, ``((0, 1), (0, 1, 1))``); an empty one is none. Raises ValueError on
    characters other than '0' and '1', and on two concepts with the same primitive root
    (``01`` and ``0101``: both contexts are ``0101...``, so their curves are identical);
    TypeError on anything else.
    """
    if isinstance(concepts, str):
        return _distinct(P.parse_concepts(concepts))
    if hasattr(concepts, "tolist"):  # numpy arrays, tensors: a 1-D one is a concept, a 2-D one its rows
        concepts = concepts.tolist()
    if not isinstance(concepts, (list, tuple)):
        raise TypeError(f"concepts must be a '0'/'1' string, a sequence of 0/1 values, or a list of those, "
                        f"got {type(concepts).__name__}")
    if concepts and all(isinstance(c, numbers.Number) or hasattr(c, "item") for c in concepts):
        return [P.parse_concept(concepts)]  # flat 0/1 values: one concept
    return _distinct([P.parse_concept(c) for c in concepts])


def _distinct(concepts: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """``concepts`` unchanged; ValueError naming the first two that repeat one primitive root.

    Only repetitions are duplicates: ``C^n`` of ``01`` and of ``0101`` is the same context, and the
    tree's ``rotations`` of both are the same paths. Rotations (``01``, ``10``) are distinct
    concepts: their contexts differ (the paper's 27 hold ``01101`` and ``10110``).
    """
    from .model_selection import primitive_root

    seen = {}
    for concept in concepts:
        root = primitive_root(concept)
        if root in seen:
            first, label, root_label = concept_label(seen[root]), concept_label(concept), concept_label(root)
            why = ("it is given twice" if seen[root] == concept else
                   f"both are repetitions of {root_label}, so both contexts are {root_label} repeated and their "
                   "curves are identical")
            raise ValueError(f"concepts holds {first} and {label}, the same concept: {why}; give each concept once")
        seen[root] = concept
    return concepts


def _sequences(concepts, n_random: int, max_len: int, seed: int):
    items = [(concept_label(c), "concept", P.concept_context(c, max_len), c) for c in as_concepts(concepts)]
    n_random = check_int(n_random, "n_random", minimum=0)
    if n_random:
        for i, seq in enumerate(random_sequences(n_random, max_len, seed)):
            items.append((f"random-{i}", "random", seq, None))
    if not items:
        raise ValueError("nothing to run: pass at least one concept or n_random > 0")
    return items


def _runner(model, tokenizer, runner, batch_size, prefix_cache):
    if runner is not None:
        if not isinstance(runner, PromptRunner):
            raise TypeError(f"runner must be a PromptRunner, got {type(runner).__name__}")
        return runner
    return PromptRunner(model, tokenizer, batch_size=batch_size, prefix_cache=prefix_cache)


def _summarize(curve: Curve, n_boot: int, seed: int):
    from ..transitions import summarize

    # Probabilities: (0, 1) is the range of the shared minimum-amplitude rule.
    return summarize(curve.lengths, curve.value, n_boot=n_boot, seed=seed, period=curve.period, value_range=(0.0, 1.0),
                     x_unit="flips")


def judgment_curves(model, tokenizer, concepts=((0, 1), (0, 1, 1)), max_len: int = 100, *, n_random: int = 0,
                    seed: int = 0, chat: bool = False, batch_size: int = 32, prefix_cache: bool = True,
                    runner: PromptRunner | None = None, readout: BinaryReadout | None = None,
                    n_boot: int = 1000) -> ConceptResult:
    """p(random | x_{1:n}) for n = 1..``max_len`` for every concept context and ``n_random`` random sequences.

    ``concepts``: one concept (a '0'/'1' string such as ``"01"``, or a tuple of 0/1) or a list
    of them (:func:`as_concepts`). ``chat`` wraps every prompt in the
    tokenizer's chat template. Every curve gets its transition statistics
    (:func:`emergence_fast.transitions.summarize`, ``n_boot`` bootstrap replicates; the period of
    a concept curve is its length). Pass ``runner`` to share one (and its statistics) across calls.
    Inside a torch.distributed process group every rank must make the same call: the runner shares
    the batches out across the ranks and every rank returns the whole, single-process result.
    Raises ValueError naming ``max_len`` before any prompt is built when the prompts (whose text
    grows as ``max_len**2``) would not fit in this machine's memory.
    """
    max_len = check_positive_int(max_len, "max_len")
    items = _sequences(concepts, n_random, max_len, seed)
    n_prompts = len(items) * max_len  # of (max_len + 1) / 2 flips on average: memory grows as max_len^2
    check_fits_in_memory("max_len", max_len, _prompt_bytes(n_prompts, len(P.judgment_prompt((0,))), (max_len + 1) / 2),
                          f"{n_prompts:,} prompts ({len(items)} curve(s) x max_len)", "lower max_len")
    runner = _runner(model, tokenizer, runner, batch_size, prefix_cache)
    readout = readout if readout is not None else BinaryReadout(tokenizer, "n", "r")
    start = time.perf_counter()
    # One call for every curve: the runner gives each family its own trunk and batches the tails together.
    texts = [P.judgment_prompt(seq[:n]) for _, _, seq, _ in items for n in range(1, max_len + 1)]
    out = runner.map_last_logits(runner.encode(P.format_prompts(tokenizer, texts, chat), chat=chat), readout)
    curves = []
    for k, (label, kind, seq, concept) in enumerate(items):
        rows = out.index(range(k * max_len, (k + 1) * max_len))
        curve = Curve(label, kind, seq, np.arange(1, max_len + 1), rows.p.numpy(), rows.mass.numpy(),
                      rows.entropy.numpy(), None if concept is None else len(concept))
        curve.transition = _summarize(curve, n_boot, seed)
        curves.append(curve)
    config = {"max_len": max_len, "n_random": n_random, "seed": seed, "chat": chat, "batch_size": runner.batch_size,
              "prefix_cache": runner.prefix_cache, "readout": "p(random) = P_r / (P_r + P_n)"}
    return ConceptResult("judge", curves, config, {"seconds": time.perf_counter() - start,
                                                   "runner": runner.stats.to_dict()})


def tree_curves(model, tokenizer, concepts=((0, 1), (0, 1, 1)), max_len: int = 40, depth: int = 4, *,
                chat: bool = False, batch_size: int = 32, prefix_cache: bool = True,
                runner: PromptRunner | None = None, readout: BinaryReadout | None = None, n_boot: int = 1000,
                seed: int = 0) -> ConceptResult:
    """P(concept | x) for |x| = 1..``max_len`` from depth-``depth`` continuation trees.

    Each curve point takes ``2**depth - 1`` prompts (context ``C^{|x|}`` plus every continuation
    prefix); the curve's ``mass`` and ``entropy`` are the means over those prompts. The chance
    level of a fair coin is stored on the curve. ``concepts`` as in :func:`judgment_curves`.

    Raises ValueError naming ``depth`` before any prompt is built when the
    ``len(concepts) * max_len * (2**depth - 1)`` prompts would not fit in this machine's memory
    (about 4 bytes per character of prompt text, measured).
    """
    max_len = check_positive_int(max_len, "max_len")
    depth = check_positive_int(depth, "depth")
    items = _sequences(concepts, 0, max_len, seed)
    n_prompts = len(items) * max_len * (2**depth - 1)
    # Mean prompt: a context of (max_len + 1) / 2 flips and a continuation of about depth - 2.
    need = _prompt_bytes(n_prompts, len(P.tree_prompt((0,))), (max_len + 1) / 2 + max(depth - 2, 0))
    check_fits_in_memory("depth", depth, need, f"{n_prompts:,} prompts ({len(items)} curve(s) x max_len={max_len} "
                          f"x {2**depth - 1:,} continuation prefixes)", _LOWER_DEPTH)
    runner = _runner(model, tokenizer, runner, batch_size, prefix_cache)
    readout = readout if readout is not None else BinaryReadout(tokenizer, "h", "t")
    prefixes = continuation_prefixes(depth)
    start = time.perf_counter()
    texts = [P.tree_prompt(seq[:n], prefix) for _, _, seq, _ in items for n in range(1, max_len + 1)
             for prefix in prefixes]
    out = runner.map_last_logits(runner.encode(P.format_prompts(tokenizer, texts, chat), chat=chat), readout)
    per_curve = max_len * len(prefixes)
    curves = []
    for k, (label, kind, seq, concept) in enumerate(items):
        rows = out.index(range(k * per_curve, (k + 1) * per_curve))
        q = rows.p.numpy().reshape(max_len, len(prefixes))
        if np.isnan(q).any():
            raise ValueError(f"the model put no probability on any 'h'/'t' token for some tree prompt of {label}")
        value = np.array([concept_probability(dict(zip(prefixes, row)), concept, depth) for row in q])
        curve = Curve(label, kind, seq, np.arange(1, max_len + 1), value,
                      rows.mass.numpy().reshape(max_len, -1).mean(1), rows.entropy.numpy().reshape(max_len, -1).mean(1),
                      len(concept), chance=chance_level(concept, depth))
        curve.transition = _summarize(curve, n_boot, seed)
        curves.append(curve)
    config = {"max_len": max_len, "depth": depth, "seed": seed, "chat": chat, "batch_size": runner.batch_size,
              "prefix_cache": runner.prefix_cache, "readout": "P(Tails) = P_t / (P_h + P_t)"}
    return ConceptResult("tree", curves, config, {"seconds": time.perf_counter() - start,
                                                  "runner": runner.stats.to_dict()})
