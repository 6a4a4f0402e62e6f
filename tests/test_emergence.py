"""Information Emergence on tiny random models: streaming == one shot, micro == tokens alone, E's
definition, exact ceilings, resume, input checks and the result's exports."""
import json
import math

import pytest
import torch

import emergence_fast as ef
from emergence_fast import GaussianMIAccumulator
from emergence_fast import emergence as ie
from emergence_fast.accumulators import standardised_basis
from emergence_fast.capture import BlockCapture
from emergence_fast.datasets import TokenDataset, icl_ceiling_bits
from emergence_fast.estimators import MI_METHODS, gaussian, sliced
from emergence_fast.ie.checkpoint import CHECKPOINT_NAME
from emergence_fast.ie.micro import micro_moments, micro_subspace_moments
from emergence_fast.report import write_json
from tests.tiny_models import all_draws, icl_ids, one_thread, tiny_model, tiny_tokenizer  # noqa: F401 (autouse)

OPTIONS = {"pca": 4, "bias_correction": "wishart"}
N, T = 300, 4
ESTIMATES = ("macro", "micro", "emergence", "macro_stderr", "micro_stderr", "emergence_stderr",
             "macro_expected_bias", "micro_expected_bias")
CEILINGS = ("ceiling_macro", "ceiling_micro", "ceiling_emergence")


def run(model, ids, **options):
    options = {"add_bos": False, "estimator": "gaussian", "estimator_options": dict(OPTIONS), "batch_size": N, **options}
    return ie.information_emergence(model, None, ids, **options)


@pytest.fixture(scope="module")
def gpt2():
    return tiny_model("gpt2")


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama")


@pytest.fixture(scope="module")
def ids():
    return icl_ids(N, k_shots=2, n_entities=20)


@pytest.fixture(scope="module")
def reference(gpt2, ids):
    return run(gpt2, ids)


@pytest.fixture(scope="module")
def models64():
    """float64 copies: no float32 rounding between mathematically equal paths."""
    return {kind: tiny_model(kind).double() for kind in ("gpt2", "llama")}


@pytest.fixture(scope="module")
def reference64(models64, ids):
    return run(models64["gpt2"], ids)


@pytest.fixture(scope="module")
def enumerated(gpt2):
    """All 30 ordered draws of 2 of 6 entities, each 10 times."""
    ids = all_draws(6, 2, repeats=10)
    return ids, run(gpt2, ids)


def estimate(block_in, block_out):
    """Accumulate ``[L, N, P, d]`` captures in one update and estimate as the IE defaults here do."""
    x, y = block_in.transpose(1, 2), block_out.transpose(1, 2)  # [L, P, N, d]
    accumulator = GaussianMIAccumulator(x.shape[-1], y.shape[-1], x.shape[:2]).update(x, y)
    value, diag = gaussian.mutual_information_from_moments(accumulator.count, accumulator.comoment, accumulator.dx,
                                                           details=True, base=2, **OPTIONS)
    return value, diag.stderr, diag.expected_bias


# ---------------------------------------------------------------- streaming and micro


# float64 models isolate the streaming algebra (exact to rounding); float32 models add the float32 Gram of
# gaussian.moments, whose rounding differs with the chunking (about 3e-6 relative here).
@pytest.mark.parametrize("kind, dtype, batch_size, update_samples, rtol", [
    ("gpt2", torch.float64, 7, 256, 1e-9),
    ("gpt2", torch.float64, 300, 256, 1e-9),
    ("gpt2", torch.float64, 7, 1, 1e-9),
    ("gpt2", torch.float64, 50, 10**6, 1e-9),
    ("llama", torch.float64, 7, 256, 1e-9),
    ("gpt2", torch.float32, 7, 256, 2e-5),
    ("llama", torch.float32, 300, 256, 2e-5),
])
def test_streaming_equals_one_shot(request, models64, ids, kind, dtype, batch_size, update_samples, rtol):
    model = models64[kind] if dtype == torch.float64 else request.getfixturevalue(kind)
    block_in, block_out = BlockCapture(model).run(ids)  # every sample at once
    assert block_in.dtype == dtype
    macro, stderr, bias = estimate(block_in, block_out)
    assert torch.isfinite(macro).all()
    result = run(model, ids, batch_size=batch_size, update_samples=update_samples)
    assert result.layers == [0, 1, 2] and result.positions == [0, 1, 2, 3] and result.unit == "bits"
    assert result.macro.dtype == torch.float64 and result.macro.shape == (3, T)
    torch.testing.assert_close(result.macro, macro, rtol=rtol, atol=rtol)
    torch.testing.assert_close(result.macro_stderr, stderr, rtol=rtol, atol=rtol * 1e-2)
    torch.testing.assert_close(result.macro_expected_bias, bias, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-9), (torch.float32, 1e-5)])
