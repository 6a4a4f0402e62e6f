import gzip
import math
import zlib

import numpy as np
import pytest

from emergence_fast.icl import randomness as R
from tests.icl.coin import coin_tokenizer
from tests.tiny_models import one_thread, tiny_model  # noqa: F401 (autouse fixture)


@pytest.mark.parametrize("text, flips", [
    (" Heads, Tails, heads, Tuesday, 7, Tails] Heads, Heads", [0, 1, 0, 1]),  # any t-word counts; "Tails]" ends it
    ("[Heads, Tails", [0, 1]),
    (" Heads]", []),
    ("Tails,, ,Heads, x", [1, 0]),
])
def test_parse_flips_like_the_paper(text, flips):
    assert R.parse_flips(text).tolist() == flips


def test_metrics_on_known_sequences():
    alternating = [0, 1] * 25
    m = R.sequence_metrics([alternating])
    assert m["alternation"][0] == 1.0 and m["longest_run"][0] == 1 and m["mean"][0] == 0.5
    assert R.longest_runs([0, 1, 1, 1, 0, 0, 0]).tolist() == [3]
    assert R.longest_runs(np.zeros((2, 9), dtype=np.int8)).tolist() == [9, 9]
    assert R.alternation_rates([0, 0, 1, 1]).tolist() == pytest.approx([1 / 3])
    # running mean seeded with the sequence mean 0.75: cumsum of [.75, 1, 0, 1, 1] / (1..5)
    assert R.running_averages([1, 0, 1, 1])[0] == pytest.approx([0.75, 0.875, 1.75 / 3, 2.75 / 4, 0.75])


def test_gzip_length_is_header_plus_raw_deflate_plus_trailer():
    for flips in ([0, 1] * 25, [1] * 50, [0, 1, 1, 0, 1, 0, 0, 0, 1, 1] * 5):
        text = "".join(map(str, flips)).encode()
        raw = zlib.compressobj(9, zlib.DEFLATED, -15)
        expected = 10 + len(raw.compress(text) + raw.flush()) + 8   # RFC 1952: 10-byte header, CRC32 + ISIZE
        assert R.gzip_length(flips) == expected == len(gzip.compress(text, mtime=0))
    periodic = R.gzip_length([0, 1] * 25)
    random_like = R.gzip_length(np.random.default_rng(0).integers(0, 2, 50).tolist())
    assert periodic < random_like


def test_substring_counts_and_similarity_by_hand():
    assert R.substring_counts([[0, 1, 1, 0, 1]], 2) == {"01": 2, "11": 1, "10": 1}
    assert sum(R.substring_counts([[0, 1] * 10, [1] * 20], 5).values()) == 2 * 16
    sim = R.pairwise_similarity([[0, 1, 0, 1], [0, 1, 1, 0]])
    # longest common subsequence 3: indel distance 4 + 4 - 2*3 = 2 over 8 characters
    assert sim[0, 1] == pytest.approx(0.75) and sim[0, 0] == 1.0
    lev = R.pairwise_similarity([[0, 1, 0, 1], [0, 1, 1, 0]], metric="levenshtein")
    assert lev[0, 1] == pytest.approx(0.5)   # two substitutions over 4 characters
    assert R.mean_offdiagonal(np.array([[1.0, 0.2], [0.4, 1.0]])) == pytest.approx(0.3)


def test_crop_drops_short_sequences():
    out = R.crop([[0, 1, 1], [1], [1, 0, 0, 1]], 3)
    assert out.tolist() == [[0, 1, 1], [1, 0, 0]]
    assert R.crop([[0]], 2).shape == (0, 2)


def _exact_mean_longest_run(n: int) -> float:
    """E[longest run] of n fair flips: P(L <= k) = 2 * #compositions of n into parts <= k / 2^n."""
    def compositions(k):
        c = [1] + [0] * n
        for m in range(1, n + 1):
            c[m] = sum(c[m - j] for j in range(1, min(k, m) + 1))
        return c[n]
    return sum(1 - (2 * compositions(k - 1) / 2 ** n if k > 1 else 0.0) for k in range(1, n + 1))


