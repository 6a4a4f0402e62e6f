"""IE's sample-based estimators within state_memory: chunked == one batch bit for bit, a budget
too small is refused before any forward pass, and the estimate stage's measured peak RSS stays
within the room the plan gives it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from emergence_fast import distributed, estimate_memory
from emergence_fast import emergence as ie
from emergence_fast.estimators import MI_METHODS
from emergence_fast.estimators.uncertainty import estimate_with_stderr
from emergence_fast.estimators import registry
from emergence_fast.ie.plan import _plan_state
from tests.tiny_models import icl_ids, one_thread, tiny_model  # noqa: F401 (autouse)

N = 120
ROOT = Path(__file__).resolve().parents[1]
# Options small enough for a unit test; the chunking does not depend on them.
CASES = {"ksg": {"k": 3, "jitter": 1e-3},
         "renyi": {},
         # patience 2: cells stop at different steps (40 to 150), so chunks end before the whole batch would
         "infonce": {"steps": 150, "batch_size": 32, "eval_every": 5, "patience": 2},
         "chen2024": {"steps": 12}}


@pytest.fixture(scope="module")
def gpt2():
    return tiny_model("gpt2")


@pytest.fixture(scope="module")
def states(gpt2):
    """Every state of N samples (3 layers x 4 positions = 12 cells, width 32), captured once."""
    return ie.capture_states(gpt2, None, icl_ids(N, k_shots=2, n_entities=20), add_bos=False, batch_size=N)


def estimate(states, estimator, working):
    return ie._estimate_from_reservoir(registry.get(estimator), states.reservoir, states.micro_in, states.micro_out, states.tokens,
                                       states.input_ids, CASES[estimator], 2, distributed.World(), working=working)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("estimator", list(CASES))
def test_chunked_equals_one_batch_bit_for_bit(states, estimator, threads):
    x, _ = states.reservoir.pairs()
    n_cells, m, width = x.shape[0] * x.shape[1], x.shape[2], x.shape[3]
    one_batch = estimate_memory.plan_chunks(estimator, CASES[estimator], m, width, n_cells, 2**40)
    assert one_batch.cells == n_cells and one_batch.resamples in (None, 32)
    # The least room that runs: chunks of 2 cells (12 is even), the jackknife in small groups of resamples
    # (two for KSG; Rényi's value call on all m rows outweighs a few half-sample Gram matrices).
    tight = estimate_memory.minimum_bytes(estimator, CASES[estimator], m, width, n_cells)
    chunked = estimate_memory.plan_chunks(estimator, CASES[estimator], m, width, n_cells, tight)
    assert chunked.cells == 2 and (chunked.resamples is None or chunked.resamples <= 4)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # several threads: a batch of one would round differently (estimate_memory)
    try:
        whole, parts = estimate(states, estimator, 2**40), estimate(states, estimator, tight)
        # A middle size: uneven chunks (5 chunks of 3 and 2 cells over 12), resamples not a divisor of 32.
        middle = estimate_memory.chunk_bytes(estimator, CASES[estimator], m, width, 3, 5)
        mixed = estimate(states, estimator, middle)
    finally:
        torch.set_num_threads(before)
    for a, b, c in zip(whole, parts, mixed):
        assert torch.equal(a.nan_to_num(-7.0), b.nan_to_num(-7.0)) and torch.equal(a.nan_to_num(-7.0),
                                                                                    c.nan_to_num(-7.0))
    assert bool(torch.isfinite(whole[0]).all()) and bool(torch.isfinite(whole[3]).all())


def test_one_chunk_is_the_unchunked_computation(states):
    """The reference above is the pre-chunking code path: one estimator call on [L, T, m, d], one jackknife."""
    x, y = states.reservoir.pairs()
    options = {"base": 2, **CASES["ksg"]}
    value, stderr = estimate_with_stderr(MI_METHODS["ksg"], "ksg", (x, y), options)
    macro, macro_se, *_ = estimate(states, "ksg", 2**40)
    assert torch.equal(macro, value) and torch.equal(macro_se, stderr)


def test_state_memory_bounds_the_estimate_stage_too(gpt2):
    ids = icl_ids(N, k_shots=2, n_entities=20)
    options = {"estimator": "ksg", "estimator_options": CASES["ksg"], "add_bos": False, "batch_size": 40,
               "reservoir_size": N}
    roomy = ie.information_emergence(gpt2, None, ids, **options)
    # The least budget that keeps all N rows: the reservoir (12 cells x 2 x 32 float32 per row), the micro
    # states (3 layers x distinct tokens) and the smallest chunk.
    reservoir, micro = N * 12 * 64 * 4, 3 * torch.unique(ids).numel() * 64 * 4
    tight_budget = reservoir + micro + estimate_memory.minimum_bytes("ksg", CASES["ksg"], N, 32, 12)
    tight = ie.information_emergence(gpt2, None, ids, state_memory=tight_budget, **options)
    assert roomy.provenance["estimate_chunks"]["cells_per_chunk"] == 12
    assert tight.provenance["estimate_chunks"] == {"working_bytes": tight_budget - reservoir - micro,
                                                   "cells_per_chunk": 2, "resamples_per_call": 2}
    assert tight.config["reservoir"] == roomy.config["reservoir"] == [N, 0]  # same rows, other chunks
    for name in ("macro", "micro", "macro_stderr", "micro_stderr", "emergence"):
        assert torch.equal(getattr(tight, name), getattr(roomy, name)), name
    assert tight.provenance["state_bytes"] <= tight_budget


@pytest.mark.parametrize("estimator", ["ksg", "infonce"])
def test_a_budget_too_small_is_refused_before_any_forward_pass(gpt2, estimator):
    calls = []
    handle = gpt2.register_forward_pre_hook(lambda *args: calls.append(1))
    try:
        with pytest.raises(ValueError, match=rf"state_memory=1 MB is too small for the {estimator} estimator here: a "
                                             r"reservoir of 64 rows .* needs \d"):
            ie.information_emergence(gpt2, None, icl_ids(N, k_shots=2, n_entities=20), estimator=estimator,
                                     estimator_options=CASES[estimator], add_bos=False, state_memory="1MB")
    finally:
        handle.remove()
    assert calls == []


def test_estimate_stage_without_room_names_what_it_needs(states):
    with pytest.raises(ValueError, match=r"the ksg estimate needs .* of working memory .* raise state_memory"):
        estimate(states, "ksg", 1000)


def test_the_reservoir_shrinks_before_the_chunks_cannot_fit():
    """A budget that fits the smallest chunk but not the reservoir asked for keeps the most rows that fit."""
    # SmolLM2's shape (240 cells, width 576), batches of 8 (a fold buffer smaller than the estimate stage).
    budget = 64 * 240 * 1152 * 4 + 30 * 100 * 1152 * 4 + estimate_memory.minimum_bytes("ksg", {}, 64, 576, 240)
    plan = _plan_state(registry.get("ksg"), {}, 240, 576, 1024, 8, 8, 1024, budget, micro_rows=30 * 100)
    assert plan.capacity == 64 and plan.chunk_cells == 2 and plan.chunk_resamples == 2 and plan.bytes == budget
    with pytest.raises(ValueError, match="state_memory=.* too small for the ksg estimator.*estimate stage"):
        _plan_state(registry.get("ksg"), {}, 240, 576, 1024, 8, 8, 1024, budget - 1, micro_rows=30 * 100)
    demo = _plan_state(registry.get("ksg"), {"jitter": 1e-4}, 240, 576, 1024, 64, 512, 1024, 8 * 10**9, micro_rows=30 * 110)
    assert demo.capacity == 1024 and demo.chunk_resamples == 32 and 2 <= demo.chunk_cells < 240
    assert demo.bytes <= 8 * 10**9


def test_chunks_split_over_ranks_give_the_one_process_answer(tmp_path):
    """Each rank estimates a contiguous share of the chunks; combined, they are one process's numbers."""
    from tests.test_distributed_ie import assert_same, run_one, run_ranks

    n, options = 50, {"k": 3, "jitter": 1e-3}
    reservoir, micro = n * 12 * 64 * 4, 3 * torch.unique(icl_ids(n, k_shots=2, n_entities=20)).numel() * 64 * 4
    budget = reservoir + micro + estimate_memory.minimum_bytes("ksg", options, n, 32, 12)
    config = {"estimator": "ksg", "batch_size": 10, "update_samples": 10, "reservoir_size": n,
              "estimator_options": options, "state_memory": budget}
    whole = run_one(config, n)
    assert whole.provenance["estimate_chunks"]["cells_per_chunk"] == 2  # 6 chunks: 2 per rank
    assert_same(run_ranks(3, config, n, tmp_path), whole, rtol=0)


