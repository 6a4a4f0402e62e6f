"""The sweep on tiny random models: grid bookkeeping, one load per model, resume, equality with the
single-run functions, bad input, the CLI, and 2 gloo ranks under torchrun."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from emergence_fast.sweep import run_sweep, summary_table, write_report
from emergence_fast.sweep.store import FILE
from emergence_fast.sweep.tasks import Settings, entity_examples, induction_ids
from tests.mirage.tiny import char_tokenizer, tiny_gpt2
from tests.tiny_models import one_thread  # noqa: F401 (autouse fixture)

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"n_examples": 6, "batch_size": 4, "n_boot": 10}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Three tiny GPT-2s of growing width on one character tokenizer with BOS, saved as HF folders."""
    root = tmp_path_factory.mktemp("models")
    tok = char_tokenizer(bos=True)
    paths = []
    for i, width in enumerate((16, 24, 32)):
        path = root / f"w{width}"
        tiny_gpt2(width=width, seed=i, vocab=len(tok)).save_pretrained(path)
        tok.save_pretrained(path)
        paths.append(str(path))
    return paths


class CountingLoader:
    def __init__(self, fail_on=None):
        self.calls, self.fail_on = [], fail_on

    def __call__(self, spec):
        from emergence_fast.models import load_model

        if spec.label == self.fail_on:
            raise KeyboardInterrupt  # a kill between units
        self.calls.append(spec.label)
        return load_model(spec.source)


def test_every_cell_once_in_declared_order_one_load_per_model(folders):
    loader = CountingLoader()
    order = [folders[2], folders[0], folders[1]]
    result = run_sweep(order, ["arithmetic-2d-mult", "induction"], values={"arithmetic-2d-mult": [0, 1],
                       "induction": [2, 4, 6]}, loader=loader, x="index", **SMALL)
    assert loader.calls == ["w32", "w16", "w24"]           # one load per model, declared order
    cells = [(r["model"], r["task"], r["axis_value"], r["metric"]) for r in result.rows]
    assert len(cells) == len(set(cells))                    # every cell once
    expected = {(m, "arithmetic-2d-mult", v, k) for m in ("w32", "w16", "w24") for v in (0, 1)
                for k in ("exact_match", "token_edit_distance", "target_log_prob", "token_prob", "next_token_entropy")}
    expected |= {(m, "induction", v, k) for m in ("w32", "w16", "w24") for v in (2, 4, 6)
                 for k in ("in_context_loss", "first_half_loss", "icl_loss_reduction", "repeat_token_accuracy",
                           "repeat_exact_match", "next_token_entropy")}
    assert set(cells) == expected
    assert [m["label"] for m in result.models] == ["w32", "w16", "w24"]
    assert [m["x"] for m in result.models] == [0.0, 1.0, 2.0]
    assert {r["model"]: r["model_index"] for r in result.rows} == {"w32": 0, "w16": 1, "w24": 2}
    # Curves: along models for every (task, value, metric); along the induction axis (3 values) per model.
    along = {(t["direction"], t["task"]) for t in result.transitions}
    assert along == {("models", "arithmetic-2d-mult"), ("models", "induction"), ("length", "induction")}
    assert sum(t["direction"] == "length" for t in result.transitions) == 3 * 6
    assert "no curves along the axis of arithmetic-2d-mult: fewer than 3 values" in result.notes


def test_resume_after_a_kill_skips_done_units_and_equals_an_uninterrupted_run(folders, tmp_path):
    kw = dict(tasks=["induction"], values={"induction": [2, 4]}, x="index", **SMALL)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(folders, out=tmp_path, loader=CountingLoader(fail_on="w32"), **kw)
    lines = (tmp_path / FILE).read_text().splitlines()
    assert [json.loads(line)["model"] for line in lines] == ["w16", "w24"]
    # A kill in the middle of a write leaves a cut line: it is ignored, and the next line starts fresh.
    with open(tmp_path / FILE, "a") as f:
        f.write('{"key": "abc", "cells": {')
    again = CountingLoader()
    resumed = run_sweep(folders, out=tmp_path, loader=again, **kw)
    assert again.calls == ["w32"]                           # only the model with a missing unit loads
    assert resumed.provenance["units_evaluated_this_run"] == 1
    assert resumed.provenance["units_from_earlier_runs"] == 2
    whole = run_sweep(folders, loader=CountingLoader(), **kw)
    assert resumed.rows == whole.rows
    records = [json.loads(line) for line in (tmp_path / FILE).read_text().splitlines()]  # the cut line is gone
    assert [r["model"] for r in records] == ["w16", "w24", "w32"]
    done = CountingLoader()
    run_sweep(folders, out=tmp_path, loader=done, **kw)
    assert done.calls == []                                  # nothing left: no model loads
    # A changed setting is new work for every model.
    changed = CountingLoader()
    run_sweep(folders, out=tmp_path, loader=changed, **{**kw, "n_examples": 5})
    assert changed.calls == ["w16", "w24", "w32"]


