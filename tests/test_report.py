"""Report: atomic JSON/CSV/PNG writers, the --out lock, plots and the summary table, on hand-made IE results (no model)."""
import csv
import json
import math
import os
import socket
import sys
from pathlib import Path

import numpy as np
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
    # numbers or null inside numeric arrays, never strings; the nulls explained at the top level
    expected = [[None if math.isinf(v) else v for v in row] for row in result.macro.tolist()]
    assert loaded["macro"] == expected
    assert loaded["ceiling_macro"] == result.ceiling_macro.tolist()
    if infinite:
        assert loaded["nonfinite"]["values"] == {"/macro/0/1": "inf", "/micro/1/0": "inf",
                                                 **{k: v for k, v in loaded["nonfinite"]["values"].items()
                                                    if not k.startswith(("/macro/", "/micro/"))}}
        assert "null" in loaded["nonfinite"]["note"] and "JSON pointer" in loaded["nonfinite"]["note"]
        assert all(_resolve(loaded, pointer) is None for pointer in loaded["nonfinite"]["values"])
    else:
        assert "nonfinite" not in loaded


def _resolve(document, pointer):
    for part in pointer.split("/")[1:]:
        document = document[int(part)] if isinstance(document, list) else document[part]
    return document


def test_write_json_nulls_nan_and_negative_infinity_and_escapes_pointers(tmp_path):
    path = report.write_json({"a/b": [1.0, float("nan")], "c": {"~d": -math.inf}, "e": np.float32("nan"),
                              "f": torch.tensor([1.5, math.inf])}, tmp_path / "x.json")
    loaded = json.loads(path.read_text())
    assert loaded["a/b"] == [1.0, None] and loaded["c"] == {"~d": None} and loaded["e"] is None
    assert loaded["f"] == [1.5, None]
    assert loaded["nonfinite"]["values"] == {"/a~1b/1": "nan", "/c/~0d": "-inf", "/e": "nan", "/f/1": "inf"}


def test_writer_arguments_are_checked(tmp_path):
    with pytest.raises(TypeError, match="data must be a dict or have to_dict"):
        report.write_json([1, 2], tmp_path / "x.json")
    with pytest.raises(ValueError, match="must not have a top-level key 'nonfinite'"):
        report.write_json({"nonfinite": 1}, tmp_path / "x.json")
    with pytest.raises(ValueError, match="rows must be a non-empty list of dicts"):
        report.write_csv([], tmp_path / "x.csv")
    assert list(tmp_path.iterdir()) == []


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
    shape = result.shape_agreement()
    assert (f"shape vs ceiling: pearson={shape['pearson_with_ceiling']:+.2f}, steps agree at "
            f"{shape['steps_where_ceiling_steps']:.0%} of positions") in table


def test_summary_table_with_infinite_cells():
    table = report.summary_table(make_result(infinite=True))
    assert "inf" in table
    for layer in LAYERS:
        assert any(line.split()[:1] == [str(layer)] for line in table.splitlines())


def test_a_failed_figure_write_leaves_no_temporary_and_the_old_file(tmp_path, monkeypatch):
    """savefig once failed half-way and left ``.tmp.png`` files next to the results."""
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    path = tmp_path / "ie_heatmap.png"
    path.write_bytes(b"old picture")
    fig = plt.figure()

    def broken_savefig(self, fname, **kwargs):
        Path(fname).write_bytes(b"half a png")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="No space left"):
        report.write_figure(fig, path)
    assert path.read_bytes() == b"old picture"
    assert [p.name for p in tmp_path.iterdir()] == ["ie_heatmap.png"]
    assert not plt.fignum_exists(fig.number)  # closed even when the write failed


