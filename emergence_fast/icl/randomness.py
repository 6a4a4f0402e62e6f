r"""Randomness generation: sample coin flips from a model and compare them with simple generators
(Bigelow et al., arXiv 2310.17639, section 4; metrics as in the authors' ``utils.py``).

Parsing (the paper's ``parse_flip_list``): split the continuation on ``','``, strip, drop ``'['``
and empty pieces, stop at the first piece containing ``']'``, map a first letter ``h`` to 0 and
``t`` to 1 and skip anything else; sequences are cropped to their first 50 flips and shorter ones
are dropped.

Per sequence ``x_1..x_n``:

* mean :math:`\bar x`; alternation rate :math:`\frac{1}{n-1}\sum_t |x_{t+1} - x_t|`;
* longest run (of equal flips); ``[0, 1, 1, 1, 0, 0, 0]`` has 3;
* gzip length: bytes of ``gzip.compress`` of the ``'0'/'1'`` string (level 9, mtime 0);
* running average :math:`r_t = (\bar x + \sum_{s \le t} x_s)/(t + 1)` seeded with the
  sequence's own mean as the paper does, and its spread (standard deviation, min, max).

Across sequences: counts of every length-``k`` substring (``k = 5..25``; all ``n - k + 1``
windows, where the paper's loop skipped the last) and pairwise similarity of the ``'0'/'1'``
strings with rapidfuzz: ``"indel"`` is ``1 - (insertions + deletions) / (|a| + |b|)``, the
``Levenshtein.ratio`` the paper used; ``"levenshtein"`` is ``1 - d_lev / max(|a|, |b|)``.

Comparison models, sampled with the same metrics:

* Bernoulli(p): i.i.d. flips;
* Window Average (the paper's gambler's-fallacy model): with the history seeded by one
  pseudo-flip equal to p, :math:`P(x_t = 1) = \mathrm{clip}(p + (p - \bar h_w), 0, 1)` where
  :math:`\bar h_w` is the mean of the last ``w`` entries of the history (default ``w = 5``);
* a first-order Markov chain in the paper's parameterisation (first flip ``P(0) = p_0``,
  transitions from ``c_{00} = (1 - a) p_0``, ``c_{01} = a (1 - p_0)``, ``c_{10} = a p_0``,
  ``c_{11} = (1 - a)(1 - p_0)`` normalised per row, ``a`` the alternation tendency), fitted by
  maximum a posteriori with Beta(5, 5) priors on ``p_0`` and ``a``.
"""
from __future__ import annotations

import gzip
import math
import numbers
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from .._optional import require
from .._validation import check_int, check_positive_int, check_probability, check_seed
from . import prompts as P
from .runner import PromptRunner

DEFAULT_CROP = 50
SUBSTRING_LENGTHS = tuple(range(5, 26))


def _flip_matrix(seqs, name: str = "seqs") -> np.ndarray:
    """``[n, L]`` int8 matrix of equal-length binary sequences (one flat sequence is ``[1, L]``)."""
    if isinstance(seqs, np.ndarray):
        array = seqs
    else:
        if isinstance(seqs, (str, bytes)):
            raise TypeError(f"{name} must be a sequence of binary sequences or an [n, L] array, got a string")
        items = list(seqs)
        if items and all(np.ndim(v) == 0 and not isinstance(v, str) for v in items):
            rows = [P.as_flips(items, name)]    # one sequence
        else:
            rows = [P.as_flips(s, f"{name}[{i}]") for i, s in enumerate(items)]
        if not rows:
            raise ValueError(f"{name} must hold at least one sequence")
        lengths = {len(r) for r in rows}
        if len(lengths) != 1:
            raise ValueError(f"{name} must hold sequences of one length, got lengths {sorted(lengths)}")
        array = np.array(rows, dtype=np.int8)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"{name} must be [n, L] with n, L >= 1, got shape {array.shape}")
    if not np.isin(array, (0, 1)).all():
        raise ValueError(f"{name} must contain only 0 and 1")
    return array.astype(np.int8)