def test_a_corrupt_line_that_is_not_the_last_is_an_error(folders, tmp_path):
    (tmp_path / FILE).write_text('not json\n{"key": "x"}\n')
    with pytest.raises(ValueError, match=rf"{FILE}:1 is not a sweep unit record"):
        run_sweep(folders[:1], ["induction"], out=tmp_path, values={"induction": [2]}, **SMALL)


def test_cells_equal_the_single_run_functions(folders):
    """The sweep's table against score_targets, the multiple-choice metrics, tree_curves, a direct
    induction computation and information_emergence, run alone on the same model and examples."""
    from emergence_fast import information_emergence
    from emergence_fast.icl.concepts import tree_curves
    from emergence_fast.mirage import metrics as mm
    from emergence_fast.mirage.scoring import score_choices, score_targets
    from emergence_fast.mirage.tasks import arithmetic_task
    from emergence_fast.models import load_model

    result = run_sweep(folders[:2], ["arithmetic-4d-add", "entity-colors", "induction", "ie"],
                       values={"arithmetic-4d-add": [1], "entity-colors": [2], "induction": [3], "ie": [0, 1]},
                       ie_samples=40, ie_dataset="induction:3", x="index", ie_estimator="gaussian", **SMALL)
    value = {(r["model"], r["task"], r["axis_value"], r["metric"]): r for r in result.rows}
    model, tok = load_model(folders[1])
    label = Path(folders[1]).name
    ex = arithmetic_task("arithmetic-4d-add", 6, shots=1, seed=0)
    scored = score_targets(model, tok, ex.prompts, ex.targets, batch_size=4)
    m = scored.metrics()
    assert value[(label, "arithmetic-4d-add", 1, "exact_match")]["value"] == m["exact_match"].mean()
    assert value[(label, "arithmetic-4d-add", 1, "target_log_prob")]["value"] == pytest.approx(m["loglik"].mean(), 1e-12)
    se = m["token_edit_distance"].std(ddof=1) / math.sqrt(6)
    assert value[(label, "arithmetic-4d-add", 1, "token_edit_distance")]["stderr"] == pytest.approx(se, 1e-12)
    prompts, options, correct = entity_examples("colors", 2, 6, 0)
    choices = score_choices(model, tok, prompts, options, batch_size=4)
    assert value[(label, "entity-colors", 2, "mc_grade")]["value"] == pytest.approx(
        mm.multiple_choice_grade(choices.option_log_probs, correct).mean(), 1e-12)
    assert value[(label, "entity-colors", 2, "brier")]["value"] == pytest.approx(
        mm.brier_score(choices.option_log_probs, correct).mean(), 1e-9)
    # Induction by hand, float64 throughout: [BOS] r r, losses on r_2..r_L and r_2'..r_L'.
    ids = induction_ids(tok, 3, 6, 0, model)
    assert ids.shape == (6, 7) and (ids[:, 0] == tok.bos_token_id).all() and (ids[:, 1:4] == ids[:, 4:]).all()
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits.double(), -1)
    nll = -logp[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]
    first, second = nll[:, 1:3].mean(1), nll[:, 4:6].mean(1)
    assert value[(label, "induction", 3, "in_context_loss")]["value"] == pytest.approx(float(second.mean()), 1e-5)
    assert value[(label, "induction", 3, "first_half_loss")]["value"] == pytest.approx(float(first.mean()), 1e-5)
    assert value[(label, "induction", 3, "icl_loss_reduction")]["value"] == pytest.approx(
        float((first - second).mean()), 1e-5)
    ie = information_emergence(model, tok, induction_ids(tok, 3, 40, 0, model), estimator="gaussian", batch_size=4)
    for block in (0, 1):
        assert value[(label, "ie", block, "ie")]["value"] == pytest.approx(float(ie.emergence[block].mean()), 1e-12)
    # binary-concepts needs 'h'/'t' tokens this character tokenizer has: P(concept) per length, mean over concepts.
    coin = run_sweep(folders[:1], ["binary-concepts"], values={"binary-concepts": [1, 2, 3]}, depth=2, **SMALL)
    model0, tok0 = load_model(folders[0])
    curves = tree_curves(model0, tok0, ["01", "011"], max_len=3, depth=2, batch_size=4, n_boot=1)
    got = {r["axis_value"]: r["value"] for r in coin.rows if r["metric"] == "p_concept"}
    assert got == {n: pytest.approx(float(np.mean([c.value[n - 1] for c in curves.curves])), 1e-12) for n in (1, 2, 3)}


