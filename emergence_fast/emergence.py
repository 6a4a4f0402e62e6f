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

import hashlib
import inspect
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import __version__, distributed, estimate_memory
from ._optional import require
from ._dispatch import gram, resolve_backend
from ._validation import format_bytes, log_base, parse_bytes
from .accumulators import GaussianMIAccumulator, PairReservoir, SubspaceGaussianAccumulator, hash_priority, standardised_basis
from .capture import BlockCapture, input_device, model_identity, vocab_size
from .datasets import (PREFIX_ABSENT, TokenDataset, check_token_ids, prefix_entropy, split_special_prefix,
                       token_entropy_per_position)
from .estimators import MI_METHODS, gaussian, neural, noisy, sliced
from .estimators.uncertainty import estimate_with_stderr

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
CHECKPOINT_NAME = "ie_checkpoint.pt"


@dataclass
class IEResult:
    """Per (layer, position) estimates in ``unit``; ceilings per position. Tensors are float64."""

    layers: list[int]
    positions: list[int]
    unit: str
    macro: torch.Tensor
    micro: torch.Tensor
    emergence: torch.Tensor
    macro_stderr: torch.Tensor
    micro_stderr: torch.Tensor
    emergence_stderr: torch.Tensor
    macro_expected_bias: torch.Tensor
    micro_expected_bias: torch.Tensor
    ceiling_macro: torch.Tensor
    ceiling_micro: torch.Tensor
    ceiling_emergence: torch.Tensor
    config: dict
    provenance: dict
    notes: list[str] = field(default_factory=list)

    def layer_summary(self) -> dict:
        """Mean over positions per layer, and the layer where the finite mean emergence peaks (None if none is)."""
        mean_e = self.emergence.mean(-1)
        finite = torch.isfinite(mean_e)
        # argmax over NaNs would name layer 0; no finite value means no peak (None, null in JSON).
        peak = self.layers[int(mean_e.masked_fill(~finite, -math.inf).argmax())] if finite.any() else None
        return {"layer": self.layers, "mean_emergence": mean_e.tolist(),
                "mean_macro": self.macro.mean(-1).tolist(), "mean_micro": self.micro.mean(-1).tolist(),
                "peak_layer": peak}

    def shape_agreement(self) -> dict:
        """How well the layer-mean macro estimate follows the ceiling's shape over positions."""
        estimate = self.macro.mean(0)
        return {"pearson_with_ceiling": _pearson(estimate, self.ceiling_macro),
                "steps_where_ceiling_steps": _step_agreement(estimate, self.ceiling_macro)}

    def to_dict(self) -> dict:
        tensors = {name: getattr(self, name).tolist() for name in (
            "macro", "micro", "emergence", "macro_stderr", "micro_stderr", "emergence_stderr", "macro_expected_bias",
            "micro_expected_bias", "ceiling_macro", "ceiling_micro", "ceiling_emergence")}
        return {"layers": self.layers, "positions": self.positions, "unit": self.unit, **tensors,
                "layer_summary": self.layer_summary(), "shape_agreement": self.shape_agreement(),
                "config": self.config, "provenance": self.provenance, "notes": self.notes}

    def to_rows(self) -> list[dict]:
        """One row per (layer, position): the long format of :meth:`to_dataframe`."""
        rows = []
        for i, layer in enumerate(self.layers):
            for j, position in enumerate(self.positions):
                rows.append({"layer": layer, "position": position, "unit": self.unit,
                             "macro": float(self.macro[i, j]), "micro": float(self.micro[i, j]),
                             "emergence": float(self.emergence[i, j]),
                             "macro_stderr": float(self.macro_stderr[i, j]),
                             "micro_stderr": float(self.micro_stderr[i, j]),
                             "emergence_stderr": float(self.emergence_stderr[i, j]),
                             "macro_expected_bias": float(self.macro_expected_bias[i, j]),
                             "micro_expected_bias": float(self.micro_expected_bias[i, j]),
                             "ceiling_macro": float(self.ceiling_macro[j]),
                             "ceiling_micro": float(self.ceiling_micro[j]),
                             "ceiling_emergence": float(self.ceiling_emergence[j])})
        return rows

    def to_dataframe(self):
        return require("pandas", "to_dataframe (to_rows() needs nothing)").DataFrame(self.to_rows())

    def plot(self, out_dir, layers=None) -> list[Path]:
        from .report import plot_result

        return plot_result(self, out_dir, layers=layers)


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float | None:
    finite = torch.isfinite(a) & torch.isfinite(b)
    a, b = a[finite] - a[finite].mean(), b[finite] - b[finite].mean()
    denominator = float(a.norm() * b.norm())
    return float((a * b).sum()) / denominator if denominator > 0 else None


def _step_agreement(estimate: torch.Tensor, ceiling: torch.Tensor) -> float | None:
    """Fraction of positions where the estimate rises exactly where the ceiling rises (and not elsewhere)."""
    if ceiling.numel() < 2:
        return None
    ceiling_steps = ceiling.diff() > 1e-9
    rises = estimate.diff()
    threshold = rises.abs().max() * 0.1
    return float(((rises > threshold) == ceiling_steps).double().mean())