# --- measured: the estimate stage's peak RSS in a subprocess ---------------------------------------

CHILD = r"""
import json, re, sys
import torch
import transformers as tf
from emergence_fast import emergence as ie
from tests.tiny_models import icl_ids

spec = json.loads(sys.argv[1])
torch.set_num_threads(1)

def status(key):
    return int(re.search(key + r":\s+(\d+)", open("/proc/self/status").read()).group(1)) * 1024

record = {}
estimate = ie._estimate_from_reservoir

def measured(*args, **kwargs):  # the estimate stage alone: reset the peak mark, then read it
    open("/proc/self/clear_refs", "w").write("5")
    record["before"] = status("VmRSS")
    try:
        return estimate(*args, **kwargs)
    finally:
        record["peak"] = status("VmHWM")

ie._estimate_from_reservoir = measured
torch.manual_seed(0)
config = tf.GPT2Config(n_layer=3, n_embd=128, n_head=2, vocab_size=64, n_positions=64, bos_token_id=None,
                       eos_token_id=None)
model = tf.GPT2LMHeadModel(config).eval()
ids = icl_ids(spec["n"], k_shots=2, n_entities=20)
result = ie.information_emergence(model, None, ids, estimator="ksg", estimator_options={"k": 3, "jitter": 1e-3},
                                  add_bos=False, batch_size=100, reservoir_size=spec["n"],
                                  state_memory=spec["budget"])
print(json.dumps({**record, **result.provenance["estimate_chunks"], "capacity": result.config["reservoir"][0]}))
"""


