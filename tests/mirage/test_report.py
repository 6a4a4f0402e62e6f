"""The report: verdicts across metrics, table, files and figure."""
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from emergence_fast.mirage import report as mr
from emergence_fast.mirage.readers import Family, load_family
from tests.mirage.test_curves import ALPHA, LENGTH, SIZES, C, simulated_family


def synthetic_family(n_models=None):
    _, exact, ted = simulated_family(n_test=1500)
    sl = slice(None) if n_models is None else slice(0, n_models)
    n = len(SIZES[sl])
    loss = (SIZES / C) ** ALPHA
    return Family(task="synthetic", models=[f"m{i}" for i in range(n)], params=SIZES[sl].copy(),
                  values={"exact_match": exact[sl], "token_edit_distance": ted[sl]},
                  stderr={"exact_match": np.full(n, np.nan), "token_edit_distance": np.full(n, np.nan)},
                  n_test=np.full(n, 1500.0), sources=["simulated"] * n, loss=loss[sl],
                  target_length=np.full(n, float(LENGTH)), target_lengths=[np.full(4, float(LENGTH))] * n)


def test_sharp_exact_match_over_smooth_edit_distance_is_a_metric_effect(tmp_path):
    report = mr.analyse(synthetic_family(), n_boot=200)
    assert report.verdicts == {"exact_match": "sharp under this metric only", "token_edit_distance": "smooth"}
    assert report.power_law.alpha == pytest.approx(ALPHA) and report.power_law.c == pytest.approx(C)
    assert report.predictions["exact_match"]["comparison"]["max_abs"] < 0.05
    assert report.predictions["token_edit_distance"]["formula"] == "L(1-p)"
    table = report.table()
    assert "sharp under this metric only" in table and "alpha = -0.6000" in table

    paths = [mr.write_json(report, tmp_path / "r.json"), mr.write_csv(report, tmp_path / "r.csv"),
             mr.plot(report, tmp_path / "r.png")]
    data = json.loads(paths[0].read_text())
    assert data["metrics"]["exact_match"]["verdict"] == "sharp under this metric only"
    # every interval names its unit: the power law's c in parameters, the logistic's location in log10(parameters)
    assert data["power_law"]["units"]["c_ci"] == "parameters" and "] parameters, R^2" in table
    assert data["metrics"]["exact_match"]["statistics"]["transition"]["logistic"]["units"]["location_ci"] == \
        "log10(parameters)"
    assert data["metrics"]["exact_match"]["values"] == pytest.approx(report.curves["exact_match"].values.tolist())
    with open(paths[1]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * len(SIZES) and rows[0]["metric"] == "exact_match"
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob("*.tmp"))


def test_verdict_wording():
    def stats(verdict):
        return type("S", (), {"verdict": verdict})()
    assert mr._verdicts({"a": stats("sharp"), "b": stats("sharp")}) == {"a": "sharp under all", "b": "sharp under all"}
    assert mr._verdicts({"a": stats("sharp"), "b": stats("smooth"), "c": stats("undetermined")}) == {
        "a": "sharp under this metric only", "b": "smooth", "c": "undetermined"}
    assert mr._verdicts({"a": stats("sharp"), "b": stats("sharp"), "c": stats("smooth")})["a"] == \
        "sharp under 2 of 3 metrics"
    # "no transition" is decided (it counts against "sharp under all") and keeps its own name
    assert mr._verdicts({"a": stats("sharp"), "b": stats("no transition")}) == {
        "a": "sharp under this metric only", "b": "no transition"}


def test_a_family_of_two_is_reported_not_crashed():
    report = mr.analyse(synthetic_family(n_models=2), n_boot=50)
    assert set(report.verdicts.values()) == {"undetermined"}
    assert all(math.isnan(s.emergence_score) for s in report.stats.values())
    assert any("only 2 model(s)" in n for n in report.notes)
    assert "undetermined" in report.table()