def _cumulative_mean(x: torch.Tensor) -> torch.Tensor:
    return x.cumsum(-1) / torch.arange(1, x.shape[-1] + 1, dtype=x.dtype, device=x.device)


def _probe_sample_estimator(estimator: str, options: dict, rows: int) -> None:
    """Run a sample-based estimator once on ``rows`` random 1-d pairs so that a bad option value
    (``k=5000`` for 1024 kept rows, ``lr=-1``) fails now, not after the forward pass.

    The estimators check their arguments before they compute; a valid ``steps`` only scales the
    work of a neural estimator, so the probe takes one step (a fraction of a second in all).
    """
    probe = dict(options)
    steps = probe.get("steps")
    valid = isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1
    if valid or ("steps" not in probe and estimator in ("infonce", "nwj", "mine", "smile", "chen2024")):
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
            value = options.get(name, 1)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "seed" else 1):
                raise ValueError(f"estimator_options[{name!r}] must be a {'non-negative' if name == 'seed' else 'positive'} "
                                 f"integer, got {value!r}")
        return options
    gaussian.check_options(options.get("bias_correction", "none"), options.get("shrinkage", 0.0), options.get("pca"))
    if options.get("bias_correction") == "wishart" and options.get("pca") and n_samples <= 2 * options["pca"]:
        raise ValueError(f"bias_correction='wishart' with pca={options['pca']} needs more than {2 * options['pca']} "
                         f"samples, got {n_samples}")
    return options


def _uses_bos(tokenizer, add_bos) -> int | None:
    if add_bos == "auto":
        bos = getattr(tokenizer, "bos_token_id", None)
        encoded = tokenizer("a").input_ids if tokenizer is not None else []
        return bos if bos is not None and len(encoded) > 0 and encoded[0] == bos else None
    if add_bos is True:
        bos = getattr(tokenizer, "bos_token_id", None)
        if bos is None:
            raise ValueError("add_bos=True but the tokenizer has no bos_token_id")
        return bos
    if add_bos is False or add_bos is None:
        return None
    if isinstance(add_bos, int):
        return add_bos
    raise ValueError(f"add_bos must be 'auto', True, False or a token id, got {add_bos!r}")


def _bos_plan(model, tokenizer, add_bos, input_ids, what: str = "dataset"):
    """``(input_ids, bos, handling)`` under the one BOS rule (:func:`~emergence_fast.datasets.split_special_prefix`).

    Rows that already start with the BOS lose it here and get it back as the prepended token, so
    it is fed once, never twice; ``handling`` is ``"added"``, ``"already present"``, ``"absent"``
    (``add_bos="auto"`` and the tokenizer adds no BOS) or ``"off"`` (``add_bos=False``). Every id,
    the BOS included, is first checked against the model's vocabulary (a named error, not torch's
    IndexError from the embedding); ``what`` names the ids in that error.
    """
    vocab = vocab_size(model)
    check_token_ids(input_ids, vocab, what)
    bos = _uses_bos(tokenizer, add_bos)
    if bos is None:
        return input_ids, None, "off" if add_bos is False or add_bos is None else PREFIX_ABSENT
    if bos < 0 or (vocab is not None and bos >= vocab):
        raise ValueError(f"add_bos={add_bos!r} gives the BOS id {bos}, outside the model's vocabulary of {vocab} ids "
                         f"(0..{vocab - 1})" if vocab is not None else f"add_bos={add_bos!r}: a token id must be >= 0")
    input_ids, handling = split_special_prefix(input_ids, [bos])
    return input_ids, bos, handling


def _input_notes(config: dict) -> list[str]:
    """What the result's ``stack`` and ``bos_handling`` mean for the numbers, when it is not the usual."""
    notes = []
    if config.get("bos_handling") == "already present":
        notes.append(f"bos: every row of the dataset already started with the BOS id {config['bos']}; it was fed once "
                     "(not doubled) and the positions count from the token after it.")
    if config.get("stack") == "encoder":
        notes.append("stack: the encoder blocks of an encoder-decoder model, run on the ids alone; the encoder is "
                     "bidirectional, so atoms and the macro ceiling are whole sequences.")
    elif config.get("stack") == "decoder":
        notes.append("stack: the decoder blocks of an encoder-decoder model, fed the same ids unshifted as decoder input "
                     "while the encoder reads them too; through cross-attention every decoder state sees the whole "
                     "sequence, so it is treated as non-causal: atoms and the macro ceiling are whole sequences.")
    return notes


def _fingerprint(input_ids: torch.Tensor) -> str:
    return hashlib.sha256(input_ids.cpu().numpy().tobytes()).hexdigest()[:16]


def _save_checkpoint(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path: Path, config: dict):
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"checkpoint {path} is corrupt or unreadable ({type(exc).__name__}: {exc}); it was left in "
                         "place: delete it or run without resume") from exc
    if not isinstance(payload, dict) or not {"config", "state", "folds_done", "batches_done"} <= payload.keys():
        raise ValueError(f"checkpoint {path} is corrupt: it does not hold an IE checkpoint (config, state, "
                         "folds_done, batches_done); it was left in place: delete it or run without resume")
    if payload.get("config") != config:
        saved = payload.get("config") if isinstance(payload.get("config"), dict) else {}
        differ = [key for key in sorted({*saved, *config}, key=str) if saved.get(key) != config.get(key)]
        first = differ[0] if differ else None
        raise ValueError(f"checkpoint {path} was written by a different run configuration ({', '.join(map(str, differ))} "
                         f"differ; {first}: checkpoint {saved.get(first)!r}, this run {config.get(first)!r}); it was "
                         "left in place: delete it or run without resume")
    return payload


