r"""Information Emergence (Chen, Yang, Zhu, Wang 2024, arXiv 2405.12617).

For block :math:`l` and position :math:`t` of samples :math:`s_0..s_{T-1}`:

.. math::

    E(l, t) = I\big(h_{l+1}^{(t)}; h_l^{(t)}\big)
              - \frac{1}{t+1}\sum_{i \le t} I\big(h_{l+1}^{mi_i}; h_l^{mi_i}\big)

:math:`h_l^{(t)}` is the residual stream entering block :math:`l` at position :math:`t` of the
whole sequence (macro); :math:`h_l^{mi_i}` the same state when token :math:`s_i` is fed alone
(micro). Each MI is over the :math:`N` samples.

One streaming pass: block inputs and outputs are captured by hooks at every position and
folded into a :class:`~emergence_fast.GaussianMIAccumulator` per (layer, position); nothing
goes to disk. Micro states depend on the token only, so each *distinct* token is run once and
the micro moments are the count-weighted moments of those states, exactly what feeding each
sample's token alone would accumulate.

The ceiling. Tokens are discrete and blocks deterministic, so for an injective block the true
:math:`I(h_{l+1}^{(t)}; h_l^{(t)})` is the entropy of the prefix :math:`s_0..s_t`, whatever
:math:`l`, and the micro MI is the entropy of :math:`s_i`. Those are computed exactly from the
data and reported beside every estimate: a differential-entropy estimator of a deterministic
map between continuous vectors is ill-posed (the true MI of the continuous variables is infinite),
so such an estimate measures the estimator as much as the model.

Default estimator: the noisy-channel MI (:mod:`emergence_fast.estimators.noisy`, Goldfeld et al.
2019), :math:`I(h_l + \sigma_l Z; h_{l+1} + \sigma_{l+1} Z')` over the distinct prefixes (macro) or
tokens (micro) weighted by their counts, with :math:`\sigma` a fixed fraction of each cell's RMS
radius. It is finite for a deterministic network, never above the ceiling (up to its
Monte-Carlo error), equal to the ceiling as :math:`\sigma \to 0` for an injective network, and
lower where a block merges prefixes or crowds them closer than :math:`\sigma`: the information a
block passes on at that resolution. The choice, against every other estimator, is in
``benchmarks/ie_agreement.py`` and the README. ``estimator="chen2024"`` reproduces the paper's
own numbers (its MINE preset: biased upward).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch

from . import distributed
from ._version import __version__
from ._dispatch import resolve_backend
from ._validation import check_positive_int, format_bytes, log_base, parse_bytes
from .accumulators import GaussianMIAccumulator, PairReservoir, SubspaceGaussianAccumulator
from .capture import BlockCapture, input_device, model_identity
from .datasets import TokenDataset
from .estimators import registry
from .ie.checkpoint import _fingerprint, checkpoint_path
from .ie.estimate import (
    DEFAULT_ESTIMATOR,
    CellEstimates,
    check_estimator_options,
    validate_options,
    _estimate_from_moments,
    _estimate_from_reservoir,
    _estimate_weighted,
)
from .ie.inputs import _block_width, _bos_plan, _is_causal
from .ie.macro import _macro_pass, _new_state, _resume
from .ie.micro import _micro_states
from .ie.notes import _state_notes
from .ie.plan import DEFAULT_STATE_MEMORY, StatePlan, _plan_state
from .ie.result import IEResult, _result

# The defaults are read from here by the CLI; the estimators IE offers, and their options, from the registry.
__all__ = [
    "DEFAULT_ESTIMATOR",
    "DEFAULT_STATE_MEMORY",
    "IEResult",
    "IEStates",
    "capture_states",
    "checkpoint_path",
    "estimate_from_states",
    "information_emergence",
]


def information_emergence(model, tokenizer, dataset, *, layers=None, estimator=DEFAULT_ESTIMATOR, estimator_options=None,
                          batch_size=32, update_samples=512, reservoir_size=1024, reservoir_seed=0, base=2,
                          add_bos="auto", blocks=None, checkpoint_dir=None, resume=False, checkpoint_every=8,
                          progress=False, backend=None, state_memory=DEFAULT_STATE_MEMORY, world=None,
                          stack=None) -> IEResult:
    """Information Emergence of ``model`` on ``dataset`` (a :class:`TokenDataset` or ``input_ids [N, T]``).

    ``layers``: block indices or TransformerLens point names (default all). ``estimator``:
    ``"noisy"`` (the default: noisy-channel MI, options ``sigma``, ``n_draws``, ``seed``; see the
    module docstring) on a seeded reservoir of ``reservoir_size`` rows per (layer, position),
    read as weighted distinct prefixes; ``"gaussian"`` or ``"sliced"``, both read from the same
    streaming Gaussian state; or a sample-based estimator (``"ksg"``, ``"renyi"``,
    ``"infonce"``, ``"nwj"``, ``"mine"``, ``"smile"``, ``"chen2024"``: the paper's MINE preset)
    run on a seeded bottom-k reservoir of ``reservoir_size`` rows per (layer, position); or any
    estimator registered with ``ie=True`` (:mod:`emergence_fast.estimators.registry`). The
    options run are the estimator's declared IE defaults (``ie_defaults``) overridden key by key
    by ``estimator_options``; ``result.config["estimator_options"]`` records them.
    ``base=2`` reports bits (``None`` nats). ``add_bos``: ``"auto"`` prepends the tokenizer's BOS
    when it adds one, or ``True``/``False``/a token id. Captured batches are folded into the
    state ``update_samples`` samples at a time. ``checkpoint_dir`` + ``checkpoint_every`` write
    the streaming state at the first fold after that many batches; ``resume=True`` continues
    from it and gives the result of an uninterrupted run. ``progress=True`` shows tqdm bars on
    stderr (rank 0) for the macro pass and the estimate stage.

    Memory: ``state_memory`` (bytes, or a string such as ``"256MB"``, ``"8GB"``; default 8 GB)
    bounds the streaming state per rank, fold buffer included. When full-width moments
    (``16 (2d)^2`` bytes per cell) do not fit, the moment estimators run on a two-pass
    principal-subspace state (:class:`~emergence_fast.accumulators.SubspaceGaussianAccumulator`:
    a seeded pilot sample finds each cell's top-``r`` directions, the pass then accumulates the
    projected moments), and ``result.config["state"]`` says so; the reservoir shrinks to fit. For
    a sample-based estimator the budget also covers its estimate stage: the reservoir, the micro
    states and one chunk of cells' temporaries (a measured model per estimator,
    :mod:`emergence_fast.estimate_memory`); the cells (and KSG's or Rényi's jackknife resamples)
    run in chunks that fit, with the numbers of one batch, and ``provenance["estimate_chunks"]``
    says how they were split.

    Inputs: ids outside the model's vocabulary are refused by name. A dataset whose every row
    already starts with the BOS that ``add_bos`` would prepend is fed with it once, not twice (its
    positions then count from the token after it); ``result.config["bos_handling"]`` records
    ``"added"``, ``"already present"``, ``"absent"`` or ``"off"``. An encoder-decoder model (BART,
    T5) needs ``stack="encoder"`` or ``"decoder"`` (see :class:`~emergence_fast.capture.BlockCapture`)
    and is refused without it; both stacks are scored as non-causal (whole-sequence atoms and
    ceiling), and ``result.config["stack"]`` records the choice (None for other models).
    ``result.provenance["dataset"]`` is how a :class:`TokenDataset` was made (its ``info``: seed,
    entities kept and dropped, source...; None for a bare tensor).

    Scale: under ``torchrun``/``accelerate launch``, or inside a caller's process group, each
    rank (``world``: an :class:`emergence_fast.distributed.World`, default the current process
    group) runs a contiguous share of the folds and the states are combined with collectives;
    every rank returns the one-process result (the reproducible sums of
    :class:`~emergence_fast.GaussianMIAccumulator` make it bit-identical in practice; the
    reservoir is exact). Every rank of the group must call it; to run on one rank alone inside
    a job that has a group, pass ``world=emergence_fast.distributed.World()``. Checkpoints are
    per rank; resume with the same number of ranks.

    Raises
    ------
    ValueError
        Bad arguments (named), a budget too small for any state (with the minimum), more ranks
        than samples, ranks that disagree on the configuration, or a checkpoint of another run.
    """
    spec = registry.get(estimator, "ie", "estimator")
    input_ids = dataset.input_ids if isinstance(dataset, TokenDataset) else dataset
    if (not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2 or input_ids.is_floating_point()
            or input_ids.is_complex() or input_ids.dtype == torch.bool):
        raise ValueError("dataset must be a TokenDataset or an integer tensor input_ids [N, T]")
    n_samples, seq_len = input_ids.shape
    if n_samples < 2 or seq_len < 1:
        raise ValueError(f"dataset must hold at least 2 samples of at least 1 token, got shape {tuple(input_ids.shape)}")
    for name, value in (("batch_size", batch_size), ("update_samples", update_samples),
                        ("reservoir_size", reservoir_size), ("checkpoint_every", checkpoint_every)):
        check_positive_int(value, name)
    budget = parse_bytes(state_memory, "state_memory")
    world = distributed.current() if world is None else world
    if world.world_size > n_samples:
        raise ValueError(f"there are more ranks ({world.world_size}) than samples ({n_samples}): use fewer processes "
                         "or more samples")
    options = check_estimator_options(estimator, estimator_options, n_samples, rows=min(reservoir_size, n_samples))
    log_base(base)  # a bad base fails here, not after the forward passes
    device = input_device(model)
    # Every estimator path, the sample-based ones included, refuses a backend that cannot run here
    # before the forward pass (not only those whose state calls a native op).
    resolve_backend(backend, device)
    capture = BlockCapture(model, layers, blocks=blocks, out_device=device, stack=stack)
    input_ids, bos, bos_handling = _bos_plan(model, tokenizer, add_bos, input_ids,
                                             f"dataset {dataset.name}" if isinstance(dataset, TokenDataset) else "dataset")
    seq_len = input_ids.shape[1]
    offset = 0 if bos is None else 1
    width = _block_width(model, capture, input_ids, bos, device)
    validate_options(spec, options, n_samples=n_samples, width=width)  # options bounded by the width (sliced k)
    cells_shape = (len(capture.layers), seq_len)
    plan = _plan_state(spec, options, cells_shape[0] * seq_len, width, n_samples, batch_size, update_samples,
                       reservoir_size, budget, micro_rows=cells_shape[0] * torch.unique(input_ids).numel(),
                       device=device, backend=backend)
    config = {"model": model_identity(model), "dataset": getattr(dataset, "name", "tensor"),
              "fingerprint": _fingerprint(input_ids), "n_samples": n_samples, "seq_len": seq_len,
              "layers": capture.layers, "batch_size": batch_size, "update_samples": update_samples,
              "reservoir": [plan.capacity, reservoir_seed] if spec.kind == "sample" else None, "bos": bos,
              "bos_handling": bos_handling, "stack": stack,
              "estimator": estimator, "estimator_options": options, "base": base, "causal": _is_causal(model),
              "state": {key: value for key, value in plan.describe().items() if key != "bytes"}}
    distributed.check_agreement({**config, "world_size": world.world_size}, world)

    checkpoint = checkpoint_path(checkpoint_dir, world)
    state, done, resumed_batches = None, 0, 0
    if resume and checkpoint is not None:
        state, done, resumed_batches = _resume(plan, checkpoint, {**config, "world_size": world.world_size}, width,
                                               cells_shape, device, backend, world)
    timings = {}
    start = time.perf_counter()
    # A rank without a checkpoint starts its share over. The pilot pass is collective, so when any
    # rank needs it all run it; it is deterministic, and a rank that resumed keeps its own copy.
    if plan.kind == "subspace" and distributed.any_rank(state is None, world):
        fresh = _new_state(plan, capture, input_ids, bos, batch_size, width, device, backend, reservoir_seed, world)
        state = fresh if state is None else state
    elif state is None:
        state = _new_state(plan, capture, input_ids, bos, batch_size, width, device, backend, reservoir_seed, world)
    timings["pilot_s"] = time.perf_counter() - start
    state = _macro_pass(capture, input_ids, bos, batch_size, plan, state, done, checkpoint, checkpoint_every,
                        {**config, "world_size": world.world_size}, progress, timings, world)
    start = time.perf_counter()
    if isinstance(state, PairReservoir):
        state.all_reduce(world)
    else:
        state.reduce_to_owners(world)  # each rank gets the layers it estimates (_estimate_from_moments)
    timings["merge_s"] = time.perf_counter() - start

    start = time.perf_counter()
    tokens = torch.unique(input_ids)
    micro_in, micro_out = _micro_states(capture, tokens, bos, batch_size, device, width, world)
    timings["micro_pass_s"] = time.perf_counter() - start

    start = time.perf_counter()
    if spec.weighted_mi is not None:  # the estimate stage gets what the plan left of the budget
        room = max(budget - plan.bytes - micro_in.numel() * 2 * micro_in.element_size(),
                   spec.weighted_working_bytes(plan.capacity, 2 * width, options))
        estimates = _estimate_weighted(spec, state, micro_in, micro_out, tokens, input_ids, options, base, backend,
                                       world, budget=room, causal=_is_causal(model), progress=progress)
    elif spec.kind == "sample":
        estimates = _estimate_from_reservoir(spec, state, micro_in, micro_out, tokens, input_ids, options, base,
                                             world, working=plan.working, progress=progress, backend=backend)
    else:
        estimates = _estimate_from_moments(spec, state, micro_in, micro_out, tokens, input_ids, options, base,
                                           backend, world, progress=progress)
    timings["estimate_s"] = time.perf_counter() - start

    captured = None
    if isinstance(state, SubspaceGaussianAccumulator):  # each rank holds its own layers' merged state
        captured = torch.zeros(*cells_shape, 2, dtype=torch.float64, device=device)
        owned = distributed.shard(cells_shape[0], world)
        if len(owned):
            captured[owned.start:owned.stop] = state.captured_variance(slice(owned.start, owned.stop)).to(captured)
        captured = distributed.owner_sum(captured, world)
    timings["tokens_per_s_macro"] = timings["samples"] * (seq_len + offset) / max(timings["macro_pass_s"], 1e-9)
    provenance = {"emergence_fast": __version__, "torch": torch.__version__, "device": str(device),
                  "timings": timings, "resumed_from_batch": resumed_batches, "world": world.describe(),
                  "state_bytes": plan.bytes, "state_memory": budget, "dataset": _dataset_provenance(dataset)}
    if plan.chunk_cells is not None:  # how the estimate stage was split to fit (the numbers do not depend on it)
        provenance["estimate_chunks"] = {"working_bytes": plan.working, "cells_per_chunk": plan.chunk_cells,
                                         "resamples_per_call": plan.chunk_resamples}
    if isinstance(state, SubspaceGaussianAccumulator):
        provenance["subspace_captured_variance"] = captured.cpu().tolist()
    return _result(capture.layers, estimates, input_ids, spec, options, base, config, provenance,
                   _state_notes(plan, captured, spec, options, reservoir_size, budget, n_samples, base))


def _dataset_provenance(dataset) -> dict | None:
    """A copy of a :class:`TokenDataset`'s ``info`` (seed, entities kept and dropped, source...); None for a tensor."""
    return copy.deepcopy(dataset.info) if isinstance(dataset, TokenDataset) else None


