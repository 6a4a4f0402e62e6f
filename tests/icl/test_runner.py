import numpy as np
import pytest
import torch

from emergence_fast.icl import prompts as P
from emergence_fast.icl.concepts import continuation_prefixes
from emergence_fast.icl.runner import PromptRunner
from tests.icl.coin import coin_tokenizer
from tests.tiny_models import one_thread, tiny_model  # noqa: F401 (autouse fixture)


def brute_force(model, seqs):
    """One prompt per forward, no cache: the definition of the next-token logits."""
    with torch.no_grad():
        return torch.stack([model(torch.tensor([s])).logits[0, -1] for s in seqs]).float()


def tree_and_judgment_prompts():
    texts = [P.tree_prompt(P.concept_context((0, 1, 1), n), prefix) for n in range(1, 9)
             for prefix in continuation_prefixes(3)]
    texts += [P.judgment_prompt(P.concept_context((0, 1), n)) for n in range(1, 9)]
    return texts


@pytest.mark.parametrize("kind", ["llama", "gpt2", "gpt_neox"])
def test_prefix_cache_equals_one_prompt_per_forward(kind):
    model = tiny_model(kind)
    tok = coin_tokenizer()
    runner = PromptRunner(model, tok, batch_size=5)
    seqs = runner.encode(tree_and_judgment_prompts())
    fast = runner.map_last_logits(seqs, lambda logits: logits)
    torch.testing.assert_close(fast, brute_force(model, seqs), rtol=1e-4, atol=1e-5)
    unique = len(set(seqs))
    assert unique < len(seqs)  # tree prompts repeat across |x| (C^n plus its continuation is C^{n+1})
    assert runner.stats.prompts == len(seqs) and runner.stats.unique_prompts == unique
    # One trunk forward, and every prompt's tail is far shorter than the prompt.
    assert runner.stats.tokens_fed < 0.4 * sum(len(s) for s in set(seqs))


def test_without_cache_and_in_chat_form_results_agree():
    model = tiny_model("llama")
    tok = coin_tokenizer(chat=True)
    texts = P.format_prompts(tok, [P.judgment_prompt(P.concept_context((0, 1, 1), n)) for n in range(1, 7)], True)
    cached = PromptRunner(model, tok, batch_size=4)
    plain = PromptRunner(model, tok, batch_size=4, prefix_cache=False)
    seqs = cached.encode(texts, chat=True)
    assert seqs == plain.encode(texts, chat=True)
    torch.testing.assert_close(cached.map_last_logits(seqs, lambda x: x), plain.map_last_logits(seqs, lambda x: x),
                               rtol=1e-4, atol=1e-5)
    assert plain.stats.forward_calls >= 2 and plain.stats.tokens_fed == sum(map(len, seqs))


def test_duplicates_run_once_and_come_back_in_order():
    model = tiny_model("gpt2")
    runner = PromptRunner(model, coin_tokenizer(), batch_size=8)
    seqs = [(5, 6, 7), (5, 6), (5, 6, 7), (9,), (5, 6)]
    out = runner.map_last_logits(seqs, lambda logits: logits)
    assert runner.stats.unique_prompts == 3
    torch.testing.assert_close(out, brute_force(model, seqs), rtol=1e-4, atol=1e-5)


def test_sampling_is_seeded_per_row_and_stops():
    model = tiny_model("llama")
    tok = coin_tokenizer()
    prompt = PromptRunner(model, tok).encode([P.generation_prompt(50)])[0]
    a = PromptRunner(model, tok, batch_size=7).sample(prompt, 7, 12, seed=3)
    b = PromptRunner(model, tok, batch_size=2).sample(prompt, 7, 12, seed=3)
    c = PromptRunner(model, tok, batch_size=7).sample(prompt, 7, 12, seed=4)
    assert a == b and a != c
    eos = tok.eos_token_id
    assert all(len(row) == 12 or (row[-1] == eos and eos not in row[:-1]) for row in a)
    # With a stop rule checked every 2 tokens, each row is a prefix of its unstopped sample that
    # ends at the first check where the rule holds (or at eos, or at the budget).
    def rule(text):
        return len(text.split()) >= 3

    stopped = PromptRunner(model, tok, batch_size=3).sample(prompt, 7, 12, seed=3, check_every=2,
                                                            stop=lambda texts: [rule(t) for t in texts])
    assert stopped != a
    for full, short in zip(a, stopped):
        n = len(short)
        assert full[:n] == short
        assert not any(rule(tok.decode(short[:c])) for c in range(2, n, 2))
        if n < 12 and short[-1] != eos:
            assert rule(tok.decode(short)) and n % 2 == 0


