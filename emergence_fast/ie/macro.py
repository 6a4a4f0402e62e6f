"""The macro pass: every sample through the hooks into the streaming state, with its pilot pass and checkpoints."""
from __future__ import annotations

import math
import time
from typing import NamedTuple

import torch

from .. import distributed
from ..accumulators import GaussianMIAccumulator, PairReservoir, SubspaceGaussianAccumulator, hash_priority, standardised_basis
from ..capture import input_device
from . import checkpoint as checkpoint_file
from .inputs import _prepend


def _pilot_state(capture, input_ids, bos, batch_size, plan, seed, width, device, backend, world):
    """First pass of the subspace state: per-cell principal directions from ``plan.pilot`` seeded samples.

    The pilot is the bottom-``pilot`` of :func:`hash_priority` over sample indices, fixed by the
    seed alone; its batches are split over ranks and its rows combined exactly; each rank
    decomposes its own layers' cells and the bases are combined exactly, so every rank (and a
    one-process run with the same thread count) projects on the same subspace.
    """
    n_samples, seq_len = input_ids.shape
    n_layers = len(capture.layers)
    chosen = torch.argsort(hash_priority(torch.arange(n_samples), seed), stable=True)[: plan.pilot].sort().values
    positions = [(0 if bos is None else 1) + t for t in range(seq_len)]
    rows = torch.zeros(2, n_layers, seq_len, plan.pilot, width, device=device)
    for b in distributed.shard(math.ceil(plan.pilot / batch_size), world):
        lo, hi = b * batch_size, min((b + 1) * batch_size, plan.pilot)
        block_in, block_out = capture.run(_prepend(input_ids[chosen[lo:hi]], bos).to(device), positions=positions)
        rows[0, :, :, lo:hi] = block_in.transpose(1, 2).to(rows)
        rows[1, :, :, lo:hi] = block_out.transpose(1, 2).to(rows)
    rows = distributed.owner_sum(rows, world).view(2, n_layers * seq_len, plan.pilot, width)
    owned = distributed.shard(n_layers, world)  # each rank decomposes its layers' cells; one owner each
    sides = []
    for side in range(2):
        mean = torch.zeros(n_layers * seq_len, width, dtype=torch.float64, device=device)
        scale, basis = torch.zeros_like(mean), mean.new_zeros(n_layers * seq_len, width, plan.rank)
        for cell in range(owned.start * seq_len, owned.stop * seq_len):  # one [pilot, width] float64 copy at a time
            m, s, q = standardised_basis(rows[side, cell:cell + 1], plan.rank)
            mean[cell], scale[cell], basis[cell, :, : q.shape[-1]] = m[0], s[0], q[0]
        sides += [distributed.owner_sum(t, world).view(n_layers, seq_len, *t.shape[1:]) for t in (mean, scale, basis)]
    del rows
    return SubspaceGaussianAccumulator(*sides, backend=backend)


def _macro_pass(capture, input_ids, bos, batch_size, plan, state, done, checkpoint, checkpoint_every, config,
                progress, timings, world):
    """Stream this rank's folds, from the ``done``-th on, through the hooks into ``state``.

    A fold is ``plan.fold_batches`` consecutive batches; folds are numbered over the whole
    dataset and every rank takes a contiguous run of them, so each fold's float32 Gram is the
    one a single process computes and only the float64 merges differ in order.
    """
    n_samples, seq_len = input_ids.shape
    device = input_device(capture.model)
    positions = [(0 if bos is None else 1) + t for t in range(seq_len)]
    fold_size = plan.fold_batches * batch_size
    folds = distributed.shard(math.ceil(n_samples / fold_size), world)
    timings.update(forward_s=0.0, accumulate_s=0.0, checkpoint_s=0.0, samples=0)
    iterator = range(done, len(folds))
    if progress and world.is_main:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, total=len(folds), initial=done, unit="fold",
                        desc="IE macro pass" + (f" (rank 0 of {world.world_size})" if world.distributed else ""))
    if isinstance(state, GaussianMIAccumulator) and world.distributed:
        _share_reference(capture, input_ids, bos, batch_size, positions, device, state, world)
    last_checkpoint = done
    for f in iterator:
        fold_lo = folds[f] * fold_size
        captured = []
        start = time.perf_counter()
        for lo in range(fold_lo, min(fold_lo + fold_size, n_samples), batch_size):
            hi = min(lo + batch_size, n_samples)
            captured.append(capture.run(_prepend(input_ids[lo:hi], bos).to(device), positions=positions))
        timings["forward_s"] += time.perf_counter() - start
        start = time.perf_counter()
        block_in = torch.cat([pair[0] for pair in captured], dim=1).transpose(1, 2)
        block_out = torch.cat([pair[1] for pair in captured], dim=1).transpose(1, 2)
        del captured
        timings["samples"] += block_in.shape[-2]
        if isinstance(state, PairReservoir):
            state.update(block_in, block_out, torch.arange(fold_lo, fold_lo + block_in.shape[-2]))
        else:
            state.update(block_in, block_out)
        timings["accumulate_s"] += time.perf_counter() - start
        batches_now = math.ceil(min((folds[f] + 1) * fold_size, n_samples) / batch_size) - folds.start * plan.fold_batches
        if checkpoint is not None and ((f + 1 - last_checkpoint) * plan.fold_batches >= checkpoint_every
                                       or f + 1 == len(folds)):
            start = time.perf_counter()
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            checkpoint_file._save_checkpoint(checkpoint, {"config": config, "folds_done": f + 1, "batches_done": batches_now,
                                          "state": state.state_dict()})
            last_checkpoint = f + 1
            timings["checkpoint_s"] += time.perf_counter() - start
    timings["macro_pass_s"] = timings["forward_s"] + timings["accumulate_s"]
    return state


