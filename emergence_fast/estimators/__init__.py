"""Estimators: one module each, with its equation and citation in the docstring.

Modules expose ``entropy(x, ...)`` and/or ``mutual_information(x, y, ...)`` on tensors
``[..., N, d]``; the tables below map the ``method=`` names of the public API to them.
"""
from functools import partial

from . import binned, gaussian, knn, neural, noisy, renyi, sliced
from .token_entropy import token_entropy

ENTROPY_METHODS = {
    "gaussian": gaussian.entropy,
    "binned": binned.entropy,
    "knn": knn.entropy,
    "renyi": renyi.entropy,
}
MI_METHODS = {
    "gaussian": gaussian.mutual_information,
    "binned": binned.mutual_information,
    "sliced": sliced.mutual_information,
    "max_sliced": sliced.max_sliced_mutual_information,
    "ksg": knn.mutual_information,
    "noisy": noisy.mutual_information,
    "renyi": renyi.mutual_information,
    **{name: partial(neural.mutual_information, method=name) for name in neural.NEURAL_METHODS},
    "chen2024": neural.chen2024,
}

__all__ = ["ENTROPY_METHODS", "MI_METHODS", "binned", "gaussian", "knn", "neural", "noisy", "renyi", "sliced", "token_entropy"]
