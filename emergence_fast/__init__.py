"""emergence_fast: batched entropy and mutual-information estimators for measuring emergence.

Data flows one way: capture -> accumulate -> estimate -> metric -> report. This module is the
public API of the estimate stage.
"""
from __future__ import annotations

from ._dispatch import BACKEND_CHOICES, backends
from ._validation import check_choice
from .accumulators import GaussianMIAccumulator
from .estimators import METHODS, token_entropy

__version__ = "0.1.0"


def entropy(x, method: str = "gaussian", **options):
    """Entropy of ``x [..., N, d]`` per leading batch cell, in nats (``base=2`` for bits).

    ``method``: ``"gaussian"`` (log-det; options ``bias_correction``, ``shrinkage``, ``details``)
    or ``"binned"`` (Miller–Madow plug-in; option ``bins``; integer codes used as they are).
    Every method takes ``backend=`` (see :func:`backends`).
    """
    check_choice(method, "method", METHODS)
    return METHODS[method].entropy(x, **options)


def mutual_information(x, y, method: str = "gaussian", **options):
    """I(X;Y) between paired samples ``x [..., N, dx]`` and ``y [..., N, dy]`` per batch cell.

    Methods as :func:`entropy` (``gaussian`` also takes ``pca``), plus ``"sliced"`` (k-sliced MI
    over random orthonormal projections; options ``k``, ``n_slices``, ``seed``, ``details``).
    """
    check_choice(method, "method", METHODS)
    return METHODS[method].mutual_information(x, y, **options)


__all__ = [
    "BACKEND_CHOICES",
    "GaussianMIAccumulator",
    "information_emergence",
    "backends",
    "entropy",
    "mutual_information",
    "token_entropy",
]


def information_emergence(model, tokenizer, dataset, **options):
    """Information Emergence per (layer, position); see :func:`emergence_fast.emergence.information_emergence`."""
    from .emergence import information_emergence as run

    return run(model, tokenizer, dataset, **options)