def test_point_intervals_come_from_examples_when_available():
    family = synthetic_family(n_models=3)
    rng = np.random.default_rng(0)
    family.per_example = {"exact_match": [rng.binomial(1, v, 400).astype(float) for v in (0.1, 0.5, 0.9)],
                          "token_edit_distance": [rng.poisson(v, 400).astype(float) for v in (3.0, 1.0, 0.2)]}
    family.values = {k: np.array([v.mean() for v in vs]) for k, vs in family.per_example.items()}
    report = mr.analyse(family, n_boot=300)
    curve = report.curves["exact_match"]
    assert "bootstrap" in curve.interval
    assert np.all(curve.lo < curve.values) and np.all(curve.values < curve.hi)
    se = np.sqrt(curve.values * (1 - curve.values) / 400)
    np.testing.assert_allclose(curve.hi - curve.lo, 2 * 1.96 * se, rtol=0.2)


def test_the_issue_jump_is_reported_sharp_with_its_bracket_in_the_table_and_files(tmp_path):
    from tests.mirage.test_curves import JUMP, JUMP_SE, PYTHIA
    n = len(PYTHIA)
    family = Family(task="jump", models=[f"m{i}" for i in range(n)], params=PYTHIA.copy(),
                    values={"exact_match": JUMP.copy()}, stderr={"exact_match": JUMP_SE.copy()},
                    n_test=np.full(n, 200.0), sources=["synthetic"] * n)
    report = mr.analyse(family, n_boot=100)
    assert report.verdicts == {"exact_match": "sharp under all"}
    row = next(line for line in report.table().splitlines() if line.strip().startswith("exact_match  "))
    assert "between 6.86e+09 and 1.18e+10" in row and "<= 0.24" in row and row.endswith("sharp under all")
    mr.write_csv(report, tmp_path / "r.csv")
    with open(tmp_path / "r.csv") as f:
        first = next(csv.DictReader(f))
    assert float(first["transition_bracket_lo_params"]) == 6_857_302_016
    assert float(first["transition_width_bound_log10_params"]) == pytest.approx(0.2374, abs=1e-4)
    assert first["transition_verdict"] == "sharp" and "transition_location_params" in first


def test_live_runs_take_their_noise_from_the_examples():
    # an edit distance that wanders by 0.15 with a per-example spread of 1 over 50 examples: noise, no transition
    rng = np.random.default_rng(0)
    per_example = [rng.normal(0, 1, 50) for _ in range(3)]
    per_example = [v - v.mean() + m for v, m in zip(per_example, (3.0, 2.85, 2.95))]
    family = Family(task="live", models=["a", "b", "c"], params=np.array([1e8, 4e8, 1.6e9]),
                    values={"token_edit_distance": np.array([3.0, 2.85, 2.95])},
                    stderr={"token_edit_distance": np.full(3, np.nan)}, n_test=np.full(3, 50.0),
                    sources=["live"] * 3, per_example={"token_edit_distance": per_example})
    report = mr.analyse(family, n_boot=50)
    amplitude = report.stats["token_edit_distance"].transition.amplitude
    assert amplitude.noise_threshold == pytest.approx(3 * math.hypot(*[np.std(per_example[i], ddof=1) / math.sqrt(50)
                                                                      for i in (0, 1)]))
    assert report.verdicts == {"token_edit_distance": "no transition"}


# ---------------------------------------------------------------------------------------------
# the README's mirage examples, on the files they name, with the verdicts the README shows

README_PYTHIA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "pythia-lm-eval"
needs_readme_data = pytest.mark.skipif(not README_PYTHIA.is_dir(), reason=f"no Pythia files at {README_PYTHIA}")


