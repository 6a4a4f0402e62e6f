"""The micro pass: each distinct token fed alone, and the count-weighted moments of those states."""
from __future__ import annotations

import torch

from .. import distributed
from ..accumulators import GaussianMIAccumulator, standardised_basis
from ..capture import BlockCapture
from .inputs import _prepend


def _micro_states(capture: BlockCapture, tokens: torch.Tensor, bos, batch_size, device, width, world):
    """Block inputs and outputs for each token fed alone: ``[layers, V, d]`` each.

    The batches of tokens are the same for any number of ranks; each rank runs its share and
    the rows are combined by :func:`distributed.owner_sum`, bit-identical to one process.
    """
    offset = 0 if bos is None else 1
    batches = [(lo, min(lo + batch_size, tokens.numel())) for lo in range(0, tokens.numel(), batch_size)]
    # float32 (float64 for a float64 model) on every rank, including a rank without batches: the buffers must match.
    dtype = torch.float64 if next(capture.model.parameters()).dtype == torch.float64 else torch.float32
    states = torch.zeros(2, len(capture.layers), tokens.numel(), width, device=device, dtype=dtype)
    for b in distributed.shard(len(batches), world):
        lo, hi = batches[b]
        ids = _prepend(tokens[lo:hi].unsqueeze(-1), bos).to(device)
        block_in, block_out = capture.run(ids, positions=[offset])
        states[0, :, lo:hi] = block_in[:, :, 0].to(states)
        states[1, :, lo:hi] = block_out[:, :, 0].to(states)
    states = distributed.owner_sum(states, world)
    return states[0], states[1]


def micro_counts(tokens: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """``[T, V]`` int64: how often each distinct token of ``tokens [V]`` appears at each position of ``input_ids [N, T]``."""
    return (input_ids.T.unsqueeze(-1) == tokens.view(1, 1, -1)).sum(1)


def micro_moments(states_in, states_out, tokens, input_ids, backend=None):
    """Count, mean and comoment per (layer, position) of the micro pairs, weighted by token counts.

    ``states_* [L, V, d]`` belong to ``tokens [V]``; ``input_ids [N, T]`` gives the weights.
    """
    counts = micro_counts(tokens, input_ids).to(states_in.device)  # [T, V]
    n_layers, seq_len = states_in.shape[0], counts.shape[0]
    x, y = (s.to(torch.float64).unsqueeze(1).expand(-1, seq_len, -1, -1) for s in (states_in, states_out))
    return _weighted_moments(x, y, counts.expand(n_layers, -1, -1), backend)


def _weighted_moments(x, y, counts, backend=None):
    """``(count, mean, comoment)`` per cell of the rows ``x [*cells, V, dx]``, ``y [*cells, V, dy]`` each counted
    ``counts [*cells, V]`` times: the :class:`~emergence_fast.GaussianMIAccumulator` of those repeated rows."""
    state = GaussianMIAccumulator(x.shape[-1], y.shape[-1], counts.shape[:-1], device=x.device, backend=backend)
    # Shift through each cell's most frequent row: a cell holding one token gets exact zeros.
    top = counts.argmax(-1, keepdim=True).unsqueeze(-1)  # [*cells, 1, 1]
    state.set_reference(x.gather(-2, top.expand(*top.shape[:-1], x.shape[-1])),
                        y.gather(-2, top.expand(*top.shape[:-1], y.shape[-1])))
    return state.update(x, y, counts).moments()


def micro_subspace_moments(states_in, states_out, tokens, input_ids, rank: int):
    """Micro count and comoment per (layer, position) in each cell's own top-``rank`` principal subspace.

    The micro covariance of position ``t`` has rank below the number of distinct tokens there,
    so its top principal directions come exactly from an SVD of the weighted, standardised
    ``[V, d]`` states (:func:`~emergence_fast.accumulators.standardised_basis`); the result has
    width ``2 r`` with ``r = min(rank, V, d)`` and no ``d x d`` matrix is ever formed.
    """
    counts = micro_counts(tokens, input_ids).to(states_in.device)  # [T, V]
    n_layers, seq_len = states_in.shape[0], counts.shape[0]
    count, comoments = [], []
    for layer in range(n_layers):
        sides = []
        for states in (states_in[layer], states_out[layer]):
            projected = []
            for t in range(seq_len):  # one [V, d] float64 copy at a time
                mean, scale, basis = standardised_basis(states.unsqueeze(0), rank, counts[t:t + 1])
                projected.append(((states.to(torch.float64) - mean) / scale) @ basis[0])
            sides.append(torch.stack(projected))  # [T, V, r]
        layer_count, _, comoment = _weighted_moments(*sides, counts)
        count.append(layer_count)
        comoments.append(comoment)
    return torch.stack(count), torch.stack(comoments)
