"""What score_targets feeds the model: the BOS once, ids the model has, causal LMs only, a usable device."""
import numpy as np
import pytest
import torch

from emergence_fast.mirage.scoring import score_targets
from tests.mirage.tiny import char_tokenizer, tiny_gpt2
from tests.tiny_encoder_decoder import tiny_encoder_decoder
from tests.tiny_models import one_thread  # noqa: F401 (autouse fixture)

PROMPTS = ["Q: 12 times 3?\nA:", "Q: 1?\nA:"]
TARGETS = [" 36", " 1"]


@pytest.fixture(scope="module")
def model():
    return tiny_gpt2()


def test_a_prompt_that_starts_with_bos_is_not_given_a_second(model):
    tokenizer = char_tokenizer(bos=True)
    assert tokenizer("<s>Q:")["input_ids"][:2] == [1, 1]  # what tokenizer(text) alone would feed
    plain = score_targets(model, tokenizer, PROMPTS, TARGETS)
    marked = score_targets(model, tokenizer, ["<s>" + PROMPTS[0], PROMPTS[1]], TARGETS)
    assert plain.special_prefix == {"ids": [1], "added": 2}
    assert marked.special_prefix == {"ids": [1], "added": 1, "already present": 1}
    for a, b in zip(plain.token_log_probs, marked.token_log_probs):
        np.testing.assert_array_equal(a, b)


def test_a_tokenizer_without_bos_adds_none(model):
    scored = score_targets(model, char_tokenizer(bos=False), PROMPTS, TARGETS)
    assert scored.special_prefix == {"ids": []}


def test_ids_the_model_does_not_have_are_named():
    small = tiny_gpt2(vocab=10)  # the tokenizer's characters run to id 33
    with pytest.raises(ValueError) as info:
        score_targets(small, char_tokenizer(), PROMPTS, TARGETS)
    first = max(char_tokenizer()(PROMPTS[0], add_special_tokens=False)["input_ids"])
    assert str(info.value) == (f"prompts[0] encodes to the token id {first}, outside the model's vocabulary of 10 ids "
                               "(0..9): is the tokenizer the model's?")


def test_an_encoder_decoder_model_is_refused():
    with pytest.raises(ValueError) as info:
        score_targets(tiny_encoder_decoder("bart"), char_tokenizer(), PROMPTS, TARGETS)
    assert str(info.value) == ("model must be a causal LM: BartForConditionalGeneration is an encoder-decoder model "
                               "(BART, T5), whose next-token probabilities need a decoder input this scorer does "
                               "not build")


def test_a_device_this_machine_lacks_is_named(model):
    with pytest.raises(ValueError, match="^device='garbage' is not a valid torch device"):
        score_targets(model, char_tokenizer(), PROMPTS, TARGETS, device="garbage")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"^device='cuda' asks for CUDA, but CUDA is not available"):
            score_targets(model, char_tokenizer(), PROMPTS, TARGETS, device="cuda")


def test_the_bos_note_of_a_live_family_says_what_was_done():
    from emergence_fast.mirage.live import _prefix_note

    assert _prefix_note({"ids": [1], "added": 195, "already present": 5}) == (
        "[1] added to 195 prompts, already present in 5 prompts")
    assert _prefix_note({"ids": []}) == "none (the tokenizer adds no BOS)"


@pytest.mark.parametrize("batch_size", [0, 1.5, True])
def test_bad_batch_size_gives_the_standard_message(model, batch_size):
    with pytest.raises(ValueError) as info:
        score_targets(model, char_tokenizer(), PROMPTS, TARGETS, batch_size=batch_size)
    assert str(info.value) == f"batch_size must be an integer >= 1, got {batch_size!r}"
