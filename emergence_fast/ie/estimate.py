"""The estimate stage: each estimator family on the streamed state and the micro states, per (layer, position)."""
from __future__ import annotations

import inspect
from typing import NamedTuple

import torch

from .. import distributed, estimate_memory
from .._dispatch import resolve_backend
from .._validation import check_int, check_positive_int, format_bytes, log_base
from ..accumulators import SubspaceGaussianAccumulator
from ..estimators import MI_METHODS, gaussian, noisy, sliced
from ..estimators.uncertainty import estimate_with_stderr
from .micro import micro_moments, micro_subspace_moments

DEFAULT_ESTIMATOR_OPTIONS = {"gaussian": {"pca": 8, "bias_correction": "wishart"},
                             "sliced": {"k": 4, "n_slices": 64, "seed": 0}}
ESTIMATOR_OPTION_NAMES = {"gaussian": {"pca", "bias_correction", "shrinkage"}, "sliced": {"k", "n_slices", "seed"}}
MOMENT_ESTIMATORS = tuple(DEFAULT_ESTIMATOR_OPTIONS)
# Sample-based estimators read a seeded reservoir of (h_l, h_{l+1}) rows per cell. Hidden states of
# discrete prefixes repeat exactly, which kNN counts cannot resolve: KSG gets a small jitter by default.
SAMPLE_ESTIMATORS = ("ksg", "renyi", "infonce", "nwj", "mine", "smile", "chen2024")
SAMPLE_DEFAULT_OPTIONS = {"ksg": {"jitter": 1e-4}}
# The noisy-channel MI reads the same reservoir, but as weighted atoms: one per distinct prefix (macro)
# or token (micro), whose states are identical by determinism, so no jitter and no duplicated work.
NOISY_DEFAULT_OPTIONS = {"sigma": noisy.DEFAULT_SIGMA, "n_draws": noisy.DEFAULT_DRAWS, "seed": 0}
ESTIMATORS = MOMENT_ESTIMATORS + SAMPLE_ESTIMATORS + ("noisy",)
RESERVOIR_ESTIMATORS = SAMPLE_ESTIMATORS + ("noisy",)
NOISY_WORKING_BYTES = 2**30  # the noisy estimator's temporaries per chunk of layers
DEFAULT_ESTIMATOR = "noisy"  # chosen by the agreement study (README, benchmarks/ie_agreement.py)


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


def _probe_sample_estimator(estimator: str, options: dict, rows: int) -> None:
    """Run a sample-based estimator once on ``rows`` random 1-d pairs so that a bad option value
    (``k=5000`` for 1024 kept rows, ``lr=-1``) fails now, not after the forward pass.

    The estimators check their arguments before they compute; a valid ``steps`` only scales the
    work of a neural estimator, so the probe takes one step (a fraction of a second in all).
    """
    probe = dict(options)
    if "steps" in probe:
        try:
            check_positive_int(probe["steps"], "steps")
            probe["steps"] = 1
        except ValueError:
            pass  # the estimator itself refuses it below, with its own message
    elif estimator in ("infonce", "nwj", "mine", "smile", "chen2024"):
        probe["steps"] = 1
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, rows, 1, generator=generator)
    try:
        MI_METHODS[estimator](x, y, **probe)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"estimator {estimator} with options {options} on {rows} kept rows per cell "
                         f"(reservoir size and number of samples): {str(exc).splitlines()[0]}") from None