def test_atomic_write_cleans_up_after_an_interrupt_and_uses_a_name_of_its_own(tmp_path):
    seen = []

    def interrupted(tmp):
        seen.append(tmp)
        tmp.write_text("partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        report.atomic_write(tmp_path / "a.csv", interrupted)
    assert list(tmp_path.iterdir()) == []
    report.atomic_write(tmp_path / "a.csv", lambda tmp: seen.append(tmp) or tmp.write_text("x"))
    assert seen[0] != seen[1] and seen[1].parent == tmp_path and seen[1].suffix == ".csv"
    assert seen[1].name.startswith(".a.")  # hidden while it is written
    assert [p.name for p in tmp_path.iterdir()] == ["a.csv"]


# ---------------------------------------------------------------- the --out folder


def test_output_folder_refuses_a_second_run_naming_the_first(tmp_path):
    first = report.OutputFolder(tmp_path / "runs" / "ie").claim()
    holder = (tmp_path / "runs" / "ie" / report.LOCK_NAME).read_text()
    assert f"pid {os.getpid()} on {socket.gethostname()}, started " in holder
    with pytest.raises(ValueError) as caught:
        report.OutputFolder(tmp_path / "runs" / "ie").claim()
    message = str(caught.value)
    assert message.startswith(f"--out {str(tmp_path / 'runs' / 'ie')!r} is in use by pid {os.getpid()} on ")
    assert message.endswith("; wait for it to finish or choose another --out")
    first.release()
    assert list((tmp_path / "runs" / "ie").iterdir()) == []  # a finished run leaves no lock file
    report.OutputFolder(tmp_path / "runs" / "ie").claim().release()  # free again


def test_output_folder_takes_over_the_lock_of_a_killed_run(tmp_path):
    """The lock of a process that died (SIGKILL: no clean-up ran) must not block the next run."""
    import signal
    import subprocess
    import sys

    out = tmp_path / "out"
    child = subprocess.Popen([sys.executable, "-c", "import sys, time; from emergence_fast.report import OutputFolder; "
                              f"held = OutputFolder({str(out)!r}).claim(); print('locked', flush=True); time.sleep(60)"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(ValueError, match=f"is in use by pid {child.pid} on "):
            report.OutputFolder(out).claim()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert (out / report.LOCK_NAME).exists()  # left behind by the killed run ...
    folder = report.OutputFolder(out).claim()  # ... but held by nobody
    assert f"pid {os.getpid()} " in (out / report.LOCK_NAME).read_text()
    folder.release()


def test_output_folder_after_a_failure_removes_only_what_it_created(tmp_path):
    folder = report.OutputFolder(tmp_path / "a" / "b" / "c").claim()
    folder.release(failed=True)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()
    folder = report.OutputFolder(tmp_path / "kept" / "new").claim()
    (tmp_path / "kept" / "new" / "ie_checkpoint.pt").write_bytes(b"state")  # worth resuming: keep it
    folder.release(failed=True)
    assert [p.name for p in (tmp_path / "kept" / "new").iterdir()] == ["ie_checkpoint.pt"]
    existing = report.OutputFolder(tmp_path / "kept").claim()
    existing.release(failed=True)
    assert (tmp_path / "kept").is_dir()  # it was there before


@pytest.mark.parametrize("where, message", [
    ("file", "--out must be a folder, but {path!r} is a file"),
    ("under-file", "--out must be a folder, but {path!r} lies under the file {parent!r}"),
])
def test_output_folder_refuses_files(tmp_path, where, message):
    (tmp_path / "f").write_text("")
    path = tmp_path / "f" if where == "file" else tmp_path / "f" / "out"
    with pytest.raises(ValueError) as caught:
        report.OutputFolder(path).claim()
    assert str(caught.value) == message.format(path=str(path), parent=str(tmp_path / "f"))


def test_output_folder_that_cannot_be_written_is_refused_before_any_work():
    with pytest.raises(ValueError, match=r"^--out '/proc/self' cannot be written to: "):
        report.OutputFolder("/proc/self").claim()


def test_figures_are_skipped_with_a_note_naming_the_extra_when_matplotlib_is_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    assert report.optional_figures(make_result().plot, tmp_path) == []
    assert capsys.readouterr().err.strip() == ("emergence-fast: note: writing PNGs needs matplotlib, which is not "
                                               "installed: pip install 'emergence_fast[plots]'; figures skipped, "
                                               "every other file written")
    assert list(tmp_path.iterdir()) == []


def test_text_table_aligns_columns_labels_left_numbers_right():
    table = report.text_table([["a", 1.5, "x"], ["long label", 22, ""]], ["name", "v", "note"], left=1)
    assert table == ("name          v  note\n"
                     "----------  ---  ----\n"
                     "a           1.5     x\n"
                     "long label   22      ")


def test_text_table_right_aligns_every_column_by_default():
    assert report.text_table([["a", 1]], ["col", "n"]) == "col  n\n---  -\n  a  1"


def test_text_table_refuses_a_row_of_the_wrong_length():
    with pytest.raises(ValueError, match=r"^every row must have 2 cells \(one per header column\), got lengths \[1, 3\]$"):
        report.text_table([["a"], ["a", 1, 2]], ["col", "n"])