def parse_flips(text: str, letters=("h", "t")) -> np.ndarray:
    """Flips in a generated continuation, as the paper parses them (see the module docstring)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if len(letters) != 2 or not all(isinstance(c, str) and len(c) == 1 for c in letters):
        raise ValueError(f"letters must be two single characters, got {letters!r}")
    pieces = [piece.strip().replace("[", "") for piece in text.split(",")]
    pieces = [piece for piece in pieces if piece]
    for i, piece in enumerate(pieces):
        if "]" in piece:
            pieces = pieces[:i]
            break
    out = []
    for piece in pieces:
        first = piece.lower()[0]
        if first == letters[0]:
            out.append(0)
        elif first == letters[1]:
            out.append(1)
    return np.array(out, dtype=np.int8)


def crop(flip_lists, length: int = DEFAULT_CROP) -> np.ndarray:
    """``[n, length]``: the first ``length`` flips of every sequence that has that many (others are dropped)."""
    length = check_positive_int(length, "length")
    kept = [np.asarray(f, dtype=np.int8)[:length] for f in flip_lists if len(f) >= length]
    return np.array(kept, dtype=np.int8).reshape(len(kept), length)


def longest_runs(seqs) -> np.ndarray:
    """Longest run of equal flips in each row of ``[n, L]`` (or one sequence)."""
    x = _flip_matrix(seqs)
    run = np.ones(x.shape[0], dtype=np.int64)
    best = run.copy()
    for t in range(1, x.shape[1]):
        run = np.where(x[:, t] == x[:, t - 1], run + 1, 1)
        np.maximum(best, run, out=best)
    return best


def alternation_rates(seqs) -> np.ndarray:
    """Fraction of neighbouring pairs that differ, per row (NaN for one-flip rows)."""
    x = _flip_matrix(seqs)
    if x.shape[1] < 2:
        return np.full(x.shape[0], np.nan)
    return np.abs(np.diff(x.astype(np.int64), axis=1)).mean(axis=1)


def gzip_length(flips) -> int:
    """Bytes of the gzip-compressed '0'/'1' string (compresslevel 9, mtime 0)."""
    text = "".join(str(int(v)) for v in P.as_flips(flips))
    return len(gzip.compress(text.encode(), compresslevel=9, mtime=0))


def running_averages(seqs) -> np.ndarray:
    """``[n, L + 1]`` running means seeded with each row's own mean (the paper's ``compute_running_prob``)."""
    x = _flip_matrix(seqs).astype(np.float64)
    seeded = np.concatenate([x.mean(axis=1, keepdims=True), x], axis=1)
    return np.cumsum(seeded, axis=1) / np.arange(1, seeded.shape[1] + 1)


def sequence_metrics(seqs) -> dict[str, np.ndarray]:
    """Per-row metrics of ``[n, L]``: mean, alternation, longest_run, gzip, run_avg_std/min/max."""
    x = _flip_matrix(seqs)
    run_avg = running_averages(x)
    return {"mean": x.mean(axis=1), "alternation": alternation_rates(x), "longest_run": longest_runs(x),
            "gzip": np.array([gzip_length(row) for row in x]), "run_avg_std": run_avg.std(axis=1),
            "run_avg_min": run_avg.min(axis=1), "run_avg_max": run_avg.max(axis=1)}


def substring_counts(seqs, k: int) -> dict[str, int]:
    """How often every length-``k`` '0'/'1' substring occurs over all windows of all rows."""
    x = _flip_matrix(seqs)
    k = check_int(k, "k", minimum=1, maximum=x.shape[1])
    counts = Counter()
    for row in x:
        text = "".join("1" if v else "0" for v in row)
        counts.update(text[i:i + k] for i in range(len(text) - k + 1))
    return dict(counts)


def pairwise_similarity(seqs, metric: str = "indel") -> np.ndarray:
    """``[n, n]`` normalised similarity of every pair of rows (rapidfuzz; see the module docstring)."""
    process = require("rapidfuzz.process", "pairwise_similarity")
    distance = require("rapidfuzz.distance", "pairwise_similarity")
    Indel, Levenshtein = distance.Indel, distance.Levenshtein

    scorers = {"indel": Indel.normalized_similarity, "levenshtein": Levenshtein.normalized_similarity}
    if metric not in scorers:
        raise ValueError(f"metric must be one of {tuple(scorers)}, got {metric!r}")
    x = _flip_matrix(seqs)
    texts = ["".join("1" if v else "0" for v in row) for row in x]
    return process.cdist(texts, texts, scorer=scorers[metric], dtype=np.float64, workers=1)


def mean_offdiagonal(matrix: np.ndarray) -> float:
    n = matrix.shape[0]
    if n < 2:
        return math.nan
    return float((matrix.sum() - np.trace(matrix)) / (n * (n - 1)))


# ---------------------------------------------------------------------------------------------
# comparison models


def _rng(seed):
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(check_seed(seed))


def _shape(n, length):
    check_positive_int(n, "n")
    check_positive_int(length, "length")


@dataclass(frozen=True)
class Bernoulli:
    """i.i.d. flips with P(1) = ``p``."""

    p: float

    def __post_init__(self):
        check_probability(self.p, "p")

    def sample(self, n: int, length: int, seed=0) -> np.ndarray:
        _shape(n, length)
        return (_rng(seed).random((n, length)) < self.p).astype(np.int8)


@dataclass(frozen=True)
class WindowAverage:
    """The paper's Window Average: P(x_t = 1) = clip(p + (p - mean of the last ``window`` history entries), 0, 1)."""

    p: float
    window: int = 5

    def __post_init__(self):
        check_probability(self.p, "p")
        check_positive_int(self.window, "window")

    def sample(self, n: int, length: int, seed=0) -> np.ndarray:
        _shape(n, length)
        rng = _rng(seed)
        history = np.empty((n, length + 1))
        history[:, 0] = self.p
        for t in range(length):
            recent = history[:, max(0, t + 1 - self.window):t + 1].mean(axis=1)
            prob = np.clip(self.p + (self.p - recent), 0.0, 1.0)
            history[:, t + 1] = rng.random(n) < prob
        return history[:, 1:].astype(np.int8)