def _check_estimator_options(estimator: str, estimator_options, n_samples: int, rows: int | None = None) -> dict:
    """Fail before the forward passes, not after them. A sample-based estimator's values are tried on
    ``rows`` random rows, as many as it will keep per cell (see :func:`_probe_sample_estimator`)."""
    if estimator == "noisy":
        options = {**NOISY_DEFAULT_OPTIONS, **(estimator_options or {})}
        unknown = set(options) - set(NOISY_DEFAULT_OPTIONS)
        if unknown:
            raise ValueError(f"estimator_options has unknown keys {sorted(unknown)}; the noisy estimator takes "
                             f"{sorted(NOISY_DEFAULT_OPTIONS)}")
        noisy.check_options(options["sigma"], options["n_draws"], options["seed"])
        return options
    if estimator in SAMPLE_ESTIMATORS:
        options = dict(SAMPLE_DEFAULT_OPTIONS.get(estimator, {}) if estimator_options is None else estimator_options)
        accepted = {name for name in inspect.signature(MI_METHODS[estimator]).parameters
                    if not name.startswith("_")} - {"x", "y", "base", "backend", "details", "method"}
        unknown = set(options) - accepted
        if unknown:
            raise ValueError(f"estimator_options has unknown keys {sorted(unknown)}; the {estimator} estimator takes "
                             f"{sorted(accepted)}")
        if rows is not None:
            _probe_sample_estimator(estimator, options, rows)
        return options
    options = dict(DEFAULT_ESTIMATOR_OPTIONS[estimator] if estimator_options is None else estimator_options)
    unknown = set(options) - ESTIMATOR_OPTION_NAMES[estimator]
    if unknown:
        raise ValueError(f"estimator_options has unknown keys {sorted(unknown)}; the {estimator} estimator takes "
                         f"{sorted(ESTIMATOR_OPTION_NAMES[estimator])}")
    if estimator == "sliced":
        for name in ("k", "n_slices", "seed"):
            check_int(options.get(name, 1), f"estimator_options[{name!r}]", minimum=0 if name == "seed" else 1)
        return options
    gaussian.check_options(options.get("bias_correction", "none"), options.get("shrinkage", 0.0), options.get("pca"))
    if options.get("bias_correction") == "wishart" and options.get("pca") and n_samples <= 2 * options["pca"]:
        raise ValueError(f"bias_correction='wishart' with pca={options['pca']} needs more than {2 * options['pca']} "
                         f"samples, got {n_samples}")
    return options


def _estimate(estimator, count, comoment, dx, options, base, subspace=False):
    """(value, standard error, expected bias) per cell; the sliced estimate's bias is not modelled (NaN).

    ``subspace``: the comoment is of coordinates already standardised and rotated to principal
    directions, so ``pca=k`` picks the top ``k`` of them by variance without re-standardising.
    """
    if subspace and estimator == "gaussian" and options.get("pca"):
        comoment, dx = gaussian.principal_subspace(comoment, dx, options["pca"])
        options = {**options, "pca": None}
    if estimator == "sliced":
        value, found = sliced.mutual_information_from_moments(count, comoment, dx, base=base, details=True, **options)
        return value, found.stderr, torch.full_like(value, float("nan"))
    value, diag = gaussian.mutual_information_from_moments(count, comoment, dx, base=base, details=True, **options)
    return value, diag.stderr, diag.expected_bias


