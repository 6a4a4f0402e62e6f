"""score_targets against unbatched, hand-written forward passes on tiny random models."""
import numpy as np
import pytest
import torch

from emergence_fast import models as model_loading
from emergence_fast.mirage import metrics as mm
from emergence_fast.mirage.scoring import score_choices, score_targets
from tests.mirage.tiny import char_tokenizer, tiny_gpt2
from tests.tiny_models import one_thread, tiny_model  # noqa: F401 (autouse fixture)

PROMPTS = ["\n\nQ: What is 12 times 3?\n\nA:", "Q: 1?\nA:", "A:",
           "\n\nQ: What is 95 times 45?\n\nA: 4275\n\nQ: What is 1 plus 2?\n\nA:", "Q:"]
TARGETS = [" 36", " 1", " 12345", " 3", " 7 x"]


def reference(model, tokenizer, prompt, target):
    """One unpadded forward pass on prompt + target: token log-probs, teacher-forced argmax, greedy run."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    target_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + target_ids])
    with torch.no_grad():
        log_probs = torch.log_softmax(model(ids).logits[0].double(), -1)
    rows = range(len(prompt_ids) - 1, len(prompt_ids) + len(target_ids) - 1)
    token_lp = np.array([float(log_probs[r, t]) for r, t in zip(rows, target_ids)])
    forced = [int(log_probs[r].argmax()) for r in rows]
    running = list(prompt_ids)
    for _ in target_ids:
        with torch.no_grad():
            running.append(int(model(torch.tensor([running])).logits[0, -1].argmax()))
    return target_ids, token_lp, forced, running[len(prompt_ids):]


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("bos", [False, True])
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_batched_scores_equal_unbatched_forward_passes(kind, bos, padding_side):
    tokenizer = char_tokenizer(bos=bos)
    model = tiny_gpt2() if kind == "gpt2" else tiny_model("llama")
    scored = score_targets(model, tokenizer, PROMPTS, TARGETS, batch_size=3, padding_side=padding_side)
    for i, (prompt, target) in enumerate(zip(PROMPTS, TARGETS)):
        target_ids, token_lp, forced, _ = reference(model, tokenizer, prompt, target)
        assert scored.target_ids[i] == target_ids
        np.testing.assert_allclose(scored.token_log_probs[i], token_lp, atol=2e-5)
        assert scored.greedy_ids[i] == forced
        assert scored.greedy_text[i] == tokenizer.decode(forced)
        assert scored.target_text[i] == target


def test_free_running_continuation_is_the_greedy_generation():
    tokenizer, model = char_tokenizer(bos=True), tiny_gpt2(seed=3)
    scored = score_targets(model, tokenizer, PROMPTS, TARGETS, batch_size=2, continuation="free_running")
    for i, (prompt, target) in enumerate(zip(PROMPTS, TARGETS)):
        _, token_lp, _, running = reference(model, tokenizer, prompt, target)
        np.testing.assert_allclose(scored.token_log_probs[i], token_lp, atol=2e-5)
        expected = running[:running.index(2)] if 2 in running else running   # cut at </s>
        assert scored.greedy_ids[i] == expected


def test_metrics_from_one_pass():
    tokenizer, model = char_tokenizer(bos=True), tiny_gpt2()
    scored = score_targets(model, tokenizer, PROMPTS, TARGETS)
    values = scored.metrics()
    assert set(values) == set(mm.LIVE_METRICS)
    lengths = scored.target_lengths()
    assert lengths.tolist() == [len(t) for t in TARGETS]            # one token per character here
    np.testing.assert_allclose(values["seq_prob"], values["token_prob"] ** lengths, rtol=1e-10)
    np.testing.assert_allclose(values["loglik_per_char"], values["loglik"] / np.array([len(t) for t in TARGETS]))
    assert scored.per_token_loss() == pytest.approx(-np.concatenate(scored.token_log_probs).mean())
    exact = [float(g == t) for g, t in zip(scored.greedy_ids, scored.target_ids)]
    assert values["exact_match"].tolist() == exact


def test_the_free_running_greedy_text_is_an_exact_match_when_scored_as_the_target():
    """Exact match of the greedy generation == every teacher-forced argmax equals its target token."""
    tokenizer = char_tokenizer(bos=True)
    for seed in range(20):  # the first random model whose 6-token continuation holds no special token
        model = tiny_gpt2(seed=seed, vocab=len(tokenizer))
        generated = score_targets(model, tokenizer, ["Q: 1?\nA:"], [" 12345"], continuation="free_running")
        if len(generated.greedy_ids[0]) == 6 and min(generated.greedy_ids[0]) > 2:
            break
    target = generated.greedy_text[0]
    again = score_targets(model, tokenizer, ["Q: 1?\nA:"], [target])
    assert again.target_ids[0] == generated.greedy_ids[0]
    assert again.greedy_ids[0] == again.target_ids[0]
    assert again.metrics()["exact_match"].tolist() == [1.0]
    assert again.metrics()["token_edit_distance"].tolist() == [0.0]
    other = score_targets(model, tokenizer, ["Q: 1?\nA:"], [target[:-1] + ("7" if target[-1] != "7" else "8")])
    assert other.metrics()["exact_match"].tolist() == [0.0]


def test_choices_are_scored_together():
    tokenizer, model = char_tokenizer(bos=True), tiny_gpt2()
    options = [[" 36", " 37", " 63"], [" 1", " 2"]]
    scored = score_choices(model, tokenizer, PROMPTS[:2], options, batch_size=4)
    for i, opts in enumerate(options):
        singles = [reference(model, tokenizer, PROMPTS[i], o)[1].sum() for o in opts]
        np.testing.assert_allclose(scored.option_log_probs[i], singles, atol=5e-5)
        assert scored.option_token_counts[i].tolist() == [len(o) for o in opts]
    grade = mm.multiple_choice_grade(scored.option_log_probs, [0, 1])
    assert grade.tolist() == [float(np.argmax(scored.option_log_probs[0]) == 0),
                              float(np.argmax(scored.option_log_probs[1]) == 1)]


def test_bad_input_is_named():
    tokenizer, model = char_tokenizer(), tiny_gpt2()
    with pytest.raises(ValueError, match="same length"):
        score_targets(model, tokenizer, ["a", "b"], [" 1"])
    with pytest.raises(ValueError, match=r"targets\[0\] .* encodes to no tokens"):
        score_targets(model, tokenizer, ["Q:"], [""])
    with pytest.raises(ValueError, match=r"prompts\[0\] encodes to no tokens"):
        score_targets(model, tokenizer, [""], [" 1"])
    with pytest.raises(ValueError, match="padding_side"):
        score_targets(model, tokenizer, ["Q:"], [" 1"], padding_side="middle")
    with pytest.raises(ValueError, match="over the model's 256 positions"):
        score_targets(model, tokenizer, ["Q:" * 200], [" 1"])
    with pytest.raises(ValueError, match=r"options\[0\] must hold at least 2"):
        score_choices(model, tokenizer, ["Q:"], [[" 1"]])


@pytest.mark.skipif(not model_loading._is_complete(model_loading.default_model_dir()),
                    reason="embedded SmolLM2 not converted yet (emergence-fast fetch-default-model)")
def test_embedded_default_model_scores_a_known_fact():
    model, tokenizer = model_loading.load_model(None)
    scored = score_targets(model, tokenizer, ["The capital of France is", "2 + 2 ="], [" Paris", " 4"])
    assert scored.greedy_text[0] == " Paris"
    assert scored.metrics()["exact_match"][0] == 1.0
    assert scored.token_log_probs[0].sum() > np.log(0.3)


def test_world_must_be_a_world():
    with pytest.raises(TypeError, match="world"):
        score_targets(tiny_gpt2(), char_tokenizer(), ["A:"], [" 1"], world="gloo")
