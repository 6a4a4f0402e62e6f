"""What IE is fed: encoder-decoder stacks, the one BOS rule, and ids outside the vocabulary."""
import math

import pytest
import torch

from emergence_fast import emergence as ie
from tests.tiny_encoder_decoder import tiny_encoder_decoder
from tests.tiny_models import all_draws, icl_ids, one_thread, tiny_model, tiny_tokenizer  # noqa: F401 (autouse)

OPTIONS = {"pca": 4, "bias_correction": "wishart"}
BOS = 2  # tiny_tokenizer's <s>


@pytest.fixture(scope="module")
def gpt2():
    return tiny_model("gpt2")


@pytest.fixture(scope="module")
def ids():
    return icl_ids(60, k_shots=2, n_entities=20)


def gaussian(model, tokenizer, ids, **kwargs):
    return ie.information_emergence(model, tokenizer, ids, estimator="gaussian", estimator_options=dict(OPTIONS),
                                    batch_size=60, **kwargs)


# ---- encoder-decoder models --------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["bart", "t5"])
@pytest.mark.parametrize("entry", ["information_emergence", "capture_states"])
def test_an_encoder_decoder_needs_a_stack(kind, entry, ids):
    model = tiny_encoder_decoder(kind)
    with pytest.raises(ValueError, match=r"is an encoder-decoder model: choose the blocks to score with "
                                         r"stack='encoder' or stack='decoder' \(CLI: --stack encoder\|decoder\)"):
        getattr(ie, entry)(model, None, ids, add_bos=False)


@pytest.mark.parametrize("stack", ["encoder", "decoder"])
def test_each_stack_is_scored_non_causal_with_whole_sequence_atoms_and_ceiling(stack):
    """20 distinct rows whose first token takes 5 values: a causal reading could not pass log2 5 bits at
    position 0; T5's states there carry the whole row (bidirectional encoder; cross-attention in the decoder)."""
    model = tiny_encoder_decoder("t5")
    ids = all_draws(5, 2, repeats=2)
    result = ie.information_emergence(model, None, ids, stack=stack, add_bos=False, batch_size=40)
    n_blocks = 2 if stack == "encoder" else 3
    assert result.layers == list(range(n_blocks))
    assert result.config["stack"] == stack and result.config["causal"] is False
    torch.testing.assert_close(result.ceiling_macro, torch.full((4,), math.log2(20), dtype=torch.float64))
    assert float(result.macro[1, 0]) > math.log2(5) + 1
    assert any(note.startswith(f"stack: the {stack} blocks of an encoder-decoder model") for note in result.notes)
    assert any(note.startswith("ceiling: the model is bidirectional") for note in result.notes)


def test_capture_states_records_the_stack():
    states = ie.capture_states(tiny_encoder_decoder("bart"), None, all_draws(5, 2), stack="encoder", add_bos=False)
    assert states.config["stack"] == "encoder" and states.config["causal"] is False
    assert states.reservoir.pairs()[0].shape[:2] == (2, 4)  # the encoder's 2 blocks, 4 positions


def test_a_decoder_only_model_has_no_stack(gpt2, ids):
    result = gaussian(gpt2, None, ids, add_bos=False, layers=[0])
    assert result.config["stack"] is None and result.config["causal"] is True
    assert not any(note.startswith("stack:") for note in result.notes)
    with pytest.raises(ValueError, match="stack='encoder' applies to encoder-decoder models only"):
        gaussian(gpt2, None, ids, stack="encoder")


# ---- BOS: one rule, recorded ---------------------------------------------------------------------

def test_rows_that_start_with_bos_are_not_fed_it_twice(gpt2, ids):
    with_bos = torch.cat([torch.full((ids.shape[0], 1), BOS), ids], dim=1)
    plain = gaussian(gpt2, tiny_tokenizer(True), ids)
    present = gaussian(gpt2, tiny_tokenizer(True), with_bos)
    assert plain.config["bos_handling"] == "added" and present.config["bos_handling"] == "already present"
    assert plain.config["bos"] == present.config["bos"] == BOS
    # Fed [BOS, s_0, ...] in both cases, so every number is the same.
    for name in ("macro", "micro", "emergence", "ceiling_macro", "ceiling_micro"):
        torch.testing.assert_close(getattr(present, name), getattr(plain, name), rtol=0, atol=0)
    assert present.positions == plain.positions == list(range(ids.shape[1]))
    assert ("bos: every row of the dataset already started with the BOS id 2; it was fed once (not doubled) and the "
            "positions count from the token after it.") in present.notes


def test_capture_states_follows_the_same_rule(gpt2, ids):
    with_bos = torch.cat([torch.full((ids.shape[0], 1), BOS), ids], dim=1)
    states = ie.capture_states(gpt2, tiny_tokenizer(True), with_bos)
    assert states.config["bos_handling"] == "already present"
    assert torch.equal(states.input_ids, ids)


@pytest.mark.parametrize("tokenizer_bos, add_bos, handling", [(False, "auto", "absent"), (True, False, "off"),
                                                              (True, "auto", "added"), (False, True, "added")])
def test_bos_handling_is_recorded(gpt2, ids, tokenizer_bos, add_bos, handling):
    result = gaussian(gpt2, tiny_tokenizer(tokenizer_bos), ids, add_bos=add_bos, layers=[0])
    assert result.config["bos_handling"] == handling


def test_rows_that_disagree_on_bos_are_refused(gpt2, ids):
    mixed = torch.cat([torch.full((ids.shape[0], 1), BOS), ids], dim=1)
    mixed[1:, 0] = 5
    with pytest.raises(ValueError, match=r"rows \[0\] of the 60 token rows start with the special prefix \[2\] "
                                         r"\(BOS\) and the others do not"):
        gaussian(gpt2, tiny_tokenizer(True), mixed)
    with pytest.raises(ValueError, match=r"the token rows hold only the special prefix \[2\] \(BOS\)"):
        gaussian(gpt2, tiny_tokenizer(True), torch.full((60, 1), BOS))


# ---- ids outside the vocabulary -----------------------------------------------------------------

@pytest.mark.parametrize("value", [64, 1000, -1])
@pytest.mark.parametrize("entry", ["information_emergence", "capture_states"])
def test_ids_outside_the_vocabulary_are_named(gpt2, ids, value, entry):
    bad = ids.clone()
    bad[7, 3] = value
    with pytest.raises(ValueError) as info:
        getattr(ie, entry)(gpt2, None, bad, add_bos=False)
    assert str(info.value) == (f"dataset holds the token id {value} (row 7, position 3), outside the model's "
                               "vocabulary of 64 ids (0..63): were the ids made with another tokenizer?")


def test_a_bos_outside_the_vocabulary_is_named(gpt2, ids):
    with pytest.raises(ValueError, match=r"add_bos=64 gives the BOS id 64, outside the model's vocabulary of 64 ids "
                                         r"\(0..63\)"):
        gaussian(gpt2, None, ids, add_bos=64)
