import io
import json
import math
import os

import pytest
import torch

from emergence_fast import cli, emergence, models, report
from emergence_fast.ie import checkpoint as ie_checkpoint
from tests.icl.coin import coin_tokenizer
from tests.tiny_models import icl_ids, one_thread, tiny_model  # noqa: F401 (one_thread: autouse fixture)


def test_demo_prints_a_table_with_known_answers():
    out = io.StringIO()
    cli.demo(out=out)
    text = out.getvalue()
    assert "MI gaussian d=128" in text and "token entropy" in text
    row = next(line for line in text.splitlines() if "MI gaussian d=1 " in line).split()
    truth, plug_in = float(row[-5]), float(row[-4])
    assert abs(truth - 0.4133) < 1e-4 and abs(plug_in - truth) < 0.05


def test_backends_command(capsys):
    assert cli.main(["backends"]) == 0
    assert "torch" in capsys.readouterr().out


def test_a_non_editable_install_ships_every_subpackage_and_a_working_cli(tmp_path):
    """A wheel once lacked icl/ and mirage/; tests on the editable install could not see it."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "EMERGENCE_FAST_NO_EXT": "1"}
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                    str(tmp_path / "site"), str(root)], check=True, env=env, capture_output=True)
    run = subprocess.run([sys.executable, "-c", "import emergence_fast.icl, emergence_fast.mirage, emergence_fast.kernels; "
                          "from emergence_fast.cli import main; main(['--help'])"],
                         cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path / "site")},
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "{ie,estimators,backends,icl,mirage,make-family,sweep,bench}" in run.stdout
    assert (tmp_path / "site" / "emergence_fast" / "data" / "animals.txt").exists()


@pytest.mark.parametrize("argv, message", [
    (["--sigma", "abc"], "argument --sigma: invalid float value: 'abc'"),
    (["--sigma", "0"], "sigma must be a finite number > 0"),
    (["--n-draws", "1"], "n_draws must be an integer >= 2"),
    (["--estimator", "gaussian", "--sigma", "0.2"], "--sigma sets the option sigma, which --estimator gaussian does not "
                                                    "take (its options: bias_correction, pca, shrinkage)"),
    (["--sigma", "0.1", "--option", "sigma=0.2"], "--option sigma=... repeats --sigma"),
])
def test_bad_estimator_flags_are_one_line_before_the_model_loads(argv, message, capsys, monkeypatch, tmp_path):
    from emergence_fast import models

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("the model was loaded before the check"))
    try:
        code = cli.main(["ie", *argv, "--out", str(tmp_path / "out")])
    except SystemExit as exit_:  # argparse's own checks exit; ours return the code
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("emergence-fast ie: error:")


# ---------------------------------------------------------------- the CLI contract (issue #13)


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    """A tiny llama (3 blocks) with a word-level tokenizer, and 64 ICL-like id rows [64, 4]."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny_model("llama").save_pretrained(folder)
    coin_tokenizer(chat=True).save_pretrained(folder)
    torch.save(icl_ids(64, 2), folder / "ids.pt")
    return folder


def ie_argv(folder, out, *extra):
    return ["ie", "--model", str(folder), "--dataset", f"ids:{folder / 'ids.pt'}", "--n-samples", "64",
            "--batch-size", "4", "--out", str(out), *extra]


def no_model(monkeypatch):
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("the model was loaded before the check"))


def call(argv):
    try:
        return cli.main(argv)
    except SystemExit as exit_:  # argparse's own checks exit; ours return the code
        return exit_.code


def one_line_error(capsys, command):
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"emergence-fast {command}: error: ")
    return err.strip()


