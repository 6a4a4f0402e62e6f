import itertools
import math

import numpy as np
import pytest

from emergence_fast.icl import model_selection as M


def test_paper_compat_reproduces_the_notebook():
    from scipy import stats

    result = M.bayesian_model_selection((0, 1), 99, paper_compat=True)
    x = [0, 1] * 52
    for n in (1, 2, 10, 50, 51, 99):
        bern = stats.binom(p=0.5, n=n).pmf(sum(x[:n])) * 0.75   # the notebook's h_x_[0]
        conc = (1 / 3) * 0.25                                    # h_x_[1]: RepeatModel always matches
        assert result.p_concept[n - 1] == pytest.approx(conc / (bern + conc), rel=1e-12)
        assert result.predictions["average"][n - 1] == pytest.approx((0.5 * bern + conc) / (bern + conc))
        w = np.array([bern, conc]) ** 3
        assert result.predictions["soft@3"][n - 1] == pytest.approx((0.5 * w[0] + w[1]) / w.sum())
    assert result.p_concept[49] == pytest.approx(0.497394510, abs=1e-9)
    assert result.p_concept[50] == pytest.approx(0.502248993, abs=1e-9)
    assert result.crossing("p_concept") == pytest.approx(50.5367, abs=1e-4)
    hard = result.predictions["hard"]
    assert (hard[:50] == 0.5).all() and (hard[50:] == 1.0).all()


def test_paper_compat_for_an_unbalanced_concept():
    from scipy import stats

    result = M.bayesian_model_selection((0, 1, 1), 99, paper_compat=True)
    x = [0, 1, 1] * 40
    n = 30
    bern = stats.binom(p=2 / 3, n=n).pmf(sum(x[:n])) * 0.75
    assert result.p_concept[n - 1] == pytest.approx(0.25 / 3 / (bern + 0.25 / 3), rel=1e-12)
    assert result.crossing("p_concept") == pytest.approx(57.1, abs=0.05)


def _brute_posterior(x, m, eps, prior_random, p=0.5):
    """Direct products over every hypothesis and phase, no logs, no cumulative sums."""
    hyps = [("bernoulli", None)] + [("c", c) for n in range(1, m + 1) for c in itertools.product((0, 1), repeat=n)]
    weights = [2.0 ** -len(c) for _, c in hyps[1:]]
    priors = [prior_random] + [(1 - prior_random) * w / sum(weights) for w in weights]
    liks = []
    for kind, c in hyps:
        if kind == "bernoulli":
            liks.append(math.prod(p if v else 1 - p for v in x))
        else:
            liks.append(sum(math.prod((1 - eps) if v == c[(t + phi) % len(c)] else eps for t, v in enumerate(x))
                            for phi in range(len(c))) / len(c))
    joint = np.array(priors) * np.array(liks)
    return joint / joint.sum(), np.array(liks)


def test_proper_posterior_matches_direct_enumeration():
    x = (0, 1, 1, 0, 1, 1, 0, 0)
    result = M.bayesian_model_selection(None, 7, x=x, max_concept_len=3, epsilon=0.1, prior_random=0.3, temperatures=(1.0, 0.25))
    for n in (1, 4, 7):
        post, _ = _brute_posterior(x[:n], 3, 0.1, 0.3)
        np.testing.assert_allclose(result.posterior[n - 1], post, rtol=1e-10)
        # averaging = ratio of marginals; soft at tau = 1 is averaging
        _, lik_next = _brute_posterior(x[:n + 1], 3, 0.1, 0.3)
        _, lik_now = _brute_posterior(x[:n], 3, 0.1, 0.3)
        q = lik_next / lik_now
        assert result.predictions["average"][n - 1] == pytest.approx(float(post @ q))
        assert result.predictions["soft@1"][n - 1] == pytest.approx(float(post @ q))
        assert result.predictions["hard"][n - 1] == pytest.approx(q[np.argmax(post)])
        w = post ** 4
        assert result.predictions["soft@0.25"][n - 1] == pytest.approx(float(w @ q / w.sum()))
    assert np.isnan(result.p_concept).all()
    assert result.hypotheses[:3] == ["bernoulli", "0", "1"] and len(result.hypotheses) == 1 + 14


