"""The estimator registry: every declared method has the one signature, nats by default, and a Details.

The toy estimator added in one place and seen by every consumer (API, return_stderr,
permutation_null, IE, CLI) is tested in tests/test_registry_consumers.py.
"""
import inspect
import math

import pytest
import torch

import emergence_fast as ef
from emergence_fast.estimators import registry
from emergence_fast.estimators.registry import COMMON_PARAMETERS, Details, Estimator

ESTIMATORS = registry.all_estimators()
QUANTITIES = [(e, q) for e in ESTIMATORS for q in ("mutual_information", "entropy") if getattr(e, q) is not None]


def _fast(spec: Estimator) -> dict:
    # A trained critic needs only to run here, not to converge.
    return {"steps": 3} if spec.trained else {}


def _inputs(quantity):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 64, 2, generator=generator, dtype=torch.float64)
    y = x + 0.5 * torch.randn(2, 64, 2, generator=generator, dtype=torch.float64)
    return (x, y) if quantity == "mutual_information" else (x,)


def test_the_registry_holds_every_method_of_the_public_api():
    assert set(registry.names("mutual_information")) == {
        "gaussian", "binned", "sliced", "max_sliced", "ksg", "noisy", "renyi", "infonce", "nwj", "mine", "smile",
        "chen2024"}
    assert set(registry.names("entropy")) == {"gaussian", "binned", "knn", "renyi"}
    assert set(registry.names("ie")) == {"gaussian", "sliced", "ksg", "noisy", "renyi", "infonce", "nwj", "mine",
                                         "smile", "chen2024"}
    assert dict(ef.estimators.MI_METHODS)["ksg"] is registry.get("ksg").mutual_information