def test_window_average_has_shorter_runs_and_a_tighter_mean_than_bernoulli():
    n, length = 20000, 50
    bern = R.Bernoulli(0.5).sample(n, length, seed=0)
    window = R.WindowAverage(0.5).sample(n, length, seed=1)
    runs_b, runs_w = R.longest_runs(bern), R.longest_runs(window)
    exact = _exact_mean_longest_run(length)
    assert abs(runs_b.mean() - exact) < 4 * runs_b.std() / math.sqrt(n)   # the simulation is right
    assert runs_w.mean() < runs_b.mean() - 1.0
    assert window.mean(1).std() < 0.6 * bern.mean(1).std()
    assert abs(bern.mean(1).std() - 0.5 / math.sqrt(length)) < 0.002       # binomial sd of a mean
    assert abs(window.mean() - 0.5) < 0.005                                 # unbiased, only less variable


def test_window_of_one_alternates_deterministically():
    # w = 1: P(x_1 = 1) = clip(0.5 + 0.5 - 0.5) = 0.5, then P(x_{t+1} = 1) = 1 - x_t.
    x = R.WindowAverage(0.5, window=1).sample(200, 12, seed=0)
    assert (np.abs(np.diff(x, axis=1)) == 1).all()
    assert 0.35 < x[:, 0].mean() < 0.65


def test_markov_chain_by_hand_and_map_fit():
    chain = R.MarkovChain(0.5, 0.8)
    # c00 = .2 * .5, c01 = .8 * .5 -> P(1 | 0) = .8; c10 = .8 * .5, c11 = .2 * .5 -> P(0 | 1) = .8
    assert chain.transition() == pytest.approx(np.array([[0.2, 0.8], [0.8, 0.2]]))
    x = chain.sample(20000, 50, seed=2)
    assert R.alternation_rates(x).mean() == pytest.approx(0.8, abs=0.005)
    fit = R.MarkovChain.fit(x)
    assert fit.p0 == pytest.approx(0.5, abs=0.01) and fit.alternation == pytest.approx(0.8, abs=0.005)


def test_map_fit_matches_a_general_optimiser():
    from scipy import optimize, stats

    x = R.Bernoulli(0.7).sample(6, 20, seed=5)

    def neg_log_post(theta):
        p0, a = theta
        return -(R.MarkovChain(p0, a).log_likelihood(x) + stats.beta.logpdf(p0, 5, 5) + stats.beta.logpdf(a, 5, 5))

    best = optimize.minimize(neg_log_post, [0.5, 0.5], bounds=[(1e-6, 1 - 1e-6)] * 2, method="L-BFGS-B")
    fit = R.MarkovChain.fit(x)
    assert (fit.p0, fit.alternation) == pytest.approx(tuple(best.x), abs=1e-4)
    assert neg_log_post((fit.p0, fit.alternation)) <= best.fun + 1e-9


def test_compare_models_reports_every_source():
    llm = R.Bernoulli(0.3).sample(30, 25, seed=0)
    stats = R.compare_models(llm, 0.3, seed=1)
    assert [s.source for s in stats] == ["llm", "bernoulli", "window_average", "markov_chain"]
    for s in stats:
        row = s.summary()
        assert row["n"] == 30 and 0.0 <= row["similarity_mean"] <= 1.0
        assert set(s.substring_counts) == set(range(5, 26))


def flip_prone(model, tok):
    """A random model with an output bias towards 'Heads', 'Tails' and ',' so that it writes flip lists."""
    import torch

    head = torch.nn.Linear(model.lm_head.in_features, model.lm_head.out_features, bias=True)
    with torch.no_grad():
        head.weight.normal_(0, 0.02)
        head.bias.zero_()
        for word, bias in (("Heads", 3.0), ("Tails", 3.0), (",", 3.5)):
            head.bias[tok.convert_tokens_to_ids(word)] = bias
    model.lm_head = head
    return model