def _prepend(ids: torch.Tensor, bos: int | None) -> torch.Tensor:
    if bos is None:
        return ids
    return torch.cat([torch.full((ids.shape[0], 1), bos, dtype=ids.dtype), ids], dim=1)


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


def _estimate(estimator, count, comoment, dx, options, base, subspace=False):
    """(value, standard error, expected bias) per cell; the sliced estimate's bias is not modelled (NaN).

    ``subspace``: the comoment is of coordinates already standardised and rotated to principal
    directions, so ``pca=k`` picks the top ``k`` of them by variance without re-standardising.
    """
    if subspace and estimator == "gaussian" and options.get("pca"):
        comoment, dx = gaussian.principal_subspace(comoment, dx, options["pca"])
        options = {**options, "pca": None}
    if estimator == "sliced":
        value, stderr = sliced.mutual_information_from_moments(count, comoment, dx, base=base, details=True, **options)
        return value, stderr, torch.full_like(value, float("nan"))
    value, diag = gaussian.mutual_information_from_moments(count, comoment, dx, base=base, details=True, **options)
    return value, diag.stderr, diag.expected_bias


def _estimate_from_moments(estimator, state, micro_in, micro_out, tokens, input_ids, options, base, backend, world,
                           progress=False):
    """Six ``[L, T]`` tensors; the layers are split over ranks and gathered exactly (each layer has one owner)."""
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
    return tuple(distributed.owner_sum(out, world))


SAMPLE_WORKING_BYTES = 2**31  # estimate_from_states' room for the sample estimators' temporaries (no state budget there)


def _native_knn(backend, device) -> bool:
    """Whether KSG's k-NN search runs in a native kernel with ``backend`` on ``device`` (its memory model differs)."""
    return resolve_backend(backend, torch.device(device)) in ("cpp", "triton", "cuda")


def _estimate_from_reservoir(estimator, reservoir, micro_in, micro_out, tokens, input_ids, options, base, world,
                             working=SAMPLE_WORKING_BYTES, progress=False, backend=None):
    """The named estimator on the kept rows; micro rows are the kept samples' tokens fed alone. Six ``[L, T]`` tensors.

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
    return out[0], out[1], unknown, out[2], out[3], unknown


def _is_causal(model) -> bool:
    """Whether a position's state depends on its prefix only: a decoder-only language model. Anything
    else (BERT, a bare ``*Model`` class, an encoder-decoder) is treated as bidirectional, which is
    always correct for the noisy estimator's atoms, only less compact."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return False
    names = [type(model).__name__, *(getattr(config, "architectures", None) or [])]
    return bool(getattr(config, "is_decoder", False)) or any(name.endswith(("ForCausalLM", "LMHeadModel"))
                                                             for name in names)


def _atoms(keys: torch.Tensor):
    """Distinct rows of ``keys [m, k]`` (int64): ``(first [n], counts [n])``, the first row holding each
    distinct value and how many rows hold it."""
    _, inverse, counts = torch.unique(keys, dim=0, return_inverse=True, return_counts=True)
    first = torch.full((counts.numel(),), keys.shape[0], dtype=torch.int64).scatter_reduce_(
        0, inverse, torch.arange(keys.shape[0]), "amin")
    return first, counts


