import itertools

import numpy as np
import pytest
import torch

from emergence_fast import _validation
from emergence_fast.icl import concepts as C
from emergence_fast.icl import prompts as P
from tests.icl.coin import WORDS, coin_tokenizer
from tests.tiny_models import one_thread, tiny_model  # noqa: F401 (autouse fixture)


def test_rotations_and_chance_levels():
    assert set(C.rotations((0, 1, 1), 4)) == {(0, 1, 1, 0), (1, 1, 0, 1), (1, 0, 1, 1)}
    assert C.rotations("01", 3) == [(0, 1, 0), (1, 0, 1)]
    assert C.rotations((0, 1, 0, 1), 4) == [(0, 1, 0, 1), (1, 0, 1, 0)]  # repeated shifts counted once
    assert C.chance_level((0, 1), 4) == 2 / 16
    assert C.chance_level((0, 1, 1), 4) == 3 / 16
    # 00001 at depth 3: shifts give 000, 000, 001, 010, 100.
    assert C.chance_level((0, 0, 0, 0, 1), 3) == 4 / 8


def test_prefixes_follow_the_papers_order():
    assert C.continuation_prefixes(3) == [(), (0,), (1,), (0, 0), (0, 1), (1, 0), (1, 1)]
    assert len(C.continuation_prefixes(5)) == 2 ** 5 - 1


def test_path_probabilities_by_hand():
    q = {(): 0.3, (0,): 0.6, (1,): 0.2}
    paths = C.path_probabilities(q, 2)
    assert paths == pytest.approx({(0, 0): 0.7 * 0.4, (0, 1): 0.7 * 0.6, (1, 0): 0.3 * 0.8, (1, 1): 0.3 * 0.2})
    assert C.concept_probability(q, (0, 1), 2) == pytest.approx(0.7 * 0.6 + 0.3 * 0.8)


@pytest.mark.parametrize("concept", [(0, 1), (0, 1, 1), (1, 1, 1, 0, 0, 0), (0, 0, 1, 0, 1)])
def test_a_fair_coin_scores_the_chance_level(concept):
    depth = 4
    fair = {prefix: 0.5 for prefix in C.continuation_prefixes(depth)}
    assert C.concept_probability(fair, concept, depth) == pytest.approx(C.chance_level(concept, depth))
    rng = np.random.default_rng(0)
    biased = {prefix: float(rng.random()) for prefix in C.continuation_prefixes(depth)}
    assert sum(C.path_probabilities(biased, depth).values()) == pytest.approx(1.0)


def test_random_sequences_are_seeded():
    a, b = C.random_sequences(3, 20, seed=1), C.random_sequences(3, 20, seed=1)
    assert a == b and a != C.random_sequences(3, 20, seed=2)
    assert all(len(s) == 20 and set(s) <= {0, 1} for s in a)


def _brute_readout(model, tok, text, a, b):
    """P_b / (P_a + P_b) from one forward pass, summing the probabilities of the words by name."""
    with torch.no_grad():
        probs = torch.softmax(model(torch.tensor([tok(text)["input_ids"]])).logits[0, -1].double(), -1)
    words = {c: [i for i, w in enumerate(WORDS) if w.lower().startswith(c)] for c in (a, b)}
    pa, pb = probs[words[a]].sum().item(), probs[words[b]].sum().item()
    return pb / (pa + pb), pa + pb


def test_judgment_curves_match_one_prompt_at_a_time():
    model, tok = tiny_model("llama"), coin_tokenizer()
    result = C.judgment_curves(model, tok, ["01", (0, 1, 1)], 6, n_random=1, seed=3, batch_size=4, n_boot=20)
    assert [c.label for c in result.curves] == ["01", "011", "random-0"]
    assert [c.period for c in result.curves] == [2, 3, None]
    for curve in result.curves:
        for n, value, mass in zip(curve.lengths, curve.value, curve.mass):
            p, m = _brute_readout(model, tok, P.judgment_prompt(curve.sequence[:n]), "n", "r")
            assert value == pytest.approx(p, rel=1e-4) and mass == pytest.approx(m, rel=1e-4)
        assert curve.transition is not None and curve.transition.n_points == 6
    assert result.curves[2].sequence == C.random_sequences(1, 6, seed=3)[0]
    assert len(result.to_rows()) == 18 and len(result.transition_rows()) == 3
    assert result.provenance["runner"]["prompts"] == 18