@dataclass
class IEStates:
    """Every sample's block inputs and outputs at every position, and the micro states: capture once, estimate many.

    ``reservoir`` holds all ``N`` rows of every (layer, position) cell (``[L, T, N, d]`` float32 per
    side); ``micro_in``/``micro_out [L, V, d]`` are the states of each distinct token in ``tokens
    [V]`` fed alone. Made by :func:`capture_states`, read by :func:`estimate_from_states`.
    """

    layers: list[int]
    input_ids: torch.Tensor
    reservoir: PairReservoir
    tokens: torch.Tensor
    micro_in: torch.Tensor
    micro_out: torch.Tensor
    config: dict
    timings: dict
    dataset: dict | None = None  # how the data was made (_dataset_provenance)

    def sample_pairs(self):
        """``(macro_in, macro_out, micro_in, micro_out)``, each ``[L, T, N, d]``: the pairs an IE estimator reads
        (micro rows are each sample's token at that position, fed alone)."""
        x, y = self.reservoir.pairs()
        slot = torch.searchsorted(self.tokens, self.input_ids).T.to(self.micro_in.device)  # [T, N]
        return x, y, self.micro_in[:, slot], self.micro_out[:, slot]


def capture_states(model, tokenizer, dataset, *, layers=None, batch_size=32, add_bos="auto", blocks=None,
                   state_memory=DEFAULT_STATE_MEMORY, progress=False, stack=None) -> IEStates:
    """Run ``model`` once over ``dataset`` and keep every captured state (see :class:`IEStates`).

    For comparing estimators on identical states (``benchmarks/ie_agreement.py``); a single run of
    one estimator should use :func:`information_emergence`, whose state is bounded.

    Raises
    ------
    ValueError
        Bad arguments, as :func:`information_emergence`, or states larger than ``state_memory``
        (``N * L * T * 2d * 4`` bytes plus the micro states).
    """
    input_ids = dataset.input_ids if isinstance(dataset, TokenDataset) else dataset
    if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2 or input_ids.is_floating_point():
        raise ValueError("dataset must be a TokenDataset or an integer tensor input_ids [N, T]")
    n_samples, seq_len = input_ids.shape
    check_positive_int(batch_size, "batch_size")
    budget = parse_bytes(state_memory, "state_memory")
    device = input_device(model)
    capture = BlockCapture(model, layers, blocks=blocks, out_device=device, stack=stack)
    input_ids, bos, bos_handling = _bos_plan(model, tokenizer, add_bos, input_ids,
                                             f"dataset {dataset.name}" if isinstance(dataset, TokenDataset) else "dataset")
    seq_len = input_ids.shape[1]
    width = _block_width(model, capture, input_ids, bos, device)
    tokens = torch.unique(input_ids)
    need = len(capture.layers) * (seq_len * n_samples + tokens.numel()) * 2 * width * 4
    if need > budget:
        raise ValueError(f"state_memory={format_bytes(budget)} is too small to keep every state: {n_samples} samples x "
                         f"{len(capture.layers)} layers x {seq_len} positions x 2 x {width} float32 need "
                         f"{format_bytes(need)}")
    world = distributed.World()
    plan = StatePlan("reservoir", need, fold_batches=1, capacity=n_samples)
    state = PairReservoir(width, width, (len(capture.layers), seq_len), capacity=n_samples, device=device)
    timings = {}
    _macro_pass(capture, input_ids, bos, batch_size, plan, state, 0, None, 1, {}, progress, timings, world)
    start = time.perf_counter()
    micro_in, micro_out = _micro_states(capture, tokens, bos, batch_size, device, width, world)
    timings["micro_pass_s"] = time.perf_counter() - start
    config = {"model": model_identity(model), "dataset": getattr(dataset, "name", "tensor"),
              "fingerprint": _fingerprint(input_ids), "n_samples": n_samples, "seq_len": seq_len,
              "layers": capture.layers, "batch_size": batch_size, "bos": bos, "bos_handling": bos_handling,
              "stack": stack, "causal": _is_causal(model)}
    return IEStates(capture.layers, input_ids, state, tokens.to(device), micro_in, micro_out, config, timings,
                    _dataset_provenance(dataset))