@dataclass(frozen=True)
class MarkovChain:
    """First-order chain: first flip P(0) = ``p0``; ``alternation`` a sets the transitions (module docstring)."""

    p0: float
    alternation: float

    def __post_init__(self):
        check_probability(self.p0, "p0")
        check_probability(self.alternation, "alternation")

    def transition(self) -> np.ndarray:
        """``[2, 2]``: row = previous flip, column = next flip."""
        p0, a = self.p0, self.alternation
        c = np.array([[(1 - a) * p0, a * (1 - p0)], [a * p0, (1 - a) * (1 - p0)]])
        return c / c.sum(axis=1, keepdims=True)

    def log_likelihood(self, seqs) -> float:
        return float(_markov_loglik(_transition_counts(_flip_matrix(seqs)), np.array([self.p0]),
                                    np.array([self.alternation]))[0])

    def sample(self, n: int, length: int, seed=0) -> np.ndarray:
        _shape(n, length)
        rng = _rng(seed)
        p_one = self.transition()[:, 1]
        out = np.empty((n, length), dtype=np.int8)
        out[:, 0] = rng.random(n) >= self.p0
        for t in range(1, length):
            out[:, t] = rng.random(n) < p_one[out[:, t - 1]]
        return out

    @staticmethod
    def fit(seqs, prior=(5.0, 5.0)) -> MarkovChain:
        """MAP estimate of ``(p0, alternation)`` under independent Beta(prior) priors.

        The log posterior depends on the data only through the first-flip and transition
        counts; it is maximised on a grid refined around the best point until the step is 1e-9.
        """
        counts = _transition_counts(_flip_matrix(seqs))
        a, b = (float(v) for v in prior)
        if not (a > 0 and b > 0):
            raise ValueError(f"prior must be two positive Beta parameters, got {prior!r}")

        def log_post(p0, alt):
            log_prior = ((a - 1) * (np.log(p0) + np.log(alt)) + (b - 1) * (np.log1p(-p0) + np.log1p(-alt)))
            return _markov_loglik(counts, p0, alt) + log_prior

        lo = np.array([1e-9, 1e-9])
        hi = 1 - lo
        best = np.array([0.5, 0.5])
        step = 1.0
        while step > 1e-9:
            grid0 = np.linspace(max(lo[0], best[0] - step), min(hi[0], best[0] + step), 41)
            grid1 = np.linspace(max(lo[1], best[1] - step), min(hi[1], best[1] + step), 41)
            p0, alt = np.meshgrid(grid0, grid1, indexing="ij")
            values = log_post(p0.ravel(), alt.ravel())
            i = int(np.argmax(values))
            best = np.array([p0.ravel()[i], alt.ravel()[i]])
            step = max(grid0[1] - grid0[0], grid1[1] - grid1[0]) * 2
        return MarkovChain(float(best[0]), float(best[1]))


def _transition_counts(x: np.ndarray) -> np.ndarray:
    """[first0, first1, n00, n01, n10, n11]."""
    prev, nxt = x[:, :-1].ravel(), x[:, 1:].ravel()
    return np.array([(x[:, 0] == 0).sum(), (x[:, 0] == 1).sum(), ((prev == 0) & (nxt == 0)).sum(),
                     ((prev == 0) & (nxt == 1)).sum(), ((prev == 1) & (nxt == 0)).sum(),
                     ((prev == 1) & (nxt == 1)).sum()], dtype=np.float64)


