"""BlockCapture against HF hidden_states; layer/position selection; early stop; padding; block return types."""
import pytest
import torch
from torch import nn

from emergence_fast.capture import BlockCapture, real_positions
from emergence_fast.capture.hooks import padded_position_ids
from tests.tiny_models import VOCAB, final_norm, one_thread, tiny_model  # noqa: F401 (autouse fixture)

ATOL = 1e-5


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def causal(request):
    return request.param, tiny_model(request.param)


def _ids(batch=3, length=6, seed=0):
    return torch.randint(2, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def _hidden_states(model, ids):
    with torch.no_grad():
        return model(ids, output_hidden_states=True).hidden_states


def test_inputs_and_outputs_equal_hf_hidden_states(causal):
    _, model = causal
    ids = _ids()
    hs = _hidden_states(model, ids)
    n = len(hs) - 1
    block_in, block_out = BlockCapture(model).run(ids)
    assert block_in.shape == block_out.shape == (n, 3, 6, model.config.hidden_size)
    assert not block_in.requires_grad and not block_out.requires_grad
    for layer in range(n):
        torch.testing.assert_close(block_in[layer], hs[layer], atol=ATOL, rtol=0)
    for layer in range(n - 1):
        torch.testing.assert_close(block_out[layer], hs[layer + 1], atol=ATOL, rtol=0)
    # The last HF hidden state has the final norm applied; the block's output does not.
    assert (block_out[-1] - hs[-1]).abs().max() > 1e-2
    with torch.no_grad():
        torch.testing.assert_close(final_norm(model)(block_out[-1]), hs[-1], atol=ATOL, rtol=0)


def test_selected_layers_and_positions_only(causal):
    _, model = causal
    ids = _ids()
    hs = _hidden_states(model, ids)
    layers, positions = [2, 0], [4, 1, 5]
    block_in, block_out = BlockCapture(model, layers).run(ids, positions=positions)
    assert block_in.shape == block_out.shape == (2, 3, 3, model.config.hidden_size)
    torch.testing.assert_close(block_in[0], hs[2][:, positions], atol=ATOL, rtol=0)
    torch.testing.assert_close(block_in[1], hs[0][:, positions], atol=ATOL, rtol=0)
    torch.testing.assert_close(block_out[1], hs[1][:, positions], atol=ATOL, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(final_norm(model)(block_out[0]), hs[3][:, positions], atol=ATOL, rtol=0)
    as_tensor = BlockCapture(model, layers).run(ids, positions=torch.tensor(positions))
    assert torch.equal(as_tensor[0], block_in) and torch.equal(as_tensor[1], block_out)


def _count_calls(module):
    calls = []
    handle = module.register_forward_hook(lambda *args: calls.append(1))
    return calls, handle


def test_stop_early_gives_the_same_states_and_skips_later_blocks(causal):
    _, model = causal
    ids = _ids()
    blocks = BlockCapture(model).blocks
    hooks_before = [len(block._forward_hooks) for block in blocks]
    calls, handle = _count_calls(blocks[-1])
    try:
        early = BlockCapture(model, [1, 0], stop_early=True).run(ids, positions=[0, 3])
        assert calls == []
        late = BlockCapture(model, [1, 0], stop_early=False).run(ids, positions=[0, 3])
        assert calls == [1]
    finally:
        handle.remove()
    assert torch.equal(early[0], late[0]) and torch.equal(early[1], late[1])
    # The capture's own hooks are gone after a stopped pass.
    assert [len(block._forward_hooks) for block in blocks] == hooks_before


def _pad(ids, lengths, total, side):
    padded = torch.zeros(ids.shape[0], total, dtype=ids.dtype)
    mask = torch.zeros_like(padded)
    for row, n in enumerate(lengths):
        cols = slice(total - n, total) if side == "left" else slice(0, n)
        padded[row, cols] = ids[row, :n]
        mask[row, cols] = 1
    return padded, mask


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_gives_the_unpadded_states(causal, side):
    _, model = causal
    ids = _ids(batch=3, length=5, seed=1)
    capture = BlockCapture(model, stop_early=False)
    positions = [0, 2, 1]
    ref_in, ref_out = capture.run(ids, positions=positions)
    padded, mask = _pad(ids, [5, 3, 4], total=8, side=side)
    got_in, got_out = capture.run(padded, mask, positions=positions)
    torch.testing.assert_close(got_in, ref_in, atol=ATOL, rtol=0)
    torch.testing.assert_close(got_out, ref_out, atol=ATOL, rtol=0)
    # Without positions: every position that all rows have.
    all_in, _ = capture.run(padded, mask)
    assert all_in.shape[2] == 3
    torch.testing.assert_close(all_in, capture.run(ids[:, :3])[0], atol=ATOL, rtol=0)


def test_real_positions_on_a_hand_made_mask():
    mask = torch.tensor([[0, 0, 1, 1, 1],
                         [1, 1, 1, 0, 0],
                         [1, 1, 1, 1, 1],
                         [0, 1, 1, 1, 0]])
    got = real_positions(mask, torch.tensor([0, 2, 1]))
    assert torch.equal(got, torch.tensor([[2, 4, 3], [0, 2, 1], [0, 2, 1], [1, 3, 2]]))
    assert torch.equal(real_positions(mask.bool(), torch.tensor([2])), torch.tensor([[4], [2], [2], [3]]))


def test_padded_position_ids_number_real_tokens_from_zero():
    mask = torch.tensor([[0, 0, 1, 1, 1],
                         [1, 1, 1, 0, 0],
                         [1, 0, 0, 1, 1]])
    got = padded_position_ids(mask.bool())
    assert got.dtype == torch.int64
    assert torch.equal(got, torch.tensor([[0, 0, 0, 1, 2], [0, 1, 2, 2, 2], [0, 0, 0, 1, 2]]))


def test_position_beyond_a_short_row_raises(causal):
    _, model = causal
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
    with pytest.raises(ValueError, match="only 2 real tokens"):
        real_positions(mask, torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="real tokens"):
        BlockCapture(model).run(_ids(2, 4), mask, positions=[3])
    with pytest.raises(ValueError, match="real tokens"):
        BlockCapture(model).run(_ids(2, 4), positions=[4])


def test_negative_position_is_rejected(causal):
    _, model = causal
    with pytest.raises(ValueError, match=r"^positions must be a non-empty list of token indices >= 0, got \[0, -1\]$"):
        BlockCapture(model).run(_ids(), positions=[0, -1])


@pytest.mark.parametrize("layers, match", [([3], "0..2"), ([-1], "0..2"), ([], "non-empty"), ([0, 2, 0], "repeat")])
def test_bad_layers_raise(layers, match):
    with pytest.raises(ValueError, match=match):
        BlockCapture(tiny_model("gpt2"), layers)


# A hand-made model whose blocks return a tensor, a tuple, or are called with hidden_states=.
class _Block(nn.Module):
    def __init__(self, width, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.linear = nn.Linear(width, width)

    def forward(self, hidden_states, attention_mask=None):
        return hidden_states + torch.tanh(self.linear(hidden_states))


class _TupleBlock(nn.Module):
    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, hidden_states, attention_mask=None):
        return (self.block(hidden_states),)


class _Toy(nn.Module):
    def __init__(self, blocks, keyword=False):
        super().__init__()
        torch.manual_seed(7)
        self.embed = nn.Embedding(VOCAB, 8)
        self.layers = nn.ModuleList(blocks)
        self.keyword = keyword

    def forward(self, input_ids, attention_mask=None, use_cache=None, position_ids=None):
        hidden = self.embed(input_ids)
        for block in self.layers:
            out = block(hidden_states=hidden) if self.keyword else block(hidden, attention_mask)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden


@pytest.mark.parametrize("wrap, keyword", [(False, False), (True, False), (False, True), (True, True)],
                         ids=["tensor", "tuple", "tensor-kw", "tuple-kw"])
def test_tensor_and_tuple_returning_blocks(wrap, keyword):
    plain = [_Block(8, seed) for seed in range(3)]
    model = _Toy([_TupleBlock(b) if wrap else b for b in plain], keyword=keyword)
    ids = _ids(2, 5)
    states = [model.embed(ids)]
    with torch.no_grad():
        for block in plain:
            states.append(block(states[-1]))
    block_in, block_out = BlockCapture(model).run(ids, positions=[1, 4])
    for layer in range(3):
        torch.testing.assert_close(block_in[layer], states[layer][:, [1, 4]])
        torch.testing.assert_close(block_out[layer], states[layer + 1][:, [1, 4]])


def test_transformerlens_point_names_select_blocks():
    model = tiny_model("gpt2")
    by_name = BlockCapture(model, ["blocks.1.hook_resid_pre", "blocks.2.hook_resid_post"])
    assert by_name.layers == [1, 2]
    with pytest.raises(ValueError, match="hook_resid"):
        BlockCapture(model, ["blocks.1.attn"])
