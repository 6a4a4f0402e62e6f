"""`emergence-fast ie` under torchrun (real gloo ranks): same files as one process, kill and resume, bounded memory."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.tiny_models import icl_ids, tiny_tokenizer

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TRITON_INTERPRET": "1", "PYTHONWARNINGS": "ignore"}


def save_model(folder: Path, width: int = 32, n_layers: int = 3, vocab: int = 64):
    import transformers as tf

    torch.manual_seed(0)
    config = tf.GPT2Config(n_layer=n_layers, n_embd=width, n_head=2, vocab_size=vocab, n_positions=64,
                           bos_token_id=None, eos_token_id=None)
    tf.GPT2LMHeadModel(config).eval().save_pretrained(folder)
    tiny_tokenizer(bos=False).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_model(tmp_path_factory.mktemp("model"))


def ie_args(model, ids_path, n, out, *extra):
    return ["-m", "emergence_fast.cli", "ie", "--model", str(model), "--dataset", f"ids:{ids_path}", "--n-samples",
            str(n), "--quiet", "--out", str(out), *extra]


def run(command, **kwargs):
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600, **kwargs)


def load(out: Path) -> dict:
    return json.loads((out / "ie.json").read_text())


def _tensor(rows) -> torch.Tensor:
    """ie.json numbers; non-finite ones are written as strings ("inf", "nan")."""
    return torch.tensor([[float(v) for v in row] for row in rows], dtype=torch.float64)


def assert_same_estimates(a: dict, b: dict):
    for name in ("macro", "micro", "emergence", "macro_stderr", "micro_stderr"):
        x, y = _tensor(a[name]), _tensor(b[name])
        assert torch.equal(x.isfinite(), y.isfinite()) and torch.equal(x.isnan(), y.isnan()), name
        finite = x.isfinite()
        scale = torch.maximum(_tensor(a["macro"]).abs(), x.abs()).clamp_min(1e-6)
        assert bool(((x - y).abs() <= 1e-12 * scale)[finite].all()), name


def test_torchrun_two_ranks_writes_the_one_process_result(model_dir, tmp_path):
    ids = tmp_path / "ids.pt"
    torch.save(icl_ids(60, k_shots=2, n_entities=20), ids)
    one = run([sys.executable, *ie_args(model_dir, ids, 60, tmp_path / "one", "--batch-size", "7",
                                        "--update-samples", "7")])
    assert one.returncode == 0, one.stderr
    two = run([*TORCHRUN, "--nproc_per_node=2",
               *ie_args(model_dir, ids, 60, tmp_path / "two", "--batch-size", "7", "--update-samples", "7")])
    assert two.returncode == 0, two.stderr
    a, b = load(tmp_path / "one"), load(tmp_path / "two")
    assert_same_estimates(a, b)
    assert b["provenance"]["world"]["world_size"] == 2 and a["config"] == b["config"]
    assert not list((tmp_path / "two").glob("ie_checkpoint*"))  # every rank removed its own
    assert two.stdout.count("wrote ") == 1  # only rank 0 reports


def _kill_rank_when_checkpointed(process, checkpoint: Path, rank: int, deadline_s=300):
    """SIGKILL the worker whose environment says RANK=rank once its checkpoint exists."""
    start = time.time()
    while not checkpoint.exists():
        assert process.poll() is None, "the run ended before the rank checkpointed"
        assert time.time() - start < deadline_s
        time.sleep(0.05)
    for pid in Path("/proc").iterdir():
        if not pid.name.isdigit():
            continue
        try:
            environ = (pid / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ and "TORCHELASTIC_RUN_ID".encode() in b"".join(environ) and \
                str(checkpoint.parent).encode() in (pid / "cmdline").read_bytes():
            os.kill(int(pid.name), signal.SIGKILL)
            return
    raise AssertionError(f"no worker with RANK={rank} found")


def test_a_killed_rank_fails_cleanly_and_resume_finishes(model_dir, tmp_path):
    ids = tmp_path / "ids.pt"
    n = 600
    torch.save(icl_ids(n, k_shots=2, n_entities=20, seed=3), ids)
    out = tmp_path / "run"
    args = ie_args(model_dir, ids, n, out, "--batch-size", "4", "--update-samples", "4", "--checkpoint-every", "1")
    process = subprocess.Popen([*TORCHRUN, "--nproc_per_node=2", *args], env=ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    _kill_rank_when_checkpointed(process, out / "ie_checkpoint.rank1-of-2.pt", rank=1)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode != 0
    assert "exitcode  : -9" in stderr or "SIGKILL" in stderr, stderr[-2000:]
    # Nothing half-written: no result file; a checkpoint save cut short stays a .tmp that is never read.
    assert not (out / "ie.json").exists() and not [p for p in out.glob("*.tmp*") if not p.name.startswith("ie_check")]
    resumed = run([*TORCHRUN, "--nproc_per_node=2", *args, "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert not list(out.glob("*.tmp*")) and not list(out.glob("ie_checkpoint*"))
    whole = run([sys.executable, *ie_args(model_dir, ids, n, tmp_path / "whole", "--batch-size", "4",
                                          "--update-samples", "4")])
    assert whole.returncode == 0, whole.stderr
    assert_same_estimates(load(out), load(tmp_path / "whole"))


def test_cli_bad_distributed_input_is_one_line(model_dir, tmp_path):
    ids = tmp_path / "ids.pt"
    torch.save(icl_ids(40, k_shots=2, n_entities=20), ids)
    if not torch.cuda.is_available():
        result = run([sys.executable, *ie_args(model_dir, ids, 40, tmp_path / "o", "--dist-backend", "nccl")])
        assert result.returncode == 2 and "needs CUDA GPUs" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    result = run([sys.executable, *ie_args(model_dir, ids, 40, tmp_path / "o", "--state-memory", "1KB")])
    assert result.returncode == 2 and "is too small for" in result.stderr and "needs" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = run([sys.executable, *ie_args(model_dir, ids, 40, tmp_path / "o", "--state-memory", "lots")])
    assert result.returncode == 2 and "--state-memory must be a positive size" in result.stderr  # the flag, as the user typed it
    many = run([*TORCHRUN, "--nproc_per_node=3", *ie_args(model_dir, ids, 2, tmp_path / "m")])
    assert many.returncode != 0 and "more ranks (3) than samples (2)" in many.stderr


def test_wide_model_fits_the_state_budget(tmp_path):
    """d = 2048: full state for 2 layers x 8 positions is 4.3 GB (2.1 GB plain float64); it runs in a 256 MB budget."""
    model = save_model(tmp_path / "wide", width=2048, n_layers=2, vocab=64)
    ids = tmp_path / "ids.pt"
    torch.save(torch.randint(3, 64, (256, 8), generator=torch.Generator().manual_seed(0)), ids)
    probe = ("import resource, runpy, sys; sys.argv = ['emergence-fast'] + sys.argv[1:]; "
             "from emergence_fast.cli import main; code = main(); "
             "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)")
    baseline = run([sys.executable, "-c", "import resource, sys; from emergence_fast import models; "
                    f"models.load_model({str(model)!r}); "
                    "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"])
    result = run([sys.executable, "-c", probe, *ie_args(model, ids, 256, tmp_path / "out", "--state-memory", "256MB",
                                                         "--batch-size", "16", "--estimator", "gaussian")[2:]])
    assert result.returncode == 0, result.stderr
    peak = int(result.stdout.split("PEAK_RSS_KB")[1].split()[0]) * 1024
    loaded = int(baseline.stdout.split("PEAK_RSS_KB")[1].split()[0]) * 1024
    report = load(tmp_path / "out")
    assert report["config"]["state"]["kind"] == "subspace"
    assert any("exceed state_memory=256 MB" in note for note in report["notes"])
    # The run may use the model's memory plus the budget, plus transient float64 estimate work (< 256 MB here).
    assert peak - loaded < 2 * 256e6, (peak, loaded)


def test_accelerate_launch_gives_the_one_process_result(model_dir, tmp_path):
    """accelerate's multi-process launcher (torchrun underneath; gloo on this CPU) needs no code change."""
    ids = tmp_path / "ids.pt"
    torch.save(icl_ids(40, k_shots=2, n_entities=20, seed=5), ids)
    args = ["--batch-size", "6", "--update-samples", "6"]
    one = run([sys.executable, *ie_args(model_dir, ids, 40, tmp_path / "one", *args)])
    assert one.returncode == 0, one.stderr
    launched = run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                    "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                    *ie_args(model_dir, ids, 40, tmp_path / "acc", *args)])
    assert launched.returncode == 0, launched.stderr
    assert load(tmp_path / "acc")["provenance"]["world"]["world_size"] == 2
    assert_same_estimates(load(tmp_path / "one"), load(tmp_path / "acc"))