def _markov_loglik(counts, p0, alt) -> np.ndarray:
    c00, c01 = (1 - alt) * p0, alt * (1 - p0)
    c10, c11 = alt * p0, (1 - alt) * (1 - p0)
    f0, f1, n00, n01, n10, n11 = counts
    return (f0 * np.log(p0) + f1 * np.log1p(-p0) + n00 * np.log(c00 / (c00 + c01)) + n01 * np.log(c01 / (c00 + c01))
            + n10 * np.log(c10 / (c10 + c11)) + n11 * np.log(c11 / (c10 + c11)))


# ---------------------------------------------------------------------------------------------
# generation from a model


@dataclass
class SourceStats:
    """Metrics of one source (the model or a comparison model) at one p(Tails)."""

    source: str
    p_tails: float
    flips: np.ndarray
    metrics: dict
    similarity: float
    substring_counts: dict

    def summary(self) -> dict:
        out = {"source": self.source, "p_tails": self.p_tails, "n": int(self.flips.shape[0])}
        for name, values in self.metrics.items():
            out[f"{name}_mean"] = float(np.mean(values)) if len(values) else math.nan
            out[f"{name}_std"] = float(np.std(values)) if len(values) else math.nan
        out["similarity_mean"] = self.similarity
        out["distinct_substrings_k10"] = len(self.substring_counts.get(10, {}))
        return out


@dataclass
class GenerationResult:
    """Sampled flips per p(Tails) and the metrics of the model and of the comparison models."""

    texts: dict
    stats: list[SourceStats]
    config: dict
    provenance: dict = field(default_factory=dict)

    def to_rows(self) -> list[dict]:
        return [s.summary() for s in self.stats]

    def to_dict(self) -> dict:
        return {"config": self.config, "provenance": self.provenance, "summary": self.to_rows(),
                "flips": {f"{s.source}@{s.p_tails}": ["".join(map(str, row)) for row in s.flips.tolist()]
                          for s in self.stats},
                "texts": {str(p): texts for p, texts in self.texts.items()}}


def source_stats(source: str, p_tails: float, flips: np.ndarray, *, substring_lengths=SUBSTRING_LENGTHS,
                 similarity: str = "indel") -> SourceStats:
    """All per-sequence and across-sequence metrics of ``flips [n, L]`` (n may be 0)."""
    if flips.shape[0] == 0:
        return SourceStats(source, p_tails, flips, {}, math.nan, {})
    metrics = sequence_metrics(flips)
    counts = {k: substring_counts(flips, k) for k in substring_lengths if k <= flips.shape[1]}
    return SourceStats(source, p_tails, flips, metrics, mean_offdiagonal(pairwise_similarity(flips, similarity)),
                       counts)


def compare_models(llm_flips: np.ndarray, p_tails: float, *, window: int = 5, seed: int = 0,
                   n_samples: int | None = None, similarity: str = "indel") -> list[SourceStats]:
    """Metrics of the model's flips and of Bernoulli, Window Average and a MAP Markov chain fitted to them."""
    x = _flip_matrix(llm_flips, "llm_flips")
    p = check_probability(p_tails, "p_tails")
    n = n_samples or x.shape[0]
    rng = _rng(seed)
    models = {"bernoulli": Bernoulli(p), "window_average": WindowAverage(p, window),
              "markov_chain": MarkovChain.fit(x)}
    out = [source_stats("llm", p, x, similarity=similarity)]
    for name, model in models.items():
        out.append(source_stats(name, p, model.sample(n, x.shape[1], rng), similarity=similarity))
    return out


def as_p_tails(p_tails) -> tuple[int, ...]:
    """``p_tails`` (one int percentage of Tails, or a sequence of them) as a tuple of distinct ints in [0, 100].

    Raises TypeError naming ``p_tails`` when it is neither an int nor a sequence, ValueError for a
    percentage that is not an int (``0.3`` is not read as 30 %) or lies outside [0, 100], for an empty
    sequence or a value given twice.
    """
    if isinstance(p_tails, numbers.Integral) and not isinstance(p_tails, bool):
        p_tails = (p_tails,)
    if isinstance(p_tails, (str, bytes)) or not hasattr(p_tails, "__iter__"):
        raise TypeError(f"p_tails must be an int percentage of Tails or a sequence of them (e.g. 30 or (30, 70)), "
                        f"got {p_tails!r}")
    p_tails = tuple(p_tails)
    if not p_tails:
        raise ValueError("p_tails must hold at least one percentage")
    for pct in p_tails:
        check_int(pct, "each p_tails percentage", minimum=0, maximum=100)
    repeated = sorted({int(pct) for pct in p_tails if p_tails.count(pct) > 1})
    if repeated:
        raise ValueError(f"p_tails holds {', '.join(map(str, repeated))} more than once: each p(Tails) would be "
                         "sampled twice with different seeds under one label; give each percentage once")
    return tuple(int(pct) for pct in p_tails)


