"""Metrics on fixed outputs: hand-worked BIG-bench examples and the exact identities of Schaeffer et al."""
import itertools
import math

import numpy as np
import pytest

from emergence_fast.mirage import metrics as mm


def test_exact_match_strips_and_optionally_ignores_case():
    preds, targets = [" 4275", "Paris", "paris ", "42"], ["4275", "Paris", "Paris", "4275"]
    assert mm.exact_match(preds, targets).tolist() == [1, 1, 0, 0]
    assert mm.exact_match(preds, targets, ignore_case=True).tolist() == [1, 1, 1, 0]


def test_multiple_choice_grade_hand_worked():
    log_probs = [[-1.0, -2.0, -0.5], [-1.0, -1.0, -3.0], [-0.1, -3.0], [-2.0, -1.0]]
    # correct as an index, as a BIG-bench target_scores vector; a tie goes to the first option
    correct = [2, 1, [1, 0], [0.0, 1.0]]
    assert mm.multiple_choice_grade(log_probs, correct).tolist() == [1.0, 0.0, 1.0, 1.0]
    # partial credit in target_scores is returned as given
    assert mm.multiple_choice_grade([[-3.0, -1.0, -2.0]], [[0.0, 0.5, 1.0]]).tolist() == [0.5]


def test_brier_score_hand_worked():
    probs = np.array([0.7, 0.2, 0.1])
    expected = ((0.7 - 1) ** 2 + 0.2**2 + 0.1**2) / 3
    assert mm.brier_score([np.log(probs)], [0]).tolist() == pytest.approx([expected])
    # options' log-probs need not be normalised: the softmax normalises them
    assert mm.brier_score([np.log(probs) - 7.3], [0])[0] == pytest.approx(expected)
    # uniform over two options, correct first: ((0.5-1)^2 + 0.5^2) / 2 = 0.25
    assert mm.brier_score([[0.0, 0.0]], [0])[0] == pytest.approx(0.25)
    # a -inf option has probability 0
    assert mm.brier_score([[0.0, -np.inf]], [1])[0] == pytest.approx((1 + 1) / 2)


def test_levenshtein_on_tokens():
    assert mm.token_edit_distance([[1, 2, 3], ["a", "b"], [], [5]], [[1, 3, 4], ["b"], [1, 2], [5]]).tolist() == \
        [2.0, 1.0, 2.0, 0.0]
    rng = np.random.default_rng(0)
    for _ in range(50):
        a, b = rng.integers(0, 4, rng.integers(0, 8)).tolist(), rng.integers(0, 4, rng.integers(0, 8)).tolist()
        assert mm.levenshtein(a, b) == mm._levenshtein_dp(a, b)


def test_log_likelihood_variants_and_probabilities():
    lps = [np.log([0.5, 0.25]), np.log([0.9])]
    assert mm.target_log_likelihood(lps).tolist() == pytest.approx([math.log(0.125), math.log(0.9)])
    assert mm.target_log_likelihood(lps, per="token").tolist() == pytest.approx([math.log(0.125) / 2, math.log(0.9)])
    assert mm.target_log_likelihood(lps, per="char", targets=[" 42", "x"]).tolist() == \
        pytest.approx([math.log(0.125) / 3, math.log(0.9)])
    token_prob, seq_prob = mm.per_token_probability(lps), mm.sequence_probability(lps)
    assert token_prob.tolist() == pytest.approx([math.sqrt(0.125), 0.9])
    assert seq_prob.tolist() == pytest.approx(token_prob ** np.array([2, 1]))   # accuracy = p^L


def _outcomes(length: int, p: float):
    """Every pattern of right/wrong tokens with its probability, as predicted and target token lists."""
    target = list(range(length))
    for pattern in itertools.product([True, False], repeat=length):
        predicted = [t if right else 100 + t for t, right in zip(target, pattern)]
        yield predicted, target, p ** sum(pattern) * (1 - p) ** (length - sum(pattern))