@pytest.mark.parametrize("command, argv, message", [
    ("ie", ["--layers", "blocks.1.hook_resid"], "--layers takes comma-separated block indices or TransformerLens names"),
    ("ie", ["--option", "k"], "--option must be KEY=VALUE, got 'k'"),
    ("ie", ["--estimator", "ksg", "--option", "k=5000"], "estimator ksg with options {'jitter': 0.0001, 'k': 5000, "
     "'seed': 0} on 1024 kept rows per cell (reservoir size and number of samples): k must be smaller than the number "
     "of samples N (k < N), got k=5000 and N=1024"),
    ("ie", ["--estimator", "mine", "--option", "lr=-1"], "lr must be a finite number > 0, got -1"),
    ("ie", ["--estimator", "chen2024", "--option", "steps=0"], "steps must be an integer >= 1, got 0"),
    ("ie", ["--n-samples", "1"], "--n-samples must be >= 2, got 1"),
    ("ie", ["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    ("ie", ["--state-memory", "lots"], "--state-memory"),
    ("ie", ["--device", "cuda:7"], "device='cuda:7' asks for CUDA" if not torch.cuda.is_available() else "cuda"),
    ("ie", ["--dataset", "ids:/nonexistent/ids.pt"], "--dataset ids:/nonexistent/ids.pt: '/nonexistent/ids.pt' is not a file"),
    ("ie", ["--dataset", "wiki"], "--dataset must be one of icl-country, icl-animal, icl-color, text:PATH or ids:PATH"),
    ("ie", ["--checkpoint-every", "-1"], "--checkpoint-every must be >= 0"),
    ("icl", ["judge", "--concepts", "0a1"], "--concepts: concept must contain only the characters '0' and '1'"),
    ("icl", ["judge", "--max-len", "0"], "--max-len must be >= 1, got 0"),
    ("icl", ["generate", "--p-tails", "30,140"], "--p-tails: each p_tails percentage must be an integer in [0, 100], got 140"),
    ("icl", ["judge", "--n-boot", "-1"], "--n-boot must be >= 0, got -1"),
    ("mirage", ["--models", "a", "b", "--task", "nope"], "--task for --models must be one of arithmetic-2d-mult"),
    ("mirage", ["--models", "a", "--task", "arithmetic-2d-mult", "--metrics", "acc"], "unknown metric(s) ['acc']"),
    ("mirage", ["--models", "a", "--task", "arithmetic-2d-mult", "--ci", "1.5"], "--ci must be a confidence level in"),
    ("mirage", ["--results", "/nonexistent.json", "--task", "x", "--metrics", "acc"],
     "--results: '/nonexistent.json' does not exist"),
    ("mirage", ["--results", "/nonexistent.json", "--task", "x"], "mirage --results needs --metrics"),
])
def test_user_errors_are_one_line_exit_2_before_the_model_and_create_nothing(command, argv, message, llama_dir,
                                                                                tmp_path, capsys, monkeypatch):
    no_model(monkeypatch)
    model = [] if command == "mirage" else ["--model", str(llama_dir)]
    out = tmp_path / "runs" / "out"
    task = argv[:1] if command == "icl" else []  # icl's positional task comes first
    assert call([command, *task, *model, *argv[len(task):], "--out", str(out)]) == 2
    assert message in one_line_error(capsys, command)
    assert list(tmp_path.iterdir()) == []  # no --out folder, no parents, no partial files


@pytest.mark.parametrize("command, argv, message", [
    ("ie", ["--layers", "7"], "layers must be a non-empty list of block indices in 0..2, got [7]"),
    ("icl", ["judge", "--chat", "--max-len", "2"], "--chat needs a tokenizer with a chat template"),
])
def test_errors_found_once_the_model_is_known_leave_nothing_either(command, argv, message, tmp_path, capsys):
    """The range of a block index, or a chat template, needs the model: the lock taken before it is undone."""
    folder = tmp_path / "model"
    tiny_model("llama").save_pretrained(folder)
    coin_tokenizer(chat=False).save_pretrained(folder)
    torch.save(icl_ids(64, 2), folder / "ids.pt")
    capsys.readouterr()  # the model saver's own bar
    argv = ie_argv(folder, tmp_path / "out", "--quiet", *argv) if command == "ie" else \
        ["icl", argv[0], "--model", str(folder), *argv[1:], "--out", str(tmp_path / "out")]
    assert cli.main(argv) == 2
    assert message in one_line_error(capsys, command)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@pytest.mark.parametrize("command", ["ie", "icl", "mirage", "bench"])
def test_a_second_run_on_one_out_is_refused_naming_the_first(command, llama_dir, tmp_path, capsys, monkeypatch):
    no_model(monkeypatch)
    out = tmp_path / "out"
    held = report.OutputFolder(out).claim()  # the other run, alive
    try:
        argv = {"ie": ie_argv(llama_dir, out),
                "icl": ["icl", "judge", "--model", str(llama_dir), "--out", str(out)],
                "mirage": ["mirage", "--models", str(llama_dir), "--task", "arithmetic-2d-mult", "--out", str(out)],
                "bench": ["bench", "--model", str(llama_dir), "--quick", "--out", str(out)]}[command]
        assert cli.main(argv) == 2
        err = one_line_error(capsys, command)
        assert f"--out {str(out)!r} is in use by pid {os.getpid()} on " in err and ", started " in err
        assert err.endswith("wait for it to finish or choose another --out")
    finally:
        held.release()
    assert list(out.iterdir()) == []  # the refused run touched nothing of the other's


@pytest.mark.parametrize("command", ["ie", "icl", "mirage"])
def test_an_out_that_cannot_be_created_is_refused_before_the_model(command, llama_dir, capsys, monkeypatch):
    no_model(monkeypatch)
    out = "/proc/self/no/such/dir"
    argv = {"ie": ie_argv(llama_dir, out),
            "icl": ["icl", "judge", "--model", str(llama_dir), "--out", out],
            "mirage": ["mirage", "--models", str(llama_dir), "--task", "arithmetic-2d-mult", "--out", out]}[command]
    assert cli.main(argv) == 2
    assert f"--out {out!r} cannot be created: " in one_line_error(capsys, command)


def test_ie_takes_transformerlens_names_and_writes_strict_json(llama_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(ie_argv(llama_dir, out, "--layers", "0, blocks.2.hook_resid_post", "--quiet")) == 0
    assert capsys.readouterr().err == ""  # --quiet: no bars
    data = json.loads((out / "ie.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    assert data["layers"] == [0, 2]
    for key in ("macro", "micro", "emergence", "macro_stderr"):
        assert all(v is None or isinstance(v, float) for row in data[key] for v in row)  # numbers or null
    assert sorted(p.name for p in out.iterdir()) == ["ie.csv", "ie.json", "ie_heatmap.png", "ie_positions.png"]


@pytest.mark.parametrize("every, update, expected", [
    (3, 8, [4, 8, 12, 16]),        # folds of 2 batches: max(3, 2) rounded up to whole folds = every 4 batches
    (1, 8, [2, 4, 6, 8, 10, 12, 14, 16]),  # below a fold: every fold
    (4, 16, [4, 8, 12, 16]),       # a multiple of the fold: exactly every 4 batches
    (32, 8, [16]),                 # the default N with 16 batches in all: once, at the end of the pass
    (0, 8, []),
])
def test_checkpoints_come_at_the_cadence_the_help_states(every, update, expected, llama_dir, tmp_path, monkeypatch):
    """--checkpoint-every N: every max(N, fold) batches rounded up to whole folds, and at the end of the pass."""
    saved = []
    original = ie_checkpoint._save_checkpoint

    def recording(path, payload):
        saved.append(payload["batches_done"])
        original(path, payload)

    monkeypatch.setattr(ie_checkpoint, "_save_checkpoint", recording)
    argv = ie_argv(llama_dir, tmp_path / "out", "--quiet", "--checkpoint-every", str(every), "--update-samples",
                   str(update), "--keep-checkpoint")
    assert cli.main(argv) == 0
    assert saved == expected
    fold = math.ceil(update / 4)
    if every:
        cadence = math.ceil(max(every, fold) / fold) * fold
        assert expected == [b for b in range(cadence, 16 + 1, cadence)] + ([16] if 16 % cadence else [])
    assert (tmp_path / "out" / "ie_checkpoint.pt").exists() == bool(expected)
    help_text = " ".join(cli.build_parser()._subparsers._group_actions[0].choices["ie"].format_help().split())
    assert "come every max(N, fold) batches rounded up to whole folds" in help_text


def test_ie_shows_its_phases_on_stderr(llama_dir, tmp_path, capsys):
    assert cli.main(ie_argv(llama_dir, tmp_path / "out", "--layers", "1")) == 0
    err = capsys.readouterr().err
    assert "IE macro pass" in err and "IE estimate (noisy)" in err


def test_every_option_shows_its_default_in_help():
    parser = cli.build_parser()
    subcommands = parser._subparsers._group_actions[0].choices
    assert set(subcommands) == {"ie", "estimators", "backends", "icl", "mirage", "make-family", "sweep", "bench"}
    for name, sub in subcommands.items():
        formatter = sub._get_formatter()
        assert isinstance(formatter, cli.HelpWithDefaults)
        for action in sub._actions:
            either = any(action in group._group_actions for group in sub._mutually_exclusive_groups if group.required)
            if not action.option_strings or action.required or either or action.dest == "help":
                continue
            text = formatter._get_help_string(action)
            assert "default" in text, f"{name} {action.option_strings[0]}: {text!r}"
    ie_help = " ".join(subcommands["ie"].format_help().split())
    assert "--n-samples N_SAMPLES sequences N (default: 1024)" in ie_help
    assert "--dataset DATASET icl-animal | icl-country" in ie_help and "(default: icl-animal)" in ie_help


def _unavailable_backend():
    """A backend that cannot run on the CPU here (cuda or triton on this machine), or None."""
    import emergence_fast as ef

    return next((name for name, status in ef.backends().items() if "cpu" not in status.devices), None)


@pytest.mark.parametrize("argv, env, message", [
    (["--backend", "tourch"], None, "backend must be one of ('auto', 'torch', 'cpp', 'triton', 'cuda'), got 'tourch'"),
    (["--estimator", "ksg", "--backend", "tourch"], None,
     "backend must be one of ('auto', 'torch', 'cpp', 'triton', 'cuda'), got 'tourch'"),
    ([], "bogus", "EMERGENCE_FAST_BACKEND must be one of ('auto', 'torch', 'cpp', 'triton', 'cuda'), got 'bogus'"),
    (["--backend", "unavailable"], None, "cannot run on a cpu tensor here"),
])
def test_a_bad_backend_is_refused_before_the_model_loads(argv, env, message, llama_dir, tmp_path, capsys, monkeypatch):
    """It was checked after the forward pass, leaving ie_checkpoint.pt; with --estimator ksg not at all (rc 0)."""
    if "unavailable" in argv:
        name = _unavailable_backend()
        if name is None:
            pytest.skip("every backend runs on the CPU here")
        argv = ["--backend", name]
    if env:
        monkeypatch.setenv("EMERGENCE_FAST_BACKEND", env)
    no_model(monkeypatch)
    assert call(ie_argv(llama_dir, tmp_path / "out", *argv)) == 2
    assert message in one_line_error(capsys, "ie")
    assert list(tmp_path.iterdir()) == []


def test_information_emergence_refuses_a_bad_backend_on_every_estimator_path(llama_dir):
    model, tokenizer = models.load_model(llama_dir)
    with pytest.raises(ValueError, match="backend must be one of .*got 'tourch'"):
        emergence.information_emergence(model, tokenizer, icl_ids(8, 2), estimator="ksg", backend="tourch")


@pytest.mark.parametrize("command", ["estimators", "backends"])
def test_estimators_and_backends_follow_the_one_line_contract(command, capsys, monkeypatch):
    monkeypatch.setenv("EMERGENCE_FAST_BACKEND", "bogus")
    code = cli.main([command])
    if command == "backends":  # it lists the table and resolves nothing, so the env value does not matter
        assert code == 0 and "torch" in capsys.readouterr().out
        return
    assert code == 2
    assert one_line_error(capsys, command) == ("emergence-fast estimators: error: EMERGENCE_FAST_BACKEND must be one of "
                                               "('auto', 'torch', 'cpp', 'triton', 'cuda'), got 'bogus'")


@pytest.mark.parametrize("command, argv, message", [
    ("ie", ["--estimatr", "ksg"], "unrecognized arguments: --estimatr ksg (did you mean --estimator?)"),
    ("bench", ["--quik"], "unrecognized arguments: --quik (did you mean --quick?)"),
    ("mirage", ["--models", "a", "--task", "arithmetic-2d-mult", "--bogus", "1"], "unrecognized arguments: --bogus 1"),
])
def test_unrecognized_options_name_the_subcommand(command, argv, message, tmp_path, capsys, monkeypatch):
    no_model(monkeypatch)
    assert call([command, *argv, "--out", str(tmp_path / "out")]) == 2
    assert one_line_error(capsys, command) == f"emergence-fast {command}: error: {message}"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name, content, message", [
    ("latin1.txt", "café au lait\n".encode("latin1"),
     "text:{path} is not UTF-8 (byte 0xe9 at offset 3): convert it, e.g. iconv -f latin1 -t utf-8"),
    ("empty.txt", b"", "text data set is empty: {path}"),
    ("bad.jsonl", b'{"text": "a b"}\nnot json\n', "{path}:2: not valid JSON"),
    ("corpus.txt", b"hello world\n", None),  # as ids: not a tensor file
])
def test_dataset_files_are_checked_before_the_model_loads(name, content, message, llama_dir, tmp_path, capsys,
                                                         monkeypatch):
    no_model(monkeypatch)
    path = tmp_path / "data" / name
    path.parent.mkdir()
    path.write_bytes(content)
    spec = f"text:{path}"
    if message is None:
        spec, message = f"ids:{path}", "dataset ids:{path} is not a tensor file saved with torch.save (.pt) or numpy (.npy)"
    argv = ["ie", "--model", str(llama_dir), "--dataset", spec, "--n-samples", "8", "--out", str(tmp_path / "out")]
    assert call(argv) == 2
    assert message.format(path=path) in one_line_error(capsys, "ie")
    assert not (tmp_path / "out").exists()


def test_a_corrupt_weights_file_is_one_line_naming_it(llama_dir, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    for source in llama_dir.iterdir():
        data = source.read_bytes()
        (broken / source.name).write_bytes(data[:1000] if source.name == "model.safetensors" else data)
    argv = ie_argv(broken, tmp_path / "out", "--quiet")
    assert call(argv) == 2
    assert one_line_error(capsys, "ie").startswith(
        f"emergence-fast ie: error: model {str(broken)!r}: could not load model.safetensors (SafetensorError: ")
    assert call(["mirage", "--models", str(broken), "--task", "arithmetic-2d-mult", "--quiet", "--out",
                 str(tmp_path / "m")]) == 2
    assert "could not load model.safetensors" in one_line_error(capsys, "mirage")


def test_ctrl_c_is_one_line_saying_the_checkpoint_is_kept(llama_dir, tmp_path, capsys, monkeypatch):
    original = ie_checkpoint._save_checkpoint

    def save_then_interrupt(path, payload):
        original(path, payload)
        raise KeyboardInterrupt

    monkeypatch.setattr(ie_checkpoint, "_save_checkpoint", save_then_interrupt)
    out = tmp_path / "out"
    assert cli.main(ie_argv(llama_dir, out, "--quiet", "--checkpoint-every", "1", "--update-samples", "8")) == 130
    err = capsys.readouterr().err.strip()
    assert err == f"emergence-fast ie: interrupted; the checkpoint in {out} is kept: rerun with --resume to continue"
    assert (out / "ie_checkpoint.pt").exists()


def test_ctrl_c_before_any_checkpoint_says_nothing_was_kept(llama_dir, tmp_path, capsys, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(emergence, "information_emergence", interrupt)
    assert cli.main(ie_argv(llama_dir, tmp_path / "out", "--quiet")) == 130
    assert capsys.readouterr().err.strip() == ("emergence-fast ie: interrupted; nothing was kept (no checkpoint had "
                                               "been written)")
    assert not (tmp_path / "out").exists()  # the folder this run created, empty, goes again


def test_a_stale_checkpoint_is_discarded_with_a_note(llama_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(ie_argv(llama_dir, out, "--quiet", "--keep-checkpoint", "--update-samples", "8",
                            "--checkpoint-every", "1", "--layers", "1")) == 0
    capsys.readouterr()
    assert cli.main(ie_argv(llama_dir, out, "--quiet", "--layers", "0")) == 0
    err = capsys.readouterr().err.strip()
    assert err == (f"emergence-fast ie: note: discarding the checkpoint {out / 'ie_checkpoint.pt'} of an earlier run "
                   f"(64 of 64 samples done); pass --resume to continue it instead")
    assert not (out / "ie_checkpoint.pt").exists()
    help_text = " ".join(cli.build_parser()._subparsers._group_actions[0].choices["ie"].format_help().split())
    assert "without it a checkpoint left there by an earlier (killed) run is discarded" in help_text


def test_no_peak_block_is_reported_when_no_emergence_value_is_finite(llama_dir, tmp_path, capsys, monkeypatch):
    """argmax over all-NaN means named block 0 as the peak."""
    real = emergence.information_emergence

    def all_nan(*args, **kwargs):
        result = real(*args, **kwargs)
        result.emergence = torch.full_like(result.emergence, math.nan)
        return result

    monkeypatch.setattr(emergence, "information_emergence", all_nan)
    assert cli.main(ie_argv(llama_dir, tmp_path / "out", "--quiet", "--layers", "1,2")) == 0
    assert "peak block: none;" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "ie.json").read_text())["layer_summary"]["peak_layer"] is None
    result = all_nan(*models.load_model(llama_dir), icl_ids(32, 2), layers=[1, 2], estimator="gaussian",
                     batch_size=8)
    result.emergence[1] = 0.5  # one finite block mean: that block is the peak, whatever NaNs the others hold
    assert result.layer_summary()["peak_layer"] == 2


def test_ksg_runs_its_knn_search_on_the_backend_given(llama_dir, tmp_path, monkeypatch):
    """--backend was ignored by the sample estimators: KSG's k-NN search ran on the default backend (cpp here)."""
    from emergence_fast.estimators import knn

    chosen = []
    original = knn._ksg

    def recording(x3, y3, k, variant, jitter, backend, *rest):
        chosen.append(backend)
        return original(x3, y3, k, variant, jitter, backend, *rest)

    monkeypatch.setattr(knn, "_ksg", recording)
    argv = ie_argv(llama_dir, tmp_path / "out", "--quiet", "--layers", "1", "--estimator", "ksg", "--backend", "torch")
    assert cli.main(argv) == 0
    # The estimate stage's calls (after the options' probe on a few rows, before the model loads) use it.
    assert chosen[-1] == "torch" and chosen.count("torch") >= 2  # the macro and the micro estimates at least


@pytest.mark.parametrize("command", ["icl", "mirage", "bench"])
def test_ctrl_c_in_other_commands_is_one_line_exit_130(command, llama_dir, tmp_path, capsys, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "load_model", interrupt)
    argv = {"icl": ["icl", "judge", "--model", str(llama_dir)],
            "mirage": ["mirage", "--models", str(llama_dir), "--task", "arithmetic-2d-mult", "--quiet"],
            "bench": ["bench", "--model", str(llama_dir), "--quick"]}[command]
    assert cli.main([*argv, "--out", str(tmp_path / "out")]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == f"emergence-fast {command}: interrupted"
