"""Capture once, estimate many: the states API gives information_emergence's numbers, estimator by estimator."""
import pytest
import torch

from emergence_fast.emergence import capture_states, estimate_from_states, information_emergence

from .tiny_models import icl_ids, tiny_model


@pytest.fixture(scope="module")
def setup():
    model, ids = tiny_model("gpt2"), icl_ids(60, k_shots=2)
    return model, ids, capture_states(model, None, ids, batch_size=16)


@pytest.mark.parametrize("estimator", ["gaussian", "sliced", "noisy", "ksg"])
def test_estimates_from_captured_states_equal_a_streaming_run(setup, estimator):
    model, ids, states = setup
    streamed = information_emergence(model, None, ids, estimator=estimator, batch_size=16, reservoir_size=60)
    captured = estimate_from_states(states, estimator)
    for name in ("macro", "micro", "macro_stderr", "micro_stderr", "ceiling_macro"):
        assert torch.equal(getattr(captured, name), getattr(streamed, name)), name
    assert captured.config["estimator"] == estimator


def test_sample_pairs_give_each_samples_token_fed_alone(setup):
    _, ids, states = setup
    x, y, micro_x, micro_y = states.sample_pairs()
    assert x.shape == micro_x.shape == (len(states.layers), ids.shape[1], ids.shape[0], x.shape[-1])
    slot = torch.searchsorted(states.tokens, ids[5, 3])
    assert torch.equal(micro_x[1, 3, 5], states.micro_in[1, slot])


def test_states_larger_than_the_budget_are_refused(setup):
    model, ids, _ = setup
    with pytest.raises(ValueError, match="state_memory=.* is too small to keep every state"):
        capture_states(model, None, ids, state_memory="10KB")
    with pytest.raises(ValueError, match="estimator must be one of"):
        estimate_from_states(setup[2], "nope")