def test_proper_posterior_crosses_far_earlier_than_the_papers():
    proper = M.bayesian_model_selection((0, 1), 100)
    paper = M.bayesian_model_selection((0, 1), 99, paper_compat=True)
    assert proper.p_random[1] == pytest.approx(0.5434979, abs=1e-6)       # 1 - 0.4565 non-random at |x| = 2
    assert proper.crossing("p_nonrandom") == pytest.approx(3.0, abs=1e-6)
    assert proper.crossing("p_concept") == pytest.approx(4.614, abs=1e-3)
    assert proper.p_concept[3] < 0.5 < proper.p_concept[4]
    assert paper.crossing("p_concept") > 10 * proper.crossing("p_concept")
    assert M.bayesian_model_selection((0, 1, 1), 100).crossing("p_concept") == pytest.approx(5.642, abs=1e-3)
    # Under the proper likelihood the concept keeps winning: the average predicts the next flip well.
    assert proper.predictions["average"][-1] > 0.98 and proper.predictions["hard"][-1] == pytest.approx(0.99)


def test_concept_classes():
    assert M.primitive_root((0, 1, 0, 1)) == (0, 1)
    assert M.concept_class((1, 0)) == M.concept_class((0, 1, 0, 1)) == (0, 1)
    assert M.concept_class((1, 1, 0)) == (0, 1, 1)
    assert len(M.enumerate_concepts(4)) == 2 ** 5 - 2


def test_crossing_is_where_the_curve_stays_above():
    result = M.bayesian_model_selection((0, 1), 10)
    result.p_concept = np.array([0.6, 0.4, 0.45, 0.7, 0.8, 0.9, 0.9, 0.9, 0.9, 0.9])
    assert result.crossing("p_concept") == pytest.approx(3 + 0.05 / 0.25)
    result.p_concept = np.full(10, 0.4)
    assert math.isnan(result.crossing("p_concept"))
    with pytest.raises(ValueError, match="curve"):
        result.crossing("p_other")


def test_bad_inputs():
    with pytest.raises(ValueError, match="concept"):
        M.bayesian_model_selection("0120", 10)
    with pytest.raises(ValueError, match="max_len"):
        M.bayesian_model_selection((0, 1), 0)
    with pytest.raises(ValueError, match=r"^epsilon must be a number in \(0, 1\), got 0$"):
        M.bayesian_model_selection((0, 1), 10, epsilon=0)
    with pytest.raises(ValueError, match=r"^max_concept_len must be an integer >= 1, got 0$"):
        M.bayesian_model_selection((0, 1), 10, max_concept_len=0)
    with pytest.raises(ValueError, match="x must have"):
        M.bayesian_model_selection((0, 1), 10, x=(0, 1, 0))
    with pytest.raises(ValueError, match=r"^temperatures\[0\] must be a finite number > 0, got 0$"):
        M.bayesian_model_selection((0, 1), 10, temperatures=(0,))
    with pytest.raises(ValueError, match="concept or a sequence"):
        M.bayesian_model_selection(None, 10)
    with pytest.raises(TypeError, match="^paper_compat must be a bool, got int 1$"):
        M.bayesian_model_selection((0, 1), 10, paper_compat=1)


def test_hypothesis_spaces_beyond_memory_are_refused_before_they_are_built(monkeypatch):
    import time

    from emergence_fast import _validation
    from emergence_fast.icl import model_selection as ms

    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"^max_concept_len=40 needs 2,199,023,255,551 hypotheses over 101 flips, "
                                         r"about .* of memory, more than this machine's .*: lower max_concept_len"):
        ms.bayesian_model_selection("01", 100, max_concept_len=40)
    with pytest.raises(ValueError, match=r"^max_len=45 needs 70,368,744,177,662 concepts"):
        ms.enumerate_concepts(45)
    assert time.perf_counter() - start < 1.0  # refused up front, nothing enumerated
    # The bound is the machine's memory: with 1 MB, even max_concept_len=10 (2,047 hypotheses) is refused.
    monkeypatch.setattr(_validation, "physical_memory", lambda: 1 << 20)
    with pytest.raises(ValueError, match="max_concept_len=10 needs 2,047 hypotheses"):
        ms.bayesian_model_selection("01", 100, max_concept_len=10)
