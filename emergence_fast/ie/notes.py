"""The sentences an IE result carries: what its numbers mean, and where they stand against the ceiling."""
from __future__ import annotations

import math

import torch

from .._validation import format_bytes, log_base


def _unit_name(base) -> str:
    """``"nats"``, ``"bits"`` or ``"log<base>"``: the unit of a value in ``base`` (None = nats)."""
    return "nats" if base is None else ("bits" if base == 2 else f"log{base}")


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


def _notes(spec, macro, micro, macro_se, micro_se, macro_bias, micro_bias, ceiling_macro, ceiling_micro, input_ids,
           options, unit, stderr_reason=None):
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
            notes.append(f"{name}: {bad} of {value.numel()} cells are not finite.")
    for name, stderr in (("macro", macro_se), ("micro", micro_se)):
        undefined = int(stderr.isnan().sum())
        if undefined:
            why = stderr_reason or ("undefined (an infinite estimate, a degenerate cell, or an estimator without one "
                                    "there)")
            notes.append(f"{name}: the standard error is NaN in {undefined} of {stderr.numel()} cells, where it is "
                         f"{why}.")
    if spec.ie_notes is not None:
        notes += spec.ie_notes(options, input_ids, macro, micro, macro_bias, micro_bias, unit)
    return notes


def _stderr_reason(spec, options, config) -> str | None:
    """Why the estimator's standard error is NaN on the kept rows (min of reservoir and samples), where it says."""
    if spec.ie_stderr_reason is None or not config.get("reservoir"):
        return None
    return spec.ie_stderr_reason(options, min(config["reservoir"][0], config["n_samples"]))


def _meaning_note(spec, options) -> str:
    """What the number is: the estimator's own sentence (:attr:`.registry.Estimator.ie_note`), and the ceiling
    where the estimate can exceed it (a weighted-atoms estimate is at most the exact ceiling)."""
    if spec.ie_note is None:
        return "ceiling: " + _CEILING_NOTE
    return spec.ie_note(options) + ("" if spec.weighted_mi is not None else " " + _CEILING_NOTE)


_CEILING_NOTE = ("for injective blocks the true MI between consecutive hidden states equals the prefix entropy (macro) or "
                 "the token entropy (micro); estimates above it measure the estimator, not the data.")


def _state_notes(plan, captured, spec, options, reservoir_size, budget, n_samples, base=2) -> list[str]:
    """Say which estimator was actually computed when the budget or the reservoir bounded the state."""
    unit = _unit_name(base)
    if plan.kind == "reservoir":
        notes = []
        if plan.capacity < reservoir_size:
            notes.append(f"state: the reservoir holds {plan.capacity} rows per cell, not the {reservoir_size} asked "
                         f"for, to fit state_memory={format_bytes(budget)}.")
        if plan.capacity < n_samples:
            notes.append(f"state: the estimates read a seeded reservoir of {plan.capacity} of the {n_samples} samples "
                         f"per cell (raise --reservoir-size to read all), while the ceiling is over all {n_samples}: "
                         + (f"the {spec.name} MI of {plan.capacity} weighted atoms cannot exceed log({plan.capacity}) = "
                            f"{math.log(plan.capacity) / log_base(base):.3g} {unit} there." if spec.weighted_mi is not None
                            else "the two describe different samples."))
        return notes
    if plan.kind != "subspace":
        return []
    worst = float(captured.min())
    what = (spec.subspace_note(options, plan.rank) if spec.subspace_note is not None
            else f"{spec.name} on the rank-{plan.rank} subspace")
    return [f"state: full-width moments exceed state_memory={format_bytes(budget)}; computed {what}, each side "
            f"projected on its top-{plan.rank} principal directions from a {plan.pilot}-sample pilot pass. The subspace "
            f"holds {worst:.1%} or more of every cell's standardised variance (mean {float(captured.mean()):.1%}); "
            + ("the pilot is the whole data, so the top components are those of the full-width state (to float32 "
               "rounding)." if plan.pilot >= n_samples else "the pilot is a subsample: the top components are "
               "estimated from it, an error that shrinks as the pilot grows (raise state_memory for a larger one).")]
