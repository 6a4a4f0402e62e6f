r"""Bayesian model selection between a random coin and deterministic concepts
(Bigelow et al., arXiv 2310.17639, section 5 and the authors' ``ModelSelection.ipynb``).

Proper mode. Hypotheses are the coin Bernoulli(p) and every concept ``C`` (binary string) with
``1 <= |C| <= m``. Sequence likelihoods of ``x = x_1..x_n``:

.. math::

    P(x \mid \text{Bern}) = \prod_t p^{x_t} (1-p)^{1-x_t}, \qquad
    P(x \mid C) = \frac{1}{|C|} \sum_{\phi=0}^{|C|-1} \prod_t
        (1-\varepsilon)^{[x_t = C_{(t+\phi) \bmod |C|}]} \, \varepsilon^{[x_t \ne C_{(t+\phi) \bmod |C|}]},

i.e. a concept is consistent with ``x`` up to phase and each flip slips with probability
``ε``; both are proper distributions over ``{0,1}^n``. Prior: ``P(Bern) = π`` and
``P(C) ∝ 2^{-|C|}`` over the concepts (description length), sharing ``1 - π``. The posterior
``P(h | x_{1:n})`` is computed for every ``n`` from cumulative log-likelihoods. Predictions of
the next flip, with :math:`q_h = P(x_{n+1} \mid x_{1:n}, h)`:

* model averaging :math:`\sum_h P(h \mid x) \, q_h` (the Bayes-optimal predictive);
* hard selection :math:`q_{\hat h}` with :math:`\hat h = \arg\max_h P(h \mid x)`;
* soft selection at temperature τ: weights :math:`\propto P(h \mid x)^{1/τ}`
  (τ = 1 is averaging, τ → 0 is hard selection).

Crossings are reported where a posterior rises above 0.5 for good (:meth:`ModelSelectionResult.crossing`).
With the defaults (``m = 6``, ``ε = 0.01``, ``π = 0.5``, ``p = 0.5``) and ``x = (01)^n`` the
posterior of "non-random" (all concepts) is 0.457 at |x| = 2, 0.500 at 3 and 0.534 at 4: it
stays above 0.5 from |x| ≈ 3.0; the posterior of the generating class (01, 10, 0101, ...) is
0.391 at |x| = 4 and 0.568 at 5, crossing at |x| ≈ 4.6. For ``(011)^n``: 5.1 and 5.6.

Paper mode (``paper_compat=True``) reproduces the notebook exactly: ``p = mean(C)``, Bernoulli
"likelihood" = the binomial pmf of the number of Tails (not a sequence probability: it ignores
the order and is larger than the sequence likelihood by ``binom(n, k)``), concept likelihood =
1/3 for every ``x`` (the notebook's ``RepeatModel`` compares ``x`` with shifts of ``x`` itself,
so it always matches), prior P(concept) = 0.25, and ``x = C^n``. Predictions use the notebook's
hard-coded ``p(y | h) = (0.5, 1.0)`` and its soft selection raises the posterior to the power
``temp`` (an inverse temperature: ``temp = 1/τ``). For ``C = 01`` the posterior of the concept is
0.4974 at |x| = 50 and 0.5022 at |x| = 51, crossing 0.5 at |x| ≈ 50.54; the notebook draws its
marker line at 51 (it plots against a column ``i`` that is |x| + 1, where the crossing is at 51.54). Because the binomial pmf of a balanced
count decays only like :math:`\sqrt{2/(\pi n)}` while the constant 1/3 never grows, the paper's
transition lands some ten times later than a proper sequence likelihood puts it. For
``C = 011`` (p = 2/3, where the count wanders around its mean) the paper-mode posterior stays
above 0.5 from |x| ≈ 57.1.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
from scipy.special import logsumexp

from .._validation import check_bool, check_fits_in_memory, check_positive_float, check_positive_int, check_probability
from . import prompts as P

PAPER_TEMPERATURES = (1, 2, 3, 5, 7, 10, 15, 20, 30, 50)


def enumerate_concepts(max_len: int) -> list[tuple[int, ...]]:
    """Every binary string with ``1 <= |C| <= max_len`` (``2**(max_len + 1) - 2`` of them), shortest first.

    Raises ``ValueError`` when ``max_len`` is not a positive int, or when the list alone would not fit
    in this machine's memory (checked before it is built).
    """
    max_len = check_positive_int(max_len, "max_len")
    check_fits_in_memory("max_len", max_len, _hypotheses(max_len) * _concept_bytes(max_len),
                          f"{_hypotheses(max_len) - 1:,} concepts", "lower max_len (each step down halves it)")
    return [c for n in range(1, max_len + 1) for c in itertools.product((0, 1), repeat=n)]


def _hypotheses(max_concept_len: int) -> int:
    """The Bernoulli hypothesis plus every concept of length 1..max_concept_len."""
    return 2 ** (max_concept_len + 1) - 1


def _concept_bytes(length: int) -> int:
    """A concept held as a tuple (40 + 8 per flip), its list slot, and its name string (49 + 1 per flip)."""
    return 40 + 8 * length + 8 + 49 + length


def primitive_root(concept) -> tuple[int, ...]:
    """The shortest string whose repetition is ``concept``: ``(0, 1, 0, 1) -> (0, 1)``."""
    c = P.parse_concept(concept)
    for d in range(1, len(c) + 1):
        if len(c) % d == 0 and c[:d] * (len(c) // d) == c:
            return c[:d]
    return c


def concept_class(concept) -> tuple[int, ...]:
    """Canonical key of the periodic sequences a concept generates: the least rotation of its primitive root."""
    root = primitive_root(concept)
    return min(root[i:] + root[:i] for i in range(len(root)))


def _log_concept_likelihoods(x: np.ndarray, concepts, epsilon: float) -> np.ndarray:
    """``[H, n + 1]``: log P(x_{1:k} | C) for k = 0..n."""
    n = x.size
    out = np.empty((len(concepts), n + 1))
    log_hit, log_miss = math.log1p(-epsilon), math.log(epsilon)
    t = np.arange(n)
    for h, c in enumerate(concepts):
        c = np.array(c)
        phases = (t[None, :] + np.arange(len(c))[:, None]) % len(c)
        match = c[phases] == x[None, :]
        cum = np.concatenate([np.zeros((len(c), 1)), np.cumsum(np.where(match, log_hit, log_miss), axis=1)], axis=1)
        out[h] = logsumexp(cum, axis=0) - math.log(len(c))
    return out


def _log_bernoulli(x: np.ndarray, p: float) -> np.ndarray:
    with np.errstate(divide="ignore"):
        steps = np.where(x == 1, np.log(p), np.log1p(-p))
    return np.concatenate([[0.0], np.cumsum(steps)])


def _log_binomial_pmf(k: np.ndarray, n: np.ndarray, p: float) -> np.ndarray:
    """log C(n, k) p^k (1-p)^(n-k), exactly as scipy.stats.binom.pmf for 0 < p < 1."""
    lgamma = np.vectorize(math.lgamma)
    with np.errstate(divide="ignore"):
        return lgamma(n + 1) - lgamma(k + 1) - lgamma(n - k + 1) + k * np.log(p) + (n - k) * np.log1p(-p)


@dataclass
class ModelSelectionResult:
    """Posteriors and predictions for |x| = ``lengths``.

    ``posterior [len, H]`` over ``hypotheses`` (``"bernoulli"`` first, then concept strings);
    ``p_random`` is the Bernoulli column, ``p_concept`` the mass of the generating concept's class
    (``concept_class``); ``predictions`` maps ``"average"``, ``"hard"`` and ``"soft@τ"`` (paper mode:
    ``"soft@temp"``) to the probability each scheme gives the actual next flip ``x_{n+1}``.
    """

    x: tuple
    concept: tuple | None
    lengths: np.ndarray
    hypotheses: list[str]
    prior: np.ndarray
    posterior: np.ndarray
    p_random: np.ndarray
    p_concept: np.ndarray
    predictions: dict
    paper_compat: bool
    config: dict = field(default_factory=dict)

    def crossing(self, curve: str = "p_nonrandom", level: float = 0.5) -> float:
        """The |x| from which a posterior curve stays above ``level`` for good (NaN if it ends at or below).

        Linear interpolation between the last point at or below ``level`` and the next one
        (:func:`emergence_fast.transitions.crossing` on that segment); ``lengths[0]`` when the
        whole curve is above. An early dip back below ``level`` is thus not reported as the transition.
        """
        from ..transitions import crossing

        values = {"p_nonrandom": 1.0 - self.p_random, "p_random": self.p_random, "p_concept": self.p_concept}
        if curve not in values:
            raise ValueError(f"curve must be one of {tuple(values)}, got {curve!r}")
        y = values[curve]
        below = np.flatnonzero(~(y > level))
        if below.size == 0:
            return float(self.lengths[0])
        last = int(below[-1])
        if last == y.size - 1:
            return math.nan
        return crossing(self.lengths[last:last + 2], y[last:last + 2], level)

    def to_rows(self) -> list[dict]:
        rows = []
        for i, n in enumerate(self.lengths):
            row = {"length": int(n), "p_random": float(self.p_random[i]), "p_nonrandom": float(1 - self.p_random[i]),
                   "p_concept": float(self.p_concept[i])}
            row.update({f"pred_{name}": float(v[i]) for name, v in self.predictions.items()})
            rows.append(row)
        return rows

    def to_dict(self) -> dict:
        return {"x": "".join(map(str, self.x)), "concept": None if self.concept is None else "".join(map(str, self.concept)),
                "paper_compat": self.paper_compat, "config": self.config, "lengths": self.lengths.tolist(),
                "crossing_p_nonrandom": self.crossing("p_nonrandom"), "crossing_p_concept": self.crossing("p_concept"),
                "rows": self.to_rows()}


def bayesian_model_selection(concept=(0, 1), max_len: int = 100, *, x=None, paper_compat: bool = False,
                    max_concept_len: int = 6, epsilon: float = 0.01, p: float = 0.5, prior_random: float = 0.5,
                    temperatures=(0.5, 2.0)) -> ModelSelectionResult:
    """Posterior over hypotheses and next-flip predictions for |x| = 1..``max_len``.

    ``x`` defaults to the concept context ``C^n`` (one flip longer than ``max_len``, so every
    prediction has a target); pass ``x`` to score any binary sequence (then ``concept`` only
    names the class whose posterior is reported as ``p_concept``; None for none). See the module
    docstring for both modes; ``paper_compat=True`` ignores ``max_concept_len``, ``epsilon``,
    ``p``, ``prior_random`` and ``temperatures`` and uses the notebook's values.
    """
    check_bool(paper_compat, "paper_compat")
    max_len = check_positive_int(max_len, "max_len")
    concept = None if concept is None else P.parse_concept(concept)
    if x is None:
        if concept is None:
            raise ValueError("pass a concept or a sequence x")
        x = P.concept_context(concept, max_len + 1)
    else:
        x = P.as_flips(x, "x", allow_empty=False)
        if len(x) < max_len + 1:
            raise ValueError(f"x must have at least max_len + 1 = {max_len + 1} flips (the last one is the prediction "
                             f"target), got {len(x)}")
    xa = np.array(x[:max_len + 1], dtype=np.int64)
    if paper_compat:
        if concept is None:
            raise ValueError("paper_compat needs the concept (its mean is the Bernoulli p)")
        return _paper(xa, concept, max_len)
    return _proper(xa, concept, max_len, max_concept_len, epsilon, p, prior_random, temperatures)


def _proper(xa, concept, max_len, max_concept_len, epsilon, p, prior_random, temperatures):
    epsilon, p, prior_random = (check_probability(value, name, low_open=True, high_open=True)
                                for value, name in ((epsilon, "epsilon"), (p, "p"), (prior_random, "prior_random")))
    temperatures = tuple(check_positive_float(t, f"temperatures[{i}]") for i, t in enumerate(temperatures))
    max_concept_len = check_positive_int(max_concept_len, "max_concept_len")
    # About eight float64 [H, n + 2] arrays are alive at once (likelihoods, joint, posterior, q, weights).
    hypotheses = _hypotheses(max_concept_len)
    check_fits_in_memory("max_concept_len", max_concept_len,
                         hypotheses * (8 * 8 * (xa.size + 2) + _concept_bytes(max_concept_len)),
                         f"{hypotheses:,} hypotheses over {xa.size} flips",
                         "lower max_concept_len (each step down halves it)")
    concepts = enumerate_concepts(max_concept_len)
    log_lik = np.vstack([_log_bernoulli(xa, p)[None, :], _log_concept_likelihoods(xa, concepts, epsilon)])
    weights = np.array([2.0 ** -len(c) for c in concepts])
    prior = np.concatenate([[prior_random], (1 - prior_random) * weights / weights.sum()])
    log_joint = np.log(prior)[:, None] + log_lik                      # [H, n + 2]
    log_post = log_joint - logsumexp(log_joint, axis=0)[None, :]
    lengths = np.arange(1, max_len + 1)
    posterior = np.exp(log_post[:, lengths]).T                        # [len, H]
    # q_h = P(x_{n+1} | x_{1:n}, h) = P(x_{1:n+1} | h) / P(x_{1:n} | h)
    q = np.exp(log_lik[:, lengths + 1] - log_lik[:, lengths]).T       # [len, H]
    predictions = {"average": np.sum(posterior * q, axis=1),
                   "hard": q[np.arange(len(lengths)), np.argmax(posterior, axis=1)]}
    for tau in temperatures:
        logits = log_post[:, lengths].T / tau
        w = np.exp(logits - logits.max(axis=1, keepdims=True))
        predictions[f"soft@{tau:g}"] = np.sum(w * q, axis=1) / w.sum(axis=1)
    names = ["bernoulli"] + ["".join(map(str, c)) for c in concepts]
    if concept is not None:
        key = concept_class(concept)
        members = np.array([False] + [concept_class(c) == key for c in concepts])
        p_concept = posterior[:, members].sum(axis=1)
    else:
        p_concept = np.full(len(lengths), np.nan)
    config = {"max_concept_len": max_concept_len, "epsilon": epsilon, "p": p, "prior_random": prior_random,
              "temperatures": list(temperatures), "n_hypotheses": len(names)}
    return ModelSelectionResult(tuple(int(v) for v in xa), concept, lengths, names, prior, posterior, posterior[:, 0],
                                p_concept, predictions, False, config)


def _paper(xa, concept, max_len):
    p = float(np.mean(concept))
    p_non = 0.25
    lengths = np.arange(1, max_len + 1)
    k = np.cumsum(xa)[lengths - 1]
    if 0.0 < p < 1.0:
        bern = np.exp(_log_binomial_pmf(k, lengths, p)) * (1 - p_non)
    else:  # a constant concept: the binomial pmf is 1 at the only possible count
        bern = np.where(k == (lengths if p == 1.0 else 0), 1.0, 0.0) * (1 - p_non)
    conc = np.full(len(lengths), p_non / 3)
    unnorm = np.stack([bern, conc], axis=1)
    posterior = unnorm / unnorm.sum(axis=1, keepdims=True)
    y_h = np.array([0.5, 1.0])
    predictions = {"average": posterior @ y_h, "hard": y_h[np.argmax(posterior, axis=1)]}
    for temp in PAPER_TEMPERATURES:
        w = posterior ** temp
        predictions[f"soft@{temp}"] = (w / w.sum(axis=1, keepdims=True)) @ y_h
    config = {"p": p, "prior_concept": p_non, "concept_likelihood": 1 / 3, "bernoulli": "binomial pmf of the count",
              "y_h": y_h.tolist(), "temperatures_are_exponents": list(PAPER_TEMPERATURES)}
    names = ["bernoulli", "".join(map(str, concept))]
    return ModelSelectionResult(tuple(int(v) for v in xa), concept, lengths, names, np.array([1 - p_non, p_non]),
                                posterior, posterior[:, 0], posterior[:, 1], predictions, True, config)