def _estimate_noisy(reservoir, micro_in, micro_out, tokens, input_ids, options, base, backend, world,
                    budget=NOISY_WORKING_BYTES, causal=True, progress=False):
    """Noisy-channel MI per (layer, position) on weighted atoms; six ``[L, T]`` tensors (bias not modelled: NaN).

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
    return tuple(distributed.owner_sum(out, world))


def _notes(macro, micro, macro_se, micro_se, macro_bias, micro_bias, ceiling_macro, ceiling_micro, input_ids, options,
           unit, stderr_reason=None):
    notes = []
    for name, value, stderr, ceiling in (("macro", macro, macro_se, ceiling_macro), ("micro", micro, micro_se,
                                                                                    ceiling_micro)):
        excess = value - ceiling - 1e-6 * ceiling.abs().clamp_min(1)  # float32 rounding of an estimate at the ceiling
        beyond = excess > 2 * stderr.nan_to_num(0.0)
        within = (excess > 0) & ~beyond
        if bool(beyond.any()):
            notes.append(f"{name}: {int(beyond.sum())} of {value.numel()} estimates exceed the exact ceiling by more "
                         f"than two standard errors (by up to {float(excess[beyond].max()):.3g} {unit}): there the "
                         "estimate measures the estimator's view of a deterministic map, not information in the data.")
        if bool(within.any()):
            notes.append(f"{name}: {int(within.sum())} of {value.numel()} estimates are above the exact ceiling by "
                         f"less than two standard errors (up to {float(excess[within].max()):.3g} {unit}): consistent "
                         "with the ceiling.")
    for name, value in (("macro", macro), ("micro", micro)):
        bad = int((~torch.isfinite(value)).sum())
        if bad:
            notes.append(f"{name}: {bad} of {value.numel()} cells are infinite: the Gaussian MI is ill-posed there "
                         "(a singular covariance: fewer distinct states than dimensions); lower pca or add shrinkage.")
    for name, stderr in (("macro", macro_se), ("micro", micro_se)):
        undefined = int(stderr.isnan().sum())
        if undefined:
            why = stderr_reason or ("undefined (an infinite estimate, a degenerate cell, or an estimator without one "
                                    "there)")
            notes.append(f"{name}: the standard error is NaN in {undefined} of {stderr.numel()} cells, where it is "
                         f"{why}.")
    dims = 2 * options["pca"] if options.get("pca") else None
    distinct = [int(torch.unique(input_ids[:, : t + 1], dim=0).shape[0]) for t in range(input_ids.shape[1])]
    if dims is not None and min(distinct) <= dims:
        notes.append(f"macro: position {distinct.index(min(distinct))} has {min(distinct)} distinct prefixes, not more "
                     f"than the {dims} joint dimensions: its covariance is singular.")
    if bool(torch.isfinite(macro_bias).any()):
        worst = max(float(macro_bias.abs().max()), float(micro_bias.abs().max()))
        done = "subtracted" if options.get("bias_correction") == "wishart" else "not subtracted"
        notes.append(f"expected plug-in bias (Wishart) up to {worst:.3g} {unit} at N={input_ids.shape[0]}; {done}.")
    return notes


DEFAULT_STATE_MEMORY = "8GB"
# The smallest useful bounded states: a subspace of rank >= max(pca, 8) from a pilot of >= 4 rows per
# direction, and a reservoir of 64 rows; below these the run is refused with the minimum it needs.
MIN_SUBSPACE_RANK = 8
MAX_SUBSPACE_RANK = 64
PILOT_ROWS_PER_DIRECTION = 16
MAX_PILOT = 4096
MIN_RESERVOIR = 64


@dataclass(frozen=True)
class StatePlan:
    """What the streaming state will be and what it costs, decided before any forward pass.

    ``kind``: ``"full"`` (Gaussian moments of the full width), ``"subspace"``
    (:class:`SubspaceGaussianAccumulator` of ``rank`` per side from a ``pilot``-sample first pass)
    or ``"reservoir"`` (``capacity`` rows per cell). ``fold_batches``: batches folded into the
    state at once; ``bytes``: the state plus the fold buffer, per rank (for a sample-based
    estimator, the larger of that and the state plus the estimate stage's modelled peak).
    ``working``: for a sample-based estimator, the bytes its estimate stage may use beside the
    reservoir and the micro states; ``chunk_cells``/``chunk_resamples``: the chunks planned for it.
    """

    kind: str
    bytes: int
    fold_batches: int
    rank: int | None = None
    pilot: int | None = None
    capacity: int | None = None
    working: int | None = None
    chunk_cells: int | None = None
    chunk_resamples: int | None = None

    def describe(self) -> dict:
        return {"kind": self.kind, "bytes": self.bytes, "fold_batches": self.fold_batches, "rank": self.rank,
                "pilot": self.pilot, "capacity": self.capacity}


def _plan_state(estimator, options, cells, width, n_samples, batch_size, update_samples, reservoir_size,
                budget, *, micro_rows=0, device=None, backend=None) -> StatePlan:
    """Fit the state into ``budget`` bytes: full moments if they fit, else a subspace (or a smaller reservoir).

    The fold buffer (captured float32 rows waiting to be folded) counts against the budget too:
    it gets at most a quarter of it, which may fold more often than ``update_samples`` asks.
    A sample-based estimator's estimate stage counts too (:func:`_plan_sample_state`;
    ``micro_rows`` = layers x distinct tokens, ``device`` where it runs).
    """
    row = cells * 2 * width * 4  # one sample's captured float32 rows, all cells
    fold_batches = max(1, math.ceil(update_samples / batch_size))
    fold_batches = max(1, min(fold_batches, budget // 4 // (row * batch_size)))
    fold = fold_batches * batch_size * row
    if estimator in SAMPLE_ESTIMATORS:
        return _plan_sample_state(estimator, options, cells, width, n_samples, reservoir_size, budget, row,
                                  fold_batches, fold, micro_rows, device, backend)
    if estimator == "noisy":
        # The reservoir, the fold buffer, the micro states, and one layer's estimate temporaries at the
        # reservoir's size (_estimate_noisy takes layers in chunks of whatever room is left).
        per_row = row + noisy.working_bytes(1, 1, 2 * width, options["n_draws"])
        micro = micro_rows * 2 * width * 4
        for batches in (fold_batches, 1):  # a tight budget folds one batch at a time before it shrinks the rows
            fold = batches * batch_size * row
            capacity = min(reservoir_size, (budget - fold - micro) // per_row if budget > fold + micro else 0)
            if capacity >= min(MIN_RESERVOIR, reservoir_size):
                return StatePlan("reservoir", capacity * row + fold, batches, capacity=capacity)
        minimum = min(MIN_RESERVOIR, reservoir_size) * per_row + batch_size * row + micro
        raise ValueError(f"state_memory={format_bytes(budget)} is too small for the noisy estimator here: a "
                         f"reservoir of {min(MIN_RESERVOIR, reservoir_size)} rows for {cells} cells of width {width}, "
                         f"with its estimate stage and micro states, needs {format_bytes(minimum)} ({minimum} bytes)")
    full = cells * (16 * (2 * width) ** 2 + 48 * width + 8)  # double-double sums (GaussianMIAccumulator)
    if full + fold <= budget:
        return StatePlan("full", full + fold, fold_batches)
    floor = max(MIN_SUBSPACE_RANK, options.get("pca") or 0, options.get("k") or 0)

    def cost(rank, pilot):
        subspace = cells * (16 * (2 * rank) ** 2 + 2 * width * rank * 8 + 6 * width * 8)
        return subspace + max(fold, cells * pilot * 2 * width * 4)

    # Rank first (up to MAX_SUBSPACE_RANK), then the largest pilot the budget allows, up to all samples
    # (then the top components are exact) or MAX_PILOT (then a second pass over N costs one small extra pass).
    for rank in range(min(width, max(MAX_SUBSPACE_RANK, floor)), floor - 1, -8 if floor < MAX_SUBSPACE_RANK else -1):
        smallest = min(n_samples, PILOT_ROWS_PER_DIRECTION * rank)
        if rank > min(width, smallest) or cost(rank, smallest) > budget:
            continue
        room = (budget - cost(rank, 0) + fold) // (cells * 2 * width * 4) if budget > cost(rank, 0) else 0
        pilot = max(smallest, min(n_samples, MAX_PILOT, room))
        return StatePlan("subspace", cost(rank, pilot), fold_batches, rank=rank, pilot=pilot)
    rank = min(width, floor)
    pilot = min(n_samples, PILOT_ROWS_PER_DIRECTION * rank)
    raise ValueError(f"state_memory={format_bytes(budget)} is too small for any estimator here: full moments need "
                     f"{format_bytes(full + fold)}, and the smallest bounded state (a rank-{rank} subspace from a "
                     f"{pilot}-sample pilot, {cells} cells of width {width}) needs {format_bytes(cost(rank, pilot))}")


def _plan_sample_state(estimator, options, cells, width, n_samples, reservoir_size, budget, row, fold_batches, fold,
                       micro_rows, device, backend=None) -> StatePlan:
    """The reservoir and the estimate stage of a sample-based estimator share ``budget`` bytes.

    The macro pass holds the reservoir (``capacity x row``) and the fold buffer; the estimate
    stage holds the reservoir, the micro states (``micro_rows x 2 width`` float32) and the
    temporaries of one chunk of cells (:func:`estimate_memory.chunk_bytes`, a model measured in
    ``benchmarks/estimate_memory.py``). The reservoir gets the most rows, up to
    ``reservoir_size``, for which both stages fit with the smallest chunk; the chunks then take
    what is left (``working``), so a tight budget costs time, not rows, until it costs rows.

    Raises ``ValueError`` naming ``state_memory`` and the bytes needed when not even a reservoir
    of ``MIN_RESERVOIR`` rows with the smallest chunk fits -- before any forward pass.
    """
    micro = micro_rows * 2 * width * 4
    native = _native_knn(backend, device or "cpu")

    def need(capacity):  # the larger stage's peak with a reservoir of `capacity` rows
        smallest_chunk = estimate_memory.minimum_bytes(estimator, options, min(capacity, n_samples), width, cells,
                                                       native_knn=native)
        return capacity * row + max(fold, micro + smallest_chunk)

    low, high = min(MIN_RESERVOIR, reservoir_size), reservoir_size
    if need(low) > budget:
        raise ValueError(
            f"state_memory={format_bytes(budget)} is too small for the {estimator} estimator here: a reservoir of {low} "
            f"rows for {cells} cells of width {width} ({format_bytes(low * row)}) with "
            + (f"its estimate stage (micro states and the smallest chunk of cells, {format_bytes(need(low) - low * row)}"
               if need(low) - low * row > fold else f"the fold buffer ({format_bytes(fold)}")
            + f") needs {format_bytes(need(low))}")
    while low < high:  # need() grows with the capacity: the largest that fits
        middle = (low + high + 1) // 2
        low, high = (middle, high) if need(middle) <= budget else (low, middle - 1)
    capacity = low
    working = budget - capacity * row - micro
    chunks = estimate_memory.plan_chunks(estimator, options, min(capacity, n_samples), width, cells, working,
                                         native_knn=native)
    return StatePlan("reservoir", capacity * row + max(fold, micro + chunks.bytes), fold_batches, capacity=capacity,
                     working=working, chunk_cells=chunks.cells, chunk_resamples=chunks.resamples)


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


def _progress(iterable, progress, world, desc, unit):
    """``iterable`` behind a tqdm bar on stderr when ``progress`` (rank 0 only), else as it is."""
    if not (progress and world.is_main):
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc + (f" (rank 0 of {world.world_size})" if world.distributed else ""), unit=unit)


def checkpoint_path(checkpoint_dir, world) -> Path | None:
    """This rank's checkpoint file in ``checkpoint_dir`` (one per rank when there are several)."""
    if checkpoint_dir is None:
        return None
    name = CHECKPOINT_NAME if not world.distributed else \
        CHECKPOINT_NAME.replace(".pt", f".rank{world.rank}-of-{world.world_size}.pt")
    return Path(checkpoint_dir) / name