def test_sampling_follows_the_distribution():
    """Inverse-CDF draws from a fixed distribution: frequencies match the softmax."""
    model = tiny_model("gpt2")
    tok = coin_tokenizer()
    runner = PromptRunner(model, tok, batch_size=256)
    prompt = [13, 6]
    with torch.no_grad():
        probs = torch.softmax(model(torch.tensor([prompt])).logits[0, -1].double(), -1)
    draws = torch.tensor([row[0] for row in runner.sample(prompt, 4000, 1, seed=0)])
    freq = torch.bincount(draws, minlength=probs.numel()).double() / draws.numel()
    stderr = (probs * (1 - probs) / draws.numel()).sqrt()
    assert ((freq - probs).abs() <= 5 * stderr + 1e-3).all()


def test_bad_arguments():
    model = tiny_model("gpt2")
    tok = coin_tokenizer()
    with pytest.raises(ValueError, match="batch_size"):
        PromptRunner(model, tok, batch_size=0)
    runner = PromptRunner(model, tok)
    with pytest.raises(ValueError, match="empty"):
        runner.map_last_logits([(1, 2), ()], lambda x: x)
    with pytest.raises(ValueError, match="empty"):
        runner.map_last_logits([], lambda x: x)
    for bad in ((1, -2), (1, True), (1, 2.0), (3, np.int64(-1))):
        with pytest.raises(ValueError, match=r"^sequences\[1\] must hold non-negative int token ids$"):
            runner.map_last_logits([(1, 2), bad], lambda x: x)
    # numpy integers are ids too, not only Python ints
    assert runner.map_last_logits([(np.int64(3), 4)], lambda x: x).shape == (1, 64)
    with pytest.raises(TypeError, match="texts"):
        runner.encode("one string")
    with pytest.raises(ValueError, match="temperature"):
        runner.sample((1, 2), 2, 3, temperature=0)
    with pytest.raises(ValueError, match="n_samples"):
        runner.sample((1, 2), 0, 3)


def test_sample_many_is_sample_per_prompt():
    model = tiny_model("llama")
    tok = coin_tokenizer()
    runner = PromptRunner(model, tok, batch_size=2)
    prompts = runner.encode([P.generation_prompt(30), P.generation_prompt(70)])
    many = runner.sample_many(prompts, 3, 6, seeds=[3, 4])
    assert many == [PromptRunner(model, tok, batch_size=2).sample(p, 3, 6, seed=s) for p, s in zip(prompts, (3, 4))]
    assert runner.stats.prompts == 2
    with pytest.raises(ValueError, match="one seed per prompt"):
        runner.sample_many(prompts, 3, 6, seeds=[1])
    with pytest.raises(TypeError, match="world"):
        PromptRunner(model, tok, world="gloo")


def test_full_prompts_of_mixed_lengths_come_back_in_order():
    """The fallback for a trunk whose cache cannot be shared: equal-length runs, rows in input order."""
    model = tiny_model("gpt2")
    runner = PromptRunner(model, coin_tokenizer())
    seqs = [(5, 6, 7), (9,), (5, 6), (8, 7, 6), (4,)]
    with torch.no_grad():
        got = runner._run_full(seqs)
    torch.testing.assert_close(got, brute_force(model, seqs), rtol=1e-4, atol=1e-5)
    assert runner.stats.forward_calls == 3


def judgment_texts(tok, chat, concepts=((0, 1), (0, 1, 1)), max_len=8):
    texts = [P.judgment_prompt(P.concept_context(c, n)) for c in concepts for n in range(1, max_len + 1)]
    return P.format_prompts(tok, texts, chat)


@pytest.mark.parametrize("kind", ["llama", "gpt2", "gpt_neox"])
@pytest.mark.parametrize("form", ["bos", "chat"])
def test_packed_judgment_tails_equal_one_prompt_per_forward(kind, form):
    """A judgment curve's tails run packed in one row: one trunk pass, the probe, then ONE forward for all 8
    prompts; every row equals the prompt run alone, with the BOS once (also when the text holds it) or in
    the chat template."""
    model = tiny_model(kind)
    tok = coin_tokenizer(chat=form == "chat", bos=form == "bos")
    runner = PromptRunner(model, tok, batch_size=64)
    texts = judgment_texts(tok, form == "chat", concepts=((0, 1),))
    if form == "bos":
        texts[3] = "<s>" + texts[3]
    seqs = runner.encode(texts, chat=form == "chat")
    if form == "bos":
        assert all(s[0] == 1 and s[1] != 1 for s in seqs)
    else:
        assert seqs[0][0] == tok.convert_tokens_to_ids("<user>")
    fast = runner.map_last_logits(seqs, lambda logits: logits)
    torch.testing.assert_close(fast, brute_force(model, seqs), rtol=1e-4, atol=1e-5)
    assert runner._packs is True
    assert runner.stats.forward_calls == 1 + 2 + 1  # trunk, probe (2 equal tails as rows, then packed), all tails