def test_models_with_different_tokenizers_are_allowed_and_said(folders, tmp_path):
    other = tmp_path / "nobos"
    tok = char_tokenizer(bos=False)
    tiny_gpt2(width=16, seed=5, vocab=len(tok) + 3).save_pretrained(other)
    tok.add_tokens(["<x>", "<y>", "<z>"])
    tok.save_pretrained(other)
    result = run_sweep([folders[0], str(other)], ["induction"], values={"induction": [2]}, x="index", **SMALL)
    assert any("2 different tokenizers (w16; nobos)" in n for n in result.notes)


def test_bad_input_is_refused_with_the_argument_named(folders, tmp_path):
    def refused(match, *args, **kwargs):
        with pytest.raises(ValueError, match=match):
            run_sweep(*args, **{**SMALL, **kwargs})

    refused(r"^values\['induction'\]: the length axis is empty", folders[:1], ["induction"], values={"induction": []})
    refused(r"^tasks: unknown task 'inductin'; known: arithmetic-2d-mult", folders[:1], ["inductin"])
    refused(r"^tasks: the list is empty", folders[:1], [])
    refused(r"^metrics: \['accuracy'\] are measured by no task", folders[:1], ["induction"], metrics=["accuracy"])
    refused(r"^reference: 'induction' has no metric 'loss'", folders[:2], ["induction"], reference="induction:loss",
            values={"induction": [2]}, x="index")
    refused(r"^models: the folder '.*' holds no model \(no config.json", [str(tmp_path)])
    refused(r"^models: each model once; named more than once: w16 and w16", [folders[0], folders[0]])
    refused(r"^x='step' needs every model's training step; none is recorded for \['w16'\]", folders[:1], x="step")
    refused(r"^x_values must give one number per model \(2\)", folders[:2], x="values", x_values=[1.0])
    refused(r"^values: \['ie'\] are not tasks of this sweep", folders[:1], ["induction"], values={"ie": [0]})
    # Checkpoints with equal parameter counts cannot be placed by params.
    twin = tmp_path / "twin"
    tok = char_tokenizer(bos=True)
    tiny_gpt2(width=16, seed=9, vocab=len(tok)).save_pretrained(twin)
    tok.save_pretrained(twin)
    refused(r"^x='params': models \['w16', 'twin'\] share the x value", [folders[0], str(twin)], ["induction"],
            values={"induction": [2]}, x="params")


def test_unknown_revision_and_uncached_hub_id(tmp_path):
    """A hub-style cache built by hand (refs/<revision> -> snapshot), read with no network."""
    script = f"""
import os, sys
sys.path.insert(0, {str(ROOT)!r})
from tests.mirage.tiny import char_tokenizer, tiny_gpt2
cache = os.environ["HF_HUB_CACHE"]
repo = os.path.join(cache, "models--org--tiny")
for rev, sha in (("main", "a" * 40), ("step1", "b" * 40), ("step2", "c" * 40)):
    snap = os.path.join(repo, "snapshots", sha)
    tok = char_tokenizer(bos=True)
    tiny_gpt2(width=16, seed=len(rev), vocab=len(tok)).save_pretrained(snap)
    tok.save_pretrained(snap)
    os.makedirs(os.path.join(repo, "refs"), exist_ok=True)
    open(os.path.join(repo, "refs", rev), "w").write(sha)
from emergence_fast.sweep import run_sweep
r = run_sweep(["org/tiny@step1", "org/tiny@step2"], ["induction"], values={{"induction": [2]}}, n_examples=4, n_boot=5)
print("X", [m["x"] for m in r.models], r.config["x"])
from emergence_fast.cli import main
sys.exit(main(["sweep", "--models", "org/tiny@step1", "org/tiny@step9", "--tasks", "induction", "--lengths", "2",
               "--n-examples", "4", "--out", {str(tmp_path / 'out')!r}, "--quiet"]))
"""
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300, check=False)
    assert "X [1.0, 2.0] step" in done.stdout, done.stderr[-2000:]
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last == ("emergence-fast sweep: error: --models: 'org/tiny' at revision 'step9' is not in the local Hugging "
                    "Face cache (no config.json), and emergence_fast never downloads at run time; check the id and "
                    "the revision")
    assert not (tmp_path / "out" / FILE).exists()


