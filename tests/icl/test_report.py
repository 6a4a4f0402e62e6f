import csv
import json
import math

import numpy as np
import pytest

from emergence_fast.icl import report
from emergence_fast.icl.concepts import ConceptResult, Curve
from emergence_fast.icl.model_selection import bayesian_model_selection
from emergence_fast.transitions import summarize


def logistic_curve(label, location, scale, period):
    lengths = np.arange(1, 61)
    value = 0.9 - 0.8 / (1 + np.exp(-(lengths - location) / scale))
    curve = Curve(label, "concept", (0, 1), lengths, value, np.full(60, 0.9), np.full(60, 2.0), period)
    curve.transition = summarize(lengths, value, n_boot=50, period=period)
    return curve


def test_transition_table_recovers_a_synthetic_logistic():
    result = ConceptResult("judge", [logistic_curve("01", 20.0, 2.0, 2), logistic_curve("011", 33.0, 4.0, 3)], {})
    rows = result.transition_rows()
    assert rows[0]["crossing_flips"] == pytest.approx(20.0, abs=0.05)     # 0.9 - 0.4 = 0.5 at the location
    assert rows[0]["crossing_periods"] == pytest.approx(10.0, abs=0.03)
    assert rows[1]["logistic_location_flips"] == pytest.approx(33.0, abs=1e-3)
    assert rows[1]["logistic_width_flips"] == pytest.approx(2 * math.log(9) * 4.0, rel=1e-3)
    assert rows[0]["width_10_90_flips"] == pytest.approx(2 * math.log(9) * 2.0, abs=0.3)  # interpolated on integer |x|
    table = report.transition_table(result)
    lines = table.splitlines()
    assert len(lines) == 6 and lines[2].startswith("| 01 | 2 | 20.0 | 10.00 | ")
    assert "logistic location (flips) [95% CI]" in lines[0]
    # a resolved sigmoid (points on its fall) is a sharp drop; the shared amplitude rule is stated under the table
    assert "| 0.90 -> 0.10 | sharp drop |" in lines[3]
    assert lines[5].startswith("No transition: a rise max - min not above 3 combined standard errors")


def test_files_are_written(tmp_path):
    result = ConceptResult("judge", [logistic_curve("01", 20.0, 2.0, 2)], {"max_len": 60}, {"seconds": 1.0})
    result.curves[0].value[3] = np.nan
    paths = report.write_concept_result(result, tmp_path)
    assert {p.name for p in paths} == {"icl_judge.json", "icl_judge.csv", "icl_judge_transitions.csv", "icl_judge.png"}
    data = json.loads((tmp_path / "icl_judge.json").read_text())
    assert data["curves"][0]["value"][3] is None       # non-finite values are null, explained by "nonfinite"
    assert data["nonfinite"]["values"]["/curves/0/value/3"] == "nan"
    with open(tmp_path / "icl_judge_transitions.csv") as f:
        assert next(csv.DictReader(f))["label"] == "01"
    assert not list(tmp_path.glob("*.tmp*"))


def test_model_selection_plot_and_csv(tmp_path):
    results = {"proper": bayesian_model_selection((0, 1), 100),
               "paper_compat": bayesian_model_selection((0, 1), 99, paper_compat=True)}
    path = report.plot_model_selection(results, tmp_path / "ms.png")
    assert path.stat().st_size > 10_000
    report.write_csv(results["paper_compat"].to_rows(), tmp_path / "ms.csv")
    with open(tmp_path / "ms.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 99 and float(rows[50]["p_concept"]) == pytest.approx(0.502249, abs=1e-6)
    with pytest.raises(ValueError, match="results"):
        report.plot_model_selection({}, tmp_path / "x.png")


def test_writer_arguments():
    with pytest.raises(ValueError, match="rows"):
        report.write_csv([], "x.csv")
    with pytest.raises(TypeError, match="data must be a dict"):
        report.write_json([1, 2], "x.json")


def test_icl_verdicts_use_the_shared_amplitude_rule_and_brackets():
    from emergence_fast.icl.concepts import _summarize

    lengths = np.arange(1, 41)
    small = 0.20 + 0.03 / (1 + np.exp(-(lengths - 20.0)))          # a 0.03 bump: below 5 % of the 0-1 range
    step = np.where(lengths < 25, 0.1, 0.9)                          # the whole rise between |x| = 24 and 25
    curves = []
    for label, value in (("bump", small), ("step", step)):
        curve = Curve(label, "concept", (0, 1), lengths, value, np.full(40, 0.9), np.full(40, 2.0), 2)
        curve.transition = _summarize(curve, 0, 0)
        curves.append(curve)
    result = ConceptResult("judge", curves, {})
    rows = result.transition_rows()
    assert rows[0]["verdict"] == "no transition"
    assert rows[1]["verdict"] == "sharp" and (rows[1]["bracket_lower_flips"], rows[1]["bracket_upper_flips"]) == (24.0, 25.0)
    assert rows[1]["width_bound_flips"] == 1.0
    assert curves[1].transition.to_dict()["units"]["bracket"] == "flips"
    lines = report.transition_table(result).splitlines()
    assert lines[2].endswith("| no transition |") and lines[3].endswith("| sharp, between 24 and 25 flips |")


def test_transition_csv_holds_numeric_interval_columns_and_notes_a_location_outside_its_ci(tmp_path):
    """The CSV held Python tuple strings like "(1.89, 5.19)"; a location outside its own CI was printed silently."""
    import dataclasses

    result = ConceptResult("judge", [logistic_curve("01", 20.0, 2.0, 2), logistic_curve("011", 33.0, 4.0, 3)], {})
    t = result.curves[1].transition
    result.curves[1].transition = dataclasses.replace(
        t, logistic=dataclasses.replace(t.logistic, location=5.54, location_ci=(1.89, 5.2)))
    report.write_concept_result(result, tmp_path)
    with open(tmp_path / "icl_judge_transitions.csv") as f:
        rows = list(csv.DictReader(f))
    assert "location_ci_flips" not in rows[0] and "bracket_flips" not in rows[0]
    lo, hi = (float(rows[0][k]) for k in ("location_ci_lower_flips", "location_ci_upper_flips"))
    assert lo <= float(rows[0]["logistic_location_flips"]) <= hi  # noise-free: a CI of width ~0
    assert float(rows[0]["width_ci_lower_flips"]) <= float(rows[0]["width_ci_upper_flips"])
    assert rows[0]["note"] == ""
    assert rows[1]["location_ci_lower_flips"] == "1.89" and rows[1]["location_ci_upper_flips"] == "5.2"
    note = ("the logistic location 5.54 lies outside its bootstrap CI [1.89, 5.2]: the refits of the bootstrap "
            "replicates land on one side of it, so the fit is unstable and its location poorly determined "
            "(raise n_boot, or read the crossing instead)")
    assert rows[1]["note"] == note
    lines = report.transition_table(result).splitlines()
    assert lines[3].split(" | ")[5] == "5.5 [1.9, 5.2]" and lines[5] == f"011: {note}"
