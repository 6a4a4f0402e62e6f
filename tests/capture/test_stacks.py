"""Encoder-decoder models: refused without a stack, and each stack captured as the model computes it."""
import pytest
import torch

from emergence_fast.capture import BlockCapture, resolve_stack, vocab_size
from tests.tiny_encoder_decoder import DECODER_LAYERS, ENCODER_LAYERS, VOCAB, tiny_encoder_decoder
from tests.tiny_models import one_thread, tiny_model  # noqa: F401 (autouse)

KINDS = ("bart", "t5")


@pytest.fixture(scope="module")
def models():
    return {kind: tiny_encoder_decoder(kind) for kind in KINDS}


@pytest.fixture(scope="module")
def ids():
    return torch.randint(3, VOCAB, (4, 6), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("kind", KINDS)
def test_an_encoder_decoder_without_a_stack_is_refused_naming_the_choices(models, kind):
    name = type(models[kind]).__name__
    with pytest.raises(ValueError) as info:
        BlockCapture(models[kind])
    assert str(info.value) == (f"{name} is an encoder-decoder model: choose the blocks to score with stack='encoder' "
                               "or stack='decoder' (CLI: --stack encoder|decoder); one of ('encoder', 'decoder')")


def test_bad_stack_values_are_refused(models):
    with pytest.raises(ValueError, match=r"stack must be one of \('encoder', 'decoder'\) \(or None for a "
                                         r"decoder-only model\), got 'both'"):
        BlockCapture(models["bart"], stack="both")
    with pytest.raises(ValueError, match="stack='decoder' applies to encoder-decoder models only; GPT2LMHeadModel is "
                                         r"not one \(leave stack unset\)"):
        BlockCapture(tiny_model("gpt2"), stack="decoder")


@pytest.mark.parametrize("kind", KINDS)
def test_the_encoder_stack_captures_the_encoder_run_alone(models, ids, kind):
    model = models[kind]
    capture = BlockCapture(model, stack="encoder", stop_early=False)
    assert len(capture.blocks) == ENCODER_LAYERS
    inputs, outputs = capture.run(ids)
    with torch.no_grad():
        hidden = model.get_encoder()(input_ids=ids, output_hidden_states=True).hidden_states
    for layer in range(ENCODER_LAYERS):
        torch.testing.assert_close(inputs[layer], hidden[layer])
    # T5's last entry of hidden_states has the final norm applied; every block output before it is raw.
    for layer in range(ENCODER_LAYERS - 1):
        torch.testing.assert_close(outputs[layer], hidden[layer + 1])


@pytest.mark.parametrize("kind", KINDS)
def test_the_decoder_stack_reads_the_same_ids_unshifted(models, ids, kind):
    model = models[kind]
    capture = BlockCapture(model, stack="decoder", stop_early=False)
    assert len(capture.blocks) == DECODER_LAYERS
    inputs, outputs = capture.run(ids)
    with torch.no_grad():
        hidden = model(input_ids=ids, decoder_input_ids=ids, output_hidden_states=True).decoder_hidden_states
    for layer in range(DECODER_LAYERS):
        torch.testing.assert_close(inputs[layer], hidden[layer])
    for layer in range(DECODER_LAYERS - 1):
        torch.testing.assert_close(outputs[layer], hidden[layer + 1])
    if kind == "bart":  # BART's own default shifts the ids right: block 0 would see other tokens
        with torch.no_grad():
            shifted = model(input_ids=ids, output_hidden_states=True).decoder_hidden_states[0]
        assert (shifted - inputs[0]).abs().max() > 1e-2


@pytest.mark.parametrize("kind", KINDS)
def test_decoder_states_see_later_tokens_through_cross_attention(models, ids, kind):
    """Why the decoder stack is scored as non-causal: position 0 changes when only the last token does."""
    capture = BlockCapture(models[kind], stack="decoder", layers=[0])
    changed = ids.clone()
    changed[:, -1] = (changed[:, -1] + 1 - 3) % (VOCAB - 3) + 3
    _, before = capture.run(ids, positions=[0])
    _, after = capture.run(changed, positions=[0])
    assert (before - after).abs().max() > 1e-4


def test_blocks_outside_the_chosen_stack_are_refused(models):
    with pytest.raises(ValueError, match="blocks must lie inside the encoder of BartForConditionalGeneration when "
                                         "stack='encoder'"):
        BlockCapture(models["bart"], stack="encoder", blocks="model.decoder.layers")
    capture = BlockCapture(models["bart"], stack="decoder", blocks="model.decoder.layers", layers=[1])
    assert capture.blocks[1] is models["bart"].model.decoder.layers[1]


def test_a_stack_is_padded_on_the_right(models, ids):
    capture = BlockCapture(models["bart"], stack="encoder")
    mask = torch.ones_like(ids)
    mask[0, 0] = 0  # left padding: BART's absolute positions would shift
    with pytest.raises(ValueError, match=r"stack='encoder': pad on the right \(a padded position precedes a real "
                                         r"token\)"):
        capture.run(ids, attention_mask=mask, positions=[0])
    right = torch.ones_like(ids)
    right[0, -1] = 0
    inputs, _ = capture.run(ids, attention_mask=right, positions=[0])
    assert inputs.shape == (ENCODER_LAYERS, 4, 1, 32)


def test_resolve_stack_and_vocab_size(models):
    bart = models["bart"]
    assert resolve_stack(bart, "encoder") is bart.get_encoder()
    assert resolve_stack(bart, "decoder") is bart.get_decoder()
    assert resolve_stack(tiny_model("gpt2"), None) is None
    assert vocab_size(bart) == VOCAB and vocab_size(tiny_model("llama")) == 64
