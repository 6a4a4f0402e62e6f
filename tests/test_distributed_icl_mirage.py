"""ICL and mirage live scoring on 2 and 3 real gloo ranks equal one process's, bit for bit.

Each rank is a real process (``spawn``) in a real gloo group that the worker initialises itself,
as a caller's DDP job would; the library then finds that group (``world=None``). Shards are
uneven on purpose: unit counts not divisible by the ranks, and jobs with fewer units than ranks
(some ranks get no work). Every rank saves what it got; the test compares each with a
single-process run here, with exact equality. The CLIs run once under ``torchrun``.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from emergence_fast.distributed import World, shard
from tests.tiny_models import one_thread  # noqa: F401 (autouse fixture)

ROOT = Path(__file__).resolve().parents[1]
JUDGE_ARGS = ["--concepts", "01,011", "--max-len", "5", "--n-random", "1", "--n-boot", "10", "--batch-size", "4"]
# Three prompt groups (two with a trunk, one prompt alone), one prompt per batch: ranks straddle groups.
MULTI_GROUP = [(5, 6, 7, 8, 9), (5, 6, 7, 8), (20, 21, 22, 23), (20, 21, 22, 30), (40,)]
CHOICE_PROMPTS = ["Q: 1?\nA:", "\n\nQ: What is 12 times 3?\n\nA:", "A:"]
CHOICE_OPTIONS = [[" 1", " 2"], [" 36", " 35", " 63"], [" yes", " no"]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _icl_models():
    from tests.icl.coin import coin_tokenizer
    from tests.tiny_models import tiny_model

    return tiny_model("llama"), coin_tokenizer()


def _arithmetic():
    from emergence_fast.mirage.tasks import arithmetic_task

    return arithmetic_task("arithmetic-2d-mult", 9, shots=1, seed=3)


def _mirage_loader(name):
    from tests.mirage.tiny import char_tokenizer, tiny_gpt2

    tok = char_tokenizer(bos=True)
    return tiny_gpt2(width=16 if name == "small" else 32, seed=1 if name == "small" else 2, vocab=len(tok)), tok


def compute() -> dict:
    """Every scenario, through the public API with ``world=None`` (the current process group, if any)."""
    from emergence_fast.icl import concepts as C
    from emergence_fast.icl import prompts as P
    from emergence_fast.icl.runner import PromptRunner
    from emergence_fast.mirage.live import run_family
    from emergence_fast.mirage.scoring import score_choices, score_targets
    from tests.mirage.tiny import char_tokenizer, tiny_gpt2

    out = {}
    model, tok = _icl_models()
    judge = C.judgment_curves(model, tok, ["01", "011"], 5, n_random=1, seed=0, batch_size=4, n_boot=10)
    out["judge"] = {k: v for k, v in judge.to_dict().items() if k != "provenance"}
    out["judge_stats"] = {k: judge.provenance["runner"][k] for k in ("prompts", "unique_prompts")}
    tree = C.tree_curves(model, tok, ["011"], 3, 2, batch_size=4, n_boot=0)
    out["tree"] = {k: v for k, v in tree.to_dict().items() if k != "provenance"}
    runner = PromptRunner(model, tok, batch_size=4)
    one = runner.encode([P.judgment_prompt((0, 1, 1))])
    out["one_prompt_logits"] = runner.map_last_logits(one, lambda logits: logits)          # 1 unit
    grouped = PromptRunner(model, tok, batch_size=1)
    out["multi_group_logits"] = grouped.map_last_logits(MULTI_GROUP, lambda logits: logits)  # 5 units
    out["multi_group_stats"] = {k: grouped.stats.to_dict()[k] for k in ("prompts", "unique_prompts")}
    plain = PromptRunner(model, tok, batch_size=2, prefix_cache=False)
    seqs = plain.encode([P.judgment_prompt(P.concept_context((0, 1), n)) for n in range(1, 6)])
    out["plain_logits"] = plain.map_last_logits(seqs, lambda logits: logits)               # 5 units
    prompts = runner.encode([P.generation_prompt(30), P.generation_prompt(70)])
    out["samples"] = runner.sample_many(prompts, 5, 6, seeds=[3, 4])                       # 2 x 3 units

    tok = char_tokenizer(bos=True)
    gpt = tiny_gpt2(seed=5, vocab=len(tok))
    task = _arithmetic()
    for continuation in ("teacher_forced", "free_running"):                                 # 5 units
        scored = score_targets(gpt, tok, task.prompts, task.targets, batch_size=2, continuation=continuation)
        out[f"targets_{continuation}"] = {"log_probs": scored.token_log_probs, "greedy": scored.greedy_ids,
                                          "greedy_text": scored.greedy_text, "metrics": scored.metrics()}
    choices = score_choices(gpt, tok, CHOICE_PROMPTS, CHOICE_OPTIONS)                      # 1 unit
    out["choices"] = {"log_probs": choices.option_log_probs, "counts": choices.option_token_counts}
    family = run_family(["big", "small"], "arithmetic-2d-mult", n_examples=5, shots=1, batch_size=2,
                        loader=_mirage_loader)                                              # 3 units per model
    out["family"] = {"models": family.models, "params": family.params, "values": family.values,
                     "per_example": family.per_example, "loss": family.loss}
    return out


def unit_counts() -> dict:
    """How many units each sharded call has (so the test can show the shards are uneven)."""
    from emergence_fast.icl import concepts as C
    from emergence_fast.icl import prompts as P
    from emergence_fast.icl.runner import PromptRunner

    model, tok = _icl_models()

    def planned(runner, seqs):
        plan, _, _ = runner._plan(list(dict.fromkeys(seqs)))
        return [len(group.batches) for group in plan]

    runner = PromptRunner(model, tok, batch_size=4)
    texts = [P.judgment_prompt(seq[:n]) for _, _, seq, _ in C._sequences(["01", "011"], 1, 5, 0) for n in range(1, 6)]
    return {"judge": sum(planned(runner, runner.encode(texts))),
            "multi_group": planned(PromptRunner(model, tok, batch_size=1), MULTI_GROUP),
            "one_prompt": 1, "plain": 5, "samples": 6, "targets": 5, "choices": 1, "family": 3}


def _local_forwards() -> int:
    """Forward calls this rank makes for the 5-batch score_targets job (its shard of the batches)."""
    from emergence_fast.mirage.scoring import score_targets
    from tests.mirage.tiny import char_tokenizer, tiny_gpt2

    tok = char_tokenizer(bos=True)
    gpt, calls = tiny_gpt2(seed=5, vocab=len(tok)), []
    gpt.register_forward_pre_hook(lambda module, args: calls.append(1))
    task = _arithmetic()
    score_targets(gpt, tok, task.prompts, task.targets, batch_size=2)
    return len(calls)


def _cli_args(argv, command=("icl", "judge")):
    from emergence_fast.icl import cli as icl_cli
    from emergence_fast.mirage import cli as mirage_cli

    parser = argparse.ArgumentParser(prog="emergence-fast")
    sub = parser.add_subparsers(dest="command", required=True)
    icl_cli.add_parser(sub)
    mirage_cli.add_parser(sub)
    return parser.parse_args([*command, *argv])


def _mirage_args(folders, out):
    return _cli_args(["--models", *folders, "--task", "arithmetic-2d-mult", "--n-examples", "5", "--shots", "1",
                      "--batch-size", "2", "--n-boot", "20", "--out", str(out)], command=("mirage",))


def _worker(rank: int, world_size: int, port: int, folder: str, model_folder: str, mirage_folders: list,
            with_cli: bool) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)
    from datetime import timedelta

    dist.init_process_group("gloo", timeout=timedelta(seconds=90))
    try:
        folder = Path(folder)
        result = compute()
        result["local_forwards"] = _local_forwards()
        if with_cli:
            # The CLI inside the caller's group: the same result; only rank 0 creates and writes --out
            # (the other ranks are pointed at their own folder, which must not appear).
            out_dir = folder / ("cli" if rank == 0 else f"cli-rank{rank}")
            stdout = io.StringIO()
            args = _cli_args(["--model", model_folder, *JUDGE_ARGS, "--out", str(out_dir)])
            result["cli_written"] = [Path(p).name for p in args.func(args, out=stdout)]
            result["cli_stdout"] = stdout.getvalue()
            result["cli_out_exists"] = out_dir.exists()
            # Ranks that disagree on the configuration fail, every one of them, before any work.
            args = _cli_args(["--model", model_folder, *JUDGE_ARGS, "--seed", str(rank),
                              "--out", str(folder / "never")])
            try:
                args.func(args, out=io.StringIO())
                result["disagreement"] = None
            except ValueError as exc:  # the CLI prints it as one line, exit code 2
                result["disagreement"] = str(exc)
            mirage_out = folder / ("mirage" if rank == 0 else f"mirage-rank{rank}")
            args = _mirage_args(mirage_folders, mirage_out)
            stdout = io.StringIO()
            result["mirage_rc"] = args.func(args, out=stdout)
            result["mirage_stdout"] = stdout.getvalue()
            result["mirage_out_exists"] = mirage_out.exists()
        result["group_alive"] = dist.is_initialized()   # the caller's group is the caller's to destroy
        torch.save(result, folder / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _assert_same(a, b, where="result"):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and np.isnan(a):
        assert isinstance(b, float) and np.isnan(b), where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.fixture(scope="module")
def single():
    return compute()


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    from tests.icl.coin import coin_tokenizer
    from tests.tiny_models import tiny_model

    folder = tmp_path_factory.mktemp("tiny-icl-model")
    tiny_model("llama").save_pretrained(folder)
    coin_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def mirage_folders(tmp_path_factory):
    folders = []
    for name in ("big", "small"):
        folder = tmp_path_factory.mktemp(f"tiny-mirage-{name}")
        model, tok = _mirage_loader(name)
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        folders.append(str(folder))
    return folders


@pytest.fixture(scope="module")
def single_cli(model_folder, tmp_path_factory):
    """``icl judge`` in this process: the folder it wrote and its JSON."""
    folder = tmp_path_factory.mktemp("single-cli")
    args = _cli_args(["--model", str(model_folder), *JUDGE_ARGS, "--out", str(folder)])
    args.func(args, out=io.StringIO())
    return folder, json.loads((folder / "icl_judge.json").read_text())


# The CLI inside the caller's group runs in the 3-rank job only (two ranks that must not write).
@pytest.mark.parametrize("world_size, with_cli", [(2, False), (3, True)])
def test_ranks_reproduce_one_process(world_size, with_cli, single, single_cli, model_folder, mirage_folders,
                                     tmp_path):
    counts = unit_counts()
    # 4 judgment units (packed tails) and 5 grouped ones: 5 is uneven for 2 and 3 ranks, 4 for 3.
    assert counts["judge"] == 4 and counts["multi_group"] == [2, 2, 1]
    assert counts["targets"] % world_size and counts["samples"] % 4
    assert counts["choices"] < world_size and counts["one_prompt"] < world_size   # ranks without work
    context = torch.multiprocessing.get_context("spawn")
    port = _free_port()
    workers = [context.Process(target=_worker, args=(rank, world_size, port, str(tmp_path), str(model_folder),
                                                    mirage_folders, with_cli))
               for rank in range(world_size)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=240)
    for w in workers:
        if w.is_alive():
            w.kill()
    assert [w.exitcode for w in workers] == [0] * world_size

    single_folder, expected_cli = single_cli
    if with_cli:
        got_cli = json.loads((tmp_path / "cli" / "icl_judge.json").read_text())
        assert got_cli["curves"] == expected_cli["curves"] and got_cli["config"] == expected_cli["config"]
        assert got_cli["provenance"]["distributed"] == {"world_size": world_size, "backend": "gloo"}
        assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == sorted(p.name for p in single_folder.iterdir())
        args = _mirage_args(mirage_folders, tmp_path / "mirage-single")
        assert args.func(args, out=io.StringIO()) == 0
        expected = json.loads((tmp_path / "mirage-single" / "mirage.json").read_text())
        assert json.loads((tmp_path / "mirage" / "mirage.json").read_text()) == expected
        assert sorted(p.name for p in (tmp_path / "mirage").iterdir()) == ["mirage.csv", "mirage.json",
                                                                           "mirage_curves.png"]

    for rank in range(world_size):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        for key in single:
            _assert_same(got[key], single[key], f"rank {rank} {key}")
        assert got["group_alive"]
        assert got["local_forwards"] == len(shard(5, World(rank, world_size)))   # only its own batches
        if not with_cli:
            continue
        assert "ranks disagree" in got["disagreement"] and "seed" in got["disagreement"]
        assert "\n" not in got["disagreement"]
        if rank == 0:
            assert got["cli_out_exists"] and "wrote" in got["cli_stdout"]
            assert got["mirage_rc"] == 0 and got["mirage_out_exists"] and "wrote" in got["mirage_stdout"]
            assert set(got["cli_written"]) == {"icl_judge.json", "icl_judge.csv", "icl_judge_transitions.csv",
                                               "icl_judge.png"}
        else:
            assert not got["cli_out_exists"] and got["cli_stdout"] == "" and got["cli_written"] == []
            assert got["mirage_rc"] == 0 and not got["mirage_out_exists"] and got["mirage_stdout"] == ""
    assert not (tmp_path / "never").exists()


def test_torchrun_icl_cli_matches_one_process(model_folder, single_cli, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "emergence_fast.cli", "icl", "judge", "--model", str(model_folder), *JUDGE_ARGS,
               "--out", str(tmp_path / "dist")]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("wrote ") == 1 and "on 2 ranks" in done.stdout   # rank 0 prints, once
    single_folder, expected = single_cli
    got = json.loads((tmp_path / "dist" / "icl_judge.json").read_text())
    assert got["curves"] == expected["curves"] and got["config"] == expected["config"]
    assert got["provenance"]["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert sorted(p.name for p in (tmp_path / "dist").iterdir()) == sorted(p.name for p in single_folder.iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error for a machine without GPUs")
@pytest.mark.parametrize("argv", [["icl", "judge"], ["mirage", "--models", "default", "--task", "arithmetic-2d-mult"]])
def test_nccl_without_gpus_is_a_one_line_error(argv, tmp_path, capsys):
    from emergence_fast.icl import cli as icl_cli
    from emergence_fast.mirage import cli as mirage_cli

    parser = argparse.ArgumentParser(prog="emergence-fast")
    sub = parser.add_subparsers(dest="command", required=True)
    icl_cli.add_parser(sub)
    mirage_cli.add_parser(sub)
    args = parser.parse_args([*argv, "--dist-backend", "nccl", "--out", str(tmp_path / "out")])
    with pytest.raises(ValueError) as info:  # the CLI prints it as one line, exit code 2
        args.func(args, out=io.StringIO())
    message = str(info.value)
    assert message.startswith("--dist-backend: ") and "nccl" in message and "GPU" in message and "\n" not in message
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit):
        parser.parse_args([*argv, "--dist-backend", "mpi"])
    assert "invalid choice: 'mpi'" in capsys.readouterr().err