@pytest.mark.parametrize("length", [1, 2, 5])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.93])
def test_expected_accuracy_is_p_to_the_L_and_edit_distance_is_L_one_minus_p(length, p):
    cases = list(_outcomes(length, p))
    predicted, target, weight = zip(*cases)
    weight = np.array(weight)
    accuracy = mm.exact_match([" ".join(map(str, t)) for t in predicted], [" ".join(map(str, t)) for t in target])
    ted = mm.token_edit_distance(predicted, target)
    assert weight.sum() == pytest.approx(1.0)
    assert float(weight @ accuracy) == pytest.approx(p**length, rel=1e-12)
    assert float(weight @ ted) == pytest.approx(length * (1 - p), rel=1e-12)


def test_at_length_one_accuracy_and_one_minus_edit_distance_coincide():
    rng = np.random.default_rng(1)
    target = rng.integers(0, 5, (200, 1)).tolist()
    predicted = rng.integers(0, 5, (200, 1)).tolist()
    accuracy = mm.exact_match([str(t) for t in predicted], [str(t) for t in target])
    assert np.array_equal(accuracy, 1 - mm.token_edit_distance(predicted, target))


def test_aggregate_bootstrap_ci_matches_the_standard_error():
    values = np.random.default_rng(2).binomial(1, 0.3, 4000).astype(float)
    agg = mm.aggregate(values, n_boot=2000, seed=0)
    se = values.std(ddof=1) / math.sqrt(values.size)
    assert agg.mean == pytest.approx(values.mean())
    assert (agg.hi - agg.lo) == pytest.approx(2 * 1.959964 * se, rel=0.08)
    assert agg.lo < agg.mean < agg.hi
    assert mm.aggregate(values, n_boot=2000, seed=0) == agg
    one = mm.aggregate([0.5], n_boot=100)
    assert one.mean == 0.5 and math.isnan(one.lo)


def test_unknown_metric_lists_the_known_ones():
    with pytest.raises(ValueError, match="known metrics are .*'exact_match'"):
        mm.metric_spec("exact_macth")
    assert mm.metric_spec("my_loss", lower_is_better=("my_loss",)).higher_is_better is False
    assert mm.metric_spec("brier").higher_is_better is False
    assert mm.metric_spec("acc").proportion


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="same length"):
        mm.exact_match(["a"], ["a", "b"])
    with pytest.raises(TypeError, match=r"predictions\[1\]"):
        mm.exact_match(["a", 3], ["a", "b"])
    with pytest.raises(ValueError, match=r"target_scores\[0\] is the index 3"):
        mm.multiple_choice_grade([[-1.0, -2.0]], [3])
    with pytest.raises(ValueError, match=r"option_log_probs\[0\] must be a 1-D sequence of at least 2"):
        mm.brier_score([[-1.0]], [0])
    with pytest.raises(ValueError, match="same length"):
        mm.token_edit_distance([[1]], [[1], [2]])
    with pytest.raises(ValueError, match=r"token_log_probs\[0\] must hold log-probabilities"):
        mm.target_log_likelihood([[0.5]])
    with pytest.raises(ValueError, match="needs targets"):
        mm.target_log_likelihood([[-1.0]], per="char")
    with pytest.raises(ValueError, match="values is empty"):
        mm.aggregate([])


@pytest.mark.parametrize("call, error, message", [
    (lambda: mm.exact_match(["a"], ["a"], ignore_case=1), TypeError, "ignore_case must be a bool, got int 1"),
    (lambda: mm.aggregate([1.0, 0.0], n_boot=-1), ValueError, "n_boot must be an integer >= 0, got -1"),
    (lambda: mm.aggregate([1.0, 0.0], n_boot=True), ValueError, "n_boot must be an integer >= 0, got True"),
    (lambda: mm.aggregate([1.0, 0.0], ci=1.0), ValueError, "ci must be a number in (0, 1), got 1.0"),
    (lambda: mm.aggregate([1.0, 0.0], ci="0.9"), ValueError, "ci must be a number in (0, 1), got '0.9'"),
])
def test_bad_options_give_the_standard_message(call, error, message):
    with pytest.raises(error) as info:
        call()
    assert str(info.value) == message
