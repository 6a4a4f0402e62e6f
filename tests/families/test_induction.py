"""The induction checkpoint family: loadable checkpoints, attention-only blocks, the phase change, the
folder's bookkeeping (atomic, refused when foreign), determinism and the CLI."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import emergence_fast
from emergence_fast import families
from emergence_fast.cli import main
from emergence_fast.families import induction

transformers = pytest.importorskip("transformers")

# A family small enough to train twice in a test (a few seconds), too short for the phase change.
TINY = {"vocab_size": 16, "half_length_range": (2, 4), "half_length": 3, "seq_len": 12, "n_layer": 1, "n_head": 2,
        "d_model": 8, "steps": 6, "checkpoints": 3, "batch_size": 4, "eval_size": 8, "seed": 3}
TINY_FLAGS = ["--vocab-size", "16", "--half-length-min", "2", "--half-length-max", "4", "--half-length", "3",
              "--seq-len", "12", "--n-layer", "1", "--n-head", "2", "--d-model", "8", "--steps", "6",
              "--checkpoints", "3", "--batch-size", "4", "--eval-size", "8", "--seed", "3", "--quiet"]


def _checkpoints(folder: Path) -> list[Path]:
    return sorted(folder.glob("step-*"))


def _files(folder: Path) -> dict:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_checkpoints_load_with_the_auto_classes_and_load_model(induction_family):
    from emergence_fast.datasets import special_prefix
    from emergence_fast.models import load_model

    family = induction.read_family(induction_family)
    folders = _checkpoints(induction_family)
    assert [folder.name for folder in folders] == [row["path"] for row in family["checkpoints"]]
    steps = [row["step"] for row in family["checkpoints"]]
    assert steps == sorted(steps) and steps[0] == 0 and steps[-1] == family["config"]["steps"]
    last = folders[-1]
    model = transformers.AutoModelForCausalLM.from_pretrained(last)
    tokenizer = transformers.AutoTokenizer.from_pretrained(last)
    assert type(model).__name__ == "GPT2LMHeadModel" and len(model.transformer.h) == family["config"]["n_layer"]
    vocab = family["config"]["vocab_size"]
    assert tokenizer("t3 t17").input_ids == [0, 4, 18]
    assert tokenizer("t3 t17", add_special_tokens=False).input_ids == [4, 18]
    assert tokenizer.decode([4, 18]) == "t3 t17"
    assert tokenizer("hello t3").input_ids == [0, vocab + 1, 4]  # any other word is <unk>, after the t's
    assert sorted(tokenizer.all_special_ids) == [0, vocab + 1] and tokenizer.bos_token_id == 0
    assert tokenizer.unk_token_id == vocab + 1 == family["unk_id"] and len(tokenizer) == vocab + 2
    assert model.config.vocab_size == vocab + 2
    ordinary = sorted(set(range(len(tokenizer))) - set(tokenizer.all_special_ids))
    assert ordinary == list(range(1, vocab + 1))
    assert tokenizer.convert_ids_to_tokens(ordinary) == [f"t{i}" for i in range(vocab)]
    loaded, loaded_tokenizer = load_model(str(last))
    assert special_prefix(loaded_tokenizer) == [0]  # the project's probe with arbitrary text
    ids = induction.eval_batch(torch.Generator().manual_seed(5), 4, vocab, family["config"]["half_length"])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)
    assert loaded_tokenizer("t3").input_ids == [0, 4]


def test_every_mlp_adds_exactly_zero_in_every_checkpoint(induction_family):
    ids = induction.eval_batch(torch.Generator().manual_seed(0), 8, 32, 5)
    for folder in _checkpoints(induction_family):
        model = transformers.AutoModelForCausalLM.from_pretrained(folder)
        assert model.config.n_inner == 1
        outputs = []
        hooks = [block.mlp.register_forward_hook(lambda module, args, output, seen=outputs: seen.append(output))
                 for block in model.transformer.h]
        with torch.no_grad():
            model(ids)
        for hook in hooks:
            hook.remove()
        assert len(outputs) == len(model.transformer.h)
        assert all(bool((output == 0).all()) for output in outputs), folder.name
        assert all(bool((p == 0).all()) for block in model.transformer.h for p in block.mlp.parameters())


def test_information_emergence_runs_on_a_checkpoint_with_the_project_s_hooks(induction_family):
    from emergence_fast.models import load_model

    model, tokenizer = load_model(str(_checkpoints(induction_family)[-1]))
    ids = induction.eval_batch(torch.Generator().manual_seed(0), 128, 32, 5)
    result = emergence_fast.information_emergence(model, tokenizer, ids, batch_size=64)
    assert result.emergence.shape == (2, 11 - 1) and result.config["bos_handling"] == "already present"
    assert bool(torch.isfinite(result.emergence).all())


def test_checkpoint_info_and_family_json(induction_family):
    family = induction.read_family(induction_family)
    config = family["config"]
    assert family["family"] == "induction" and family["seed"] == config["seed"]
    assert family["versions"]["emergence_fast"] == emergence_fast.__version__
    assert family["log_vocab_size"] == pytest.approx(math.log(config["vocab_size"]))
    assert len(family["checkpoints"]) == config["checkpoints"]
    for row in family["checkpoints"]:
        info = families.read_checkpoint_info(induction_family / row["path"])
        assert info == {"family": "induction", "step": row["step"], "steps_total": config["steps"],
                        "seed": config["seed"],
                        "task": {"half_length": config["half_length"],
                                 "half_length_range": list(config["half_length_range"]),
                                 "vocab_size": config["vocab_size"], "bos_id": 0},
                        "version": emergence_fast.__version__}
        assert all(math.isfinite(row[key]) for key in ("train_loss", "in_context_loss", "first_half_loss"))
    # The recorded losses are what the saved weights give on the held-out batch (regenerated from the seed).
    held_out = induction.eval_batch(torch.Generator().manual_seed(induction.eval_seed(config["seed"])), config["eval_size"],
                                    config["vocab_size"], config["half_length"])
    last = family["checkpoints"][-1]
    model = transformers.AutoModelForCausalLM.from_pretrained(induction_family / last["path"]).eval()
    in_context, first_half = induction.induction_losses(model, held_out, config["half_length"])
    assert (in_context, first_half) == pytest.approx((last["in_context_loss"], last["first_half_loss"]), abs=1e-5)
    assert not (induction_family / induction.IN_PROGRESS_FILE).exists()
    assert not list(induction_family.glob(".*partial*")) and not (induction_family / ".emergence-fast.lock").exists()


def test_the_in_context_loss_falls_abruptly_from_log_v(induction_family):
    family = induction.read_family(induction_family)
    rows = family["checkpoints"]
    log_v = family["log_vocab_size"]
    loss = [row["in_context_loss"] for row in rows]
    steps = [row["step"] for row in rows]
    # A plateau at log V for the first trained checkpoints (no shortcut lowers it before induction heads
    # form); step 0 is the random initialisation, above log V ...
    assert loss[0] > log_v and all(abs(value - log_v) < 0.05 * log_v for value in loss[1:5]), loss
    # ... and low at the end: under half of log V on the last few.
    assert all(value < 0.5 * log_v for value in loss[-4:]), loss
    # Abrupt: over half of the whole fall within a quarter of the run (a steady decline would give a quarter).
    fall = loss[1] - min(loss)
    window = steps[-1] // 4
    steepest = max(loss[i] - loss[j] for i in range(len(rows)) for j in range(i, len(rows))
                   if steps[j] - steps[i] <= window)
    assert steepest > 0.6 * fall, list(zip(steps, loss))
    # The first half stays unpredictable throughout (random tokens): the fall is in-context learning.
    assert all(abs(row["first_half_loss"] - log_v) < 0.05 * log_v for row in rows[1:])  # rows[0]: initialisation


def test_training_sequences_repeat_at_varying_offsets_and_places():
    config = induction.check_config(TINY)
    batch = induction.sample_batch(torch.Generator().manual_seed(0), 200, config)
    assert batch.shape == (200, 12) and bool((batch[:, 0] == 0).all()) and bool((batch[:, 1:] >= 1).all())
    offsets, starts = set(), set()
    for row in batch.tolist():
        # the one repeated token value marks the copy: a distinct row apart from r + r
        repeats = [(i, j) for i in range(1, 12) for j in range(i + 1, 12) if row[i] == row[j]]
        lags = {j - i for i, j in repeats}
        assert len(lags) == 1 and len(repeats) == next(iter(lags)), row  # exactly L pairs, all at lag L
        offsets |= lags
        starts.add(min(i for i, _ in repeats))
    assert offsets == {2, 3, 4} and len(starts) > 3


def test_same_seed_gives_the_same_bits_and_another_seed_does_not(tmp_path):
    first = families.make_family("induction", tmp_path / "a", progress=False, **TINY)
    second = induction.train_family(tmp_path / "b", progress=False, **TINY)
    other = induction.train_family(tmp_path / "c", progress=False, **{**TINY, "seed": 4})
    files = {name: data for name, data in _files(first).items() if name != "family.json"}
    assert files and files == {name: data for name, data in _files(second).items() if name != "family.json"}
    assert files["step-000006/model.safetensors"] != _files(other)["step-000006/model.safetensors"]
    rows = [induction.read_family(folder)["checkpoints"] for folder in (first, second)]
    assert rows[0] == rows[1] and [r["step"] for r in rows[0]] == [0, 3, 6]


def test_a_killed_run_leaves_no_family_and_a_rerun_starts_over(tmp_path, monkeypatch):
    reference = induction.train_family(tmp_path / "reference", progress=False, **TINY)
    out = tmp_path / "killed"
    saved = induction._save_checkpoint

    def killed_after_the_first(model, tokenizer, folder, step, config):
        if step > 0:
            raise KeyboardInterrupt
        return saved(model, tokenizer, folder, step, config)

    monkeypatch.setattr(induction, "_save_checkpoint", killed_after_the_first)
    with pytest.raises(KeyboardInterrupt):
        induction.train_family(out, progress=False, **TINY)
    assert not (out / "family.json").exists()
    assert [p.name for p in _checkpoints(out)] == ["step-000000"] and (out / induction.IN_PROGRESS_FILE).is_file()
    with pytest.raises(ValueError, match="holds no finished family"):
        induction.read_family(out)
    # Another configuration is refused on the unfinished folder; the same one starts over and finishes.
    with pytest.raises(ValueError, match=r"^out '.*killed' holds an unfinished family of another configuration; "
                                         r"remove it or choose another out$"):
        induction.train_family(out, progress=False, **{**TINY, "seed": 4})
    monkeypatch.setattr(induction, "_save_checkpoint", saved)
    induction.train_family(out, progress=False, **TINY)
    assert {k: v for k, v in _files(out).items() if k != "family.json"} == {
        k: v for k, v in _files(reference).items() if k != "family.json"}


def test_a_finished_family_is_kept_for_the_same_config_and_refused_for_another(tmp_path):
    out = induction.train_family(tmp_path / "family", progress=False, **TINY)
    before = _files(out)
    assert induction.train_family(out, progress=False, **TINY) == out and _files(out) == before  # nothing redone
    with pytest.raises(ValueError, match=r"^out '.*family' holds another family \(family.json of another "
                                         r"configuration\); choose another out$"):
        induction.train_family(out, progress=False, **{**TINY, "steps": 7})
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"^out '.*foreign' is not empty and holds no induction family; choose an "
                                         r"empty or new out$"):
        induction.train_family(foreign, progress=False, **TINY)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("change, message", [
    ({"steps": 0}, "steps must be an integer >= 1, got 0"),
    ({"vocab_size": 1}, "vocab_size must be an integer >= 2, got 1"),
    ({"lr": -1.0}, "lr must be a finite number > 0, got -1.0"),
    ({"lr": float("nan")}, "lr must be a finite number > 0, got nan"),
    ({"half_length_range": (1, 4)}, "half_length_range lo must be an integer >= 2, got 1"),
    ({"half_length_range": (4, 3)}, "half_length_range hi must be an integer >= 4, got 3"),
    ({"half_length_range": 4}, "half_length_range must be two integers (lo, hi) with 2 <= lo <= hi, got 4"),
    ({"half_length": 5}, "half_length must be an integer in [2, 4], got 5"),
    ({"seq_len": 8}, ("seq_len must be >= 1 + 2 * 4 = 9 to hold [bos] + r + r for the longest half length "
                      "(half_length_range), got 8")),
    ({"vocab_size": 10}, ("vocab_size must be >= seq_len - 1 = 11: a training sequence's tokens are distinct apart "
                          "from the repeat, got 10")),
    ({"d_model": 9}, "d_model must be a multiple of n_head (2), got 9"),
    ({"checkpoints": 8}, "checkpoints must be <= steps + 1 = 7 (one per step at most, step 0 included), got 8"),
    ({"checkpoints": 1}, "checkpoints must be an integer >= 2, got 1"),
    ({"batch_size": 2.5}, "batch_size must be an integer >= 1, got 2.5"),
    ({"width": 3}, ("unknown option width for the induction family; known: vocab_size, half_length_range, "
                    "half_length, seq_len, n_layer, n_head, d_model, lr, batch_size, steps, checkpoints, eval_size, "
                    "seed, num_threads")),
])
def test_bad_options_are_refused_before_anything_is_created(tmp_path, change, message):
    with pytest.raises(ValueError) as caught:
        induction.train_family(tmp_path / "out", progress=False, **{**TINY, **change})
    assert str(caught.value) == message
    assert not (tmp_path / "out").exists()


def test_bad_family_name_and_seed_type():
    with pytest.raises(ValueError, match=r"^name must be one of \('induction',\), got 'grokking'$"):
        families.make_family("grokking", "unused")
    with pytest.raises(TypeError, match=r"^seed must be an integer, got str '1'$"):
        induction.check_config({"seed": "1"})


def test_read_checkpoint_info_none_and_malformed(tmp_path):
    assert families.read_checkpoint_info(tmp_path) is None
    (tmp_path / "emergence_fast.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"emergence_fast\.json is not valid JSON"):
        families.read_checkpoint_info(tmp_path)
    (tmp_path / "emergence_fast.json").write_text(json.dumps({"family": "induction", "step": -1, "steps_total": 3}))
    with pytest.raises(ValueError, match=r"emergence_fast\.json must be a JSON object with a string 'family' and "
                                         r"non-negative integers 'step' and 'steps_total'$"):
        families.read_checkpoint_info(tmp_path)
    (tmp_path / "emergence_fast.json").write_text(json.dumps({"family": "induction", "step": True, "steps_total": 3}))
    with pytest.raises(ValueError, match=r"non-negative integers 'step' and 'steps_total'$"):
        families.read_checkpoint_info(tmp_path)
    (tmp_path / "family.json").write_text("[]")
    with pytest.raises(ValueError, match=r"family\.json must be a JSON object with a 'checkpoints' list$"):
        induction.read_family(tmp_path)


def test_checkpoint_steps_and_names():
    assert induction.checkpoint_steps(10, 11) == list(range(11))
    assert induction.checkpoint_steps(3000, 4) == [0, 1000, 2000, 3000]
    assert induction.step_folder_name(150, 3000) == "step-000150"
    assert induction.step_folder_name(5, 12345678) == "step-00000005"


def test_cli_end_to_end(tmp_path, capsys):
    out = tmp_path / "family"
    assert main(["make-family", "induction", "--out", str(out), *TINY_FLAGS]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"3 checkpoints in {out} (steps 0 ... 6); in-context loss ")
    assert [p.name for p in _checkpoints(out)] == ["step-000000", "step-000003", "step-000006"]
    assert induction.read_family(out)["config"] == json.loads(json.dumps(induction.check_config(TINY)))


@pytest.mark.parametrize("flags, message", [
    (["--steps", "0"], "--steps must be an integer >= 1, got 0"),
    (["--lr", "0"], "--lr must be a finite number > 0, got 0.0"),
    (["--half-length-min", "1"], "--half-length-min must be >= 2, got 1"),
    (["--half-length-max", "1"], "--half-length-max must be >= 2, got 1"),
    (["--half-length-min", "4", "--half-length-max", "3"], "--half-length-max must be >= --half-length-min (4), got 3"),
    (["--half-length", "9"], "--half-length must be an integer in [2, 4], got 9"),
    (["--d-model", "9"], "--d-model must be a multiple of --n-head (2), got 9"),
    (["--seed", str(2**64)], f"--seed must be an integer in [-2**63, 2**64 - 1], got {2**64}"),
    (["--checkpoints", "9"], "--checkpoints must be <= --steps + 1 = 7 (one per step at most, step 0 included), got 9"),
    (["--seq-len", "8"], ("--seq-len must be >= 1 + 2 * 4 = 9 to hold [bos] + r + r for the longest half length "
                          "(--half-length-min/--half-length-max), got 8")),
    (["--seq-len", "30"], ("--vocab-size must be >= --seq-len - 1 = 29: a training sequence's tokens are distinct "
                           "apart from the repeat, got 16")),
])
def test_cli_bad_input_is_one_line_exit_2_and_creates_nothing(tmp_path, capsys, flags, message):
    out = tmp_path / "family"
    assert main(["make-family", "induction", "--out", str(out), *TINY_FLAGS, *flags]) == 2
    err = capsys.readouterr().err
    assert err == f"emergence-fast make-family: error: {message}\n"
    assert not out.exists()


def test_cli_a_flag_of_the_wrong_type_is_argparse_s_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as caught:
        main(["make-family", "induction", "--out", str(tmp_path / "family"), "--seed", "x"])
    assert caught.value.code == 2
    assert capsys.readouterr().err == "emergence-fast make-family: error: argument --seed: invalid int value: 'x'\n"
    assert not (tmp_path / "family").exists()


def test_cli_refuses_a_foreign_out(tmp_path, capsys):
    (tmp_path / "x.txt").write_text("mine")
    assert main(["make-family", "induction", "--out", str(tmp_path), *TINY_FLAGS]) == 2
    assert capsys.readouterr().err == (f"emergence-fast make-family: error: --out {str(tmp_path)!r} is not empty and holds "
                                       f"no induction family; choose an empty or new --out\n")


def test_cli_ctrl_c_is_exit_130_and_leaves_no_family(tmp_path, capsys, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(induction, "_save_checkpoint", interrupt)
    out = tmp_path / "family"
    assert main(["make-family", "induction", "--out", str(out), *TINY_FLAGS]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "emergence-fast make-family: interrupted"
    assert not (out / "family.json").exists() and not (out / ".emergence-fast.lock").exists()
