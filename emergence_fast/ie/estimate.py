"""The estimate stage: each estimator family on the streamed state and the micro states, per (layer, position)."""
from __future__ import annotations

from typing import NamedTuple

import torch

from .. import distributed, estimate_memory
from .._validation import check_positive_int, format_bytes, log_base
from ..accumulators import SubspaceGaussianAccumulator
from ..estimators import registry
from ..estimators.knn import native_knn_for
from ..estimators.registry import Estimator
from ..estimators.uncertainty import estimate_with_stderr
from .micro import micro_moments, micro_subspace_moments

DEFAULT_ESTIMATOR = "noisy"  # chosen by the agreement study (README, benchmarks/ie_agreement.py)
WEIGHTED_WORKING_BYTES = 2**30  # a weighted (atoms) estimator's temporaries per chunk of layers


class CellEstimates(NamedTuple):
    """What an estimate stage gives: six ``[L, T]`` float64 tensors (layers x positions) in the result's unit.

    ``*_bias`` is the expected plug-in bias, NaN where the estimator does not model it; a
    ``*_stderr`` is NaN where the estimator has no standard error there.
    """

    macro: torch.Tensor
    macro_stderr: torch.Tensor
    macro_bias: torch.Tensor
    micro: torch.Tensor
    micro_stderr: torch.Tensor
    micro_bias: torch.Tensor


def _probe_sample_estimator(spec: Estimator, options: dict, rows: int) -> None:
    """Run a sample-based estimator once on ``rows`` random 1-d pairs so that a bad option value
    (``k=5000`` for 1024 kept rows, ``lr=-1``) fails now, not after the forward pass.

    The estimators check their arguments before they compute; a valid ``steps`` only scales the
    work of a trained estimator, so the probe takes one step (a fraction of a second in all).
    """
    probe = dict(options)
    if spec.trained:
        try:
            check_positive_int(probe.get("steps", 1), "steps")
            probe["steps"] = 1
        except ValueError:
            pass  # the estimator itself refuses it below, with its own message
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, rows, 1, generator=generator)
    try:
        spec.mutual_information(x, y, **probe)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"estimator {spec.name} with options {options} on {rows} kept rows per cell "
                         f"(reservoir size and number of samples): {str(exc).splitlines()[0]}") from None


def check_estimator_options(estimator: str, estimator_options, n_samples: int, rows: int | None = None) -> dict:
    """IE's options for ``estimator``: its declared IE defaults overridden key by key by ``estimator_options``,
    checked before the forward passes, not after them (:meth:`.registry.Estimator.validate`). A sample-based
    estimator's values are also tried on ``rows`` random rows, as many as it will keep per cell
    (:func:`_probe_sample_estimator`). ValueError naming ``estimator`` for a name IE does not offer."""
    spec = registry.get(estimator, "ie", "estimator")
    options = spec.resolve_ie_options(estimator_options)
    validate_options(spec, options, n_samples=n_samples)
    if spec.kind == "sample" and rows is not None:
        _probe_sample_estimator(spec, options, rows)
    return options


def validate_options(spec: Estimator, options: dict, **context) -> None:
    """:meth:`.registry.Estimator.validate`, its error naming ``estimator_options`` and the estimator."""
    try:
        spec.validate(options, **context)
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"estimator_options of the {spec.name} estimator: {exc}") from None


def _estimate(spec: Estimator, count, comoment, dx, options, base, subspace=False):
    """(value, standard error, expected bias) per cell; the bias is NaN where the estimator does not model it.

    ``subspace``: the comoment is of coordinates already standardised and rotated to principal
    directions (:attr:`.registry.Estimator.subspace_estimate`).
    """
    estimate = spec.subspace_estimate if subspace else spec.mi_from_moments
    value, details = estimate(count, comoment, dx, base=base, details=True, **options)
    unknown = torch.full_like(value, float("nan"))  # moments hold no rows to resample: the estimator's own, or NaN
    stderr, bias = getattr(details, "stderr", None), getattr(details, "expected_bias", None)
    return value, unknown if stderr is None else stderr, unknown if bias is None else bias


