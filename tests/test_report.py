"""Report: atomic JSON/CSV files, plots, and the summary table, on hand-made IE results (no model)."""
import csv
import json
import math

import pytest
import torch

from emergence_fast import report
from emergence_fast.emergence import IEResult

LAYERS = [0, 5, 11]
T = 4


def make_result(layers=LAYERS, seq_len=T, infinite=False, seed=0) -> IEResult:
    generator = torch.Generator().manual_seed(seed)

    def table():
        return torch.rand(len(layers), seq_len, generator=generator, dtype=torch.float64) * 5

    macro, micro = table(), table()
    if infinite:
        macro[0, 1] = math.inf
        micro[1, 0] = math.inf
    running = micro.cumsum(-1) / torch.arange(1, seq_len + 1, dtype=torch.float64)
    ceiling_macro = torch.linspace(1, 3, seq_len, dtype=torch.float64)
    ceiling_micro = torch.full((seq_len,), 1.0, dtype=torch.float64)
    return IEResult(
        layers=list(layers), positions=list(range(seq_len)), unit="bits", macro=macro, micro=micro,
        emergence=macro - running, macro_stderr=table() / 10, micro_stderr=table() / 10,
        emergence_stderr=table() / 10, macro_expected_bias=table() / 100, micro_expected_bias=table() / 100,
        ceiling_macro=ceiling_macro, ceiling_micro=ceiling_micro,
        ceiling_emergence=ceiling_macro - ceiling_micro,
        config={"n_samples": 300, "seq_len": seq_len, "estimator": "gaussian",
                "estimator_options": {"pca": 4, "bias_correction": "wishart"}, "layers": list(layers)},
        provenance={"timings": {"macro_pass_s": 0.5}}, notes=["a note", "another note"])


def _no_leftovers(folder):
    assert not [p.name for p in folder.iterdir() if ".tmp" in p.name]


@pytest.mark.parametrize("infinite", [False, True])
def test_write_json_round_trips_and_leaves_no_temporary(tmp_path, infinite):
    result = make_result(infinite=infinite)
    path = report.write_json(result, str(tmp_path / "ie.json"))
    assert path == tmp_path / "ie.json"
    _no_leftovers(tmp_path)
    text = path.read_text()
    loaded = json.loads(text, parse_constant=lambda name: pytest.fail(f"non-standard JSON constant {name}"))
    assert loaded["layers"] == LAYERS and loaded["unit"] == "bits" and loaded["notes"] == result.notes
    expected = [["inf" if math.isinf(v) else v for v in row] for row in result.macro.tolist()]
    assert loaded["macro"] == expected
    assert loaded["ceiling_macro"] == result.ceiling_macro.tolist()
    assert ("inf" in text) == infinite


def test_write_json_overwrites_atomically(tmp_path, monkeypatch):
    path = tmp_path / "ie.json"
    report.write_json(make_result(seed=1), path)
    report.write_json(make_result(seed=2), path)  # replaces an existing file
    assert json.loads(path.read_text())["macro"] == make_result(seed=2).macro.tolist()
    _no_leftovers(tmp_path)
    before = path.read_bytes()
    broken = make_result()
    monkeypatch.setattr(broken, "to_dict", lambda: {"bad": object()}, raising=False)
    with pytest.raises(TypeError):
        report.write_json(broken, path)
    assert path.read_bytes() == before  # a failed write leaves the old file whole
    _no_leftovers(tmp_path)


@pytest.mark.parametrize("infinite", [False, True])
def test_write_csv_has_one_row_per_cell_and_no_temporary(tmp_path, infinite):
    result = make_result(infinite=infinite)
    path = report.write_csv(result, tmp_path / "ie.csv")
    assert path == tmp_path / "ie.csv"
    _no_leftovers(tmp_path)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    expected = result.to_rows()
    assert len(rows) == len(LAYERS) * T == len(expected)
    assert list(rows[0]) == list(expected[0])
    for got, want in zip(rows, expected):
        assert int(got["layer"]) == want["layer"] and int(got["position"]) == want["position"]
        assert got["unit"] == "bits"
        for key in ("macro", "micro", "emergence", "ceiling_macro", "emergence_stderr"):
            assert float(got[key]) == want[key]  # repr round-trips floats, inf included


def test_write_csv_overwrites_an_existing_file(tmp_path):
    path = tmp_path / "ie.csv"
    path.write_text("old contents\n" * 100)
    report.write_csv(make_result(), path)
    assert path.read_text().startswith("layer,position,unit,macro")
    _no_leftovers(tmp_path)


@pytest.mark.parametrize("infinite", [False, True])
def test_plot_result_writes_two_png_files(tmp_path, infinite):
    pytest.importorskip("matplotlib")
    out = tmp_path / "plots" / "nested"  # created when missing
    paths = make_result(infinite=infinite).plot(out)
    assert [p.name for p in paths] == ["ie_heatmap.png", "ie_positions.png"]
    for path in paths:
        assert path.parent == out and path.stat().st_size > 1000
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_result_with_chosen_layers_and_one_position(tmp_path):
    pytest.importorskip("matplotlib")
    paths = report.plot_result(make_result(layers=[3], seq_len=1), tmp_path, layers=[3])
    assert all(p.stat().st_size > 1000 for p in paths)
    paths = report.plot_result(make_result(), tmp_path / "b", layers=[11])
    assert len(paths) == 2


def test_summary_table_mentions_every_layer(tmp_path):
    result = make_result()
    table = report.summary_table(result)
    lines = table.splitlines()
    assert "bits" in lines[0] and "300 samples" in lines[0] and "gaussian" in lines[0]
    summary = result.layer_summary()
    for layer, mean_e in zip(LAYERS, summary["mean_emergence"]):
        rows = [line for line in lines if line.split() and line.split()[0] == str(layer)]
        assert len(rows) == 1
        assert float(rows[0].split()[1]) == pytest.approx(mean_e, abs=5e-4)
    assert f"peak block: {summary['peak_layer']}" in table
    assert "note: a note" in table and "note: another note" in table
    assert "[1.00, 1.67, 2.33, 3.00]" in table  # the ceiling by position


def test_summary_table_with_infinite_cells():
    table = report.summary_table(make_result(infinite=True))
    assert "inf" in table
    for layer in LAYERS:
        assert any(line.split()[:1] == [str(layer)] for line in table.splitlines())
