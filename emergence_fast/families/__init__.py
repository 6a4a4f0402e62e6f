"""Offline checkpoint families in which a capability emerges during training, for sweeps across checkpoints.

``induction`` (:mod:`emergence_fast.families.induction`): a small attention-only transformer trained on
repeated random tokens, whose loss on the repeat falls abruptly when induction heads form (Olsson et al.
2022). :func:`make_family` trains one into a folder of Hugging Face checkpoints; :func:`read_checkpoint_info`
reads what a checkpoint folder says about itself (its training step, for a sweep's x axis).
"""
from __future__ import annotations

from .induction import read_checkpoint_info

FAMILIES = ("induction",)


def make_family(name: str, out, *, progress: bool = True, **config):
    """Train the family ``name`` into the folder ``out``; return its path (a ``pathlib.Path``).

    ``config`` holds the family's options (for ``"induction"``: :func:`emergence_fast.families.induction.train_family`,
    which documents them, the folder layout and the errors raised). Raises ValueError for an unknown ``name``.
    """
    if name not in FAMILIES:
        raise ValueError(f"name must be one of {FAMILIES}, got {name!r}")
    from . import induction

    return induction.train_family(out, progress=progress, **config)


__all__ = ["FAMILIES", "make_family", "read_checkpoint_info"]