def check_crop_reachable(crop_length: int, max_new_tokens: int, names=("crop_length", "max_new_tokens")) -> None:
    """ValueError naming both options when no sample can reach ``crop_length`` flips in ``max_new_tokens`` tokens.

    A flip is a comma-separated piece of the continuation that starts with h or t (:func:`parse_flips`),
    and the flip words of the prompt's format (``" Heads"``, ``","``) are separate tokens, so a sample
    holds at most one flip per sampled token: ``crop_length > max_new_tokens`` means every sample would
    be dropped by :func:`crop` after the whole sampling run. ``names`` are the two options' names as the
    caller's user spells them.
    """
    if crop_length > max_new_tokens:
        raise ValueError(f"{names[0]}={crop_length} flips can never be reached with {names[1]}={max_new_tokens}: "
                         f"a sampled token holds at most one flip (most tokenizers need two per flip, ' Heads' and "
                         f"','), so every sample would be dropped; raise {names[1]} to about 2 x {names[0]} "
                         f"({2 * crop_length}) or lower {names[0]}")


def generate_flips(model, tokenizer, p_tails=P.P_TAILS_PAPER, n_samples: int = 20, *, max_new_tokens: int = 160,
                   crop_length: int = DEFAULT_CROP, seed: int = 0, chat: bool = False, batch_size: int = 32,
                   temperature: float = 1.0, compare: bool = True, runner: PromptRunner | None = None
                   ) -> GenerationResult:
    """Sample ``n_samples`` continuations of the generation prompt for each p(Tails) (percent) and score them.

    Sampling stops for a row at ``]``, at eos, once ``crop_length`` flips are parsed, or after
    ``max_new_tokens`` tokens. Rows with fewer than ``crop_length`` flips are dropped before the
    metrics, as in the paper. ``compare`` adds Bernoulli, Window Average and Markov-chain samples
    (as many as the model's kept rows, seeded by ``seed``). Inside a torch.distributed process group
    every rank must make the same call: the sample batches of all p(Tails) are shared out across
    the ranks (:meth:`~emergence_fast.icl.runner.PromptRunner.sample_many`).
    ``p_tails`` as in :func:`as_p_tails`; ValueError naming both options when ``crop_length`` cannot be
    reached in ``max_new_tokens`` tokens (:func:`check_crop_reachable`), before anything is sampled.
    """
    p_tails = as_p_tails(p_tails)
    crop_length = check_positive_int(crop_length, "crop_length")
    if isinstance(max_new_tokens, numbers.Integral) and not isinstance(max_new_tokens, bool):
        check_crop_reachable(crop_length, max_new_tokens)  # other values: the runner's own check
    runner = runner if runner is not None else PromptRunner(model, tokenizer, batch_size=batch_size)

    def done(texts):
        return ["]" in t or len(parse_flips(t)) >= crop_length for t in texts]

    start = time.perf_counter()
    texts, stats = {}, []
    # One call for every p(Tails): under a process group the ranks share out all their sample batches.
    ids = runner.encode(P.format_prompts(tokenizer, [P.generation_prompt(pct) for pct in p_tails], chat), chat=chat)
    all_samples = runner.sample_many(ids, n_samples, max_new_tokens, seeds=[seed + 7919 * i for i in range(len(p_tails))],
                                     temperature=temperature, stop=done)
    for i, pct in enumerate(p_tails):
        texts[pct] = tokenizer.batch_decode(all_samples[i])
        flips = crop([parse_flips(t) for t in texts[pct]], crop_length)
        p = pct / 100
        if compare and flips.shape[0]:
            stats += compare_models(flips, p, seed=seed + i)
        else:
            stats.append(source_stats("llm", p, flips))
    config = {"p_tails": list(p_tails), "n_samples": n_samples, "max_new_tokens": max_new_tokens,
              "crop_length": crop_length, "seed": seed, "chat": chat, "temperature": temperature,
              "batch_size": runner.batch_size}
    return GenerationResult(texts, stats, config, {"seconds": time.perf_counter() - start,
                                                   "runner": runner.stats.to_dict()})