def _check_checkpoint_world(checkpoint_dir: Path, world) -> None:
    """``resume`` with another number of ranks would silently start over: refuse, naming the files."""
    ours = {checkpoint_path(checkpoint_dir, distributed.World(rank, world.world_size)).name
            for rank in range(world.world_size)}
    others = sorted(p.name for p in checkpoint_dir.glob(CHECKPOINT_NAME.replace(".pt", "*.pt")) if p.name not in ours)
    if others:
        raise ValueError(f"resume: {checkpoint_dir} holds checkpoints of a run on another number of ranks ({', '.join(others)}"
                         f"), and this run has {world.world_size}; resume with that number, or delete them to start over")


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
            _save_checkpoint(checkpoint, {"config": config, "folds_done": f + 1, "batches_done": batches_now,
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


def _block_width(model, capture, input_ids, bos, device) -> int:
    """The residual-stream width, from the config when it says, else from one sample's forward."""
    width = getattr(getattr(model, "config", None), "hidden_size", None)
    if isinstance(width, int) and width > 0:
        return width
    block_in, _ = capture.run(_prepend(input_ids[:1], bos).to(device), positions=[0 if bos is None else 1])
    return block_in.shape[-1]


def information_emergence(model, tokenizer, dataset, *, layers=None, estimator=DEFAULT_ESTIMATOR, estimator_options=None,
                          batch_size=32, update_samples=512, reservoir_size=1024, reservoir_seed=0, base=2,
                          add_bos="auto", blocks=None, checkpoint_dir=None, resume=False, checkpoint_every=8,
                          progress=False, backend=None, state_memory=DEFAULT_STATE_MEMORY, world=None,
                          stack=None) -> IEResult:
    """Information Emergence of ``model`` on ``dataset`` (a :class:`TokenDataset` or ``input_ids [N, T]``).

    ``layers``: block indices or TransformerLens point names (default all). ``estimator``:
    ``"noisy"`` (the default: noisy-channel MI, options ``sigma``, ``n_draws``, ``seed``; see the
    module docstring) on a seeded reservoir of ``reservoir_size`` rows per (layer, position),
    read as weighted distinct prefixes; ``"gaussian"`` (options ``pca=8,
    bias_correction="wishart"``) or ``"sliced"`` (``k=4, n_slices=64, seed=0``), both read from
    the same streaming Gaussian state; or a sample-based estimator (``"ksg"``, ``"renyi"``,
    ``"infonce"``, ``"nwj"``, ``"mine"``, ``"smile"``, ``"chen2024"``: the paper's MINE preset)
    run on a seeded bottom-k reservoir of ``reservoir_size`` rows per (layer, position), with
    ``estimator_options`` passed through.
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
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    input_ids = dataset.input_ids if isinstance(dataset, TokenDataset) else dataset
    if (not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2 or input_ids.is_floating_point()
            or input_ids.is_complex() or input_ids.dtype == torch.bool):
        raise ValueError("dataset must be a TokenDataset or an integer tensor input_ids [N, T]")
    n_samples, seq_len = input_ids.shape
    if n_samples < 2 or seq_len < 1:
        raise ValueError(f"dataset must hold at least 2 samples of at least 1 token, got shape {tuple(input_ids.shape)}")
    for name, value in (("batch_size", batch_size), ("update_samples", update_samples),
                        ("reservoir_size", reservoir_size), ("checkpoint_every", checkpoint_every)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    budget = parse_bytes(state_memory, "state_memory")
    world = distributed.current() if world is None else world
    if world.world_size > n_samples:
        raise ValueError(f"there are more ranks ({world.world_size}) than samples ({n_samples}): use fewer processes "
                         "or more samples")
    options = _check_estimator_options(estimator, estimator_options, n_samples, rows=min(reservoir_size, n_samples))
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
    cells_shape = (len(capture.layers), seq_len)
    plan = _plan_state(estimator, options, cells_shape[0] * seq_len, width, n_samples, batch_size, update_samples,
                       reservoir_size, budget, micro_rows=cells_shape[0] * torch.unique(input_ids).numel(),
                       device=device, backend=backend)
    config = {"model": model_identity(model), "dataset": getattr(dataset, "name", "tensor"),
              "fingerprint": _fingerprint(input_ids), "n_samples": n_samples, "seq_len": seq_len,
              "layers": capture.layers, "batch_size": batch_size, "update_samples": update_samples,
              "reservoir": [plan.capacity, reservoir_seed] if estimator in RESERVOIR_ESTIMATORS else None, "bos": bos,
              "bos_handling": bos_handling, "stack": stack,
              "estimator": estimator, "estimator_options": options, "base": base, "causal": _is_causal(model),
              "state": {key: value for key, value in plan.describe().items() if key != "bytes"}}
    distributed.check_agreement({**config, "world_size": world.world_size}, world)

    checkpoint = checkpoint_path(checkpoint_dir, world)
    state, done, resumed_batches = None, 0, 0
    if resume and checkpoint is not None:
        _check_checkpoint_world(Path(checkpoint_dir), world)
        problem = None
        if checkpoint.exists():
            try:
                payload = _load_checkpoint(checkpoint, {**config, "world_size": world.world_size})
                state = _load_state(plan, payload, width, cells_shape, device, backend)
                done, resumed_batches = payload["folds_done"], payload["batches_done"]
            except ValueError as exc:
                problem = str(exc).splitlines()[0]
        # One rank's bad checkpoint stops every rank with its message, not the others with a broken pipe.
        problems = [p for p in distributed.gather_ordered([problem], world) if p]
        if problems:
            raise ValueError(problems[0])
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
    if estimator == "noisy":  # the estimate stage gets what the plan left of the budget
        room = max(budget - plan.bytes - micro_in.numel() * 2 * micro_in.element_size(),
                   noisy.working_bytes(1, plan.capacity, 2 * width, options["n_draws"]))
        estimates = _estimate_noisy(state, micro_in, micro_out, tokens, input_ids, options, base, backend, world,
                                    budget=room, causal=_is_causal(model), progress=progress)
    elif estimator in SAMPLE_ESTIMATORS:
        estimates = _estimate_from_reservoir(estimator, state, micro_in, micro_out, tokens, input_ids, options, base,
                                             world, working=plan.working, progress=progress, backend=backend)
    else:
        estimates = _estimate_from_moments(estimator, state, micro_in, micro_out, tokens, input_ids, options, base,
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
                  "state_bytes": plan.bytes, "state_memory": budget}
    if estimator in SAMPLE_ESTIMATORS:  # how the estimate stage was split to fit (the numbers do not depend on it)
        provenance["estimate_chunks"] = {"working_bytes": plan.working, "cells_per_chunk": plan.chunk_cells,
                                         "resamples_per_call": plan.chunk_resamples}
    if isinstance(state, SubspaceGaussianAccumulator):
        provenance["subspace_captured_variance"] = captured.cpu().tolist()
    return _result(capture.layers, estimates, input_ids, estimator, options, base, config, provenance,
                   _state_notes(plan, captured, estimator, options, reservoir_size, budget, n_samples))


def _result(layers, estimates, input_ids, estimator, options, base, config, provenance, state_notes) -> IEResult:
    """Emergence, ceilings and notes around the six ``[L, T]`` estimates: the end of every IE run."""
    macro, macro_se, macro_bias, micro, micro_se, micro_bias = (t.cpu() for t in estimates)
    unit = "nats" if base is None else ("bits" if base == 2 else f"log{base}")
    seq_len = input_ids.shape[1]
    positions_count = torch.arange(1, seq_len + 1, dtype=torch.float64)
    emergence = macro - _cumulative_mean(micro)
    emergence_se = (macro_se.square() + micro_se.square().cumsum(-1) / positions_count.square()).sqrt()
    ceiling_macro = prefix_entropy(input_ids, base=base).to(torch.float64)
    if not config.get("causal", True):  # a bidirectional state at any position carries the whole sequence
        ceiling_macro = ceiling_macro[-1].expand_as(ceiling_macro).clone()
    ceiling_micro = token_entropy_per_position(input_ids, base=base).to(torch.float64)
    notes = _notes(macro, micro, macro_se, micro_se, macro_bias, micro_bias, ceiling_macro, ceiling_micro, input_ids,
                   options, unit, _neural_stderr_reason(estimator, options, config))
    notes += state_notes + [_meaning_note(estimator, options)]
    if not config.get("causal", True):
        notes.append("ceiling: the model is bidirectional (not a decoder-only LM), so a state at any position can "
                     "carry the whole sequence: the macro ceiling is the entropy of whole sequences.")
    notes += _input_notes(config)
    if 0 in layers:
        notes.append("block 0: its input is the token embedding alone, so its MI cannot exceed the entropy of the "
                     "current token (ceiling_micro), which is below the prefix-entropy ceiling after the first "
                     "position (0 at a position every sample shares, such as a separator).")
    try:
        import transformers

        provenance["transformers"] = transformers.__version__
    except ImportError:
        pass
    return IEResult(
        layers=layers, positions=list(range(seq_len)), unit=unit, macro=macro, micro=micro, emergence=emergence,
        macro_stderr=macro_se, micro_stderr=micro_se, emergence_stderr=emergence_se, macro_expected_bias=macro_bias,
        micro_expected_bias=micro_bias, ceiling_macro=ceiling_macro, ceiling_micro=ceiling_micro,
        ceiling_emergence=ceiling_macro - _cumulative_mean(ceiling_micro), config=config, provenance=provenance,
        notes=notes)


def _neural_stderr_reason(estimator, options, config) -> str | None:
    """Why a neural bound's standard error is NaN on the kept rows (min of reservoir and samples), or None."""
    if estimator not in neural.NEURAL_METHODS or not config.get("reservoir") or options.get("preset"):
        return None
    rows = min(config["reservoir"][0], config["n_samples"])
    if neural.heldout_minibatches(rows, options.get("holdout"), options.get("batch_size")) >= 2:
        return None
    return (f"undefined: {neural.SINGLE_MINIBATCH} ({rows} kept rows): raise n_samples/reservoir_size or lower the "
            "option batch_size")


def _meaning_note(estimator, options) -> str:
    """What the number is, in one sentence per estimator family."""
    if estimator == "noisy":
        return (f"estimate: noisy-channel MI I(h_l + s Z; h_(l+1) + s Z') (Goldfeld et al. 2019) with s = "
                f"{options['sigma']} x each cell's RMS radius, over the distinct prefixes (macro) or tokens (micro) "
                "with their counts: finite for a deterministic network, at most the exact ceiling, and lower where the "
                "block merges inputs or crowds them closer than s; sigma is the resolution.")
    if estimator == "chen2024":
        return (f"estimate: the paper-faithful number (Chen et al. 2024's own estimator): the original IE code's "
                f"MINE, {options.get('steps') or 10_000} full-batch steps of a Donsker-Varadhan bound, reporting the "
                "maximum over training steps of its training-set value, clipped at 0. It is biased upward (the "
                "maximum of many noisy estimates on the data the critic fits exceeds the MI even for independent "
                "data) and is for comparison with the paper only; the default estimator is the corrected number. "
                + _CEILING_NOTE)
    return "ceiling: " + _CEILING_NOTE


_CEILING_NOTE = ("for injective blocks the true MI between consecutive hidden states equals the prefix entropy (macro) or "
                 "the token entropy (micro); estimates above it measure the estimator, not the data.")


def _state_notes(plan, captured, estimator, options, reservoir_size, budget, n_samples) -> list[str]:
    """Say which estimator was actually computed when the budget or the reservoir bounded the state."""
    if plan.kind == "reservoir":
        notes = []
        if plan.capacity < reservoir_size:
            notes.append(f"state: the reservoir holds {plan.capacity} rows per cell, not the {reservoir_size} asked "
                         f"for, to fit state_memory={format_bytes(budget)}.")
        if plan.capacity < n_samples:
            notes.append(f"state: the estimates read a seeded reservoir of {plan.capacity} of the {n_samples} samples "
                         f"per cell (raise --reservoir-size to read all), while the ceiling is over all {n_samples}: "
                         + (f"the noisy MI cannot exceed log2({plan.capacity}) = {math.log2(plan.capacity):.3g} bits "
                            "there." if estimator == "noisy" else "the two describe different samples."))
        return notes
    if plan.kind != "subspace":
        return []
    worst = float(captured.min())
    what = {"gaussian": f"Gaussian MI of the top-{options['pca']} principal components" if options.get("pca")
            else f"Gaussian MI of the whole rank-{plan.rank} subspace (a lower bound on the full-width Gaussian MI by "
                 "the data-processing inequality)",
            "sliced": f"sliced MI with slices drawn inside the rank-{plan.rank} subspace"}[estimator]
    return [f"state: full-width moments exceed state_memory={format_bytes(budget)}; computed {what}, each side "
            f"projected on its top-{plan.rank} principal directions from a {plan.pilot}-sample pilot pass. The subspace "
            f"holds {worst:.1%} or more of every cell's standardised variance (mean {float(captured.mean()):.1%}); "
            + ("the pilot is the whole data, so the top components are those of the full-width state (to float32 "
               "rounding)." if plan.pilot >= n_samples else "the pilot is a subsample: the top components are "
               "estimated from it, an error that shrinks as the pilot grows (raise state_memory for a larger one).")]


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
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
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
    return IEStates(capture.layers, input_ids, state, tokens.to(device), micro_in, micro_out, config, timings)


def estimate_from_states(states: IEStates, estimator="noisy", estimator_options=None, *, base=2,
                         backend=None) -> IEResult:
    """IE by ``estimator`` on captured ``states``: the numbers :func:`information_emergence` gives on the same
    data with a reservoir that keeps every sample (moment estimators: their full-width state)."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    input_ids = states.input_ids
    options = _check_estimator_options(estimator, estimator_options, input_ids.shape[0], rows=input_ids.shape[0])
    log_base(base)
    world = distributed.World()
    start = time.perf_counter()
    if estimator == "noisy":
        estimates = _estimate_noisy(states.reservoir, states.micro_in, states.micro_out, states.tokens, input_ids,
                                    options, base, backend, world, causal=states.config["causal"])
    elif estimator in SAMPLE_ESTIMATORS:
        estimates = _estimate_from_reservoir(estimator, states.reservoir, states.micro_in, states.micro_out,
                                             states.tokens, input_ids, options, base, world, backend=backend)
    else:  # one layer's full-width moments at a time: 16 (2d)^2 bytes per position
        x, y = states.reservoir.pairs()
        per_layer = []
        for layer in range(x.shape[0]):
            moments = GaussianMIAccumulator(x.shape[-1], y.shape[-1], (1, x.shape[1]), device=x.device, backend=backend)
            moments.update(x[layer:layer + 1], y[layer:layer + 1])
            per_layer.append(_estimate_from_moments(estimator, moments, states.micro_in[layer:layer + 1],
                                                    states.micro_out[layer:layer + 1], states.tokens, input_ids,
                                                    options, base, backend, world))
        estimates = tuple(torch.cat([layer[i] for layer in per_layer]) for i in range(6))
    provenance = {"emergence_fast": __version__, "torch": torch.__version__, "device": str(states.micro_in.device),
                  "timings": {**states.timings, "estimate_s": time.perf_counter() - start}}
    config = {**states.config, "estimator": estimator, "estimator_options": options, "base": base}
    return _result(states.layers, estimates, input_ids, estimator, options, base, config, provenance, [])