def test_packed_curves_of_several_concepts_in_small_batches():
    model = tiny_model("llama")
    tok = coin_tokenizer()
    runner = PromptRunner(model, tok, batch_size=3)
    seqs = runner.encode(judgment_texts(tok, False) + tree_and_judgment_prompts())
    torch.testing.assert_close(runner.map_last_logits(seqs, lambda x: x), brute_force(model, seqs),
                               rtol=1e-4, atol=1e-5)
    assert runner._packs is True


def test_pack_tails_false_runs_one_tail_per_row_with_the_same_result():
    model = tiny_model("gpt2")
    tok = coin_tokenizer()
    rows = PromptRunner(model, tok, batch_size=64, pack_tails=False)
    seqs = rows.encode(judgment_texts(tok, False, concepts=((0, 1),)))
    torch.testing.assert_close(rows.map_last_logits(seqs, lambda x: x), brute_force(model, seqs),
                               rtol=1e-4, atol=1e-5)
    assert rows._packs is False
    # the trunk; the 7 tails "] A : The sequence was generated by a" as the rows of one batch; the trunk
    # prompt's own last token as another (packed, the 8 tails of two lengths are one forward: the test above)
    assert rows.stats.forward_calls == 3


def test_packed_rows_hold_at_most_the_token_budget(monkeypatch):
    import emergence_fast.icl.runner as runner_module

    monkeypatch.setattr(runner_module, "_PACKED_TOKENS", 20)
    model = tiny_model("llama")
    tok = coin_tokenizer()
    runner = PromptRunner(model, tok, batch_size=64)
    seqs = runner.encode(judgment_texts(tok, False, concepts=((0, 1),)))
    torch.testing.assert_close(runner.map_last_logits(seqs, lambda x: x), brute_force(model, seqs),
                               rtol=1e-4, atol=1e-5)
    # tails 9, 9, ..., 9 and 1 (the trunk prompt's own last token), shortest prefix first: rows of
    # 9 + 9, 9 + 9, 9 + 9, 9 + 1 tokens after the trunk pass and the two-call probe
    assert runner.stats.forward_calls == 1 + 2 + 4


class IgnoresCustomMasks(torch.nn.Module):
    """A causal LM that drops a 4-D attention mask and attends causally instead, as a model with its own
    mask logic might: packed tails would see each other."""

    def __init__(self, model):
        super().__init__()
        self.inner, self.config = model, model.config

    def forward(self, input_ids=None, attention_mask=None, cache=None, logits_to_keep=0, **kwargs):
        if attention_mask is not None and attention_mask.ndim == 4:
            attention_mask = None
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, cache=cache,
                          logits_to_keep=logits_to_keep, **kwargs)


def test_a_model_that_ignores_custom_masks_runs_one_tail_per_row():
    model = IgnoresCustomMasks(tiny_model("llama"))
    tok = coin_tokenizer()
    seqs = PromptRunner(model, tok).encode(judgment_texts(tok, False))
    runner = PromptRunner(model, tok, batch_size=4)
    torch.testing.assert_close(runner.map_last_logits(seqs, lambda x: x), brute_force(model, seqs),
                               rtol=1e-4, atol=1e-5)
    assert runner._packs is False
    forced = PromptRunner(model, tok, batch_size=4)
    forced._packs = True  # skip the probe: the packed rows come out wrong on this model
    wrong = forced.map_last_logits(seqs, lambda x: x)
    assert (wrong - brute_force(model, seqs)).abs().max() > 1e-2


def test_packed_tails_in_bfloat16_agree_to_its_precision():
    model = tiny_model("llama").to(torch.bfloat16)
    tok = coin_tokenizer()
    runner = PromptRunner(model, tok, batch_size=16)
    seqs = runner.encode(judgment_texts(tok, False))
    fast = runner.map_last_logits(seqs, lambda x: x)
    assert runner._packs is True
    torch.testing.assert_close(fast, brute_force(model, seqs), rtol=0.05, atol=0.05)