def test_a_second_run_on_the_same_out_is_refused(model_dir, tmp_path):
    import fcntl

    ids = tmp_path / "ids.pt"
    torch.save(icl_ids(40, k_shots=2, n_entities=20), ids)
    out = tmp_path / "busy"
    out.mkdir()
    with open(out / ".emergence-fast.lock", "w") as held:  # as the first run holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        second = run([sys.executable, *ie_args(model_dir, ids, 40, out)])
    assert second.returncode == 2 and "is in use by another emergence-fast run" in second.stderr
    assert not (out / "ie.json").exists()
    assert run([sys.executable, *ie_args(model_dir, ids, 40, out)]).returncode == 0  # released: runs


def test_max_memory_in_plain_bytes_and_bench_under_torchrun(model_dir, tmp_path):
    from emergence_fast.cli_checks import max_memory as _max_memory

    assert _max_memory("cpu=1000,0=70GB") == {"cpu": 1000, 0: "70GB"}
    launched = run([*TORCHRUN, "--nproc_per_node=2", "-m", "emergence_fast.cli", "bench", "--quick", "--model",
                    str(model_dir), "--out", str(tmp_path / "b")])
    assert launched.returncode != 0 and "bench measures one process" in launched.stderr


def test_checkpoint_every_zero_writes_no_checkpoint_and_leaves_only_results(model_dir, tmp_path):
    ids = tmp_path / "ids.pt"
    torch.save(icl_ids(40, k_shots=2, n_entities=20), ids)
    done = run([sys.executable, *ie_args(model_dir, ids, 40, tmp_path / "o", "--checkpoint-every", "0")])
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["ie.csv", "ie.json", "ie_heatmap.png",
                                                                  "ie_positions.png"]
    refused = run([sys.executable, *ie_args(model_dir, ids, 40, tmp_path / "o", "--checkpoint-every", "0",
                                            "--resume")])
    assert refused.returncode == 2 and "--checkpoint-every" in refused.stderr