def test_micro_equals_each_samples_token_fed_alone(request, models64, gpt2, ids, dtype, tol):
    if dtype == torch.float64:
        model, result = models64["gpt2"], request.getfixturevalue("reference64")
    else:
        model, result = gpt2, request.getfixturevalue("reference")
    capture = BlockCapture(model)
    for i in range(T):
        block_in, block_out = capture.run(ids[:, i:i + 1])  # [N, 1]: the token alone
        micro, stderr, bias = estimate(block_in, block_out)
        torch.testing.assert_close(result.micro[:, i], micro[:, 0], rtol=tol, atol=tol)
        torch.testing.assert_close(result.micro_stderr[:, i], stderr[:, 0], rtol=tol, atol=tol * 1e-2)
        torch.testing.assert_close(result.micro_expected_bias[:, i], bias[:, 0], rtol=1e-9, atol=1e-12)
    if dtype == torch.float32:  # one separator token: a constant, whose MI is 0 - bias
        torch.testing.assert_close(result.micro[:, 1], -result.micro_expected_bias[:, 1], rtol=0, atol=1e-12)
        torch.testing.assert_close(result.micro[:, 3], result.micro[:, 1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [
    torch.float32,
    torch.float64,
])
def test_a_cell_every_sample_shares_has_zero_information(request, models64, ids, dtype):
    model = models64["gpt2"] if dtype == torch.float64 else request.getfixturevalue("gpt2")
    fixed = ids.clone()
    fixed[:, 0] = 5  # every sample starts with the same token: position 0 is constant at every layer
    result = run(model, fixed)
    torch.testing.assert_close(result.macro[:, 0], -result.macro_expected_bias[:, 0], rtol=0, atol=1e-12)
    torch.testing.assert_close(result.micro[:, 0], -result.micro_expected_bias[:, 0], rtol=0, atol=1e-12)


def test_emergence_is_macro_minus_running_mean_of_micro(reference):
    r = reference
    for t in range(T):
        expected = r.macro[:, t] - r.micro[:, : t + 1].mean(-1)
        torch.testing.assert_close(r.emergence[:, t], expected, rtol=1e-12, atol=1e-12)
        expected_se = (r.macro_stderr[:, t] ** 2 + (r.micro_stderr[:, : t + 1] ** 2).sum(-1) / (t + 1) ** 2).sqrt()
        torch.testing.assert_close(r.emergence_stderr[:, t], expected_se, rtol=1e-12, atol=1e-12)
    assert torch.isfinite(r.emergence).all() and (r.emergence[:, 2].abs() > 0.1).all()


def test_position_zero_without_bos_macro_equals_micro(reference, reference64):
    # The state at position 0 of a causal model depends on the first token only: the same states both ways
    # (up to float32 rounding of differently shaped batches).
    torch.testing.assert_close(reference64.macro[:, 0], reference64.micro[:, 0], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(reference.macro[:, 0], reference.micro[:, 0], rtol=1e-5, atol=1e-4)
    assert reference.emergence[:, 0].abs().max() < 1e-4


def test_layer_subset_and_token_dataset(gpt2, ids, reference):
    result = run(gpt2, TokenDataset(ids, "toy-icl", entity_positions=[0, 2]), layers=[2, 0], blocks="transformer.h")
    assert result.layers == [2, 0] and result.config["dataset"] == "toy-icl" and result.config["layers"] == [2, 0]
    for name in ESTIMATES:
        torch.testing.assert_close(getattr(result, name), getattr(reference, name)[[2, 0]], rtol=1e-7, atol=1e-7)


def test_bos_token_id_is_prepended_for_macro_and_micro(gpt2, ids, reference):
    result = run(gpt2, ids, add_bos=3)
    assert result.config["bos"] == 3 and result.macro.shape == (3, T)
    # With a BOS both see [BOS, s_0] at position 0; the states differ from the no-BOS ones.
    torch.testing.assert_close(result.macro[:, 0], result.micro[:, 0], rtol=1e-5, atol=1e-4)
    assert (result.micro[:, 0] - reference.micro[:, 0]).abs().max() > 1e-3


@pytest.mark.parametrize("adds_bos, add_bos, expected", [(True, "auto", 2), (False, "auto", None), (False, True, 2),
                                                         (True, False, None), (True, 5, 5)])
def test_add_bos_follows_the_tokenizer(gpt2, ids, adds_bos, add_bos, expected):
    result = ie.information_emergence(gpt2, tiny_tokenizer(adds_bos), ids[:40], add_bos=add_bos, layers=[0],
                                      estimator="gaussian", estimator_options=dict(OPTIONS), batch_size=40)
    assert result.config["bos"] == expected


def test_add_bos_true_needs_a_bos_token(gpt2, ids):
    tokenizer = tiny_tokenizer(False)
    tokenizer.bos_token = None
    with pytest.raises(ValueError, match="bos_token_id"):
        run(gpt2, ids, add_bos=True)
    with pytest.raises(ValueError, match="bos_token_id"):
        ie.information_emergence(gpt2, tokenizer, ids, add_bos=True)


def test_progress_bar(gpt2, ids, capsys):
    pytest.importorskip("tqdm")
    result = run(gpt2, ids[:40], layers=[0], batch_size=20, progress=True)
    assert result.macro.shape == (1, T)
    assert "IE macro pass" in capsys.readouterr().err


# ---------------------------------------------------------------- ceilings


def test_ceiling_is_the_exact_prefix_entropy(enumerated):
    _, result = enumerated
    ceiling = icl_ceiling_bits(6, 2)
    assert ceiling == pytest.approx(math.log2(30), abs=1e-12)
    assert abs(float(result.ceiling_macro[2]) - math.log2(30)) < 1e-12
    assert abs(float(result.ceiling_macro[2]) - ceiling) < 1e-12
    assert abs(float(result.ceiling_macro[0]) - math.log2(6)) < 1e-12
    # A separator adds nothing: flat there.
    assert float(result.ceiling_macro[1]) == float(result.ceiling_macro[0])
    assert float(result.ceiling_macro[3]) == float(result.ceiling_macro[2])
    torch.testing.assert_close(result.ceiling_micro, torch.tensor([math.log2(6), 0.0, math.log2(6), 0.0],
                                                                  dtype=torch.float64), rtol=0, atol=1e-12)
    running = torch.tensor([math.log2(6), math.log2(6) / 2, 2 * math.log2(6) / 3, math.log2(6) / 2],
                           dtype=torch.float64)
    torch.testing.assert_close(result.ceiling_emergence, result.ceiling_macro - running, rtol=0, atol=1e-12)


def test_ceiling_in_nats_without_base(gpt2):
    ids = all_draws(6, 2, repeats=2)
    result = run(gpt2, ids, base=None, layers=[0])
    assert abs(float(result.ceiling_macro[3]) - math.log(30)) < 1e-12


def test_too_few_distinct_states_are_noted(enumerated):
    _, result = enumerated
    # 6 distinct entity tokens, 8 joint dimensions (pca=4 per side): singular covariances, reported.
    assert any("6 distinct prefixes" in note and "singular" in note for note in result.notes)
    infinite = int((~torch.isfinite(result.micro)).sum())
    assert infinite > 0
    assert f"micro: {infinite} of 12 cells are not finite." in result.notes
    assert any(note.startswith("the Gaussian MI is ill-posed where it is infinite") for note in result.notes)
    assert torch.isfinite(result.micro[:, [1, 3]]).all()  # one separator token: a constant cell, MI exactly 0


def test_full_width_gaussian_on_few_distinct_states_gives_nan_errors_and_exact_zeros(gpt2):
    """Full width (pca=None) used to raise LinAlgError in the delta-method error of singular cells, and a
    constant-token cell reported -(Wishart bias) instead of 0."""
    ids = all_draws(6, 2, repeats=10)  # 6 entities at positions 0 and 2, one separator token at 1 and 3
    result = run(gpt2, ids, base=None, estimator_options={"pca": None, "bias_correction": "wishart"})
    separators = result.micro[:, [1, 3]]
    assert (separators == 0).all() and (result.micro_stderr[:, [1, 3]] == 0).all()
    assert (result.micro_expected_bias[:, [1, 3]] == 0).all()
    for value, stderr in ((result.macro, result.macro_stderr), (result.micro, result.micro_stderr)):
        assert torch.isnan(stderr[~torch.isfinite(value)]).all()
    undefined = int(result.micro_stderr.isnan().sum())
    assert undefined > 0 and any(note.startswith(f"micro: the standard error is NaN in {undefined} of 12 cells")
                                 for note in result.notes)


def test_micro_moments_are_those_of_every_sample_fed_alone():
    """The count-weighted moments of the distinct tokens' states equal the float64 moments of all N rows."""
    ids = icl_ids(60, k_shots=3, n_entities=7)
    tokens = torch.unique(ids)
    generator = torch.Generator().manual_seed(0)
    states_in = 30.0 + torch.randn(2, tokens.numel(), 6, generator=generator, dtype=torch.float64)
    states_out = torch.tanh(states_in) + torch.randn(2, tokens.numel(), 6, generator=generator, dtype=torch.float64)
    slot = torch.searchsorted(tokens, ids)  # [N, T]
    count, mean, comoment = micro_moments(states_in, states_out, tokens, ids)
    rows = torch.cat([states_in[:, slot.T], states_out[:, slot.T]], -1)  # [L, T, N, 2d]: each sample's token alone
    expected = gaussian.moments(rows)
    assert torch.equal(count, torch.full((2, ids.shape[1]), 60))
    torch.testing.assert_close(mean, expected[1], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(comoment, expected[2], rtol=1e-10, atol=1e-9)
    assert torch.equal(comoment[:, 1], torch.zeros_like(comoment[:, 1]))  # the separator: one token, exact zeros
    rank = 3
    count, comoment = micro_subspace_moments(states_in, states_out, tokens, ids, rank)
    counts = (ids.T.unsqueeze(-1) == tokens).sum(1)  # [T, V]
    for layer in range(2):
        for t in range(ids.shape[1]):
            sides = []
            for states in (states_in[layer], states_out[layer]):
                centre, scale, basis = standardised_basis(states.unsqueeze(0), rank, counts[t:t + 1])
                sides.append(((states[slot[:, t]] - centre) / scale) @ basis[0])  # [N, r]: every sample's row
            torch.testing.assert_close(comoment[layer, t], gaussian.moments(torch.cat(sides, -1))[2],
                                       rtol=1e-10, atol=1e-9)


def test_micro_cells_with_fewer_distinct_tokens_than_dimensions_are_infinite():
    ids = all_draws(6, 2, repeats=10)  # 6 entities at positions 0 and 2: rank <= 5 < 8 joint dimensions
    tokens = torch.unique(ids)
    generator = torch.Generator().manual_seed(0)
    states_in = torch.randn(128, tokens.numel(), 32, generator=generator, dtype=torch.float64)  # 128 "layers"
    states_out = torch.tanh(states_in @ torch.randn(32, 32, generator=generator, dtype=torch.float64))
    count, _, comoment = micro_moments(states_in, states_out, tokens, ids)
    value = gaussian.mutual_information_from_moments(count, comoment, 32, base=2, **OPTIONS)
    assert torch.isinf(value[:, [0, 2]]).all(), value[:, [0, 2]][torch.isfinite(value[:, [0, 2]])]


# ---------------------------------------------------------------- checkpoints


RESUME = {"batch_size": 128, "checkpoint_every": 1}  # 3 batches


def _crash_on_call(monkeypatch, n):
    original, calls = BlockCapture.run, []

    def run_or_die(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise RuntimeError("simulated kill")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(BlockCapture, "run", run_or_die)
    return calls


# (batch_size, update_samples, the capture call that dies, batches in the checkpoint by then)
@pytest.mark.parametrize("batch_size, update_samples, dies_at, saved", [
    (128, 1, 3, 2),  # a fold and a checkpoint after every batch
    (128, 256, 3, 2),  # the buffer folds after the second batch
    (64, 128, 5, 4),  # folds after batches 2 and 4
    (64, 256, 4, 0),  # killed before the first fold: nothing saved, the rerun starts over
])
def test_resume_after_a_kill_equals_an_uninterrupted_run(gpt2, ids, tmp_path, monkeypatch, batch_size,
                                                         update_samples, dies_at, saved):
    options = {"batch_size": batch_size, "update_samples": update_samples, "checkpoint_every": 1}
    n_batches = math.ceil(N / batch_size)
    whole = run(gpt2, ids, **options)
    _crash_on_call(monkeypatch, dies_at)
    with pytest.raises(RuntimeError, match="simulated kill"):
        run(gpt2, ids, checkpoint_dir=tmp_path, **options)
    monkeypatch.undo()
    path = tmp_path / CHECKPOINT_NAME
    assert not list(tmp_path.glob("*.tmp"))
    if saved:
        assert torch.load(path, weights_only=True)["batches_done"] == saved
    else:
        assert not path.exists()
    calls = _crash_on_call(monkeypatch, -1)  # counts only
    resumed = run(gpt2, ids, checkpoint_dir=tmp_path, resume=True, **options)
    assert resumed.provenance["resumed_from_batch"] == saved
    assert len(calls) == n_batches - saved + 1  # the missing macro batches and one micro batch
    for name in ESTIMATES + CEILINGS:
        assert torch.equal(getattr(resumed, name), getattr(whole, name)), name
    assert resumed.config == whole.config
    assert torch.load(path, weights_only=True)["batches_done"] == n_batches


def test_resume_of_a_finished_run_skips_the_macro_pass(gpt2, ids, tmp_path, monkeypatch):
    first = run(gpt2, ids, checkpoint_dir=tmp_path, **RESUME)
    calls = _crash_on_call(monkeypatch, -1)
    again = run(gpt2, ids, checkpoint_dir=tmp_path, resume=True, **RESUME)
    assert len(calls) == 1 and again.provenance["resumed_from_batch"] == 3
    assert torch.equal(again.macro, first.macro) and torch.equal(again.emergence, first.emergence)


@pytest.mark.parametrize("garbage", [b"\x00garbage, not a checkpoint" * 10, b""])
def test_corrupt_checkpoint_raises_and_is_left_in_place(gpt2, ids, tmp_path, monkeypatch, garbage):
    path = tmp_path / CHECKPOINT_NAME
    path.write_bytes(garbage)
    calls = _crash_on_call(monkeypatch, -1)
    with pytest.raises(ValueError, match="corrupt"):
        run(gpt2, ids, checkpoint_dir=tmp_path, resume=True, **RESUME)
    assert path.read_bytes() == garbage and calls == []


def test_truncated_checkpoint_raises_and_is_left_in_place(gpt2, ids, tmp_path):
    run(gpt2, ids, checkpoint_dir=tmp_path, **RESUME)
    path = tmp_path / CHECKPOINT_NAME
    truncated = path.read_bytes()[:200]
    path.write_bytes(truncated)
    with pytest.raises(ValueError, match="corrupt"):
        run(gpt2, ids, checkpoint_dir=tmp_path, resume=True, **RESUME)
    assert path.read_bytes() == truncated


@pytest.mark.parametrize("payload", [torch.zeros(3), [1, 2, 3]], ids=["tensor", "list"])
def test_checkpoint_that_is_not_a_dict_is_reported_as_corrupt(gpt2, ids, tmp_path, payload):
    torch.save(payload, tmp_path / CHECKPOINT_NAME)
    with pytest.raises(ValueError, match="corrupt"):
        run(gpt2, ids, checkpoint_dir=tmp_path, resume=True, **RESUME)


@pytest.mark.parametrize("change", [{"layers": [0, 1]}, {"batch_size": 100}, {"base": None},
                                    {"estimator_options": {"pca": 3, "bias_correction": "wishart"}},
                                    {"add_bos": 3}, {"data": "other"}],
                         ids=["layers", "batch_size", "base", "options", "bos", "data"])
def test_checkpoint_from_another_configuration_raises(gpt2, ids, tmp_path, monkeypatch, change):
    run(gpt2, ids, checkpoint_dir=tmp_path, **RESUME)
    path = tmp_path / CHECKPOINT_NAME
    before = path.read_bytes()
    options = {**RESUME, **change}
    data = icl_ids(N, k_shots=2, n_entities=20, seed=1) if options.pop("data", None) else ids
    calls = _crash_on_call(monkeypatch, -1)
    with pytest.raises(ValueError, match="different run configuration"):
        run(gpt2, data, checkpoint_dir=tmp_path, resume=True, **options)
    assert path.read_bytes() == before and calls == []


# ---------------------------------------------------------------- bad input


BAD_INPUT = {
    "estimator": ({"estimator": "mine"}, "estimator"),
    "float-data": ({"data": lambda ids: ids.float()}, "integer tensor"),
    "one-sample": ({"data": lambda ids: ids[:1]}, "at least 2 samples"),
    "1d-data": ({"data": lambda ids: ids[:, 0]}, "integer tensor"),
    "list-data": ({"data": lambda ids: ids.tolist()}, "integer tensor"),
    "no-tokens": ({"data": lambda ids: ids[:, :0]}, "at least 2 samples"),
    "layer-out-of-range": ({"layers": [3]}, "layers"),
    "layer-repeated": ({"layers": [0, 0]}, "repeat"),
    "batch_size-0": ({"batch_size": 0}, "^batch_size must be an integer >= 1, got 0$"),
    "batch_size-float": ({"batch_size": 2.0}, "^batch_size must be an integer >= 1, got 2.0$"),
    "batch_size-bool": ({"batch_size": True}, "^batch_size must be an integer >= 1, got True$"),
    "checkpoint_every-0": ({"checkpoint_every": 0}, "^checkpoint_every must be an integer >= 1, got 0$"),
    "update_samples-negative": ({"update_samples": -1}, "^update_samples must be an integer >= 1, got -1$"),
    "reservoir_size-float": ({"reservoir_size": 8.0}, "^reservoir_size must be an integer >= 1, got 8.0$"),
    "add_bos-string": ({"add_bos": "yes"}, "add_bos"),
    "add_bos-without-tokenizer": ({"add_bos": True}, "bos_token_id"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_raises_before_any_forward_pass(gpt2, ids, monkeypatch, case):
    change, match = BAD_INPUT[case]
    change = dict(change)
    data = change.pop("data", lambda ids: ids)(ids)
    calls = _crash_on_call(monkeypatch, -1)
    with pytest.raises(ValueError, match=match):
        run(gpt2, data, **change)
    assert calls == []


def test_bool_dataset_is_rejected(gpt2):
    with pytest.raises(ValueError, match="integer tensor"):
        run(gpt2, torch.ones(N, T, dtype=torch.bool))


@pytest.mark.parametrize("options", [{"pca": 0}, {"pca": 4, "bias_correction": "bogus"}, {"pcaa": 4}],
                         ids=["pca0", "bias", "unknown-key"])
def test_bad_estimator_options_raise_before_any_forward_pass(gpt2, ids, monkeypatch, options):
    calls = _crash_on_call(monkeypatch, -1)
    with pytest.raises(ValueError):
        run(gpt2, ids, estimator_options=options)
    assert calls == []


# ---------------------------------------------------------------- exports


def test_to_dict_is_json_serialisable_with_infinities_as_null(enumerated, tmp_path):
    _, result = enumerated
    path = write_json(result, tmp_path / "ie.json")
    loaded = json.loads(path.read_text())  # strict JSON: no Infinity literals
    assert "Infinity" not in path.read_text()
    assert loaded["unit"] == "bits" and loaded["layers"] == [0, 1, 2] and loaded["positions"] == [0, 1, 2, 3]
    for layer in range(3):
        for t in range(T):
            value = float(result.micro[layer, t])
            stored = loaded["micro"][layer][t]
            assert stored == (None if value == math.inf else value)
            if value == math.inf:
                assert loaded["nonfinite"]["values"][f"/micro/{layer}/{t}"] == "inf"
    assert loaded["config"]["estimator_options"] == OPTIONS
    assert set(loaded["layer_summary"]) == {"layer", "mean_emergence", "mean_macro", "mean_micro", "peak_layer"}
    assert json.loads(json.dumps(result.to_dict(), allow_nan=True))["ceiling_macro"] == result.ceiling_macro.tolist()


def test_dataset_provenance_reaches_the_result_and_its_json(gpt2, tmp_path):
    """The seed and the entities a tokenizer could not write as one token travel with the numbers."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from emergence_fast.datasets import entity_list, icl_dataset

    kept = ["red", "green", "blue", "black", "white"]
    vocab = {"[UNK]": 0, ",": 1, **{f" {word}": 2 + i for i, word in enumerate(kept)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_next")
    data = icl_dataset("icl-color", PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]"), 40, 2, seed=5)
    dropped = {word: "not one token" for word in entity_list("icl-color") if word not in kept}
    result = run(gpt2, data, layers=[0])
    assert result.provenance["dataset"]["seed"] == 5
    assert result.provenance["dataset"]["entities_kept"] == kept
    assert result.provenance["dataset"]["entities_dropped"] == dropped
    loaded = json.loads(write_json(result, tmp_path / "ie.json").read_text())  # what the CLI writes
    assert loaded["provenance"]["dataset"]["seed"] == 5 and loaded["provenance"]["dataset"]["entities_dropped"] == dropped
    states = ie.capture_states(gpt2, None, data, layers=[0], add_bos=False, batch_size=N)
    assert ie.estimate_from_states(states, "gaussian", dict(OPTIONS)).provenance["dataset"] == data.info
    assert run(gpt2, data.input_ids, layers=[0]).provenance["dataset"] is None  # a bare tensor says nothing


def test_to_rows_and_to_dataframe(reference):
    rows = reference.to_rows()
    assert len(rows) == 3 * T
    for row in rows:
        i, j = reference.layers.index(row["layer"]), reference.positions.index(row["position"])
        for name in ESTIMATES:
            assert row[name] == float(getattr(reference, name)[i, j])
        for name in CEILINGS:
            assert row[name] == float(getattr(reference, name)[j])
        assert row["unit"] == "bits"
    assert sorted((r["layer"], r["position"]) for r in rows) == [(layer, t) for layer in range(3) for t in range(T)]
    pd = pytest.importorskip("pandas")
    frame = reference.to_dataframe()
    assert isinstance(frame, pd.DataFrame) and frame.shape == (3 * T, len(rows[0]))
    assert frame["macro"].tolist() == [r["macro"] for r in rows]


def test_layer_summary_and_shape_agreement(reference):
    summary = reference.layer_summary()
    assert summary["layer"] == [0, 1, 2]
    torch.testing.assert_close(torch.tensor(summary["mean_emergence"], dtype=torch.float64),
                               reference.emergence.mean(-1))
    assert summary["peak_layer"] == int(reference.emergence.mean(-1).argmax())
    shape = reference.shape_agreement()
    assert -1 <= shape["pearson_with_ceiling"] <= 1 and 0 <= shape["steps_where_ceiling_steps"] <= 1


def test_nats_are_bits_times_ln2(gpt2, ids, reference):
    nats = run(gpt2, ids, base=None)
    assert nats.unit == "nats" and reference.unit == "bits"
    for name in ESTIMATES + CEILINGS:
        torch.testing.assert_close(getattr(nats, name), getattr(reference, name) * math.log(2), rtol=1e-12,
                                   atol=1e-12, msg=name)


def test_sliced_estimator_reads_the_same_streaming_state(models64, ids):
    model = models64["gpt2"]
    options = {"k": 2, "n_slices": 8, "seed": 5}
    result = run(model, ids, estimator="sliced", estimator_options=options, batch_size=7)
    x, y = (t.transpose(1, 2) for t in BlockCapture(model).run(ids))
    accumulator = GaussianMIAccumulator(x.shape[-1], y.shape[-1], x.shape[:2]).update(x, y)
    expected = sliced.mutual_information_from_moments(accumulator.count, accumulator.comoment, accumulator.dx,
                                                      base=2, **options)
    torch.testing.assert_close(result.macro, expected, rtol=1e-9, atol=1e-9)
    assert torch.isnan(result.macro_expected_bias).all() and torch.isfinite(result.macro_stderr).all()
    with pytest.raises(ValueError, match="unknown keys"):
        run(model, ids, estimator="sliced", estimator_options={"pca": 4})


@pytest.mark.parametrize("options, error, message", [
    ({"k": 0}, ValueError, r"^estimator_options of the sliced estimator: k must be an integer >= 1, got 0$"),
    ({"n_slices": 4.0}, ValueError,
     r"^estimator_options of the sliced estimator: n_slices must be an integer >= 1, got 4.0$"),
    ({"seed": True}, TypeError, r"^estimator_options of the sliced estimator: seed must be an integer, got bool True$"),
])
def test_bad_sliced_options_are_named_before_any_forward_pass(gpt2, ids, monkeypatch, options, error, message):
    calls = _crash_on_call(monkeypatch, -1)
    with pytest.raises(error, match=message):
        run(gpt2, ids, estimator="sliced", estimator_options=options)
    assert calls == []


def test_capture_states_names_a_bad_batch_size(gpt2, ids):
    with pytest.raises(ValueError, match=r"^batch_size must be an integer >= 1, got 0$"):
        ie.capture_states(gpt2, None, ids, batch_size=0)


@pytest.mark.parametrize("estimator,options", [
    ("ksg", {"k": 3, "jitter": 1e-3}),
    ("infonce", {"steps": 20, "batch_size": 64}),
    ("chen2024", {"steps": 5}),
])
def test_sample_based_estimators_read_a_reservoir(models64, ids, estimator, options):
    model = models64["gpt2"]
    result = run(model, ids, estimator=estimator, estimator_options=options, batch_size=7, reservoir_size=N)
    x, y = (t.transpose(1, 2) for t in BlockCapture(model).run(ids))  # every sample fits: the reservoir holds all
    expected = MI_METHODS[estimator](x.float(), y.float(), base=2, **options)
    torch.testing.assert_close(result.macro, expected.double(), rtol=1e-5, atol=1e-5)
    assert result.macro.shape == result.micro.shape == (3, T)
    if estimator == "chen2024":  # no standard error: a jackknife would retrain every critic 32 times
        assert torch.isnan(result.macro_stderr).all()
    else:
        _, expected_se = ef.mutual_information(x.float(), y.float(), estimator, return_stderr=True, base=2, **options)
        # infonce at this size holds out a single minibatch: its own standard error is NaN, as it says
        torch.testing.assert_close(result.macro_stderr, expected_se.double(), rtol=1e-5, atol=1e-5, equal_nan=True)
        assert torch.isfinite(result.emergence_stderr).all() == (estimator == "ksg")
    assert result.config["reservoir"] == [N, 0]


def test_reservoir_smaller_than_n_and_unknown_sample_option(gpt2, ids):
    result = run(gpt2, ids, estimator="ksg", estimator_options=None, batch_size=7, reservoir_size=32)
    assert torch.isfinite(result.macro).all() and torch.isfinite(result.micro).all()
    with pytest.raises(ValueError, match="unknown keys"):
        run(gpt2, ids, estimator="ksg", estimator_options={"pca": 4})


@pytest.mark.parametrize("estimator, options, message", [
    # The options as IE runs them: KSG's IE default jitter, overridden key by key by the caller's.
    ("ksg", {"k": 300}, "estimator ksg with options {'jitter': 0.0001, 'k': 300} on 256 kept rows per cell (reservoir "
                        "size and number of samples): k must be smaller than the number of samples N (k < N), got k=300 "
                        "and N=256"),
    ("mine", {"lr": -1.0}, "lr must be a finite number > 0, got -1.0"),
])
def test_sample_estimator_option_values_fail_before_the_forward_pass(gpt2, estimator, options, message, monkeypatch):
    import re

    monkeypatch.setattr(BlockCapture, "run", lambda *a, **k: pytest.fail("the model ran before the options were checked"))
    with pytest.raises(ValueError, match=re.escape(message)):
        ie.information_emergence(gpt2, None, icl_ids(300, k_shots=2, n_entities=20), add_bos=False,
                                 estimator=estimator, estimator_options=options, reservoir_size=256)


def test_neural_nan_stderr_note_says_why(gpt2, ids):
    """IE with infonce at the default batch_size 128 gave every stderr NaN with a generic note; the reason (the
    held-out split of N rows is one minibatch) was only in the estimator's details."""
    from emergence_fast.estimators import neural

    assert neural.heldout_minibatches(N) == 1  # 60 held-out rows, one minibatch of min(128, 60)
    assert neural.heldout_minibatches(N, batch_size=16) == 3 and neural.heldout_minibatches(1000) == 1
    assert neural.heldout_minibatches(2000, holdout=0.5) == 7
    result = run(gpt2, ids, estimator="infonce", estimator_options={"steps": 2}, reservoir_size=N)
    nan = int(result.macro_stderr.isnan().sum())
    assert nan == 3 * T - int((result.macro_stderr == 0).sum()) > 0  # constant cells have an exact 0
    why = (f"where it is undefined: {neural.SINGLE_MINIBATCH} (300 kept rows): raise n_samples/reservoir_size or "
           "lower the option batch_size.")
    assert f"macro: the standard error is NaN in {nan} of {3 * T} cells, {why}" in result.notes
    assert neural.SINGLE_MINIBATCH == ("the held-out split holds a single minibatch of the neural bound, so it has no "
                                       "standard error")
    finer = run(gpt2, ids, estimator="infonce", estimator_options={"steps": 2, "batch_size": 16}, reservoir_size=N)
    assert torch.isfinite(finer.macro_stderr).all()
    assert not any(neural.SINGLE_MINIBATCH in note for note in finer.notes)
