"""Checks shared by the subcommands of the CLI (``ie``, ``icl``, ``mirage``): every argument that can be
checked before a model loads raises a ``ValueError`` naming its flag, which the CLI prints as one line."""
from __future__ import annotations

import os

import torch

import emergence_fast as ef
from emergence_fast import distributed
from emergence_fast._dispatch import BACKENDS, ENV_VAR, resolve_backend


def max_memory(text):
    """``--max-memory cpu=8GB,0=70GB`` -> ``{"cpu": "8GB", 0: "70GB"}``."""
    if not text:
        return None
    pairs = [item.partition("=") for item in text.split(",")]
    if any(not key or not sep or not value for key, sep, value in pairs):
        raise ValueError(f"--max-memory must be DEVICE=SIZE[,DEVICE=SIZE...] (e.g. cpu=8GB,0=70GB), got {text!r}")
    return {int(key) if key.isdigit() else key: int(value) if value.isdigit() else value for key, _, value in pairs}


def check_positive(args, minimums: dict) -> None:
    """``ValueError`` naming the flag when an integer option in ``minimums`` (dest -> least value) is below it."""
    for dest, least in minimums.items():
        value = getattr(args, dest)
        if value is not None and value < least:
            raise ValueError(f"--{dest.replace('_', '-')} must be >= {least}, got {value}")


def check_model_args(args) -> None:
    """``--dtype`` and ``--device`` (or ``--device-map`` and its options) as the model loader checks them."""
    from . import models

    device_map = getattr(args, "device_map", None)
    if device_map is None:
        models.resolve_placement_options(args.dtype, args.device)
    else:
        models.resolve_placement_options(args.dtype, None, device_map, max_memory(args.max_memory),
                                         args.offload_folder)


def claim_output(folder, world) -> None:
    """Claim ``folder`` (:class:`~emergence_fast.report.OutputFolder`) on rank 0, which alone writes
    results, and raise its refusal as a ``ValueError`` on every rank (none waits for a rank that stopped)."""
    problem = None
    if world.is_main:
        try:
            folder.claim()
        except ValueError as exc:
            problem = str(exc)
    problem = distributed.broadcast_object(problem, world)
    if problem:
        raise ValueError(problem)


def check_backend(backend, device: str | None, device_map=None) -> None:
    """``--backend`` (or ``EMERGENCE_FAST_BACKEND``) known and able to run where the model's states will be.

    The states live on the model's input device: ``device`` (default CPU), or with ``device_map`` a
    device not known before the model loads, so then the backend need only run somewhere here.
    """
    from . import models

    requested = backend if backend is not None else os.environ.get(ENV_VAR, "auto")
    if device_map is None or requested not in BACKENDS:  # "auto" or a name resolve_backend refuses
        resolve_backend(backend, models.resolve_placement_options(device=device)[1] if device_map is None
                        else torch.device("cpu"))
        return
    status = ef.backends()[requested]
    if not status.available:
        raise ValueError(f"backend={requested!r} is not available here: {status.reason}")
