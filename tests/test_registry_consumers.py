"""An estimator registered in one place appears in every consumer: the API, return_stderr,
permutation_null, Information Emergence and the CLI (issue #15)."""
import json
import math
from dataclasses import dataclass

import pytest
import torch

import emergence_fast as ef
from emergence_fast import cli
from emergence_fast._validation import as_samples, check_paired, log_base
from emergence_fast.emergence import capture_states, estimate_from_states
from emergence_fast.estimators import registry
from emergence_fast.estimators.registry import Details, Estimator
from emergence_fast.estimators.uncertainty import estimate_with_stderr

from .icl.coin import coin_tokenizer
from .tiny_models import icl_ids, one_thread, tiny_model  # noqa: F401 (one_thread: autouse fixture)


@dataclass
class FirstCoordinateDetails(Details):
    rho: torch.Tensor
    stderr: None = None


def first_coordinate_mi(x, y, *, scale: float = 1.0, base=None, backend=None, details=False, seed=0):
    """Gaussian MI of the first coordinates, ``-scale/2 log(1 - rho^2)``: a toy with a closed form."""
    x, y = as_samples(x, "x"), as_samples(y, "y")
    check_paired(x, y)
    a = x[..., 0].double() - x[..., 0].double().mean(-1, keepdim=True)
    b = y[..., 0].double() - y[..., 0].double().mean(-1, keepdim=True)
    scale2 = (a * a).sum(-1) * (b * b).sum(-1)
    rho = torch.where(scale2 > 0, (a * b).sum(-1) / scale2.clamp_min(1e-300).sqrt(), 0.0)  # a constant side: I = 0
    value = -0.5 * scale * torch.log1p(-rho.square()) / log_base(base)
    return (value, FirstCoordinateDetails(rho=rho)) if details else value


def check_scale(scale=1.0):
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")


@pytest.fixture
def toy():
    spec = registry.register(Estimator(
        name="first_coordinate", summary="Gaussian MI of the first coordinates (a test's toy)", kind="sample",
        mutual_information=first_coordinate_mi, uncertainty="jackknife", ie=True, ie_defaults={"scale": 1.0},
        check_options=check_scale))
    yield spec
    registry.unregister("first_coordinate")


def correlated(n=400, rho=0.6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=generator, dtype=torch.float64)
    y = rho * x + math.sqrt(1 - rho**2) * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return x, y


def test_the_api_return_stderr_and_the_permutation_null_see_it(toy):
    x, y = correlated()
    value = ef.mutual_information(x, y, method="first_coordinate")
    assert float(value) == pytest.approx(float(first_coordinate_mi(x, y)), abs=0)
    assert abs(float(value) + 0.5 * math.log(1 - 0.6**2)) < 0.06  # the closed form, within sampling error
    assert "first_coordinate" in ef.estimators.MI_METHODS
    _, stderr = ef.mutual_information(x, y, method="first_coordinate", return_stderr=True)
    assert 0.01 < float(stderr) < 0.1  # the jackknife of a 400-sample correlation
    null = ef.permutation_null(x, y, method="first_coordinate", n_permutations=20)
    assert float(null.p_value) == pytest.approx(1 / 21) and abs(float(null.null_mean)) < 0.01