def test_generate_flips_end_to_end_on_a_tiny_model():
    tok = coin_tokenizer()
    model = flip_prone(tiny_model("llama"), tok)
    result = R.generate_flips(model, tok, (20, 80), 6, max_new_tokens=16, crop_length=2, seed=0, batch_size=4)
    assert set(result.texts) == {20, 80} and all(len(t) == 6 for t in result.texts.values())
    llm = [s for s in result.stats if s.source == "llm"]
    assert [s.p_tails for s in llm] == [0.2, 0.8]
    for s, pct in zip(llm, (20, 80)):
        expected = [R.parse_flips(t)[:2].tolist() for t in result.texts[pct] if len(R.parse_flips(t)) >= 2]
        assert s.flips.tolist() == expected
    again = R.generate_flips(model, tok, (20, 80), 6, max_new_tokens=16, crop_length=2, seed=0, batch_size=6)
    assert again.texts == result.texts
    assert sum(s.flips.shape[0] for s in llm) >= 6      # the biased model writes flips
    assert {s.source for s in result.stats} == {"llm", "bernoulli", "window_average", "markov_chain"}
    assert result.to_dict()["config"]["n_samples"] == 6


def test_bad_inputs():
    with pytest.raises(TypeError, match="text"):
        R.parse_flips(["Heads"])
    with pytest.raises(ValueError, match="length"):
        R.crop([[0, 1]], 0)
    with pytest.raises(ValueError, match="window"):
        R.WindowAverage(0.5, window=0)
    with pytest.raises(ValueError, match=r"^p must be a number in \[0, 1\], got 1\.5$"):
        R.Bernoulli(1.5)
    with pytest.raises(ValueError, match="metric"):
        R.pairwise_similarity([[0, 1]], metric="hamming")
    with pytest.raises(ValueError, match=r"^k must be an integer in \[1, 3\], got 4$"):
        R.substring_counts([[0, 1, 1]], 4)
    with pytest.raises(ValueError, match="only 0 and 1"):
        R.longest_runs([[0, 2, 1]])
    with pytest.raises(ValueError, match="one length"):
        R.sequence_metrics([[0, 1], [0, 1, 1]])
    with pytest.raises(ValueError, match="n must"):
        R.Bernoulli(0.5).sample(0, 3)


def test_p_tails_takes_one_int_or_distinct_ints():
    """generate_flips(p_tails=0.3) raised "'float' object is not iterable"; (30, 30) ran 30 twice."""
    assert R.as_p_tails(30) == (30,)
    assert R.as_p_tails([5, 95]) == (5, 95)
    with pytest.raises(TypeError, match=r"^p_tails must be an int percentage of Tails or a sequence of them "
                                        r"\(e\.g\. 30 or \(30, 70\)\), got 0\.3$"):
        R.as_p_tails(0.3)
    with pytest.raises(ValueError, match=r"^each p_tails percentage must be an integer in \[0, 100\], got 0\.3$"):
        R.as_p_tails([0.3])
    with pytest.raises(ValueError, match=r"^each p_tails percentage must be an integer in \[0, 100\], got 101$"):
        R.as_p_tails([101])
    with pytest.raises(ValueError, match=r"^p_tails holds 30 more than once: "):
        R.as_p_tails([30, 70, 30])
    model, tok = tiny_model("gpt2"), coin_tokenizer()
    with pytest.raises(TypeError, match="p_tails must be an int percentage"):
        R.generate_flips(model, tok, p_tails=0.3)
    one = R.generate_flips(model, tok, p_tails=30, n_samples=2, max_new_tokens=4, crop_length=2, compare=False)
    assert one.config["p_tails"] == [30]


def test_an_unreachable_crop_length_is_refused_before_sampling(monkeypatch):
    """--crop-length 500 --max-new-tokens 10 sampled for minutes and kept n = 0 sequences at every p."""
    model, tok = tiny_model("gpt2"), coin_tokenizer()
    monkeypatch.setattr(R.PromptRunner, "sample_many", lambda *a, **k: pytest.fail("sampled before the check"))
    with pytest.raises(ValueError, match=r"^crop_length=11 flips can never be reached with max_new_tokens=10: a sampled "
                                        r"token holds at most one flip"):
        R.generate_flips(model, tok, p_tails=30, crop_length=11, max_new_tokens=10)
    R.check_crop_reachable(10, 10)  # ten one-token flips can fill it