def estimate_from_states(states: IEStates, estimator=DEFAULT_ESTIMATOR, estimator_options=None, *, base=2,
                         backend=None) -> IEResult:
    """IE by ``estimator`` on captured ``states``: the numbers :func:`information_emergence` gives on the same
    data with a reservoir that keeps every sample (moment estimators: their full-width state)."""
    spec = registry.get(estimator, "ie", "estimator")
    input_ids = states.input_ids
    options = check_estimator_options(estimator, estimator_options, input_ids.shape[0], rows=input_ids.shape[0])
    log_base(base)
    validate_options(spec, options, n_samples=input_ids.shape[0], width=states.micro_in.shape[-1])
    world = distributed.World()
    start = time.perf_counter()
    if spec.weighted_mi is not None:
        estimates = _estimate_weighted(spec, states.reservoir, states.micro_in, states.micro_out, states.tokens,
                                       input_ids, options, base, backend, world, causal=states.config["causal"])
    elif spec.kind == "sample":
        estimates = _estimate_from_reservoir(spec, states.reservoir, states.micro_in, states.micro_out,
                                             states.tokens, input_ids, options, base, world, backend=backend)
    else:  # one layer's full-width moments at a time: 16 (2d)^2 bytes per position
        x, y = states.reservoir.pairs()
        per_layer = []
        for layer in range(x.shape[0]):
            moments = GaussianMIAccumulator(x.shape[-1], y.shape[-1], (1, x.shape[1]), device=x.device, backend=backend)
            moments.update(x[layer:layer + 1], y[layer:layer + 1])
            per_layer.append(_estimate_from_moments(spec, moments, states.micro_in[layer:layer + 1],
                                                    states.micro_out[layer:layer + 1], states.tokens, input_ids,
                                                    options, base, backend, world))
        estimates = CellEstimates(*(torch.cat(parts) for parts in zip(*per_layer)))
    provenance = {"emergence_fast": __version__, "torch": torch.__version__, "device": str(states.micro_in.device),
                  "timings": {**states.timings, "estimate_s": time.perf_counter() - start}, "dataset": states.dataset}
    config = {**states.config, "estimator": estimator, "estimator_options": options, "base": base}
    return _result(states.layers, estimates, input_ids, spec, options, base, config, provenance, [])
