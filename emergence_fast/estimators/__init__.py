"""Estimators: one module each, with its equation and citation in the docstring.

Each module declares its estimators in :mod:`.registry` (name, kind, functions, uncertainty rule,
IE defaults, memory model); importing this package imports them all. ``MI_METHODS`` and
``ENTROPY_METHODS`` are live ``{name: function}`` views of the registry, so an estimator
registered later (a user's own) appears in them too.
"""
from . import binned, gaussian, knn, neural, noisy, renyi, sliced
from .registry import Details, Estimator, MethodTable, register, unregister
from .token_entropy import token_entropy

ENTROPY_METHODS = MethodTable("entropy")
MI_METHODS = MethodTable("mutual_information")

__all__ = ["Details", "ENTROPY_METHODS", "Estimator", "MI_METHODS", "binned", "gaussian", "knn", "neural", "noisy",
           "register", "renyi", "sliced", "token_entropy", "unregister"]
