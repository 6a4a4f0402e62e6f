"""emergence_fast: batched entropy and mutual-information estimators for measuring emergence.

Data flows one way: capture -> accumulate -> estimate -> metric -> report. This module is the
public API of the estimate stage.
"""
from __future__ import annotations

import inspect

from ._dispatch import BACKEND_CHOICES, backends
from ._version import __version__
from ._validation import check_bool, check_seed
from .accumulators import GaussianMIAccumulator
from .estimators import registry, token_entropy
from .estimators.permutation import permutation_null
from .estimators.uncertainty import estimate_with_stderr, warn_undefined



def entropy(x, method: str = "gaussian", *, return_stderr: bool = False, n_resamples: int = 32, stderr_seed: int = 0,
            **options):
    """Entropy of ``x [..., N, d]`` per leading batch cell, in nats (``base=2`` for bits).

    ``method``: ``"gaussian"`` (log-det; ``bias_correction``, ``shrinkage``, ``details``),
    ``"binned"`` (Miller–Madow plug-in; ``bins``; integer codes used as they are), ``"knn"``
    (Kozachenko–Leonenko; ``k``, ``metric``, ``jitter``) or ``"renyi"`` (matrix-based Rényi
    α-entropy; ``alpha``, ``kernel``, ``bandwidth``, ``approx``), or any estimator registered
    since (:mod:`emergence_fast.estimators.registry`). Every method takes ``base``, ``backend``,
    ``details`` and ``seed``. ValueError names ``method`` and the choices for an unknown name.
    ``return_stderr=True`` returns ``(value, stderr)``; see :mod:`emergence_fast.estimators.uncertainty`.
    """
    estimator = _checked(method, "entropy", options, return_stderr)
    if return_stderr:
        value, stderr = estimate_with_stderr(estimator, method, (x,), options, n_resamples=n_resamples,
                                             stderr_seed=stderr_seed)
        warn_undefined(stderr, method)
        return value, stderr
    return estimator(x, **options)


def mutual_information(x, y, method: str = "gaussian", *, return_stderr: bool = False, n_resamples: int = 32,
                       stderr_seed: int = 0, **options):
    """I(X;Y) between paired samples ``x [..., N, dx]`` and ``y [..., N, dy]`` per batch cell, in nats (``base=2`` for bits).

    ``method``: ``"gaussian"`` (also ``pca``), ``"binned"``, ``"sliced"`` (``k``, ``n_slices``),
    ``"ksg"`` (Kraskov–Stögbauer–Grassberger; ``k``, ``variant``), ``"renyi"``, the neural bounds
    ``"infonce"``, ``"nwj"``, ``"mine"``, ``"smile"`` (one grouped critic for all cells, held-out
    value), ``"noisy"`` (noisy-channel MI), ``"max_sliced"``, ``"chen2024"`` (the original
    Information-Emergence MINE preset, biased upward, for comparability only), or any estimator
    registered since (:mod:`emergence_fast.estimators.registry`). Every method takes ``base``,
    ``backend``, ``details`` (returns ``(value, Details)``) and ``seed``.

    ``return_stderr=True`` returns ``(value, stderr)``: the estimator's own variance where it
    has one (Gaussian delta method, neural held-out split), else a delete-half jackknife over
    ``n_resamples`` seeded subsets; see :mod:`emergence_fast.estimators.uncertainty`. Where it is
    undefined (a singular or degenerate cell) it is NaN, with a ``RuntimeWarning``.
    """
    estimator = _checked(method, "mutual_information", options, return_stderr)
    if return_stderr:
        value, stderr = estimate_with_stderr(estimator, method, (x, y), options, n_resamples=n_resamples,
                                             stderr_seed=stderr_seed)
        warn_undefined(stderr, method)
        return value, stderr
    return estimator(x, y, **options)


__all__ = [
    "BACKEND_CHOICES",
    "GaussianMIAccumulator",
    "information_emergence",
    "backends",
    "entropy",
    "mutual_information",
    "permutation_null",
    "token_entropy",
    "__version__",
]


def _checked(method, quantity: str, options: dict, return_stderr):
    """The registered function, after the arguments every method shares: ValueError/TypeError naming them."""
    spec = registry.get(method, quantity)
    check_bool(return_stderr, "return_stderr")
    check_bool(options.get("details", False), "details")
    parameters = inspect.signature(getattr(spec, quantity)).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    unknown = set() if takes_any else set(options) - set(parameters)
    if unknown:
        raise ValueError(f"method {method!r} takes no option {sorted(unknown)[0]!r}; its options are "
                         f"{sorted(spec.options(quantity))} and {list(registry.COMMON_PARAMETERS)}")
    check_seed(options.get("seed", 0))
    return getattr(spec, quantity)


def information_emergence(model, tokenizer, dataset, **options):
    """Information Emergence per (layer, position); see :func:`emergence_fast.emergence.information_emergence`."""
    from .emergence import information_emergence as run

    return run(model, tokenizer, dataset, **options)
