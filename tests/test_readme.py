"""Every command and snippet in README.md runs as written.

Each fenced ``bash`` command and ``python`` block runs from a sandbox laid out like a clean clone
beside ``../shared``: ``.venv`` is this interpreter's environment, and the README's placeholders
exist there as real inputs -- ``path/to/...`` model folders (tiny random Llamas with the embedded
model's tokenizer), ``corpus.txt`` (Debian licence text) and ``ids.pt``. The few lines that
cannot run on one CPU machine (several nodes, Slurm, ``...`` standing for the options of the
line above) are listed in ``NOT_RUN`` with the reason; an entry that no longer matches a README
line fails, so the list cannot go stale.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
VENV = Path(sys.prefix)

#: a README line (substring) that is not run -> why
NOT_RUN = {
    "make demo": "`emergence-fast ie --dataset icl-animal ... --out runs/ie` below is the same run at N = 256",
    "make test": "the suite this test belongs to",
    "pip install .": "it would replace this checkout's editable install; tests/test_packaging.py runs it in a fresh venv",
    "pip install --no-build-isolation": "as above",
    "emergence-fast ie ... --resume": "`...`: the options of the run being resumed",
    "--nnodes=4 --nproc_per_node=8": "four nodes",
    "accelerate launch --multi_gpu --num_processes 8 -m emergence_fast.cli ie ...": "`...`: the options above",
    "srun --ntasks-per-node=1": "Slurm",
    "torchrun --standalone --nproc_per_node=4 -m emergence_fast.cli icl judge ...": "`...`: the options of icl judge",
    "result = ef.information_emergence(model, tokenizer, data)": "one line run on every rank of the caller's own job",
}

MODEL_FOLDERS = ("path/to/hf-folder", "path/to/llama", "path/to/410m", "path/to/1b")


def _blocks():
    """``(first line number, language, text)`` of every fenced bash or python block."""
    text = (ROOT / "README.md").read_text()
    for match in re.finditer(r"^```(bash|python)\n(.*?)^```", text, re.S | re.M):
        yield text[:match.start()].count("\n") + 2, match.group(1), match.group(2)


def _commands(block: str):
    """Shell commands of a bash block: continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    for line in joined.splitlines():
        command = line.split("  #")[0].strip()
        if command and not command.startswith("#"):
            yield command


def _not_run(text: str) -> str | None:
    return next((why for key, why in NOT_RUN.items() if key in text), None)


def _units():
    """``(id, language, code)``: each python block whole, each bash command alone."""
    for line, language, block in _blocks():
        if language == "python":
            yield f"L{line}-python", "python", block
        else:
            for command in _commands(block):
                yield f"L{line}-{command[:60]}", "bash", command


def _cases():
    return [pytest.param(language, code, id=name, marks=pytest.mark.slow)
            for name, language, code in _units() if not _not_run(code)]


def test_every_not_run_entry_names_one_readme_example():
    matches = {key: [name for name, _, code in _units() if key in code] for key in NOT_RUN}
    assert {key: names for key, names in matches.items() if len(names) != 1} == {}


def test_the_readme_has_runnable_examples_of_every_command():
    runnable = " ".join(str(case.values[1]) for case in _cases())
    for command in ("emergence-fast ie", "emergence-fast icl judge", "emergence-fast icl tree",
                    "emergence-fast icl generate", "emergence-fast mirage --results", "emergence-fast mirage --models",
                    "torchrun", "information_emergence", "judgment_curves", "load_family", "emergence-fast sweep",
                    "emergence-fast make-family", "run_sweep"):
        assert command in runnable, command


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    if not (VENV / "bin" / "emergence-fast").exists():
        pytest.skip("the README's commands call .venv/bin/emergence-fast; this interpreter has no such script")
    if not SHARED.is_dir():
        pytest.skip("../shared (the README's data) is not beside this clone")
    from emergence_fast import models

    work = tmp_path_factory.mktemp("readme")
    repo = work / "repo"
    repo.mkdir()
    (work / "shared").symlink_to(SHARED)
    (repo / ".venv").symlink_to(VENV)
    _, tokenizer = models.load_model()
    for folder in MODEL_FOLDERS:
        _tiny_llama(repo / folder, tokenizer)
    texts, size = [], 0
    for path in sorted(Path("/usr/share/common-licenses").glob("*")) + sorted(Path("/usr/share/doc").glob("*/copyright")):
        if path.is_file() and size < 2_000_000:  # ~2 MB of English: well over the 1024 default spans
            texts.append(path.read_text(errors="replace"))
            size += len(texts[-1])
    (repo / "corpus.txt").write_text("\n".join(texts))
    torch.save(torch.randint(3, len(tokenizer), (4096, 8), generator=torch.Generator().manual_seed(0)),
               repo / "ids.pt")
    return repo


def _tiny_llama(folder: Path, tokenizer) -> None:
    import transformers as tf

    torch.manual_seed(0)
    config = tf.LlamaConfig(num_hidden_layers=12, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                            num_key_value_heads=2, vocab_size=len(tokenizer), max_position_embeddings=512,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            tie_word_embeddings=True)
    tf.LlamaForCausalLM(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)


@pytest.mark.parametrize("language, code", _cases())
def test_readme_example_runs_as_written(language, code, sandbox):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "MPLBACKEND": "Agg",
           "PATH": f"{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    if language == "python":
        argv = [sys.executable, "-c", code]
    else:
        argv = ["bash", "-c", code]
    run = subprocess.run(argv, cwd=sandbox, env=env, capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, f"{shlex.join(argv)[:300]}\n--- stdout\n{run.stdout[-3000:]}\n--- stderr\n{run.stderr[-5000:]}"
    assert "Traceback" not in run.stderr, run.stderr[-5000:]
