"""IE within a state budget: the plan, the principal-subspace state against full moments, bad budgets."""
from __future__ import annotations

import pytest
import torch

from emergence_fast import emergence as ie
from emergence_fast import estimate_memory
from emergence_fast._validation import parse_bytes
from emergence_fast.estimators import registry
from emergence_fast.ie.plan import _plan_state
from tests.tiny_models import icl_ids, tiny_model

OPTIONS = {"add_bos": False, "estimator": "gaussian", "estimator_options": {"pca": 4, "bias_correction": "none"},
           "batch_size": 50}


@pytest.fixture(scope="module")
def gpt2():
    return tiny_model("gpt2")


def test_full_state_when_it_fits_and_subspace_when_not():
    plan = _plan_state(registry.get("gaussian"), {"pca": 8}, 240, 576, 1024, 64, 512, 1024, parse_bytes("8GB", "x"))
    assert plan.kind == "full"  # the demo: SmolLM2, 30 blocks x 8 positions
    plan = _plan_state(registry.get("gaussian"), {"pca": 8}, 256, 4096, 10**7, 8, 512, 1024, parse_bytes("8GB", "x"))
    assert plan.kind == "subspace" and plan.rank >= 32 and plan.bytes <= 8e9  # a Llama-3-8B shape: 137 GB in full
    plan = _plan_state(registry.get("ksg"), {}, 256, 4096, 10**7, 8, 512, 1024, parse_bytes("2GB", "x"))
    assert plan.kind == "reservoir" and plan.capacity < 1024 and plan.bytes <= 2e9


def test_subspace_with_the_whole_data_as_pilot_equals_full_moments(gpt2):
    ids = icl_ids(100, k_shots=2, n_entities=20)
    full = ie.information_emergence(gpt2, None, ids, **OPTIONS)
    bounded = ie.information_emergence(gpt2, None, ids, state_memory=600_000, **OPTIONS)
    assert full.config["state"]["kind"] == "full"
    assert bounded.config["state"] == {"kind": "subspace", "fold_batches": 1, "rank": 8, "pilot": 100, "capacity": None}
    assert bounded.provenance["state_bytes"] <= 600_000
    # The top-4 components inside the pilot's top-8 directions are the full ones: float32 projection rounding only.
    torch.testing.assert_close(bounded.macro, full.macro, rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(bounded.micro, full.micro, rtol=1e-9, atol=1e-9)  # micro subspace is exact
    assert any("pilot is the whole data" in note for note in bounded.notes)
    captured = torch.tensor(bounded.provenance["subspace_captured_variance"])
    assert bool(((captured > 0) & (captured <= 1 + 1e-9)).all())


def test_a_subsample_pilot_converges_to_the_full_state_as_it_grows(gpt2):
    ids = icl_ids(600, k_shots=2, n_entities=20)
    full = ie.information_emergence(gpt2, None, ids, **OPTIONS)
    errors, pilots = [], []
    for budget in (520_000, 700_000, 900_000):
        bounded = ie.information_emergence(gpt2, None, ids, state_memory=budget, **OPTIONS)
        assert bounded.config["state"]["kind"] == "subspace"
        pilots.append(bounded.config["state"]["pilot"])
        errors.append(float((bounded.macro - full.macro).abs().max()))
    assert pilots == sorted(pilots) and pilots[-1] < 600
    assert errors == sorted(errors, reverse=True) and errors[-1] < 0.5 * errors[0]
    assert any("pilot is a subsample" in note for note in
               ie.information_emergence(gpt2, None, ids, state_memory=520_000, **OPTIONS).notes)


def test_sliced_runs_in_the_subspace_and_says_so(gpt2):
    ids = icl_ids(100, k_shots=2, n_entities=20)
    result = ie.information_emergence(gpt2, None, ids, estimator="sliced", state_memory=600_000, add_bos=False,
                                      estimator_options={"k": 2, "n_slices": 8, "seed": 0})
    assert result.config["state"]["kind"] == "subspace"
    assert any("sliced MI with slices drawn inside the rank-8 subspace" in note for note in result.notes)
    assert bool(torch.isfinite(result.macro).all())


def test_reservoir_shrinks_to_the_budget_and_says_so(gpt2):
    ids = icl_ids(100, k_shots=2, n_entities=20)
    options = {"k": 3, "jitter": 1e-3}
    # state_memory covers the estimate stage too: 80 rows of 12 cells x 2 x 32 float32, the micro states
    # (3 layers x 21 distinct tokens) and KSG's smallest chunk of cells (tests/test_emergence_memory.py).
    budget = 80 * 12 * 64 * 4 + 3 * 21 * 64 * 4 + estimate_memory.minimum_bytes("ksg", options, 80, 32, 12)
    result = ie.information_emergence(gpt2, None, ids, estimator="ksg", state_memory=budget, add_bos=False,
                                      reservoir_size=1024, batch_size=10, estimator_options=options)
    capacity = result.config["state"]["capacity"]
    assert capacity == 80 and result.config["reservoir"] == [capacity, 0]
    assert any(f"holds {capacity} rows per cell, not the 1024" in note for note in result.notes)


@pytest.mark.parametrize("budget, match", [("1KB", "too small for any estimator.*needs"), ("-3GB", "state_memory"),
                                           ("8XB", "state_memory"), (0, "state_memory"), (True, "state_memory")])
def test_bad_budgets(gpt2, budget, match):
    with pytest.raises(ValueError, match=match):
        ie.information_emergence(gpt2, None, icl_ids(40, k_shots=2, n_entities=20), state_memory=budget, **OPTIONS)


def test_parse_bytes_units():
    assert parse_bytes("256MB", "m") == 256_000_000 and parse_bytes("1.5GiB", "m") == 1.5 * 2**30
    assert parse_bytes(4096, "m") == 4096 and parse_bytes(" 8 gb ", "m") == 8e9


def test_resume_with_another_number_of_ranks_is_refused(gpt2, tmp_path):
    ids = icl_ids(40, k_shots=2, n_entities=20)
    for rank in range(2):
        (tmp_path / f"ie_checkpoint.rank{rank}-of-2.pt").write_bytes(b"from a 2-rank run")
    with pytest.raises(ValueError, match=r"another number of ranks \(ie_checkpoint.rank0-of-2.pt, ie_checkpoint.rank1"):
        ie.information_emergence(gpt2, None, ids, checkpoint_dir=tmp_path, resume=True, **OPTIONS)


def test_a_changed_option_on_resume_names_the_key(gpt2, tmp_path):
    ids = icl_ids(40, k_shots=2, n_entities=20)
    ie.information_emergence(gpt2, None, ids, checkpoint_dir=tmp_path, **OPTIONS)
    changed = {**OPTIONS, "estimator_options": {"pca": 3, "bias_correction": "none"}}
    with pytest.raises(ValueError, match="estimator_options differ; estimator_options: checkpoint"):
        ie.information_emergence(gpt2, None, ids, checkpoint_dir=tmp_path, resume=True, **changed)


@pytest.mark.parametrize("budget", ["inf", "-inf", "1e400", "nanGB"])
def test_non_finite_budgets(budget):
    with pytest.raises(ValueError, match="state_memory"):
        parse_bytes(budget, "state_memory")