def _estimate_from_moments(spec, state, micro_in, micro_out, tokens, input_ids, options, base, backend, world,
                           progress=False):
    """:class:`CellEstimates`; the layers are split over ranks and gathered exactly (each layer has one owner)."""
    subspace = isinstance(state, SubspaceGaussianAccumulator)
    moments = state.inner if subspace else state
    n_layers, seq_len = moments.count.shape
    out = torch.zeros(6, n_layers, seq_len, dtype=torch.float64, device=micro_in.device)
    layers = _progress(distributed.shard(n_layers, world), progress, world, f"IE estimate ({spec.name})", "layer")
    for layer in layers:  # per layer: bounds the float64 temporaries in memory
        count, _, comoment = moments.moments(layer)
        macro = _estimate(spec, count, comoment, moments.dx, options, base, subspace)
        if subspace:
            count, comoment = micro_subspace_moments(micro_in[layer:layer + 1], micro_out[layer:layer + 1],
                                                     tokens.to(micro_in.device), input_ids, state.rank)
            micro = _estimate(spec, count[0], comoment[0], comoment.shape[-1] // 2, options, base, True)
        else:
            count, _, comoment = micro_moments(micro_in[layer:layer + 1], micro_out[layer:layer + 1],
                                               tokens.to(micro_in.device), input_ids, backend)
            micro = _estimate(spec, count[0], comoment[0], moments.dx, options, base)
        out[:, layer] = torch.stack([t.to(out) for t in macro + micro])
    # NaN and inf (sliced bias, singular cells) pass through: other ranks add zeros to them.
    return CellEstimates(*distributed.owner_sum(out, world))


SAMPLE_WORKING_BYTES = 2**31  # estimate_from_states' room for the sample estimators' temporaries (no state budget there)


def _estimate_from_reservoir(spec, reservoir, micro_in, micro_out, tokens, input_ids, options, base, world,
                             working=SAMPLE_WORKING_BYTES, progress=False, backend=None):
    """The named estimator on the kept rows; micro rows are the kept samples' tokens fed alone: :class:`CellEstimates`.

    The ``L x T`` cells run in chunks (and KSG's or Rényi's jackknife in groups of resamples)
    whose modelled peak (:func:`estimate_memory.chunk_bytes`) fits in ``working`` bytes, the
    room ``state_memory`` leaves beside the reservoir (:func:`_plan_state`); the chunks are
    split over ranks and combined exactly. Every cell's numbers equal those of one batch of all
    cells bit for bit (:mod:`emergence_fast.estimate_memory` says why). ``ValueError`` when not
    even the smallest chunk fits, naming the bytes it needs.
    """
    estimator, estimate = spec.name, spec.mutual_information
    x, y = reservoir.pairs()  # [L, T, m, d] views of the reservoir
    n_layers, seq_len, m, width = x.shape
    n_cells = n_layers * seq_len
    native = native_knn_for(x.device, backend)
    chunks = estimate_memory.plan_chunks(estimator, options, m, width, n_cells, working, native_knn=native)
    if chunks is None:
        need = estimate_memory.minimum_bytes(estimator, options, m, width, n_cells, native_knn=native)
        raise ValueError(f"the {estimator} estimate needs {format_bytes(need)} of working memory for its smallest chunk "
                         f"({estimate_memory.smallest_chunk(n_cells)} cells of {m} rows x {width} per side), and "
                         f"{format_bytes(working)} is left: raise state_memory")

    if backend is not None:
        options = {**options, "backend": backend}  # native searches (KSG's k-NN): the backend the caller chose

    def with_stderr(x, y):
        if not spec.ie_jackknife:  # one resample would cost a whole training: the estimator's own error or none
            value, details = estimate(x, y, base=base, details=True, **options)
            own = getattr(details, "stderr", None)
            return value, torch.full_like(value, float("nan")) if own is None else own
        return estimate_with_stderr(estimate, estimator, (x, y), {"base": base, **options},
                                    resamples_per_call=chunks.resamples)

    kept = input_ids[reservoir.index[:m]]  # [m, T]
    slot = torch.searchsorted(tokens, kept).T.to(micro_in.device)  # [T, m] rows of the distinct-token states
    cells_x, cells_y = x.reshape(n_cells, m, width), y.reshape(n_cells, m, width)  # views: cell = layer * T + t
    sizes = estimate_memory.chunk_sizes(n_cells, chunks.cells)
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    out = torch.zeros(4, n_cells, dtype=torch.float64, device=x.device)
    for i in _progress(distributed.shard(len(sizes), world), progress, world, f"IE estimate ({estimator})", "chunk"):
        cells = torch.arange(starts[i], starts[i] + sizes[i])
        macro = with_stderr(cells_x[cells[0]:cells[-1] + 1], cells_y[cells[0]:cells[-1] + 1])
        layer, position = (cells // seq_len).to(micro_in.device), (cells % seq_len).to(slot.device)
        rows = slot[position]  # [cells, m]: only this chunk's micro rows are gathered
        micro = with_stderr(micro_in[layer.unsqueeze(-1), rows], micro_out[layer.unsqueeze(-1), rows])
        out[:, cells[0]:cells[-1] + 1] = torch.stack([t.to(out) for t in macro + micro])
    # Each chunk has one owner; a NaN stderr (no jackknife, a single held-out minibatch) passes through the zeros added.
    out = distributed.owner_sum(out, world).view(4, n_layers, seq_len)
    unknown = torch.full_like(out[0], float("nan"))
    return CellEstimates(out[0], out[1], unknown, out[2], out[3], unknown)


def _atoms(keys: torch.Tensor):
    """Distinct rows of ``keys [m, k]`` (int64): ``(first [n], counts [n])``, the first row holding each
    distinct value and how many rows hold it."""
    _, inverse, counts = torch.unique(keys, dim=0, return_inverse=True, return_counts=True)
    first = torch.full((counts.numel(),), keys.shape[0], dtype=torch.int64).scatter_reduce_(
        0, inverse, torch.arange(keys.shape[0]), "amin")
    return first, counts


def _estimate_weighted(spec, reservoir, micro_in, micro_out, tokens, input_ids, options, base, backend, world,
                       budget=WEIGHTED_WORKING_BYTES, causal=True, progress=False):
    """A weighted estimator (``spec.weighted_mi``, e.g. the noisy-channel MI) per (layer, position) on
    weighted atoms: :class:`CellEstimates` (bias not modelled: NaN).

    Macro atoms at position ``t`` are the distinct prefixes ``s_0..s_t`` among the kept samples,
    each with its count and the states of its first sample (a causal model gives identical
    prefixes identical states; with ``causal=False`` the atoms are whole distinct sequences);
    micro atoms are the distinct tokens at ``t`` with their counts and the states of the token
    fed alone. The layers are split over ranks and computed in chunks whose temporaries
    (``spec.weighted_working_bytes``) fit in ``budget`` bytes; every cell's randomness is seeded by
    the cell, so the result depends on neither.
    """
    x, y = reservoir.pairs()  # [L, T, m, d]
    n_layers, seq_len, m = x.shape[:3]
    kept = input_ids[reservoir.index[:m]]  # [m, T]
    whole = None if causal else _atoms(kept)  # a bidirectional state depends on the whole row: one set of atoms
    slot = torch.searchsorted(tokens, kept)  # [m, T]: rows of the distinct-token micro states
    out = torch.zeros(6, n_layers, seq_len, dtype=torch.float64, device=x.device)
    out[[2, 5]] = float("nan")
    owned = distributed.shard(n_layers, world)
    mine = slice(owned.start, owned.stop)  # views, not per-position copies of this rank's layers
    unit = log_base(base)
    for t in _progress(range(seq_len), progress, world, f"IE estimate ({spec.name})", "position"):
        cells = torch.arange(owned.start, owned.stop) * seq_len + t
        macro_first, macro_counts = _atoms(kept[:, : t + 1]) if causal else whole
        micro_first, micro_counts = _atoms(kept[:, t:t + 1])
        sides = ((macro_first, macro_counts, x[mine, t], y[mine, t], 0),  # (atom rows, counts, states, seed offset)
                 (slot[micro_first, t].to(micro_in.device), micro_counts, micro_in[mine], micro_out[mine],
                  n_layers * seq_len))
        for row, (index, counts, states_x, states_y, offset) in enumerate(sides):
            per_layer = spec.weighted_working_bytes(index.numel(), 2 * states_x.shape[-1], options)
            step = max(1, budget // per_layer)
            for lo in range(0, len(owned), step):
                chunk = slice(lo, min(lo + step, len(owned)))
                atoms_x, atoms_y = states_x[chunk][:, index], states_y[chunk][:, index]
                weights = counts.to(atoms_x.device).expand(atoms_x.shape[0], -1)
                value, stderr = spec.weighted_mi(atoms_x, atoms_y, weights, options, cells=cells[chunk] + offset,
                                                 backend=backend)
                layers = slice(owned.start + chunk.start, owned.start + chunk.stop)
                out[3 * row, layers, t] = value.to(out) / unit
                out[3 * row + 1, layers, t] = stderr.to(out) / unit
    return CellEstimates(*distributed.owner_sum(out, world))


def _progress(iterable, progress, world, desc, unit):
    """``iterable`` behind a tqdm bar on stderr when ``progress`` (rank 0 only), else as it is."""
    if not (progress and world.is_main):
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc + (f" (rank 0 of {world.world_size})" if world.distributed else ""), unit=unit)
