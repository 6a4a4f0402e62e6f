"""Optional dependencies, each named once with the extra of ``pyproject.toml`` that installs it.

Every import of a module outside the core dependencies (torch, numpy, scipy, tqdm) goes through
:func:`require`, so a user without it gets one sentence naming what to install instead of a bare
``ModuleNotFoundError`` from deep inside a call.
"""
from __future__ import annotations

import importlib
from types import ModuleType

#: top-level module -> (distribution on PyPI, extra of emergence_fast that installs it)
OPTIONAL = {
    "transformers": ("transformers", "models"),
    "tokenizers": ("tokenizers", "models"),  # a dependency of transformers; the induction family builds one
    "huggingface_hub": ("huggingface_hub", "models"),  # a dependency of transformers; the sweep checks its cache
    "safetensors": ("safetensors", "models"),
    "gguf": ("gguf", "models"),
    "accelerate": ("accelerate", "models"),
    "matplotlib": ("matplotlib", "plots"),
    "rapidfuzz": ("rapidfuzz", "text"),
    "pandas": ("pandas", "dataframe"),
    "triton": ("triton", "triton"),
}


class MissingDependency(ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` (e.g. ``"matplotlib.pyplot"``) for ``purpose`` (e.g. ``"writing PNGs"``).

    Raises
    ------
    MissingDependency
        When the module's top-level package is not installed:
        ``"<purpose> needs <dist>, which is not installed: pip install 'emergence_fast[<extra>]'"``.
        Other import errors (a broken installation) propagate unchanged.
    """
    top = module.partition(".")[0]
    if top not in OPTIONAL:
        raise ValueError(f"module {module!r} is not an optional dependency; known: {sorted(OPTIONAL)}")
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.partition(".")[0] != top:
            raise
        dist, extra = OPTIONAL[top]
        raise MissingDependency(f"{purpose} needs {dist}, which is not installed: "
                                f"pip install 'emergence_fast[{extra}]'") from exc
