"""The ``mirage`` subcommand end to end, through a parser built the way emergence_fast.cli builds it."""
import argparse
import io
import json
import re

import pytest

from emergence_fast.mirage import cli
from tests.mirage.test_readers import needs_pythia, pythia_files
from tests.mirage.tiny import char_tokenizer, tiny_gpt2
from tests.tiny_models import one_thread  # noqa: F401 (autouse fixture)


def run(argv):
    parser = argparse.ArgumentParser(prog="emergence-fast")
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    out = io.StringIO()
    assert args.func(args, out=out) == 0
    return out.getvalue()


@needs_pythia
def test_results_files_to_table_json_csv_and_figure(tmp_path):
    text = run(["mirage", "--results", *map(str, pythia_files()), "--task", "lambada_openai", "--metrics", "acc,ppl",
                "--n-boot", "100", "--out", str(tmp_path)])
    assert "acc" in text and "p_target" in text and "verdict" in text
    for name in ("mirage.json", "mirage.csv", "mirage_curves.png"):
        assert (tmp_path / name).stat().st_size > 0
    data = json.loads((tmp_path / "mirage.json").read_text())
    assert list(data["metrics"]) == ["acc", "ppl", "p_target"] and len(data["models"]) == 8
    assert data["metrics"]["acc"]["statistics"]["emergence_score"] == pytest.approx(14.57, abs=0.01)


@needs_pythia
def test_unknown_metric_in_a_results_file_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"has no metric 'bleu'; available: \['acc', 'ppl'\]"):
        run(["mirage", "--results", str(pythia_files()[0]), "--task", "lambada_openai", "--metrics", "bleu",
             "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="needs --metrics"):
        run(["mirage", "--results", str(pythia_files()[0]), "--task", "lambada_openai", "--out", str(tmp_path)])


def test_live_models_from_folders(tmp_path):
    folders = []
    for i, width in enumerate((16, 32, 64)):
        folder = tmp_path / f"tiny{width}"
        tiny_gpt2(width=width, seed=i, vocab=len(char_tokenizer())).save_pretrained(folder)
        char_tokenizer().save_pretrained(folder)
        folders.append(str(folder))
    text = run(["mirage", "--models", *folders, "--task", "arithmetic-2d-mult", "--n-examples", "6",
                "--metrics", "exact_match,token_edit_distance,token_prob", "--n-boot", "50", "--out",
                str(tmp_path / "out")])
    data = json.loads((tmp_path / "out" / "mirage.json").read_text())
    assert data["models"] == folders                      # sorted by size: widths 16 < 32 < 64
    assert data["params"] == sorted(data["params"])
    assert list(data["metrics"]) == ["exact_match", "token_edit_distance", "token_prob"]
    assert data["n_test"] == [6.0, 6.0, 6.0] and "token_prob" in text
    assert data["notes"][0] == ("special prefix (BOS) of each model's prompts: "  # the scorer's BOS rule, per model
                                + "; ".join(f"{f}: none (the tokenizer adds no BOS)" for f in folders))
    with pytest.raises(ValueError, match=r"unknown metric\(s\) \['acc'\] for --models"):
        run(["mirage", "--models", *folders, "--task", "arithmetic-2d-mult", "--metrics", "acc",
             "--out", str(tmp_path / "out2")])
    assert not (tmp_path / "out2").exists()


@pytest.mark.parametrize("quiet", [False, True])
def test_live_scoring_shows_a_bar_over_the_models_unless_quiet(tmp_path, quiet, capsys):
    folders = []
    for width in (16, 32):
        folder = tmp_path / f"tiny{width}"
        tiny_gpt2(width=width, vocab=len(char_tokenizer())).save_pretrained(folder)
        char_tokenizer().save_pretrained(folder)
        folders.append(str(folder))
    capsys.readouterr()
    run(["mirage", "--models", *folders, "--task", "arithmetic-2d-mult", "--n-examples", "4", "--n-boot", "10",
         "--out", str(tmp_path / "out")] + (["--quiet"] if quiet else []))
    err = capsys.readouterr().err
    assert ("mirage: scoring models" in err and "2/2" in err) != quiet
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["mirage.csv", "mirage.json", "mirage_curves.png"]


def test_a_model_or_metric_named_twice_is_refused(tmp_path, monkeypatch):
    # issue #13: g2 and ./g2 are the same folder; acc,acc the same metric
    (tmp_path / "g2").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"^--models: models must be distinct; named more than once: 'g2' and './g2'$"):
        run(["mirage", "--models", "g2", "./g2", "g3", "--task", "arithmetic-2d-mult", "--out", str(tmp_path / "o")])
    with pytest.raises(ValueError, match=r"^--metrics names \['exact_match'\] more than once; name each metric once$"):
        run(["mirage", "--models", "g2", "g3", "--task", "arithmetic-2d-mult", "--metrics", "exact_match,exact_match",
             "--out", str(tmp_path / "o")])
    (tmp_path / "f.csv").write_text("model,params,metric,score\na,1e8,acc,0.2\nb,1e9,acc,0.4\n")
    for metrics, got in (("acc,acc", "['acc', 'acc']"), ("acc,acc,none", "['acc', 'acc,none']")):
        with pytest.raises(ValueError, match="^" + re.escape(f"metrics name ['acc'] more than once (got {got}); name")):
            run(["mirage", "--results", "f.csv", "--task", "t", "--metrics", metrics, "--out", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()
