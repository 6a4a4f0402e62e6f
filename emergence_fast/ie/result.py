"""The IE result: per (layer, position) estimates, exact ceilings, summaries and notes (:class:`IEResult`)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .._optional import require
from ..datasets import prefix_entropy, token_entropy_per_position
from .notes import _input_notes, _meaning_note, _notes, _stderr_reason, _unit_name


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
        from ..report import plot_result

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


def _result(layers, estimates, input_ids, spec, options, base, config, provenance, state_notes) -> IEResult:
    """Emergence, ceilings and notes around the :class:`~emergence_fast.ie.estimate.CellEstimates`: the end of every IE run."""
    macro, macro_se, macro_bias = estimates.macro.cpu(), estimates.macro_stderr.cpu(), estimates.macro_bias.cpu()
    micro, micro_se, micro_bias = estimates.micro.cpu(), estimates.micro_stderr.cpu(), estimates.micro_bias.cpu()
    unit = _unit_name(base)
    seq_len = input_ids.shape[1]
    positions_count = torch.arange(1, seq_len + 1, dtype=torch.float64)
    emergence = macro - _cumulative_mean(micro)
    emergence_se = (macro_se.square() + micro_se.square().cumsum(-1) / positions_count.square()).sqrt()
    ceiling_macro = prefix_entropy(input_ids, base=base).to(torch.float64)
    if not config.get("causal", True):  # a bidirectional state at any position carries the whole sequence
        ceiling_macro = ceiling_macro[-1].expand_as(ceiling_macro).clone()
    ceiling_micro = token_entropy_per_position(input_ids, base=base).to(torch.float64)
    notes = _notes(spec, macro, micro, macro_se, micro_se, macro_bias, micro_bias, ceiling_macro, ceiling_micro, input_ids,
                   options, unit, _stderr_reason(spec, options, config))
    notes += state_notes + [_meaning_note(spec, options)]
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