def test_tree_curves_match_an_explicit_path_sum():
    model, tok = tiny_model("gpt2"), coin_tokenizer()
    depth, max_len = 3, 5
    result = C.tree_curves(model, tok, [(0, 1, 1)], max_len, depth, batch_size=6, n_boot=20)
    curve = result.curves[0]
    assert curve.chance == 3 / 8 and curve.period == 3
    for n, value in zip(curve.lengths, curve.value):
        x = P.concept_context((0, 1, 1), n)
        total = 0.0
        for path in itertools.product((0, 1), repeat=depth):
            prob = 1.0
            for d in range(depth):
                q, _ = _brute_readout(model, tok, P.tree_prompt(x, path[:d]), "h", "t")
                prob *= q if path[d] else 1 - q
            if path in {(0, 1, 1), (1, 1, 0), (1, 0, 1)}:
                total += prob
        assert value == pytest.approx(total, rel=1e-4)


def test_chat_curves_differ_from_plain_ones():
    model, tok = tiny_model("llama"), coin_tokenizer(chat=True)
    plain = C.judgment_curves(model, tok, ["01"], 3, n_boot=0)
    chat = C.judgment_curves(model, tok, ["01"], 3, chat=True, n_boot=0)
    p, _ = _brute_readout(model, tok, P.chat_prompt(tok, P.judgment_prompt((0, 1))), "n", "r")
    assert chat.curves[0].value[1] == pytest.approx(p, rel=1e-4)
    assert not np.allclose(plain.curves[0].value, chat.curves[0].value)


def test_bad_inputs():
    model, tok = tiny_model("gpt2"), coin_tokenizer()
    with pytest.raises(ValueError, match="max_len"):
        C.judgment_curves(model, tok, ["01"], 0)
    with pytest.raises(ValueError, match="concept"):
        C.judgment_curves(model, tok, ["0121"], 3)
    with pytest.raises(ValueError, match="concept"):
        C.tree_curves(model, tok, [""], 3)
    with pytest.raises(ValueError, match=r"^depth must be an integer >= 1, got 0$"):
        C.tree_curves(model, tok, ["01"], 3, depth=0)
    with pytest.raises(ValueError, match=r"^n_random must be an integer >= 0, got -1$"):
        C.judgment_curves(model, tok, ["01"], 3, n_random=-1)
    with pytest.raises(ValueError, match="nothing to run"):
        C.judgment_curves(model, tok, [], 3)
    with pytest.raises(TypeError, match="runner"):
        C.judgment_curves(model, tok, ["01"], 3, runner="fast")
    with pytest.raises(ValueError, match="p_tails"):
        C.path_probabilities({(): 1.5}, 1)
    with pytest.raises(ValueError, match="no entry"):
        C.path_probabilities({(): 0.5}, 2)


def test_a_concept_string_is_one_concept():
    """judgment_curves(model, tok, "01") used to iterate the string and run concepts "0" and "1"."""
    assert C.as_concepts("01") == [(0, 1)]
    assert C.as_concepts(" 011 ") == [(0, 1, 1)]
    assert C.as_concepts((0, 1, 1)) == [(0, 1, 1)]  # flat 0/1 values: one concept
    assert C.as_concepts(np.array([1, 0])) == [(1, 0)]
    assert C.as_concepts(["01", "011"]) == [(0, 1), (0, 1, 1)]
    assert C.as_concepts(((0, 1), "1")) == [(0, 1), (1,)]
    assert C.as_concepts([]) == []
    with pytest.raises(ValueError, match=r"concept must contain only the characters '0' and '1', got \['2'\]"):
        C.as_concepts("012")
    with pytest.raises(TypeError, match="concepts must be a '0'/'1' string"):
        C.as_concepts(7)
    model, tok = tiny_model("gpt2"), coin_tokenizer()
    judged = C.judgment_curves(model, tok, "01", 3, n_boot=0)
    assert [c.label for c in judged.curves] == ["01"] and judged.curves[0].period == 2
    tree = C.tree_curves(model, tok, "011", 2, 2, n_boot=0)
    assert [c.label for c in tree.curves] == ["011"] and tree.curves[0].chance == C.chance_level("011", 2)


