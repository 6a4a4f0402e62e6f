"""IE with the noisy-channel estimator on a tiny random model: bounded by the exact ceiling, zero where it must be."""
import pytest
import torch

from emergence_fast.emergence import information_emergence

from .tiny_models import SEPARATOR, icl_ids, tiny_model


@pytest.fixture(scope="module")
def run():
    model, ids = tiny_model("llama"), icl_ids(120, k_shots=3)

    def ie(**options):
        return information_emergence(model, None, ids, estimator="noisy", batch_size=40, **options), ids

    return ie


@pytest.mark.parametrize("sigma", [0.05, 0.3, 1.0])
def test_macro_and_micro_stay_at_or_below_the_exact_ceiling(run, sigma):
    result, _ = run(estimator_options={"sigma": sigma})
    assert bool((result.macro <= result.ceiling_macro + 2 * result.macro_stderr + 1e-6).all())
    assert bool((result.micro <= result.ceiling_micro + 2 * result.micro_stderr + 1e-6).all())
    assert not any("more than two standard errors" in note for note in result.notes)
    assert any(note.startswith("estimate: noisy-channel MI") for note in result.notes)


def test_micro_is_exactly_zero_at_separators_and_positive_at_entities(run):
    result, ids = run()
    separators = (ids == SEPARATOR).all(0)
    assert torch.equal(result.micro[:, separators], torch.zeros_like(result.micro[:, separators]))
    assert torch.equal(result.micro_stderr[:, separators], torch.zeros_like(result.micro_stderr[:, separators]))
    assert bool((result.micro[:, ~separators] > 2 * result.micro_stderr[:, ~separators]).all())


def test_small_sigma_reaches_the_ceiling_and_large_sigma_zero(run):
    # A random model keeps distinct prefixes apart: at a fine resolution every distinction is resolved.
    fine, _ = run(estimator_options={"sigma": 1e-4})
    resolved = fine.macro[1:]  # block 0's input at a separator is one embedding: its MI is 0
    torch.testing.assert_close(resolved, fine.ceiling_macro.expand_as(resolved), rtol=0, atol=1e-3)
    coarse, _ = run(estimator_options={"sigma": 1e3})
    assert float(coarse.macro.abs().max()) < 1e-4


@pytest.mark.parametrize("options, message", [
    ({"sigma": 0}, "sigma must be a finite number > 0"),
    ({"sigma": float("nan")}, "sigma must be a finite number > 0"),
    ({"n_draws": 1}, "n_draws must be an integer >= 2"),
    ({"seed": 2**63}, r"seed must be an integer in \[0, 2\*\*63\)"),  # the bound IE's own check lacked
    ({"seed": -1}, r"seed must be an integer in \[0, 2\*\*63\)"),
    ({"bandwidth": 1}, r"unknown keys \['bandwidth'\]"),
])
def test_bad_options_fail_before_any_forward_pass(options, message):
    with pytest.raises(ValueError, match=message):
        information_emergence(None, None, icl_ids(8), estimator="noisy", estimator_options=options)


def test_chunks_of_layers_give_the_numbers_of_one_chunk():
    from emergence_fast import distributed
    from emergence_fast.emergence import capture_states
    from emergence_fast.estimators import registry
    from emergence_fast.ie.estimate import _estimate_weighted

    states = capture_states(tiny_model("gpt2"), None, icl_ids(40, k_shots=2), batch_size=20)
    options = {"sigma": 0.3, "n_draws": 2, "seed": 0}
    args = (registry.get("noisy"), states.reservoir, states.micro_in, states.micro_out, states.tokens, states.input_ids, options, 2, None,
            distributed.World())
    whole = _estimate_weighted(*args, budget=2**40)
    one_layer = _estimate_weighted(*args, budget=1)  # one layer per chunk
    for a, b in zip(whole, one_layer):
        assert torch.equal(a.nan_to_num(), b.nan_to_num())


def test_the_budget_bounds_the_reservoir_and_the_estimate_stage():
    model, ids = tiny_model("gpt2"), icl_ids(120, k_shots=2)
    full = information_emergence(model, None, ids, estimator="noisy", batch_size=40)
    assert full.config["state"]["capacity"] == 1024
    small = information_emergence(model, None, ids, estimator="noisy", batch_size=40, state_memory="600KB")
    capacity = small.config["state"]["capacity"]
    assert 64 <= capacity < 120 and small.provenance["state_bytes"] <= 600_000
    assert any(f"holds {capacity} rows per cell" in note for note in small.notes)
    with pytest.raises(ValueError, match=r"state_memory=.* is too small for the noisy estimator here.*needs"):
        information_emergence(model, None, ids, estimator="noisy", batch_size=40, state_memory="200KB")


def test_atoms_are_prefixes_only_for_a_causal_model():
    from emergence_fast.ie.inputs import _is_causal

    assert _is_causal(tiny_model("gpt2")) and _is_causal(tiny_model("llama"))
    assert not _is_causal(tiny_model("bert"))  # a state at t depends on later tokens too
    ids = icl_ids(40, k_shots=2)
    result = information_emergence(tiny_model("bert"), None, ids, estimator="noisy", batch_size=20)
    assert bool((result.macro <= result.ceiling_macro + 2 * result.macro_stderr + 1e-6).all())


def test_a_reservoir_smaller_than_the_data_and_block_zero_are_explained(run):
    result, _ = run(reservoir_size=64)
    assert any("reservoir of 64 of the 120 samples" in note and "cannot exceed log(64) = 6 bits" in note
               for note in result.notes)
    assert any(note.startswith("block 0: its input is the token embedding alone") for note in result.notes)
    assert float(result.macro.max()) <= 6.0 + 1e-6 + 2 * float(result.macro_stderr.max())


def test_the_stated_minimum_budget_is_enough():
    import re

    model, ids = tiny_model("gpt2"), icl_ids(120, k_shots=2)
    with pytest.raises(ValueError) as refused:
        information_emergence(model, None, ids, estimator="noisy", batch_size=40, state_memory="1KB")
    minimum = int(re.search(r"\((\d+) bytes\)", str(refused.value)).group(1))
    result = information_emergence(model, None, ids, estimator="noisy", batch_size=40, state_memory=minimum)
    assert result.config["state"]["capacity"] == 64
