"""Data parallelism on torch.distributed: process groups, deterministic shards, exact merges.

The library never starts a daemon of its own. Under ``torchrun``, ``accelerate launch`` or
Slurm + torchrun, every process runs the same command; :func:`init` joins the process group
the launcher describes (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` …) or uses the one the caller
already initialised (a DDP job that calls emergence_fast as a backend), and a plain
``python`` run is a world of one. Work is split into *units* (IE folds, ICL prompts, mirage
items) whose order and content do not depend on the number of ranks; each rank takes a
contiguous run of units, so every unit is computed exactly as one process computes it, and the
per-rank results combine with collectives:

* moment state: a count-weighted merge (Chan et al. 1979), exact up to float64 rounding
  (:meth:`emergence_fast.GaussianMIAccumulator.all_reduce`);
* rows owned by one rank (micro states, reservoir rows, per-layer estimates): a sum over
  ranks of zero-filled buffers, which is exact because every entry has one non-zero term
  (:func:`owner_sum`);
* Python objects (ICL and mirage per-prompt results): gathered in unit order
  (:func:`gather_ordered`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

DIST_BACKENDS = ("auto", "gloo", "nccl")
_LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class World:
    """This process's place in the job: ``rank`` of ``world_size``; ``group`` is None for one process.

    ``owns_group``: :func:`init` created the process group (and :func:`shutdown` will destroy
    it); False when the caller or nobody did.
    """

    rank: int = 0
    world_size: int = 1
    group: object = None
    backend: str | None = None
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def describe(self) -> dict:
        return {"rank": self.rank, "world_size": self.world_size, "backend": self.backend}


def launched() -> bool:
    """True when a launcher (torchrun, accelerate launch, Slurm + torchrun) started this process in a group of > 1."""
    return all(name in os.environ for name in _LAUNCHER_VARIABLES) and int(os.environ["WORLD_SIZE"]) > 1


def current() -> World:
    """The world as it is now: the default process group if one is initialised, else a world of one."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), dist.group.WORLD, dist.get_backend(), False)
    return World()


def init(backend: str = "auto", *, timeout_s: float = 1800.0) -> World:
    """Join the launcher's process group, or use the caller's; a plain run is a world of one.

    Parameters
    ----------
    backend : ``"auto"`` (NCCL when CUDA GPUs are visible, else gloo), ``"gloo"`` or ``"nccl"``.
        Ignored when a process group already exists: the caller's group is used as it is.
    timeout_s : collective timeout in seconds; a rank that died makes the others fail after it.

    Raises
    ------
    ValueError
        ``backend`` is not one of :data:`DIST_BACKENDS`, or ``"nccl"`` was asked for without a
        visible CUDA GPU.
    """
    if backend not in DIST_BACKENDS:
        raise ValueError(f"dist_backend must be one of {DIST_BACKENDS}, got {backend!r}")
    if backend == "nccl" and not torch.cuda.is_available():
        raise ValueError("dist_backend='nccl' needs CUDA GPUs, and none is visible to this process; use "
                         "dist_backend='gloo' (or 'auto') on CPU")
    world = current()
    if world.distributed or not launched():
        return world
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return World(dist.get_rank(), dist.get_world_size(), dist.group.WORLD, backend, True)


def shutdown(world: World) -> None:
    """Destroy the process group if :func:`init` created it; a caller's group is left alone."""
    if world.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def _global_rank(world: World, rank: int) -> int:
    """The global rank of ``world``'s rank ``rank`` (collectives name peers by global rank)."""
    if world.group is None or world.group is dist.group.WORLD:
        return rank
    return dist.get_global_rank(world.group, rank)


def rank_device(device, world: World):
    """``device`` for this rank: a bare ``"cuda"`` becomes this rank's GPU (``LOCAL_RANK``) in a job of several ranks."""
    if device is None or not world.distributed or str(device) != "cuda":
        return device
    local = os.environ.get("LOCAL_RANK")
    return f"cuda:{int(local) if local is not None else torch.cuda.current_device()}"


def collective_device(world: World, preferred: torch.device | None = None) -> torch.device:
    """Where tensors must live for this group's collectives: CUDA for NCCL, ``preferred`` or CPU otherwise."""
    if world.backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return preferred if preferred is not None and preferred.type != "meta" else torch.device("cpu")


