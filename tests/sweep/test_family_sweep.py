"""The sweep on the induction checkpoint family trained in this session (fixture ``induction_family``):
the phase change in the in-context loss is located with a CI inside the run, and every other
curve is timed against it (Olsson et al. 2022; Holtzman et al. 2023)."""
from __future__ import annotations

import json

from emergence_fast.cli import main
from tests.tiny_models import one_thread  # noqa: F401 (autouse fixture)

RELATIONS = {"with", "ahead", "after", "smooth", "no transition", "undetermined"}


def test_the_sweep_locates_the_induction_phase_change_and_times_every_metric_against_it(induction_family, tmp_path,
                                                                                        capsys):
    checkpoints = sorted(str(p) for p in induction_family.glob("step-*"))
    out = tmp_path / "sweep"
    assert main(["sweep", "--models", *checkpoints, "--out", str(out), "--quiet", "--n-boot", "200"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "sweep.json").read_text())
    steps = [m["x"] for m in report["models"]]
    assert report["config"]["x"] == "step" and steps == sorted(steps) and len(steps) == len(checkpoints)
    assert report["config"]["values"] == {"induction": [5], "ie": ["all"]}     # the family's defaults
    ref = report["reference"]
    assert (ref["task"], ref["metric"], ref["verdict"]) == ("induction", "in_context_loss", "sharp")
    lo, hi = ref["location_ci"]
    first, last = steps[0], steps[-1]
    assert first < lo <= ref["location"] <= hi < last                       # excludes the first and last checkpoints
    assert hi - lo < (last - first) / 3                                     # narrower than a third of the run
    timed = {(t["task"], t["metric"], json.dumps(t["at"])): t["relation"] for t in report["timing"]}
    assert set(timed.values()) <= RELATIONS
    assert ("ie", "ie", '{"block": 0}') in timed and ("ie", "ie", '{"block": 1}') in timed
    assert ("induction", "next_token_entropy", '{"length": 5}') in timed
    # The in-context loss reduction (first half minus repeat) is the same fall seen from the other side.
    assert timed[("induction", "icl_loss_reduction", '{"length": 5}')] == "with"
    assert "reference: induction:in_context_loss at 5 (sharp)" in printed
    for name in ("curves_induction.png", "curves_ie.png", "sweep.csv", "transitions.csv"):
        assert (out / name).is_file()