def run_child(n, budget):
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps({"n": n, "budget": budget})], check=False,
                         cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak RSS reset needs Linux /proc")
def test_measured_estimate_stage_stays_within_the_room_the_budget_leaves():
    # 3 blocks x 4 positions of width 128, 400 rows: KSG's jackknife on all 12 cells at once holds about
    # 0.2 GB; a 100 MB budget must run it in chunks, and its peak above the RSS before the estimate stage
    # (model, reservoir, micro states: the baseline) must stay within the working bytes the plan left.
    budget = 100 * 10**6
    tight = run_child(400, budget)
    assert tight["capacity"] == 400 and tight["cells_per_chunk"] < 12
    assert tight["peak"] - tight["before"] <= tight["working_bytes"] <= budget, tight
    # The check has teeth: one batch of all cells (an 8 GB budget) peaks above that budget.
    roomy = run_child(400, 8 * 10**9)
    assert roomy["cells_per_chunk"] == 12 and roomy["peak"] - roomy["before"] > budget, roomy


def test_chen2024_in_ie_is_labelled_the_paper_faithful_number(gpt2):
    result = ie.information_emergence(gpt2, None, icl_ids(40, k_shots=2, n_entities=20), estimator="chen2024",
                                      estimator_options={"steps": 5}, add_bos=False, batch_size=40)
    assert result.unit == "bits"  # IE passes base=2 explicitly; the preset alone now reports nats
    notes = [note for note in result.notes if "paper-faithful" in note]
    assert len(notes) == 1 and "maximum over training steps" in notes[0] and "biased upward" in notes[0]
    assert "5 full-batch steps" in notes[0]
