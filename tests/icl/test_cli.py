import argparse
import csv
import io
import json

import pytest

from emergence_fast.icl.cli import add_parser
from tests.icl.coin import coin_tokenizer
from tests.tiny_models import one_thread, tiny_model  # noqa: F401 (autouse fixture)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny_model("llama").save_pretrained(folder)
    coin_tokenizer(chat=True).save_pretrained(folder)
    return folder


def parse(argv):
    parser = argparse.ArgumentParser(prog="emergence-fast")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_judge_writes_json_csv_and_plot(model_dir, tmp_path):
    args = parse(["icl", "judge", "--model", str(model_dir), "--concepts", "01,011", "--max-len", "6",
                  "--n-random", "1", "--n-boot", "10", "--batch-size", "4", "--out", str(tmp_path)])
    out = io.StringIO()
    written = args.func(args, out=out)
    names = {p.name for p in written}
    assert names == {"icl_judge.json", "icl_judge.csv", "icl_judge_transitions.csv", "icl_judge.png"}
    data = json.loads((tmp_path / "icl_judge.json").read_text())
    assert [c["label"] for c in data["curves"]] == ["01", "011", "random-0"]
    assert data["config"]["model_source"] == str(model_dir)
    assert len(data["curves"][0]["value"]) == 6 and "logistic" in data["curves"][0]["transition"]
    with open(tmp_path / "icl_judge.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 18 and {r["kind"] for r in rows} == {"concept", "random"}
    assert (tmp_path / "icl_judge.png").stat().st_size > 10_000
    assert "| 01 | 2 |" in out.getvalue() and "prompts" in out.getvalue()


def test_tree_and_chat(model_dir, tmp_path):
    args = parse(["icl", "tree", "--model", str(model_dir), "--concepts", "011", "--max-len", "4", "--depth", "2",
                  "--chat", "--n-boot", "0", "--out", str(tmp_path)])
    args.func(args, out=io.StringIO())
    data = json.loads((tmp_path / "icl_tree.json").read_text())
    assert data["config"]["chat"] is True and data["config"]["depth"] == 2
    assert data["curves"][0]["chance"] == 3 / 4   # 011 at depth 2: the shifts start 01, 11, 10
    assert 0.0 <= min(data["curves"][0]["value"]) <= max(data["curves"][0]["value"]) <= 1.0


def test_generate(model_dir, tmp_path):
    args = parse(["icl", "generate", "--model", str(model_dir), "--p-tails", "30,70", "--n-samples", "3",
                  "--max-new-tokens", "6", "--crop-length", "2", "--out", str(tmp_path)])
    out = io.StringIO()
    args.func(args, out=out)
    data = json.loads((tmp_path / "icl_generate.json").read_text())
    assert data["config"]["p_tails"] == [30, 70] and set(data["texts"]) == {"30", "70"}
    assert data["config"]["crop_length"] == 2
    assert (tmp_path / "icl_generate.png").exists() and (tmp_path / "icl_generate.csv").exists()


@pytest.mark.parametrize("argv, message", [
    (["judge", "--concepts", "0a1"], "--concepts: concept must contain only the characters '0' and '1', got ['a'] in "
                                     "'0a1'"),
    (["judge", "--max-len", "0"], "--max-len must be >= 1, got 0"),
    (["generate", "--p-tails", "30,x"], "--p-tails must be comma-separated integer percentages in [0, 100], got '30,x'"),
    # Duplicates wrote two identical curves (or sampled one p twice) under repeated labels.
    (["judge", "--concepts", "01,01"], "--concepts: concepts holds 01 and 01, the same concept: it is given twice"),
    (["tree", "--concepts", "01,10,0101"], "--concepts: concepts holds 01 and 0101, the same concept: both are "
                                           "repetitions of 01"),
    (["generate", "--p-tails", "30,30"], "--p-tails: p_tails holds 30 more than once"),
    # Sampled for minutes and kept no sequence at any p.
    (["generate", "--crop-length", "500", "--max-new-tokens", "10"],
     "--crop-length=500 flips can never be reached with --max-new-tokens=10"),
    # Options of other tasks were silently ignored.
    (["judge", "--depth", "5"], "--depth does not apply to icl judge (only to icl tree); leave it out"),
    (["generate", "--concepts", "01"], "--concepts does not apply to icl generate (only to icl judge and icl tree)"),
    (["tree", "--no-prefix-cache", "--n-samples", "3"], "--n-samples does not apply to icl tree (only to icl "
                                                         "generate)"),
])
def test_bad_arguments_are_named_before_the_model_loads(model_dir, tmp_path, argv, message, monkeypatch):
    """They were SystemExit (exit code 1); the CLI now turns this ValueError into one line and exit code 2."""
    from emergence_fast import models

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("the model was loaded before the check"))
    args = parse(["icl", argv[0], "--model", str(model_dir), "--out", str(tmp_path / "out"), *argv[1:]])
    with pytest.raises(ValueError) as caught:
        args.func(args, out=io.StringIO())
    assert str(caught.value).startswith(message)
    assert not (tmp_path / "out").exists()


def test_chat_needs_a_template(tmp_path):
    folder = tmp_path / "plain"
    tiny_model("gpt2").save_pretrained(folder)
    coin_tokenizer(chat=False).save_pretrained(folder)
    args = parse(["icl", "judge", "--model", str(folder), "--chat", "--out", str(tmp_path / "out")])
    with pytest.raises(ValueError, match="^--chat needs a tokenizer with a chat template; this one has none$"):
        args.func(args, out=io.StringIO())
    assert not (tmp_path / "out").exists()  # the folder locked before the model loaded is gone again


@pytest.mark.parametrize("quiet", [False, True])
def test_the_forward_batches_show_a_bar_unless_quiet(model_dir, tmp_path, quiet, capsys):
    args = parse(["icl", "judge", "--model", str(model_dir), "--concepts", "01", "--max-len", "4", "--n-random", "0",
                  "--n-boot", "0", "--batch-size", "2", "--out", str(tmp_path)] + (["--quiet"] if quiet else []))
    capsys.readouterr()
    args.func(args, out=io.StringIO())
    assert ("icl forward" in capsys.readouterr().err) != quiet
    assert not (tmp_path / ".emergence-fast.lock").exists()  # released after the run


def test_an_option_of_another_task_exits_2_with_one_line(tmp_path, capsys):
    from emergence_fast.cli import main

    assert main(["icl", "judge", "--depth", "5", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("--depth does not apply to icl judge (only to icl tree); leave it out") and "\n" not in err