def test_trees_beyond_memory_are_refused_before_any_work(monkeypatch):
    """tree_curves(depth=30) used to grow until the kernel killed it (24 GB); now it fails at once, naming depth."""
    monkeypatch.setattr(_validation, "physical_memory", lambda: 8 * 10**9)
    with pytest.raises(ValueError, match=r"depth=30 needs 85,899,345,840 prompts \(2 curve\(s\) x max_len=40 x "
                                         r"1,073,741,823 continuation prefixes\), about .* TB of memory, more than "
                                         r"this machine's 8 GB: lower depth"):
        C.tree_curves(None, None, ["01", "011"], 40, depth=30)  # refused before the model is touched
    with pytest.raises(ValueError, match=r"depth=40 needs 1,099,511,627,775 continuation prefixes"):
        C.continuation_prefixes(40)
    with pytest.raises(ValueError, match=r"depth=40 needs 1,099,511,627,776 paths"):
        C.path_probabilities({}, 40)
    with pytest.raises(ValueError, match=r"max_len=1000000 needs 1,000,000 prompts .* lower max_len"):
        C.judgment_curves(None, None, "01", 10**6)
    # The paper's depth and a long judgment curve stay well inside a small machine.
    monkeypatch.setattr(_validation, "physical_memory", lambda: 10**9)
    assert len(C.continuation_prefixes(12)) == 2**12 - 1
    with pytest.raises(ValueError, match="depth=16"):
        C.tree_curves(None, None, ["01", "011"], 40, depth=16)  # 5.2 M prompts of ~300 characters: several GB


def test_concept_probability_multiplies_out_only_the_concepts_paths():
    rng = np.random.default_rng(1)
    depth = 6
    q = {prefix: float(rng.random()) for prefix in C.continuation_prefixes(depth)}
    paths = C.path_probabilities(q, depth)
    for concept in ((0, 1), (0, 1, 1), (1, 1, 1, 0, 0, 0)):
        expected = sum(paths[p] for p in C.rotations(concept, depth))
        assert C.concept_probability(q, concept, depth) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="no entry for the prefix"):
        C.concept_probability({(): 0.5}, (0, 1), 2)


def test_concepts_are_spelled_as_on_the_command_line():
    """tree_curves(model, tok, "paper") was refused while `icl tree --concepts paper` ran the 27 concepts."""
    assert C.as_concepts("paper") == list(P.CONCEPTS_PAPER)
    assert C.as_concepts("01,011") == [(0, 1), (0, 1, 1)]
    assert C.as_concepts("01, 10") == [(0, 1), (1, 0)]  # rotations: distinct contexts 0101... and 1010...
    model, tok = tiny_model("gpt2"), coin_tokenizer()
    tree = C.tree_curves(model, tok, "paper", 1, 1, n_boot=0)
    assert [c.label for c in tree.curves] == ["".join(map(str, c)) for c in P.CONCEPTS_PAPER]


@pytest.mark.parametrize("concepts, message", [
    (["01", "01"], "concepts holds 01 and 01, the same concept: it is given twice; give each concept once"),
    ("01,10,0101", "concepts holds 01 and 0101, the same concept: both are repetitions of 01, so both contexts are 01 "
                   "repeated and their curves are identical; give each concept once"),
    (((0, 1, 1), (0, 1, 1, 0, 1, 1)), "concepts holds 011 and 011011, the same concept"),
])
def test_duplicate_concepts_are_refused(concepts, message):
    """judge/tree wrote two identical curves for 01,01 (and for 01,0101), each under its own label."""
    with pytest.raises(ValueError) as caught:
        C.as_concepts(concepts)
    assert str(caught.value).startswith(message)
    model, tok = tiny_model("gpt2"), coin_tokenizer()
    with pytest.raises(ValueError, match="the same concept"):
        C.judgment_curves(model, tok, concepts, 2, n_boot=0)
    with pytest.raises(ValueError, match="the same concept"):
        C.tree_curves(model, tok, concepts, 2, 1, n_boot=0)