def _share_reference(capture, input_ids, bos, batch_size, positions, device, state, world):
    """Give every rank the reference row one process would use: sample 0's states, as batch 0 computes them."""
    reference = torch.zeros(*state.batch_shape, state.dx + state.dy, dtype=torch.float64, device=device)
    if world.is_main:
        if state.reference is None:
            block_in, block_out = capture.run(_prepend(input_ids[:batch_size], bos).to(device), positions=positions)
            reference = torch.cat([block_in[:, 0], block_out[:, 0]], -1).to(reference)
        else:
            reference = state.reference.to(reference)
    reference = distributed.broadcast_(reference, world)
    if state.reference is None:
        state.set_reference(reference[..., None, : state.dx], reference[..., None, state.dx:])
    elif not torch.equal(state.reference, reference):
        raise ValueError("this rank's checkpoint was written with another reference row than rank 0's: the "
                         "checkpoints come from different runs; delete them or run without resume")


def _new_state(plan, capture, input_ids, bos, batch_size, width, device, backend, reservoir_seed, world):
    n_layers, seq_len = len(capture.layers), input_ids.shape[1]
    if plan.kind == "reservoir":
        return PairReservoir(width, width, (n_layers, seq_len), capacity=plan.capacity, seed=reservoir_seed,
                             device=device)
    if plan.kind == "subspace":
        return _pilot_state(capture, input_ids, bos, batch_size, plan, reservoir_seed, width, device, backend, world)
    return GaussianMIAccumulator(width, width, (n_layers, seq_len), device=device, backend=backend)


def _load_state(plan, payload, width, cells_shape, device, backend):
    if plan.kind == "subspace":
        return SubspaceGaussianAccumulator.from_state_dict(payload["state"], device=device, backend=backend)
    if plan.kind == "reservoir":
        return PairReservoir(width, width, cells_shape, capacity=plan.capacity, device=device).load_state_dict(
            payload["state"])
    return GaussianMIAccumulator(width, width, cells_shape, device=device, backend=backend).load_state_dict(
        payload["state"])


class Resumed(NamedTuple):
    """Where a resumed rank starts: its state (None: start over), the folds and the batches already in it."""

    state: object
    folds_done: int
    batches_done: int


def _resume(plan, checkpoint, config, width, cells_shape, device, backend, world) -> Resumed:
    """This rank's state from its ``checkpoint`` file if it has one (written with ``config``), else ``Resumed(None, 0, 0)``.

    Raises ValueError on every rank when another number of ranks wrote the folder's checkpoints
    or any rank's checkpoint is corrupt or from another run: one rank's bad checkpoint stops every
    rank with its message, not the others with a broken pipe.
    """
    checkpoint_file._check_checkpoint_world(checkpoint.parent, world)
    resumed, problem = Resumed(None, 0, 0), None
    if checkpoint.exists():
        try:
            payload = checkpoint_file._load_checkpoint(checkpoint, config)
            resumed = Resumed(_load_state(plan, payload, width, cells_shape, device, backend), payload["folds_done"],
                              payload["batches_done"])
        except ValueError as exc:
            problem = str(exc).splitlines()[0]
    problems = [p for p in distributed.gather_ordered([problem], world) if p]
    if problems:
        raise ValueError(problems[0])
    return resumed