@pytest.mark.parametrize("spec, quantity", QUANTITIES, ids=lambda v: getattr(v, "name", v))
def test_one_signature(spec, quantity):
    parameters = inspect.signature(getattr(spec, quantity)).parameters
    positional = [name for name, p in parameters.items() if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert positional == (["x", "y"] if quantity == "mutual_information" else ["x"])
    for name in COMMON_PARAMETERS:
        assert parameters[name].kind is inspect.Parameter.KEYWORD_ONLY, name
    assert parameters["base"].default is None and parameters["backend"].default is None
    assert parameters["details"].default is False
    assert isinstance(parameters["seed"].default, int)


@pytest.mark.parametrize("spec, quantity", QUANTITIES, ids=lambda v: getattr(v, "name", v))
def test_nats_by_default_and_details_type(spec, quantity):
    function, samples, options = getattr(spec, quantity), _inputs(quantity), _fast(spec)
    nats = function(*samples, **options)
    bits = function(*samples, base=2, **options)
    assert nats.dtype == torch.float64 and nats.shape == (2,)
    torch.testing.assert_close(bits, nats / math.log(2), rtol=1e-9, atol=1e-12)
    value, details = function(*samples, details=True, **options)
    torch.testing.assert_close(value, nats, rtol=0, atol=0)
    assert isinstance(details, Details)
    assert details.stderr is None or details.stderr.shape == value.shape
    if spec.uncertainty == "own" and quantity == "mutual_information":  # (Gaussian entropy: the jackknife)
        assert details.stderr is not None, "an estimator whose uncertainty rule is 'own' must report a stderr"


@pytest.mark.parametrize("spec", ESTIMATORS, ids=lambda e: e.name)
def test_declarations_are_consistent(spec):
    assert spec.summary and "(" in spec.summary, "the summary cites its source"
    if spec.ie:
        options = spec.resolve_ie_options(None)
        spec.validate(options)  # IE's defaults pass the estimator's own checks
        assert set(options) <= set(spec.options()) | {"seed"}
    if spec.kind == "moment":
        x, y = _inputs("mutual_information")
        z = torch.cat([x, y], -1)
        count = torch.full((2,), 64.0, dtype=torch.float64)
        centred = z - z.mean(-2, keepdim=True)
        comoment = centred.transpose(-1, -2) @ centred
        # The streamed form equals the function on the samples it summarises.
        torch.testing.assert_close(spec.mi_from_moments(count, comoment, 2), spec.mutual_information(x, y))


def test_ie_options_override_the_defaults_key_by_key_and_refuse_unknown_keys():
    spec = registry.get("gaussian")
    assert spec.resolve_ie_options(None) == {"pca": 8, "bias_correction": "wishart"}
    assert spec.resolve_ie_options({"pca": 4}) == {"pca": 4, "bias_correction": "wishart"}
    with pytest.raises(ValueError, match=r"estimator_options has unknown keys \['k'\]; the gaussian estimator takes"):
        spec.resolve_ie_options({"k": 3})
    with pytest.raises(ValueError, match="shrinkage must be a number in"):
        spec.validate({"shrinkage": 2.0})
    with pytest.raises(ValueError, match="needs more than 16 samples, got 10"):
        spec.validate({"pca": 8, "bias_correction": "wishart"}, n_samples=10)


def test_unknown_names_and_bad_declarations_are_refused():
    with pytest.raises(ValueError, match=r"^method must be one of \(.*'gaussian'.*\), got 'gausian'$"):
        ef.mutual_information(torch.randn(10, 1), torch.randn(10, 1), method="gausian")
    with pytest.raises(ValueError, match=r"^method must be one of \(.*\), got 'ksg'$"):
        ef.entropy(torch.randn(10, 1), method="ksg")  # KSG is an MI estimator; its entropy is "knn"
    with pytest.raises(ValueError, match="already registered"):
        registry.register(registry.get("ksg"))
    with pytest.raises(ValueError, match="moment estimator 'm' needs mi_from_moments"):
        Estimator(name="m", summary="s (x)", kind="moment", mutual_information=lambda x, y: x)
    with pytest.raises(ValueError, match="kind must be one of"):
        Estimator(name="m", summary="s (x)", kind="other", mutual_information=lambda x, y: x)


def test_the_api_refuses_unknown_options_bad_flags_and_seeds_naming_them():
    x = torch.randn(50, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"^method 'gaussian' takes no option 'pcaa'; its options are "
                                         r"\['bias_correction', 'pca', 'shrinkage'\]"):
        ef.mutual_information(x, x, pcaa=3)
    with pytest.raises(TypeError, match="^details must be a bool, got str 'yes'$"):
        ef.mutual_information(x, x, details="yes")
    with pytest.raises(TypeError, match="^return_stderr must be a bool, got int 1$"):
        ef.entropy(x, return_stderr=1)
    for method in registry.names("mutual_information"):  # every method, whether or not it draws numbers
        with pytest.raises(TypeError, match="^seed must be an integer, got float 1.5$"):
            ef.mutual_information(x, x, method=method, seed=1.5)


def _signature_less(x, y, *, scale=1.0):
    return x[..., 0, 0]


def test_registration_checks_the_contract():
    with pytest.raises(ValueError, match=r"mutual_information must take the keyword-only arguments \['base', "
                                         r"'backend', 'details', 'seed'\].*missing \['base', 'backend', 'details', "
                                         r"'seed'\]"):
        Estimator(name="bad", summary="s (x)", kind="sample", mutual_information=_signature_less)
    with pytest.raises(ValueError, match="name must be a Python identifier"):
        Estimator(name="", summary="s (x)", kind="sample", mutual_information=registry.get("ksg").mutual_information)
    with pytest.raises(ValueError, match=r"ie_defaults has keys \['bogus'\] that its IE function does not take"):
        Estimator(name="t", summary="s (x)", kind="sample", mutual_information=registry.get("ksg").mutual_information,
                  ie=True, ie_defaults={"bogus": 1})


def test_ie_options_are_those_of_the_function_ie_calls():
    # IE computes sliced MI from moments: only the Gaussian inner estimator exists there.
    spec = registry.get("sliced")
    assert set(spec.ie_options()) == {"k", "n_slices"}
    with pytest.raises(ValueError, match=r"unknown keys \['inner'\]"):
        spec.resolve_ie_options({"inner": "ksg"})
    with pytest.raises(ValueError, match=r"unknown keys \['inner_options'\]"):
        spec.resolve_ie_options({"inner_options": {"k": 3}})
    with pytest.raises(ValueError, match=r"^k must be an integer in \[1, 32\], got 64$"):
        spec.validate({"k": 64}, width=32)