def _estimate_from_moments(estimator, state, micro_in, micro_out, tokens, input_ids, options, base, backend, world,
                           progress=False):
    """:class:`CellEstimates`; the layers are split over ranks and gathered exactly (each layer has one owner)."""
    subspace = isinstance(state, SubspaceGaussianAccumulator)
    moments = state.inner if subspace else state
    n_layers, seq_len = moments.count.shape
    out = torch.zeros(6, n_layers, seq_len, dtype=torch.float64, device=micro_in.device)
    layers = _progress(distributed.shard(n_layers, world), progress, world, f"IE estimate ({estimator})", "layer")
    for layer in layers:  # per layer: bounds the float64 temporaries in memory
        count, _, comoment = moments.moments(layer)
        macro = _estimate(estimator, count, comoment, moments.dx, options, base, subspace)
        if subspace:
            count, comoment = micro_subspace_moments(micro_in[layer:layer + 1], micro_out[layer:layer + 1],
                                                     tokens.to(micro_in.device), input_ids, state.rank)
            micro = _estimate(estimator, count[0], comoment[0], comoment.shape[-1] // 2, options, base, True)
        else:
            count, _, comoment = micro_moments(micro_in[layer:layer + 1], micro_out[layer:layer + 1],
                                               tokens.to(micro_in.device), input_ids, backend)
            micro = _estimate(estimator, count[0], comoment[0], moments.dx, options, base)
        out[:, layer] = torch.stack([t.to(out) for t in macro + micro])
    # NaN and inf (sliced bias, singular cells) pass through: other ranks add zeros to them.
    return CellEstimates(*distributed.owner_sum(out, world))


SAMPLE_WORKING_BYTES = 2**31  # estimate_from_states' room for the sample estimators' temporaries (no state budget there)


def _native_knn(backend, device) -> bool:
    """Whether KSG's k-NN search runs in a native kernel with ``backend`` on ``device`` (its memory model differs)."""
    return resolve_backend(backend, torch.device(device)) in ("cpp", "triton", "cuda")


def _estimate_from_reservoir(estimator, reservoir, micro_in, micro_out, tokens, input_ids, options, base, world,
                             working=SAMPLE_WORKING_BYTES, progress=False, backend=None):
    """The named estimator on the kept rows; micro rows are the kept samples' tokens fed alone: :class:`CellEstimates`.

    The ``L x T`` cells run in chunks (and KSG's or Rényi's jackknife in groups of resamples)
    whose modelled peak (:func:`estimate_memory.chunk_bytes`) fits in ``working`` bytes, the
    room ``state_memory`` leaves beside the reservoir (:func:`_plan_state`); the chunks are
    split over ranks and combined exactly. Every cell's numbers equal those of one batch of all
    cells bit for bit (:mod:`emergence_fast.estimate_memory` says why). ``ValueError`` when not
    even the smallest chunk fits, naming the bytes it needs.
    """
    estimate = MI_METHODS[estimator]
    x, y = reservoir.pairs()  # [L, T, m, d] views of the reservoir
    n_layers, seq_len, m, width = x.shape
    n_cells = n_layers * seq_len
    native = _native_knn(backend, x.device)
    chunks = estimate_memory.plan_chunks(estimator, options, m, width, n_cells, working, native_knn=native)
    if chunks is None:
        need = estimate_memory.minimum_bytes(estimator, options, m, width, n_cells, native_knn=native)
        raise ValueError(f"the {estimator} estimate needs {format_bytes(need)} of working memory for its smallest chunk "
                         f"({estimate_memory.smallest_chunk(n_cells)} cells of {m} rows x {width} per side), and "
                         f"{format_bytes(working)} is left: raise state_memory")

    if backend is not None and "backend" in inspect.signature(estimate).parameters:
        options = {**options, "backend": backend}  # KSG and Rényi's k-NN search: the backend the caller chose

    def with_stderr(x, y):
        if estimator == "chen2024":  # a jackknife would retrain 32 critics of 10,000 steps per cell
            value = estimate(x, y, base=base, **options)
            return value, torch.full_like(value, float("nan"))
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
    # Each chunk has one owner; NaN stderr (chen2024, a single held-out minibatch) passes through the zeros added.
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


def _estimate_noisy(reservoir, micro_in, micro_out, tokens, input_ids, options, base, backend, world,
                    budget=NOISY_WORKING_BYTES, causal=True, progress=False):
    """Noisy-channel MI per (layer, position) on weighted atoms: :class:`CellEstimates` (bias not modelled: NaN).

    Macro atoms at position ``t`` are the distinct prefixes ``s_0..s_t`` among the kept samples,
    each with its count and the states of its first sample (a causal model gives identical
    prefixes identical states; with ``causal=False`` the atoms are whole distinct sequences);
    micro atoms are the distinct tokens at ``t`` with their counts and the states of the token
    fed alone. The layers are split over ranks and computed in chunks whose temporaries
    (:func:`noisy.working_bytes`) fit in ``budget`` bytes; every cell's noise is seeded by the
    cell, so the result depends on neither.
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
    for t in _progress(range(seq_len), progress, world, "IE estimate (noisy)", "position"):
        cells = torch.arange(owned.start, owned.stop) * seq_len + t
        macro_first, macro_counts = _atoms(kept[:, : t + 1]) if causal else whole
        micro_first, micro_counts = _atoms(kept[:, t:t + 1])
        sides = ((macro_first, macro_counts, x[mine, t], y[mine, t], 0),  # (atom rows, counts, states, seed offset)
                 (slot[micro_first, t].to(micro_in.device), micro_counts, micro_in[mine], micro_out[mine],
                  n_layers * seq_len))
        for row, (index, counts, states_x, states_y, offset) in enumerate(sides):
            per_layer = noisy.working_bytes(1, index.numel(), 2 * states_x.shape[-1], options["n_draws"])
            step = max(1, budget // per_layer)
            for lo in range(0, len(owned), step):
                chunk = slice(lo, min(lo + step, len(owned)))
                atoms_x, atoms_y = states_x[chunk][:, index], states_y[chunk][:, index]
                weights = counts.to(atoms_x.device).expand(atoms_x.shape[0], -1)
                value, stderr = noisy.noisy_mi(atoms_x, atoms_y, weights, options["sigma"], options["n_draws"],
                                               options["seed"], cells=cells[chunk] + offset, backend=backend)[:2]
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
