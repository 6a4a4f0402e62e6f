"""emergence_fast: batched entropy and mutual-information estimators for measuring emergence.

Data flows one way: capture -> accumulate -> estimate -> metric -> report. This module is the
public API of the estimate stage.
"""
from __future__ import annotations

from ._dispatch import BACKEND_CHOICES, backends
from ._validation import check_choice
from .accumulators import GaussianMIAccumulator
from .estimators import ENTROPY_METHODS, MI_METHODS, token_entropy
from .estimators.permutation import permutation_null

__version__ = "0.1.0"


def entropy(x, method: str = "gaussian", **options):
    """Entropy of ``x [..., N, d]`` per leading batch cell, in nats (``base=2`` for bits).

    ``method``: ``"gaussian"`` (log-det; ``bias_correction``, ``shrinkage``, ``details``),
    ``"binned"`` (Miller–Madow plug-in; ``bins``; integer codes used as they are), ``"knn"``
    (Kozachenko–Leonenko; ``k``, ``metric``, ``jitter``) or ``"renyi"`` (matrix-based Rényi
    α-entropy; ``alpha``, ``kernel``, ``bandwidth``, ``approx``). Every method takes ``backend=``.
    """
    check_choice(method, "method", ENTROPY_METHODS)
    return ENTROPY_METHODS[method](x, **options)


def mutual_information(x, y, method: str = "gaussian", **options):
    """I(X;Y) between paired samples ``x [..., N, dx]`` and ``y [..., N, dy]`` per batch cell.

    ``method``: ``"gaussian"`` (also ``pca``), ``"binned"``, ``"sliced"`` (``k``, ``n_slices``),
    ``"ksg"`` (Kraskov–Stögbauer–Grassberger; ``k``, ``variant``), ``"renyi"``, the neural bounds
    ``"infonce"``, ``"nwj"``, ``"mine"``, ``"smile"`` (one grouped critic for all cells, held-out
    value), or ``"chen2024"`` (the original Information-Emergence MINE preset, biased upward,
    for comparability only).
    """
    check_choice(method, "method", MI_METHODS)
    return MI_METHODS[method](x, y, **options)


__all__ = [
    "BACKEND_CHOICES",
    "GaussianMIAccumulator",
    "information_emergence",
    "backends",
    "entropy",
    "mutual_information",
    "permutation_null",
    "token_entropy",
]


def information_emergence(model, tokenizer, dataset, **options):
    """Information Emergence per (layer, position); see :func:`emergence_fast.emergence.information_emergence`."""
    from .emergence import information_emergence as run

    return run(model, tokenizer, dataset, **options)
