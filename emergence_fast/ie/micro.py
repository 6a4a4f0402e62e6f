"""The micro pass: each distinct token fed alone, and the count-weighted moments of those states."""
from __future__ import annotations

import torch

from .. import distributed
from ..accumulators import standardised_basis
from ..capture import BlockCapture
from ..ops.gram import gram
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


def micro_weights(tokens: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """``[T, V]`` float64: how often each distinct token appears at each position."""
    return (input_ids.T.unsqueeze(-1) == tokens.view(1, 1, -1)).sum(1).to(torch.float64)


def micro_moments(states_in, states_out, tokens, input_ids, backend=None):
    """Count, mean and comoment per (layer, position) of the micro pairs, weighted by token counts.

    ``states_* [L, V, d]`` belong to ``tokens [V]``; ``input_ids [N, T]`` gives the weights.
    """
    n = input_ids.shape[0]
    weights = micro_weights(tokens, input_ids).to(states_in.device)  # [T, V]
    z = torch.cat([states_in, states_out], -1).to(torch.float64)  # [L, V, 2d]
    # Centre through the most frequent token's state: a position holding one token gets exact zeros.
    reference = z[:, weights.argmax(-1)]  # [L, T, 2d]
    shifted = z.unsqueeze(1) - reference.unsqueeze(2)  # [L, T, V, 2d]
    shift_mean = torch.einsum("tv,ltvd->ltd", weights, shifted) / n
    centred = (shifted - shift_mean.unsqueeze(2)) * weights.sqrt().unsqueeze(-1)
    mean = reference + shift_mean
    comoment = gram(centred, centred, backend=backend)
    count = torch.full(mean.shape[:2], n, dtype=torch.int64, device=mean.device)
    return count, mean, comoment


def micro_subspace_moments(states_in, states_out, tokens, input_ids, rank: int):
    """Micro count and comoment per (layer, position) in each cell's own top-``rank`` principal subspace.

    The micro covariance of position ``t`` has rank below the number of distinct tokens there,
    so its top principal directions come exactly from an SVD of the weighted, standardised
    ``[V, d]`` states (:func:`~emergence_fast.accumulators.standardised_basis`); the result has
    width ``2 r`` with ``r = min(rank, V, d)`` and no ``d x d`` matrix is ever formed.
    """
    weights = micro_weights(tokens, input_ids).to(states_in.device)  # [T, V]
    n_layers, seq_len = states_in.shape[0], weights.shape[0]
    count = torch.full((n_layers, seq_len), input_ids.shape[0], dtype=torch.int64, device=states_in.device)
    comoments = []
    for layer in range(n_layers):
        per_position = []
        for t in range(seq_len):  # one [V, d] float64 copy at a time
            sides = []
            for states in (states_in[layer], states_out[layer]):
                mean, scale, basis = standardised_basis(states.unsqueeze(0), rank, weights[t:t + 1])
                sides.append(((states.to(torch.float64) - mean) / scale) @ basis[0])
            z = torch.cat(sides, -1)  # [V, 2r]
            w = weights[t].unsqueeze(-1)
            centred = z - (w * z).sum(0) / w.sum()
            per_position.append((centred * w).T @ centred)
        comoments.append(torch.stack(per_position))
    return count, torch.stack(comoments)