@needs_readme_data
def test_readme_eight_model_lambada_example():
    family = load_family(sorted(README_PYTHIA.glob("*.json")), "lambada_openai", "acc,ppl")
    report = mr.analyse(family, n_boot=2000)
    assert report.verdicts == {"acc": "smooth", "ppl": "smooth", "p_target": "smooth"}
    fit = report.stats["acc"].transition.logistic
    assert fit.location_ci == pytest.approx((7.82, 8.37), abs=0.005) and fit.units()["location_ci"] == "log10(parameters)"
    location, lo, hi = report.stats["acc"].location_x()
    assert (location, lo, hi) == pytest.approx((8.55e7, 6.6e7, 2.32e8), rel=0.01)


@needs_readme_data
def test_readme_three_model_examples():
    def files(*sizes):
        return [README_PYTHIA / f"pythia-{s}_zero-shot_step143000.json" for s in sizes]
    report = mr.analyse(load_family(files("410m", "1b", "1.4b"), "sciq", "acc,acc_norm"), n_boot=1000)
    # acc_norm 0.721, 0.836, 0.794: the middle model above both ends is not a one-step rise (issue #13)
    assert report.verdicts == {"acc": "sharp under all", "acc_norm": "undetermined"}
    assert report.stats["acc"].bracket_x() == (405_334_016, 1_011_781_632)
    table = report.table()
    assert "between 4.05e+08 and 1.01e+09           <= 0.4  sharp under all" in table
    later = mr.analyse(load_family(files("1b", "1.4b", "2.8b"), "sciq", "acc,acc_norm"), n_boot=1000)
    assert later.verdicts == {"acc": "no transition", "acc_norm": "no transition"}


def test_live_metric_with_a_zero_stderr_point_is_not_called_sharp():
    # issue #13: live token_edit_distance 2.375, 2.625, 2.0 on 8 examples, the last all 2.0 (std 0),
    # was "sharp under this metric only" because the zero stderr switched the amplitude rule off
    per_example = {"token_edit_distance": [np.array([2, 3, 2, 3, 2, 2, 3, 2.0]), np.array([2, 3, 3, 3, 2, 3, 2, 3.0]),
                                           np.full(8, 2.0)]}
    family = Family(task="live", models=["g2", "g3", "g4"], params=np.array([5e4, 6e4, 7.35e4]),
                    values={"token_edit_distance": np.array([v.mean() for v in per_example["token_edit_distance"]])},
                    stderr={"token_edit_distance": np.full(3, np.nan)}, n_test=np.full(3, 8.0), sources=["x"] * 3,
                    per_example=per_example)
    stats = mr.analyse(family, n_boot=20).stats["token_edit_distance"]
    assert stats.transition.amplitude.noise_threshold == pytest.approx(3 * np.std(
        per_example["token_edit_distance"][1], ddof=1) / math.sqrt(8))
    assert stats.transition.amplitude.passed is True     # 0.625 is above 3 se, but the middle point is the worst
    assert stats.verdict == "undetermined" and math.isnan(stats.bracket_x()[0])


@pytest.mark.parametrize("metric, scores, verdict", [
    ("acc", (0.8, 0.8, 0.2), "sharp drop"), ("acc", (0.2, 0.2, 0.8), "sharp under all"),
    ("ppl", (5.0, 5.0, 50.0), "sharp drop"), ("ppl", (50.0, 50.0, 5.0), "sharp under all")])
def test_a_metric_that_gets_worse_in_one_step_is_a_sharp_drop(tmp_path, metric, scores, verdict):
    rows = "".join(f"{m},{p},{metric},{s},0.01\n" for m, p, s in zip("abc", ("1e8", "1e9", "1e10"), scores))
    (tmp_path / "f.csv").write_text("model,params,metric,score,stderr\n" + rows)
    report = mr.analyse(load_family([tmp_path / "f.csv"], None, metric), n_boot=20)
    assert report.verdicts[metric] == verdict and report.stats[metric].bracket_x() == (1e9, 1e10)
    change = "fall" if verdict == "sharp drop" else "rise"
    assert f"the whole {change} happens between x=1e+09 and x=1e+10" in report.table()
    assert "between 1e+09 and 1e+10" in report.table()