def shard(n_units: int, world: World) -> range:
    """The contiguous run of ``n_units`` work units this rank owns (sizes differ by at most one; may be empty)."""
    lo = n_units * world.rank // world.world_size
    hi = n_units * (world.rank + 1) // world.world_size
    return range(lo, hi)


def check_agreement(value: dict, world: World, what: str = "configuration") -> None:
    """Fail on every rank, before any work, when ranks disagree on ``value`` (a JSON-like dict).

    Raises
    ------
    ValueError
        Naming the keys that differ and each rank's value of the first one.
    """
    if not world.distributed:
        return
    values = [None] * world.world_size
    dist.all_gather_object(values, value, group=world.group)
    keys = sorted({key for v in values for key in v}, key=str)
    differ = [key for key in keys if any(v.get(key) != values[0].get(key) for v in values[1:])]
    if differ:
        first = differ[0]
        per_rank = ", ".join(f"rank {r}: {v.get(first)!r}" for r, v in enumerate(values))
        raise ValueError(f"the ranks disagree on the {what}: {differ} differ ({first}: {per_rank}); every rank must "
                         "run the same command on the same model and data")


def all_reduce_sum_(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """In-place sum over ranks (a no-op for one process); works for tensors on any device."""
    if not world.distributed:
        return tensor
    device = collective_device(world, tensor.device)
    if tensor.device == device:
        dist.all_reduce(tensor, group=world.group)
        return tensor
    moved = tensor.to(device)
    dist.all_reduce(moved, group=world.group)
    return tensor.copy_(moved)


def owner_sum(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """Combine buffers in which each entry was written by exactly one rank (zeros elsewhere).

    A sum with one non-zero term is exact in floating point, so the result is bit-identical to
    the buffer one process would have filled alone.
    """
    return all_reduce_sum_(tensor, world)


def broadcast_(tensor: torch.Tensor, world: World, src: int = 0) -> torch.Tensor:
    """Overwrite ``tensor`` on every rank with rank ``src``'s copy (bit-identical everywhere)."""
    if not world.distributed:
        return tensor
    device = collective_device(world, tensor.device)
    moved = tensor if tensor.device == device else tensor.to(device)
    dist.broadcast(moved, src=_global_rank(world, src), group=world.group)
    return tensor if moved is tensor else tensor.copy_(moved)


def broadcast_object(value, world: World, src: int = 0):
    """Rank ``src``'s ``value`` on every rank (pickled; for small results)."""
    if not world.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=_global_rank(world, src), group=world.group)
    return box[0]


def gather_ordered(items: list, world: World) -> list:
    """Concatenate every rank's ``items`` in rank order, on every rank.

    With units split by :func:`shard`, rank order is unit order: the result is the list one
    process would have built.
    """
    if not world.distributed:
        return list(items)
    parts = [None] * world.world_size
    dist.all_gather_object(parts, list(items), group=world.group)
    return [item for part in parts for item in part]


def all_gather(tensor: torch.Tensor, world: World) -> list[torch.Tensor]:
    """Every rank's ``tensor`` (same shape everywhere), in rank order, on every rank."""
    if not world.distributed:
        return [tensor]
    device = collective_device(world, tensor.device)
    moved = tensor.to(device).contiguous()
    parts = [torch.empty_like(moved) for _ in range(world.world_size)]
    dist.all_gather(parts, moved, group=world.group)
    return parts


def gather(tensor: torch.Tensor, world: World, dst: int) -> list[torch.Tensor] | None:
    """Every rank's ``tensor`` (same shape everywhere) in rank order on rank ``dst``; None elsewhere."""
    if not world.distributed:
        return [tensor]
    device = collective_device(world, tensor.device)
    moved = tensor.to(device).contiguous()
    parts = [torch.empty_like(moved) for _ in range(world.world_size)] if world.rank == dst else None
    dist.gather(moved, parts, dst=_global_rank(world, dst), group=world.group)
    return parts


def any_rank(flag: bool, world: World) -> bool:
    """True on every rank when ``flag`` is True on any rank (e.g. "some rank found a checkpoint")."""
    if not world.distributed:
        return flag
    box = torch.tensor([1 if flag else 0], dtype=torch.int64, device=collective_device(world))
    dist.all_reduce(box, op=dist.ReduceOp.MAX, group=world.group)
    return bool(box.item())


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier(group=world.group)