def test_cli_writes_the_report_and_refuses_bad_flags(folders, tmp_path, capsys):
    from emergence_fast.cli import main

    out = tmp_path / "sweep"
    args = ["sweep", "--models", *folders, "--tasks", "induction", "entity-animals", "--lengths", "2", "3", "4",
            "--shots", "1", "2", "--x", "index", "--n-examples", "4", "--n-boot", "5", "--out", str(out), "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "vs reference" in printed and "reference: induction:in_context_loss at 2" in printed
    for name in ("sweep.json", "sweep.csv", "transitions.csv", "units.jsonl", "curves_induction.png", "axis_induction.png",
                 "heatmap_induction.png", "heatmap_entity-animals.png"):
        assert (out / name).is_file(), name
    report = json.loads((out / "sweep.json").read_text())
    assert [m["label"] for m in report["models"]] == ["w16", "w24", "w32"]
    assert report["config"]["values"] == {"induction": [2, 3, 4], "entity-animals": [1, 2]}
    rows = (out / "sweep.csv").read_text().splitlines()
    assert len(rows) == 1 + 3 * (3 * 6 + 2 * 4)
    for flags, message in (
            (["--lengths", "1"], "--lengths of induction must be an integer >= 2, got 1"),
            (["--tasks", "arithmetic-2d-mult", "entity-animals", "--shots", "0", "1"],
             "--shots of entity-animals must be an integer >= 1, got 0"),
            (["--blocks", "0"], "--blocks: no task of this sweep (induction) has a block axis"),
            (["--n-examples", "0"], "--n-examples must be"),
            (["--metrics", "acc"], "--metrics: ['acc'] are measured by no task of this sweep"),
            (["--x-values", "1", "2"], "--x-values needs --x values"),
            (["--x", "index", "--log-x", "yes"], "--log-x needs every model's x (index) > 0; it is <= 0 for ['w16']")):
        code = main(["sweep", "--models", folders[0], "--tasks", "induction", "--out", str(tmp_path / "bad"),
                     *flags])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and message in err, err
        assert not (tmp_path / "bad").exists()


def test_report_files_round_trip(folders, tmp_path):
    result = run_sweep(folders, ["induction"], values={"induction": [2, 3, 4]}, x="values", x_values=[10, 100, 1000],
                       log_x=True, **SMALL)
    write_report(result, tmp_path)
    import csv

    with open(tmp_path / "sweep.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(result.rows)
    assert {float(r["x"]) for r in table} == {10.0, 100.0, 1000.0}
    data = json.loads((tmp_path / "sweep.json").read_text())
    t = data["transitions"][0]
    assert set(t) >= {"direction", "task", "metric", "verdict", "location", "location_ci", "width", "width_ci"}
    assert t["width_unit"] == "log10(x)" and data["config"]["log_x"] is True
    assert "reference: induction:in_context_loss at 2" in summary_table(result)


def test_torchrun_two_ranks_equal_one_process(folders, tmp_path):
    common = ["--models", *folders[:2], "--tasks", "induction", "arithmetic-2d-mult", "--lengths", "2", "3",
              "--shots", "0", "1", "--x", "index", "--n-examples", "5", "--batch-size", "2", "--n-boot", "5", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    single = subprocess.run([sys.executable, "-m", "emergence_fast.cli", "sweep", *common, "--out", str(tmp_path / "one")],
                            env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert single.returncode == 0, single.stderr[-2000:]
    dist = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                           "emergence_fast.cli", "sweep", *common, "--out", str(tmp_path / "two")],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert dist.returncode == 0, dist.stderr[-3000:]
    assert dist.stdout.count("wrote ") == 1                  # rank 0 alone writes and prints
    assert (tmp_path / "one" / "sweep.csv").read_text() == (tmp_path / "two" / "sweep.csv").read_text()


def test_settings_are_part_of_the_cell_identity():
    from emergence_fast.sweep.grid import ModelSpec, unit_key
    from emergence_fast.sweep.tasks import get

    spec = ModelSpec("/m", label="m")
    task = get("induction")
    a = unit_key(spec, "induction", (2,), Settings().for_task(task))
    assert a == unit_key(spec, "induction", (2,), Settings(depth=7).for_task(task))  # induction does not read depth
    assert a != unit_key(spec, "induction", (2,), Settings(seed=1).for_task(task))
    assert a != unit_key(spec, "induction", (3,), Settings().for_task(task))


def test_reference_and_x_values_refused_before_any_model_is_loaded(folders):
    """A typo in reference or x_values is found before the work, not after the last unit."""
    loader = CountingLoader()
    with pytest.raises(ValueError, match=r"^reference: 'ie' is not a task of this sweep \(induction\)"):
        run_sweep(folders[:2], ["induction"], values={"induction": [2]}, x="index", reference="ie:ie_mean",
                  loader=loader, **SMALL)
    with pytest.raises(ValueError, match=r"^x_values must be finite numbers, got \[1.0, nan\]"):
        run_sweep(folders[:2], ["induction"], values={"induction": [2]}, x="values", x_values=[1.0, math.nan],
                  loader=loader, **SMALL)
    with pytest.raises(ValueError, match=r"^x='values': models \['w16', 'w24'\] share the x value 3; curves need one "
                                         r"x per model \(another x: 'step', 'params', 'index'\)$"):
        run_sweep(folders[:2], ["induction"], values={"induction": [2]}, x="values", x_values=[3, 3],
                  loader=loader, **SMALL)
    assert loader.calls == []


def test_figures_draw_only_the_kept_metrics(folders, tmp_path, monkeypatch):
    """With metrics=, a figure has one panel per kept metric, not empty panels for the others."""
    from emergence_fast.sweep import report

    titles = {}

    def capture(fig, path):
        titles[Path(path).name] = [ax.get_title() for ax in fig.axes if ax.get_title()]
        return Path(path)

    monkeypatch.setattr(report, "write_figure", capture)
    result = run_sweep(folders[:2], ["induction"], values={"induction": [2, 3]}, x="index",
                       metrics=["in_context_loss", "repeat_exact_match"], **SMALL)
    report.plot(result, tmp_path)
    assert titles == {name: ["in_context_loss (continuous)", "repeat_exact_match (thresholded)"]
                      for name in ("axis_induction.png", "curves_induction.png")} | {
        "heatmap_induction.png": ["in_context_loss", "repeat_exact_match"]}


def test_gguf_refusals_come_before_any_model_is_loaded(folders, tmp_path):
    """A file that is not GGUF, or a folder of GGUF files, is refused while parsing, not at its load."""
    (tmp_path / "fake.gguf").write_bytes(b"not a model")
    (tmp_path / "ggufs").mkdir()
    (tmp_path / "ggufs" / "m.gguf").write_bytes(b"GGUF")
    loader = CountingLoader()
    with pytest.raises(ValueError, match=r"^models: '.*fake.gguf' does not start with the GGUF magic bytes, so it is "
                                         r"not a GGUF file$"):
        run_sweep([folders[0], str(tmp_path / "fake.gguf")], ["induction"], loader=loader, **SMALL)
    folder = str(tmp_path / "ggufs")
    with pytest.raises(ValueError) as caught:
        run_sweep([folders[0], folder], ["induction"], loader=loader, **SMALL)
    assert str(caught.value) == (f"models: the folder {folder!r} holds no config.json but GGUF files ['m.gguf']: name "
                                 f"the file instead, e.g. {os.path.join(folder, 'm.gguf')!r}")
    assert loader.calls == []


def test_an_axis_value_the_model_cannot_run_keeps_the_others(folders):
    """A length over the model's reach drops that length only, with a note, not the whole unit."""
    result = run_sweep(folders[:2], ["induction"], values={"induction": [2, 3, 500]}, x="index", **SMALL)
    alone = run_sweep(folders[:2], ["induction"], values={"induction": [2, 3]}, x="index", **SMALL)
    assert result.rows == alone.rows
    note = [n for n in result.notes if n.startswith("induction does not apply to")]
    assert note == [("induction does not apply to w16, w24 at length 500 (induction length 500 needs 1001 positions, "
                     "over the model's 256)")], result.notes
    assert [t["at"] for t in result.transitions if t["metric"] == "in_context_loss" and t["direction"] == "models"] \
        == [{"length": 2}, {"length": 3}]


def test_printed_table_names_the_reference_row_only(folders):
    """'reference' marks the reference curve's row; with no reference curve no row claims to be it."""
    result = run_sweep(folders, ["induction"], values={"induction": [2, 3]}, x="index", **SMALL)
    rows = [line.split() for line in summary_table(result).splitlines() if line.startswith("induction")]
    marked = [(r[1], r[2]) for r in rows if r[-1] == "reference"]
    assert marked == [("length=2", "in_context_loss")]
    result.reference, result.timing = {"task": "induction", "value": 9, "metric": "in_context_loss", "found": False}, []
    rows = [line.split() for line in summary_table(result).splitlines() if line.startswith("induction")]
    assert len(rows) == 12 and {r[-1] for r in rows} == {"-"}


def test_model_names_parse_to_folder_gguf_file_hub_id_and_revision(tmp_path, folders):
    from emergence_fast.sweep.grid import ModelSpec, checkpoint_step, parse_model

    gguf = tmp_path / "smol-q8.gguf"
    gguf.write_bytes(b"GGUF")
    assert parse_model(str(gguf)) == ModelSpec(str(tmp_path.resolve()), None, "smol-q8.gguf", "smol-q8")
    assert parse_model("EleutherAI/pythia-70m@step1000") == ModelSpec("EleutherAI/pythia-70m", "step1000", None,
                                                                      "EleutherAI/pythia-70m@step1000")
    assert parse_model("default") == ModelSpec("default", label="default")
    assert parse_model(folders[0]).label == "w16"
    assert checkpoint_step(parse_model("EleutherAI/pythia-70m@step1000")) == 1000
    assert checkpoint_step(parse_model("EleutherAI/pythia-70m@main")) is None
    with pytest.raises(ValueError, match=r"^models: 'org/x@' ends in '@' with no revision after it$"):
        parse_model("org/x@")
    with pytest.raises(ValueError, match=r"^models: '.*missing.gguf' ends in .gguf but is not a file$"):
        parse_model(str(tmp_path / "missing.gguf"))


@pytest.mark.parametrize("kwargs, message", [
    ({"tasks": ["ie"], "ie_estimator": "nosiy"}, "ie_estimator must be one of ("),
    ({"tasks": ["ie"], "ie_dataset": "icl-animals"}, ("ie_dataset must be 'induction:L', one of ('icl-country', "
                                                      "'icl-animal', 'icl-color'), 'text:PATH' or 'ids:PATH', got "
                                                      "'icl-animals'")),
    ({"tasks": ["ie"], "ie_dataset": "induction:x"}, ("ie_dataset: 'induction:L' needs an integer L >= 2, got "
                                                      "'induction:x'")),
    ({"tasks": ["ie"], "ie_dataset": "ids:/no/such.pt"}, "ie_dataset: '/no/such.pt' is not a file"),
    ({"tasks": ["binary-concepts"], "concepts": ["0a"]}, ("concepts must contain only the characters '0' and '1', "
                                                          "got ['a'] in '0a'")),
    ({"tasks": ["binary-concepts"], "concepts": []}, ("concepts: the list is empty; name at least one concept such "
                                                      "as '01'")),
    ({"tasks": ["induction"], "seed": -1}, "seed must be an integer >= 0, got -1"),
    ({"tasks": ["induction"], "ci": 1.0}, "ci must be a number in (0, 1), got 1.0"),
])
def test_settings_are_refused_before_any_model_is_loaded(folders, kwargs, message):
    """A typo in a task's setting is an error, not a unit 'not applicable' to every model after the work."""
    loader = CountingLoader()
    with pytest.raises(ValueError) as caught:
        run_sweep(folders[:2], loader=loader, **{**SMALL, **kwargs})
    assert str(caught.value).startswith(message) and loader.calls == [], str(caught.value)


def test_cli_names_the_setting_flag(folders, tmp_path, capsys):
    from emergence_fast.cli import main

    code = main(["sweep", "--models", folders[0], "--tasks", "ie", "--ie-estimator", "nosiy", "--out",
                 str(tmp_path / "bad")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("emergence-fast sweep: error: --ie-estimator must be one of (") and \
        len(err.splitlines()) == 1, err
    assert not (tmp_path / "bad").exists()


def test_figures_carry_units_and_integer_axis_ticks(folders, tmp_path, monkeypatch):
    """The heatmap's colour bar names the metric's unit; lengths (counts) get no fractional ticks."""
    from emergence_fast.sweep import report

    figures = {}

    def capture(fig, path):
        fig.canvas.draw()
        figures[Path(path).name] = fig
        return Path(path)

    monkeypatch.setattr(report, "write_figure", capture)
    result = run_sweep(folders[:2], ["induction"], values={"induction": [2, 3]}, x="index",
                       metrics=["in_context_loss", "repeat_token_accuracy"], **SMALL)
    report.plot(result, tmp_path)
    heat = figures["heatmap_induction.png"]
    assert [ax.get_ylabel() for ax in heat.axes if not ax.get_title()] == ["nats", "fraction"]  # the colour bars
    ticks = figures["axis_induction.png"].axes[0].get_xticks()
    assert len(ticks) and all(float(t).is_integer() for t in ticks), ticks


def test_metrics_filter_moves_the_default_reference_and_refuses_a_filtered_one(folders):
    """With metrics=, the default reference is a kept metric (the in-context loss may be left out)."""
    kept = ["repeat_token_accuracy", "next_token_entropy"]
    result = run_sweep(folders, ["induction"], values={"induction": [2]}, x="index", metrics=kept, **SMALL)
    assert (result.reference["task"], result.reference["metric"], result.reference["value"]) == \
        ("induction", "repeat_token_accuracy", 2)
    assert [t["metric"] for t in result.timing] == ["next_token_entropy"]
    loader = CountingLoader()
    with pytest.raises(ValueError, match=r"^reference: 'induction:in_context_loss' names a metric that metrics leaves "
                                         r"out \(kept: repeat_token_accuracy, next_token_entropy\)$"):
        run_sweep(folders, ["induction"], values={"induction": [2]}, x="index", metrics=kept,
                  reference="induction:in_context_loss", loader=loader, **SMALL)
    assert loader.calls == []


def test_a_task_with_no_kept_metric_is_not_run(folders):
    result = run_sweep(folders[:2], ["induction", "entity-animals"], values={"induction": [2], "entity-animals": [1]},
                       x="index", metrics=["in_context_loss"], **SMALL)
    assert list(result.tasks) == ["induction"]
    assert set(result.provenance["unit_seconds"]) == {"w16|induction", "w24|induction"}


def test_printed_axis_table_gives_the_unit_of_each_location(folders):
    result = run_sweep(folders[:1], ["induction", "entity-animals"], values={"induction": [2, 3, 4],
                       "entity-animals": [1, 2, 4]}, x="index", **SMALL)
    lines = summary_table(result).splitlines()
    header = next(line for line in lines if "verdict along the task's axis" in line)
    assert header.split()[-1] == "unit"
    units = {line.split()[0]: line.split()[-1] for line in lines if line.startswith(("induction", "entity-animals"))}
    assert units == {"induction": "tokens", "entity-animals": "shots"}


@pytest.mark.parametrize("model, message", [
    ("fam/step-*", "models: 'fam/step-*' is neither an existing folder nor a Hugging Face id: Repo id must "),
    ("@main", "models: '@main' names a revision but no model before the '@'"),
])
def test_a_glob_that_matched_nothing_and_a_bare_revision_are_refused(model, message):
    with pytest.raises(ValueError) as caught:
        run_sweep([model], ["induction"], **SMALL)
    assert str(caught.value).startswith(message), str(caught.value)


def test_checkpoints_of_an_unfinished_family_are_noted(folders, tmp_path):
    """make-family writes family.json last: without it the run was killed or is still training."""
    import shutil

    checkpoints = []
    for step, source in zip((0, 50), folders[:2]):
        path = tmp_path / "fam" / f"step-{step:06d}"
        shutil.copytree(source, path)
        (path / "emergence_fast.json").write_text(json.dumps({"family": "induction", "step": step,
                                                               "task": {"half_length": 2}}))
        checkpoints.append(str(path))
    note = (f"the make-family run in {tmp_path / 'fam'} has not finished (no family.json: killed, or still "
            f"training): its later checkpoints are missing from this sweep")
    result = run_sweep(checkpoints, ["induction"], **SMALL)
    assert note in result.notes and [m["step"] for m in result.models] == [0, 50]
    (tmp_path / "fam" / "family.json").write_text("{}")
    assert note not in run_sweep(checkpoints, ["induction"], **SMALL).notes


def test_units_of_another_dtype_are_not_reused(folders, tmp_path):
    """A rerun in float32 after a bfloat16 one evaluates again; float32 named or not is one dtype."""
    kwargs = {"values": {"induction": [2]}, "out": tmp_path, **SMALL}
    half = run_sweep(folders[:1], ["induction"], dtype="bfloat16", **kwargs)
    full = run_sweep(folders[:1], ["induction"], **kwargs)
    again = run_sweep(folders[:1], ["induction"], dtype="float32", **kwargs)
    assert [r.provenance["units_evaluated_this_run"] for r in (half, full, again)] == [1, 1, 0]
    assert [r.models[0]["dtype"] for r in (half, full, again)] == ["bfloat16", "float32", "float32"]


def test_help_reads_as_plain_text(capsys):
    from emergence_fast.cli import main

    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    text = capsys.readouterr().out
    assert "emergence-fast sweep: behaviour across models" in text and "``" not in text


def test_printed_tables_give_the_confidence_level(folders):
    result = run_sweep(folders[:1], ["induction"], values={"induction": [2, 3, 4]}, x="index", **{**SMALL, "ci": 0.8})
    header = next(line for line in summary_table(result).splitlines() if "verdict along the task's axis" in line)
    assert "80% CI" in header


def test_reference_at_a_block_of_all_blocks(folders):
    """IE runs every block by default; a reference at block 1 names one of them."""
    result = run_sweep(folders[:2], ["ie"], x="index", reference="ie:ie@1", ie_samples=8, **SMALL)
    assert (result.reference["task"], result.reference["value"], result.reference["found"]) == ("ie", 1, True)


def test_a_folder_without_weights_or_tokenizer_is_refused_before_any_load(folders, tmp_path):
    import shutil

    loader = CountingLoader()
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(Path(folders[0]) / "config.json", bare)
    with pytest.raises(ValueError) as caught:
        run_sweep([folders[0], str(bare)], ["induction"], loader=loader, **SMALL)
    assert str(caught.value) == f"models: the folder {str(bare)!r} holds a config.json but no weights (*.safetensors, *.bin)"
    untokenized = tmp_path / "untokenized"
    tiny_gpt2(width=16).save_pretrained(untokenized)
    with pytest.raises(ValueError, match=r"^models: model '.*untokenized' has no tokenizer files \(tokenizer.json"):
        run_sweep([folders[0], str(untokenized)], ["induction"], loader=loader, **SMALL)
    assert loader.calls == []


def test_shots_axis_in_log2_keeps_plain_number_ticks(folders, tmp_path, monkeypatch):
    """Shots >= 1 are drawn in log2 with ticks 1, 2, 4 (not 2^0, 2^1, 2^2)."""
    from matplotlib.ticker import ScalarFormatter

    from emergence_fast.sweep import report

    figures = {}
    monkeypatch.setattr(report, "write_figure", lambda fig, path: figures.setdefault(Path(path).name, fig))
    result = run_sweep(folders[:1], ["entity-animals"], values={"entity-animals": [1, 2, 4]}, **SMALL)
    report.plot(result, tmp_path)
    ax = figures["axis_entity-animals.png"].axes[0]
    assert ax.get_xscale() == "log" and isinstance(ax.xaxis.get_major_formatter(), ScalarFormatter)


def test_a_checkpoint_rewritten_at_the_same_path_is_new_work(tmp_path):
    """The store keys units by the weights' files too, so a retrained checkpoint is not served old numbers."""
    tok = char_tokenizer(bos=True)
    folder = tmp_path / "ckpt"
    tiny_gpt2(width=16, seed=0, vocab=len(tok)).save_pretrained(folder)
    tok.save_pretrained(folder)
    kw = dict(tasks=["induction"], values={"induction": [2]}, out=tmp_path / "out", **SMALL)
    first = run_sweep([str(folder)], loader=CountingLoader(), **kw)
    same = CountingLoader()
    run_sweep([str(folder)], loader=same, **kw)
    assert same.calls == []
    tiny_gpt2(width=16, seed=1, vocab=len(tok)).save_pretrained(folder)   # retrained in place
    again = CountingLoader()
    second = run_sweep([str(folder)], loader=again, **kw)
    assert again.calls == ["ckpt"]
    assert first.rows[0]["value"] != second.rows[0]["value"]