def test_information_emergence_runs_it_from_the_reservoir(toy):
    model, ids = tiny_model("gpt2"), icl_ids(40, k_shots=2)
    states = capture_states(model, None, ids, batch_size=20)
    result = estimate_from_states(states, "first_coordinate", {"scale": 2.0})
    x, y, micro_x, micro_y = states.sample_pairs()
    torch.testing.assert_close(result.macro, first_coordinate_mi(x, y, scale=2.0, base=2), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(result.micro, first_coordinate_mi(micro_x, micro_y, scale=2.0, base=2),
                               rtol=1e-6, atol=1e-9)
    assert result.config["estimator"] == "first_coordinate"
    _, jackknife = estimate_with_stderr(first_coordinate_mi, "first_coordinate", (x.double(), y.double()),
                                        {"scale": 2.0, "base": 2})
    torch.testing.assert_close(result.macro_stderr, jackknife, rtol=1e-5, atol=1e-9)  # the rule it declares
    assert bool((result.macro_stderr[result.macro > 0] > 0).all())
    streamed = ef.information_emergence(model, None, ids, estimator="first_coordinate", batch_size=20,
                                        reservoir_size=40)
    torch.testing.assert_close(streamed.macro, first_coordinate_mi(x, y, base=2), rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="scale must be > 0, got -1"):
        ef.information_emergence(model, None, ids, estimator="first_coordinate", estimator_options={"scale": -1})


def test_the_cli_offers_it(toy, tmp_path, capsys):
    model = tiny_model("llama")
    model.save_pretrained(tmp_path / "model")
    coin_tokenizer(chat=True).save_pretrained(tmp_path / "model")
    torch.save(icl_ids(32, 2), tmp_path / "ids.pt")
    code = cli.main(["ie", "--model", str(tmp_path / "model"), "--dataset", f"ids:{tmp_path / 'ids.pt'}",
                     "--n-samples", "32", "--batch-size", "8", "--estimator", "first_coordinate",
                     "--option", "scale=3.0", "--out", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err
    written = json.loads((tmp_path / "out" / "ie.json").read_text())
    assert written["config"]["estimator"] == "first_coordinate"
    assert written["config"]["estimator_options"]["scale"] == 3.0
    capsys.readouterr()
    try:
        cli.main(["ie", "--help"])
    except SystemExit:
        pass
    assert "first_coordinate" in capsys.readouterr().out


def first_coordinate_from_moments(count, comoment, dx, *, k: int = 1, base=None, details=False, seed=0):
    """The same MI from the streamed comoment ``[..., dx + dy, dx + dy]``; ``k`` is an unrelated option."""
    scale2 = comoment[..., 0, 0] * comoment[..., dx, dx]
    rho = torch.where(scale2 > 0, comoment[..., 0, dx] / scale2.clamp_min(1e-300).sqrt(), 0.0)
    value = -0.5 * torch.log1p(-rho.square()) / log_base(base)
    return (value, FirstCoordinateDetails(rho=rho)) if details else value


def test_a_moment_estimator_with_an_option_named_k_keeps_the_smallest_subspace(tmp_path):
    # IE's bounded subspace state asks the estimator for its least rank (ie_min_rank), not for an option "k".
    registry.register(Estimator(
        name="first_coordinate_moments", summary="Gaussian MI of the first coordinates (a test's toy)",
        kind="moment", mutual_information=first_coordinate_mi, mi_from_moments=first_coordinate_from_moments,
        uncertainty="jackknife", ie=True, ie_defaults={"k": 20}))
    try:
        model, ids = tiny_model("gpt2"), icl_ids(40, k_shots=2)
        result = ef.information_emergence(model, None, ids, estimator="first_coordinate_moments", batch_size=20,
                                          state_memory="400KB")
        assert result.config["state"]["kind"] == "subspace" and result.config["state"]["rank"] == 8
        assert result.config["estimator_options"] == {"k": 20}
        assert bool(torch.isfinite(result.macro).all())
    finally:
        registry.unregister("first_coordinate_moments")


def test_ie_refuses_what_its_moments_form_cannot_compute_before_the_forward_pass(monkeypatch):
    from emergence_fast.capture import BlockCapture

    monkeypatch.setattr(BlockCapture, "run", lambda *a, **k: pytest.fail("the model ran before the options were checked"))
    model, ids = tiny_model("gpt2"), icl_ids(40, k_shots=2)
    with pytest.raises(ValueError, match=r"unknown keys \['inner'\]"):
        ef.information_emergence(model, None, ids, estimator="sliced", estimator_options={"inner": "ksg"})
    with pytest.raises(ValueError, match=r"^estimator_options of the sliced estimator: k must be an integer in "
                                         r"\[1, 32\], got 64$"):
        ef.information_emergence(model, None, ids, estimator="sliced", estimator_options={"k": 64})
