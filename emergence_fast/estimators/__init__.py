"""Estimators: one module each, with its equation and citation in the docstring.

Every module exposes ``entropy(x, ...)`` and ``mutual_information(x, y, ...)`` on tensors
``[..., N, d]``; :data:`METHODS` maps the ``method=`` names of the public API to them.
"""
from . import binned, gaussian, sliced
from .token_entropy import token_entropy

METHODS = {"gaussian": gaussian, "binned": binned, "sliced": sliced}

__all__ = ["METHODS", "binned", "gaussian", "sliced", "token_entropy"]
