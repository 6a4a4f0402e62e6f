"""What the prompt runner feeds the model: the BOS once, ids the model has, causal LMs only."""
import pytest

from emergence_fast.icl.runner import PromptRunner
from tests.icl.coin import coin_tokenizer
from tests.mirage.tiny import char_tokenizer, tiny_gpt2
from tests.tiny_encoder_decoder import tiny_encoder_decoder
from tests.tiny_models import one_thread  # noqa: F401 (autouse fixture)


@pytest.fixture(scope="module")
def model():
    return tiny_gpt2()


def test_encode_gives_the_bos_once_and_counts_what_it_did(model):
    tokenizer = char_tokenizer(bos=True)
    runner = PromptRunner(model, tokenizer)
    ids = runner.encode(["<s>Q:", "Q:", "A:"])
    q, a = (tokenizer(t, add_special_tokens=False)["input_ids"] for t in ("Q:", "A:"))
    assert ids == [(1, *q), (1, *q), (1, *a)]  # tokenizer("<s>Q:") alone gives (1, 1, ...)
    assert runner.stats.special_prefix == {"ids": [1], "already present": 1, "added": 2}
    assert runner.stats.to_dict()["special_prefix"] == runner.stats.special_prefix


def test_encode_leaves_chat_text_and_bos_free_tokenizers_as_they_are(model):
    runner = PromptRunner(model, char_tokenizer(bos=False))
    assert runner.encode(["Q:"]) == [tuple(char_tokenizer()("Q:")["input_ids"])]
    assert runner.stats.special_prefix == {"ids": []}
    chat = PromptRunner(model, coin_tokenizer(chat=True))
    chat.encode(["<user> Heads </s>", "<user> Tails </s>"], chat=True)
    assert chat.stats.special_prefix == {"ids": [], "chat template": 2}


def test_ids_the_model_does_not_have_are_named(model):
    runner = PromptRunner(model, char_tokenizer())
    with pytest.raises(ValueError) as info:
        runner.map_last_logits([(3, 4), (5, 64)], lambda logits: logits)
    assert str(info.value) == "sequences[1] holds the token id 64, outside the model's vocabulary of 64 ids (0..63)"
    with pytest.raises(ValueError) as info:
        runner.sample_many([(3, 100)], 2, 1)
    assert str(info.value) == "prompts[0] holds the token id 100, outside the model's vocabulary of 64 ids (0..63)"
    assert runner.map_last_logits([(3, 63)], lambda logits: logits).shape == (1, 64)


def test_an_encoder_decoder_model_is_refused():
    with pytest.raises(ValueError) as info:
        PromptRunner(tiny_encoder_decoder("t5"), char_tokenizer())
    assert str(info.value) == ("model must be a causal language model: T5ForConditionalGeneration is an "
                               "encoder-decoder model (BART, T5), whose next-token distributions need a decoder "
                               "input this runner does not build")


def test_bad_options_give_the_standard_message(model):
    with pytest.raises(ValueError, match=r"^batch_size must be an integer >= 1, got 0$"):
        PromptRunner(model, char_tokenizer(), batch_size=0)
    with pytest.raises(TypeError, match=r"^prefix_cache must be a bool, got int 1$"):
        PromptRunner(model, char_tokenizer(), prefix_cache=1)
    with pytest.raises(TypeError, match=r"^progress must be a bool, got str 'yes'$"):
        PromptRunner(model, char_tokenizer(), progress="yes")
    with pytest.raises(TypeError, match=r"^pack_tails must be a bool, got int 0$"):
        PromptRunner(model, char_tokenizer(), pack_tails=0)
    runner = PromptRunner(model, char_tokenizer())
    with pytest.raises(ValueError, match=r"^max_new_tokens must be an integer >= 1, got 1\.5$"):
        runner.sample_many([(3, 4)], 2, 1.5)
    with pytest.raises(TypeError, match=r"^seeds\[1\] must be an integer, got float 1\.0$"):
        runner.sample_many([(3, 4), (5, 6)], 2, 1, seeds=[0, 1.0])
    with pytest.raises(ValueError, match=r"^temperature must be a finite number > 0, got 0$"):
        runner.sample_many([(3, 4)], 2, 1, temperature=0)
