r"""Metrics on fixed model outputs, per example, and their means with bootstrap CIs.

The point of Schaeffer, Miranda & Koyejo (NeurIPS 2023, arXiv 2304.15004) is that one set of
outputs can look sharp or smooth across scale depending on the metric. With independent target
tokens each predicted with probability :math:`p` and a target of :math:`L` tokens,

.. math::

    \mathbb E[\text{exact match}] = p^L, \qquad
    \mathbb E[\text{token edit distance}] = L(1 - p)

(every token must be right for an exact match; each wrong token is one substitution), so a
smooth per-token improvement is a sharp exact-match curve and a straight edit-distance line.

Per-example metrics here (``higher_is_better`` in :data:`METRICS`):

* ``exact_match`` / ``exact_match_nocase``: prediction == target after stripping surrounding
  whitespace (BIG-bench ``exact_str_match`` / ``case_insensitive_str_match``).
* ``mc_grade``: BIG-bench ``multiple_choice_grade``, the target score of the option with the
  highest log-probability; ties go to the first such option, so the grade is deterministic.
* ``brier``: BIG-bench ``calibration_multiple_choice_brier_score`` for one example,
  :math:`\frac1K\sum_k (\mathrm{softmax}(\ell)_k - t_k)^2` over its :math:`K` options
  (Brier 1950; lower is better).
* ``token_edit_distance``: Levenshtein distance between the predicted and target token
  sequences (insertions, deletions, substitutions of whole tokens; Levenshtein 1966).
* ``loglik``, ``loglik_per_token``, ``loglik_per_char``: the target's total log-probability
  :math:`\sum_i \log p_i`, divided by its token count or its character count.
* ``token_prob``: the per-token probability :math:`\bar p = \exp(\frac1L\sum_i\log p_i)`
  (geometric mean over the target's tokens).
* ``seq_prob``: accuracy from per-token probabilities, :math:`\bar p^{L} = \prod_i p_i`, the
  probability that sampling reproduces the whole target: the continuous version of exact match.

:func:`aggregate` gives the mean over examples with a percentile bootstrap CI over examples
(Efron & Tibshirani 1993), from a seeded ``numpy.random.Generator``, all replicates at once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._validation import check_bool, check_int, check_probability
from ..fits import percentile_interval

try:  # rapidfuzz's C++ Levenshtein takes any sequences of hashables; the fallback is a plain DP.
    from rapidfuzz.distance import Levenshtein as _rapidfuzz_levenshtein
except ImportError:  # pragma: no cover - rapidfuzz is an optional extra
    _rapidfuzz_levenshtein = None


@dataclass(frozen=True)
class MetricSpec:
    """What a metric name means: its direction and whether it is a proportion of examples."""

    name: str
    higher_is_better: bool
    proportion: bool
    description: str


def _spec(name, higher, proportion, description):
    return name, MetricSpec(name, higher, proportion, description)


METRICS: dict[str, MetricSpec] = dict([
    # computed here from scored outputs
    _spec("exact_match", True, True, "exact string match of the greedy continuation"),
    _spec("exact_match_nocase", True, True, "case-insensitive exact string match"),
    _spec("mc_grade", True, True, "multiple-choice grade (highest log-prob option)"),
    _spec("brier", False, False, "multiple-choice Brier score (BIG-bench)"),
    _spec("token_edit_distance", False, False, "Levenshtein distance in tokens to the target"),
    _spec("loglik", True, False, "target log-likelihood (total, nats)"),
    _spec("loglik_per_token", True, False, "target log-likelihood per token (nats)"),
    _spec("loglik_per_char", True, False, "target log-likelihood per character (nats)"),
    _spec("token_prob", True, False, "per-token target probability exp(loglik / L)"),
    _spec("seq_prob", True, False, "accuracy from per-token probabilities, p^L"),
    # lm-evaluation-harness names
    _spec("acc", True, True, "accuracy (lm-evaluation-harness)"),
    _spec("acc_norm", True, True, "length-normalised accuracy (lm-evaluation-harness)"),
    _spec("em", True, True, "exact match (lm-evaluation-harness)"),
    _spec("f1", True, False, "token F1 (lm-evaluation-harness)"),
    _spec("ppl", False, False, "perplexity of the target (lm-evaluation-harness)"),
    _spec("perplexity", False, False, "perplexity of the target (lm-evaluation-harness >= 0.4 name of ppl)"),
    _spec("word_perplexity", False, False, "word perplexity (lm-evaluation-harness)"),
    _spec("byte_perplexity", False, False, "byte perplexity (lm-evaluation-harness)"),
    _spec("bits_per_byte", False, False, "bits per byte (lm-evaluation-harness)"),
    _spec("p_target", True, False, "exp(-log ppl) = 1/ppl: geometric-mean target probability"),
    # BIG-bench names
    _spec("exact_str_match", True, True, "exact string match (BIG-bench)"),
    _spec("case_insensitive_str_match", True, True, "case-insensitive exact string match (BIG-bench)"),
    _spec("multiple_choice_grade", True, True, "multiple-choice grade (BIG-bench)"),
    _spec("calibration_multiple_choice_brier_score", False, False, "multiple-choice Brier score (BIG-bench)"),
    _spec("expected_calibration_error", False, False, "expected calibration error (BIG-bench)"),
    _spec("log_likelihood", True, False, "target log-likelihood (BIG-bench)"),
    _spec("bleu", True, False, "BLEU (BIG-bench)"),
    _spec("rouge1", True, False, "ROUGE-1 (BIG-bench)"),
    _spec("rouge2", True, False, "ROUGE-2 (BIG-bench)"),
    _spec("rougeLsum", True, False, "ROUGE-Lsum (BIG-bench)"),
    _spec("sequence_f1", True, False, "sequence F1 (BIG-bench)"),
    _spec("numeric_match_with_0_1_relative_error", True, True, "numeric match within 10% (BIG-bench)"),
])

# The metrics :func:`scored_metrics` computes from one scoring pass of a free-response task.
LIVE_METRICS = ("exact_match", "exact_match_nocase", "token_edit_distance", "loglik", "loglik_per_token",
                "loglik_per_char", "token_prob", "seq_prob")


def metric_spec(name: str, lower_is_better=(), higher_is_better=()) -> MetricSpec:
    """The :class:`MetricSpec` of ``name``; names declared in ``lower_is_better`` / ``higher_is_better`` win.

    An lm-evaluation-harness >= 0.4 name ``metric,filter`` (``exact_match,strict-match``) has the
    direction and kind of ``metric``. Raises ValueError listing the known names when ``name`` is
    neither known nor declared.
    """
    if not isinstance(name, str):
        raise TypeError(f"metric name must be a str, got {type(name).__name__}")
    if name in lower_is_better or name in higher_is_better:
        return MetricSpec(name, name in higher_is_better, False, "declared by the user")
    base, comma, filter_name = name.partition(",")
    if comma and base and filter_name:
        spec = metric_spec(base, lower_is_better, higher_is_better)
        return MetricSpec(name, spec.higher_is_better, spec.proportion, f"{spec.description}, filter {filter_name!r}")
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}: known metrics are {sorted(METRICS)}; declare another with "
                         f"lower_is_better=/higher_is_better= (CLI: --lower-is-better / --higher-is-better)")
    return METRICS[name]


# ---------------------------------------------------------------------------------------------
# per-example metrics

def _strings(values, name: str) -> list[str]:
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of str, got a single {type(values).__name__}")
    values = list(values)
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise TypeError(f"{name}[{i}] must be a str, got {type(v).__name__}")
    return values


def _same_length(a, b, names) -> None:
    if len(a) != len(b):
        raise ValueError(f"{names[0]} and {names[1]} must have the same length, got {len(a)} and {len(b)}")


def exact_match(predictions, targets, *, ignore_case: bool = False) -> np.ndarray:
    """1.0 where ``prediction.strip() == target.strip()`` (casefolded when ``ignore_case``), else 0.0."""
    predictions, targets = _strings(predictions, "predictions"), _strings(targets, "targets")
    _same_length(predictions, targets, ("predictions", "targets"))
    check_bool(ignore_case, "ignore_case")
    norm = (lambda s: s.strip().casefold()) if ignore_case else str.strip
    return np.array([float(norm(p) == norm(t)) for p, t in zip(predictions, targets)], dtype=np.float64)


def _options(option_log_probs, target_scores):
    """Validated per-example option log-probs and target scores (ragged lists of float arrays)."""
    if isinstance(option_log_probs, (str, bytes)) or isinstance(target_scores, (str, bytes)):
        raise TypeError("option_log_probs and target_scores must be sequences, one entry per example")
    option_log_probs, target_scores = list(option_log_probs), list(target_scores)
    _same_length(option_log_probs, target_scores, ("option_log_probs", "target_scores"))
    logps, scores = [], []
    for i, (lp, ts) in enumerate(zip(option_log_probs, target_scores)):
        lp = np.asarray(lp, dtype=np.float64)
        if lp.ndim != 1 or lp.size < 2:
            raise ValueError(f"option_log_probs[{i}] must be a 1-D sequence of at least 2 options, got shape {lp.shape}")
        if np.isnan(lp).any() or (lp == np.inf).any():
            raise ValueError(f"option_log_probs[{i}] must be log-probabilities (finite or -inf), got {lp.tolist()}")
        if isinstance(ts, (int, np.integer)) and not isinstance(ts, bool):
            if not 0 <= ts < lp.size:
                raise ValueError(f"target_scores[{i}] is the index {ts}, outside the {lp.size} options")
            one_hot = np.zeros(lp.size)
            one_hot[ts] = 1.0
            ts = one_hot
        ts = np.asarray(ts, dtype=np.float64)
        if ts.shape != lp.shape:
            raise ValueError(f"target_scores[{i}] must be an option index or one score per option "
                             f"({lp.size}), got shape {ts.shape}")
        logps.append(lp)
        scores.append(ts)
    return logps, scores


def multiple_choice_grade(option_log_probs, target_scores) -> np.ndarray:
    """BIG-bench multiple-choice grade per example: ``target_scores[argmax(option_log_probs)]``.

    ``target_scores[i]`` is the index of the correct option or one score per option (BIG-bench's
    ``target_scores``, 1 for correct, 0 otherwise). Ties in log-probability go to the first option.
    """
    logps, scores = _options(option_log_probs, target_scores)
    return np.array([ts[int(np.argmax(lp))] for lp, ts in zip(logps, scores)], dtype=np.float64)


def brier_score(option_log_probs, target_scores) -> np.ndarray:
    """BIG-bench multiple-choice Brier score per example: mean over options of (softmax(log p) - target)^2."""
    logps, scores = _options(option_log_probs, target_scores)
    out = []
    for lp, ts in zip(logps, scores):
        probs = np.exp(lp - np.max(lp))
        probs /= probs.sum()
        out.append(float(np.mean((probs - ts) ** 2)))
    return np.array(out, dtype=np.float64)


def levenshtein(a, b) -> int:
    """Edit distance between two sequences of hashables (tokens), unit costs."""
    if _rapidfuzz_levenshtein is not None:
        return int(_rapidfuzz_levenshtein.distance(list(a), list(b)))
    return _levenshtein_dp(list(a), list(b))


def _levenshtein_dp(a: list, b: list) -> int:
    previous = list(range(len(b) + 1))
    for i, token_a in enumerate(a, 1):
        current = [i]
        for j, token_b in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (token_a != token_b)))
        previous = current
    return previous[-1]


def token_edit_distance(predicted_tokens, target_tokens) -> np.ndarray:
    """Levenshtein distance between token sequences, per example (lower is better)."""
    if isinstance(predicted_tokens, (str, bytes)) or isinstance(target_tokens, (str, bytes)):
        raise TypeError("predicted_tokens and target_tokens must be sequences of token sequences, not str")
    predicted_tokens, target_tokens = list(predicted_tokens), list(target_tokens)
    _same_length(predicted_tokens, target_tokens, ("predicted_tokens", "target_tokens"))
    for name, seqs in (("predicted_tokens", predicted_tokens), ("target_tokens", target_tokens)):
        for i, seq in enumerate(seqs):
            if isinstance(seq, (str, bytes)) or not hasattr(seq, "__iter__"):
                raise TypeError(f"{name}[{i}] must be a sequence of tokens, got {type(seq).__name__}")
    return np.array([levenshtein(p, t) for p, t in zip(predicted_tokens, target_tokens)], dtype=np.float64)


def _log_probs(token_log_probs) -> list[np.ndarray]:
    if isinstance(token_log_probs, (str, bytes)):
        raise TypeError("token_log_probs must be a sequence of per-token log-probability sequences")
    out = []
    for i, lp in enumerate(token_log_probs):
        lp = np.asarray(lp, dtype=np.float64)
        if lp.ndim != 1 or lp.size == 0:
            raise ValueError(f"token_log_probs[{i}] must be a non-empty 1-D sequence, got shape {lp.shape}")
        if np.isnan(lp).any() or (lp > 0).any():
            raise ValueError(f"token_log_probs[{i}] must hold log-probabilities (<= 0, not NaN)")
        out.append(lp)
    return out


def target_log_likelihood(token_log_probs, *, per: str = "total", targets=None) -> np.ndarray:
    """Target log-likelihood per example: ``per="total"`` (sum), ``"token"`` (mean) or ``"char"``
    (sum / number of characters of ``targets[i]``, which ``per="char"`` needs)."""
    lps = _log_probs(token_log_probs)
    if per == "total":
        return np.array([lp.sum() for lp in lps])
    if per == "token":
        return np.array([lp.mean() for lp in lps])
    if per == "char":
        if targets is None:
            raise ValueError("per='char' needs targets= (the target strings, for their character counts)")
        targets = _strings(targets, "targets")
        _same_length(lps, targets, ("token_log_probs", "targets"))
        for i, t in enumerate(targets):
            if not t:
                raise ValueError(f"targets[{i}] is empty: no characters to divide by")
        return np.array([lp.sum() / len(t) for lp, t in zip(lps, targets)])
    raise ValueError(f"per must be one of ('total', 'token', 'char'), got {per!r}")


def per_token_probability(token_log_probs) -> np.ndarray:
    """Geometric-mean per-token probability of each target, ``exp(mean log p)``."""
    return np.exp(target_log_likelihood(token_log_probs, per="token"))


def sequence_probability(token_log_probs) -> np.ndarray:
    """Accuracy from per-token probabilities: ``prod p_i = token_prob ** L`` per example."""
    return np.exp(target_log_likelihood(token_log_probs, per="total"))


# ---------------------------------------------------------------------------------------------
# aggregation

@dataclass(frozen=True)
class Aggregate:
    """Mean over examples with a percentile bootstrap CI (``n_boot`` replicates over examples)."""

    mean: float
    lo: float
    hi: float
    n: int
    n_boot: int
    ci: float


def aggregate(values, *, n_boot: int = 1000, ci: float = 0.95, seed: int = 0) -> Aggregate:
    """Mean of per-example ``values`` and its percentile bootstrap CI, all replicates in one draw.

    With one example (or ``n_boot=0``) the CI is NaN; an empty input raises.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"values must be 1-D (one number per example), got shape {values.shape}")
    if values.size == 0:
        raise ValueError("values is empty: nothing to aggregate")
    n_boot = check_int(n_boot, "n_boot", minimum=0)
    ci = check_probability(ci, "ci", low_open=True, high_open=True)
    mean = float(values.mean())
    if n_boot == 0 or values.size < 2:
        return Aggregate(mean, math.nan, math.nan, int(values.size), 0, float(ci))
    rng = np.random.default_rng(seed)
    # Replicates in chunks of about 8M indices: one draw for small inputs, bounded memory for large ones.
    chunk = max(1, (1 << 23) // values.size)
    means = np.concatenate([values[rng.integers(0, values.size, size=(min(chunk, n_boot - start), values.size))]
                            .mean(axis=1) for start in range(0, n_boot, chunk)])
    lo, hi = percentile_interval(means, ci)
    return Aggregate(mean, lo, hi, int(values.size), int(n_boot), float(ci))
