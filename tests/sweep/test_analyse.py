"""The sweep's analysis on curves whose answer is known: a step, a straight line, a flat line.

Unit records are built by hand (the shape :func:`emergence_fast.sweep.run._evaluate` stores), so
the metric-choice check and the timing against the reference are tested on exact inputs.
"""
from __future__ import annotations

import math

import pytest

from emergence_fast.sweep.analyse import analyse
from emergence_fast.sweep.grid import ModelSpec
from emergence_fast.sweep.tasks import Settings, get

STEPS = [0, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000, 1100]


def _records(curves: dict, task="induction", value=8, se=0.01, n=64):
    """One record per model: ``curves[metric][i]`` is model i's value."""
    records = []
    for i, step in enumerate(STEPS):
        cells = {str(value): {m: [float(v[i]), se, n] for m, v in curves.items()}}
        records.append({"key": f"k{i}", "model": f"step-{step}", "model_key": f"m{i}", "task": task, "axis": "length",
                        "values": [value], "settings": {}, "status": "ok", "note": "", "cells": cells,
                        "model_info": {"params": 1000, "tokenizer": "t", "vocab": 10}, "seconds": 0.0})
    return records


def _analyse(curves, reference=None):
    specs = [ModelSpec(f"/f/step-{s}", label=f"step-{s}") for s in STEPS]
    return analyse(specs, [get("induction")], {"induction": (8,)}, Settings(), _records(curves), x="step",
                   steps=STEPS, x_values=None, log_x=None, n_boot=50, ci=0.95, reference=reference, family=None,
                   loads=[])


def _sigmoid(center, width, lo, hi):
    return [lo + (hi - lo) / (1 + math.exp(-(s - center) / width)) for s in STEPS]


def test_a_thresholded_step_over_a_straight_continuous_line_is_apparent_emergence():
    line = [2.0 - 1.5 * s / 1100 for s in STEPS]                      # in-context loss falls steadily
    step = [0.0] * 6 + [1.0] * 6                                      # exact match jumps between 500 and 600
    result = _analyse({"in_context_loss": line, "repeat_exact_match": step})
    verdicts = {t["metric"]: t["verdict"] for t in result.transitions}
    assert verdicts == {"in_context_loss": "smooth", "repeat_exact_match": "sharp"}
    [agreement] = result.agreement
    assert agreement["reading"] == "apparent" and "only thresholded metrics (repeat_exact_match)" in agreement["note"]
    exact = result.transition("models", "induction", "repeat_exact_match", length=8)
    assert exact["location_ci"] == [500.0, 600.0] and exact["location"] == 550.0   # the bracket of the step


def test_timing_against_the_reference_with_ahead_with_and_not_at_all():
    loss = _sigmoid(550, 25, 2.3, 0.2)                                # the phase change, at step 550
    result = _analyse({
        "in_context_loss": loss,
        "repeat_token_accuracy": _sigmoid(550, 25, 0.05, 0.95),       # moves with it
        "first_half_loss": [2.3] * 12,                                # does not move
        "next_token_entropy": _sigmoid(250, 25, 2.3, 1.0),            # moves well ahead of it
    })
    ref = result.reference
    assert ref["metric"] == "in_context_loss" and ref["verdict"] == "sharp"
    assert ref["location_ci"][0] < 550 < ref["location_ci"][1] and ref["location_ci"][1] - ref["location_ci"][0] < 1100 / 3
    relation = {t["metric"]: t["relation"] for t in result.timing}
    assert relation == {"repeat_token_accuracy": "with", "first_half_loss": "no transition",
                        "next_token_entropy": "ahead"}


def test_reference_given_by_the_user_and_refused_when_unknown():
    curves = {"in_context_loss": _sigmoid(550, 25, 2.3, 0.2), "repeat_token_accuracy": _sigmoid(850, 25, 0.05, 0.95)}
    result = _analyse(curves, reference="induction:repeat_token_accuracy@8")
    assert {t["metric"]: t["relation"] for t in result.timing} == {"in_context_loss": "ahead"}
    with pytest.raises(ValueError, match=r"^reference: the axis value after '@' must be an integer, got 'x'"):
        _analyse(curves, reference="induction:in_context_loss@x")
    with pytest.raises(ValueError, match=r"^reference: 'induction' runs at length \[8\], not 9"):
        _analyse(curves, reference="induction:in_context_loss@9")


def test_curves_are_oriented_by_the_metric_direction():
    """A loss that falls abruptly is a sharp improvement ('sharp'), an accuracy that falls a 'sharp drop'."""
    result = _analyse({"in_context_loss": _sigmoid(550, 25, 2.3, 0.2),
                       "repeat_token_accuracy": _sigmoid(550, 25, 0.95, 0.05)})
    loss = result.transition("models", "induction", "in_context_loss", length=8)
    accuracy = result.transition("models", "induction", "repeat_token_accuracy", length=8)
    assert (loss["verdict"], loss["oriented"]) == ("sharp", "-y")
    assert (accuracy["verdict"], accuracy["oriented"]) == ("sharp drop", "y")
    assert "lower is better: fitted on -y, so 'sharp' is a sharp fall of y" in loss["notes"]
    assert not any("gets worse" in n for n in loss["notes"])
    assert any("gets worse" in n for n in accuracy["notes"])


def test_a_thresholded_step_alone_is_not_called_apparent():
    """With no continuous metric to compare (metrics= kept none), the check cannot say 'apparent'."""
    result = _analyse({"repeat_exact_match": [0.0] * 6 + [1.0] * 6})
    [agreement] = result.agreement
    assert agreement["reading"] == "undetermined"
    assert agreement["note"] == ("thresholded metrics (repeat_exact_match) show a sharp transition, but no continuous "
                                 "metric was kept to set them against: whether the metric makes it cannot be told")
