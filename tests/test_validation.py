"""Bad input gets a ValueError that names the argument."""
import math

import numpy as _np
import pytest
import torch

import emergence_fast as ef
from emergence_fast._validation import (
    check_bool, check_int, check_positive_float, check_positive_int, check_probability, check_seed,
)

GOOD = torch.randn(50, 3)


@pytest.mark.parametrize("x,y,match", [
    (torch.tensor([[float("nan")], [1.0]]), torch.randn(2, 1), "x contains NaN or Inf"),
    (GOOD, GOOD.clone().fill_(float("inf")), "y contains NaN or Inf"),
    (torch.randn(1, 3), torch.randn(1, 3), "x needs at least 2 samples"),
    (GOOD, torch.randn(49, 3), "same number of samples N"),
    (torch.ones(50, 3, dtype=torch.int32), GOOD, "x must have a floating dtype"),
    (torch.tensor(1.0), GOOD, "0-d tensor"),
    (torch.randn(2, 50, 3), torch.randn(3, 50, 3), "same leading batch dims"),
])
def test_mutual_information_rejects(x, y, match):
    with pytest.raises(ValueError, match=match):
        ef.mutual_information(x, y)


def test_non_tensor_and_unknown_method():
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        ef.entropy([[1.0, 2.0]])
    with pytest.raises(ValueError, match="method must be one of"):
        ef.entropy(GOOD, method="magic")


# --- base: one check (_validation.log_base) behind every public function that takes it -----------------

BAD_BASES = [float("inf"), -float("inf"), float("nan"), 1, 1.0, 0, -2, True, False, "2", 2j]
X, Y = torch.randn(40, 2), torch.randn(40, 2)
TOKENS = torch.randint(0, 5, (20, 3))


def _ie_states():
    from types import SimpleNamespace

    return SimpleNamespace(input_ids=TOKENS)  # refused on base before the captured states are read


def _calls():
    from emergence_fast import datasets, emergence
    from emergence_fast._validation import log_base
    from emergence_fast.estimators import binned, gaussian, knn, neural, noisy, renyi, sliced
    from emergence_fast.estimators.token_entropy import token_entropy

    count, _, comoment = gaussian.moments(torch.cat([X, Y], -1))
    return {
        "emergence_fast._validation.log_base": log_base,
        "emergence_fast.datasets.prefix_entropy": lambda b: datasets.prefix_entropy(TOKENS, base=b),
        "emergence_fast.datasets.token_entropy_per_position": lambda b: datasets.token_entropy_per_position(TOKENS,
                                                                                                            base=b),
        "emergence_fast.emergence.information_emergence": lambda b: emergence.information_emergence(
            None, None, TOKENS, estimator="gaussian", base=b),  # before any model is touched
        "emergence_fast.emergence.estimate_from_states": lambda b: emergence.estimate_from_states(
            _ie_states(), "gaussian", base=b),
        "emergence_fast.estimators.binned.entropy": lambda b: binned.entropy(X, base=b),
        "emergence_fast.estimators.binned.mutual_information": lambda b: binned.mutual_information(X, Y, base=b),
        "emergence_fast.estimators.gaussian.entropy": lambda b: gaussian.entropy(X, base=b),
        "emergence_fast.estimators.gaussian.entropy_from_moments": lambda b: gaussian.entropy_from_moments(
            count, comoment, base=b),
        "emergence_fast.estimators.gaussian.mutual_information": lambda b: gaussian.mutual_information(X, Y, base=b),
        "emergence_fast.estimators.gaussian.mutual_information_from_moments":
            lambda b: gaussian.mutual_information_from_moments(count, comoment, 2, base=b),
        "emergence_fast.estimators.knn.entropy": lambda b: knn.entropy(X, base=b),
        "emergence_fast.estimators.knn.mutual_information": lambda b: knn.mutual_information(X, Y, base=b),
        "emergence_fast.estimators.neural.chen2024": lambda b: neural.chen2024(X, Y, steps=2, base=b),
        "emergence_fast.estimators.neural.mutual_information": lambda b: neural.mutual_information(X, Y, steps=2,
                                                                                                   base=b),
        "emergence_fast.estimators.noisy.mutual_information": lambda b: noisy.mutual_information(X, Y, base=b),
        "emergence_fast.estimators.renyi.entropy": lambda b: renyi.entropy(X, base=b),
        "emergence_fast.estimators.renyi.matrix_entropy": lambda b: renyi.matrix_entropy(torch.eye(3) / 3, base=b),
        "emergence_fast.estimators.renyi.mutual_information": lambda b: renyi.mutual_information(X, Y, base=b),
        "emergence_fast.estimators.sliced.max_sliced_mutual_information":
            lambda b: sliced.max_sliced_mutual_information(X, Y, inner="ksg", steps=2, base=b),
        "emergence_fast.estimators.sliced.mutual_information": lambda b: sliced.mutual_information(X, Y, base=b),
        "emergence_fast.estimators.sliced.mutual_information_from_moments":
            lambda b: sliced.mutual_information_from_moments(count, comoment, 2, base=b),
        "emergence_fast.estimators.token_entropy.token_entropy": lambda b: token_entropy(
            torch.randn(3, 5), base=b),
    }


def _functions_taking_base() -> set:
    import importlib
    import inspect
    import pkgutil

    import emergence_fast

    found = set()
    for info in pkgutil.walk_packages(emergence_fast.__path__, "emergence_fast."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            members = [getattr(obj, a) for a in dir(obj) if not a.startswith("_")] if inspect.isclass(obj) else [obj]
            for f in members:
                if (not name.startswith("_") and inspect.isfunction(f) or inspect.ismethod(f)) \
                        and f.__module__.startswith("emergence_fast") and "base" in inspect.signature(f).parameters:
                    found.add(f"{f.__module__}.{f.__qualname__}")
    return found


def test_every_function_taking_base_is_covered():
    """A new public function with a base= argument must be added to the table below (and check it)."""
    assert _functions_taking_base() == set(_calls())


@pytest.mark.parametrize("base", BAD_BASES, ids=repr)
def test_every_function_refuses_an_invalid_base(base):
    """base=inf used to be accepted somewhere and turn every value into 0."""
    for call in _calls().values():
        with pytest.raises(ValueError, match="base must be a finite positive number other than 1"):
            call(base)
    for method in ("gaussian", "ksg", "binned"):  # the public entry points route base to the estimators
        with pytest.raises(ValueError, match="base must be a finite positive number other than 1"):
            ef.mutual_information(X, Y, method, base=base)
        with pytest.raises(ValueError, match="base must be a finite positive number other than 1"):
            ef.permutation_null(X, Y, method, base=base)


def test_valid_bases_convert_nats():
    nats = float(ef.mutual_information(X, X + Y))
    assert float(ef.mutual_information(X, X + Y, base=2)) == pytest.approx(nats / math.log(2), rel=1e-12)
    assert float(ef.mutual_information(X, X + Y, base=10.0)) == pytest.approx(nats / math.log(10), rel=1e-12)
    assert float(ef.mutual_information(X, X + Y, base=0.5)) == pytest.approx(-nats / math.log(2), rel=1e-12)


FAST = {"infonce": {"steps": 20}, "nwj": {"steps": 20}, "mine": {"steps": 20}, "smile": {"steps": 20},
        "chen2024": {"steps": 20}}


@pytest.mark.parametrize("method", sorted(ef.estimators.MI_METHODS))
def test_every_mi_method_is_in_nats_unless_base(method):
    """One unit convention (chen2024 used to return bits): nats by default, base=2 divides by log 2."""
    x = torch.randn(60, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = x + torch.randn(60, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    nats = float(ef.mutual_information(x, y, method, **FAST.get(method, {})))
    bits = float(ef.mutual_information(x, y, method, base=2, **FAST.get(method, {})))
    assert nats != 0 and bits * math.log(2) == pytest.approx(nats, rel=1e-9)


@pytest.mark.parametrize("method", sorted(ef.estimators.ENTROPY_METHODS))
def test_every_entropy_method_is_in_nats_unless_base(method):
    x = torch.randn(60, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert float(ef.entropy(x, method, base=2)) * math.log(2) == pytest.approx(float(ef.entropy(x, method)), rel=1e-9)


# --- the shared scalar checks -------------------------------------------------------------------


def test_check_int_accepts_python_and_numpy_integers_in_range():
    assert check_int(3, "k", minimum=1) == 3
    assert type(check_int(_np.int64(3), "k", minimum=1, maximum=3)) is int
    assert check_positive_int(1, "n") == 1


@pytest.mark.parametrize("value, kwargs, message", [
    (0, {"minimum": 1}, "k must be an integer >= 1, got 0"),
    (True, {"minimum": 0}, "k must be an integer >= 0, got True"),
    (2.5, {}, "k must be an integer, got 2.5"),
    ("3", {"minimum": 1}, "k must be an integer >= 1, got '3'"),
    (9, {"minimum": 1, "maximum": 8}, r"k must be an integer in \[1, 8\], got 9"),
    (9, {"maximum": 8}, "k must be an integer <= 8, got 9"),
])
def test_check_int_refuses_with_the_name_and_the_range(value, kwargs, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        check_int(value, "k", **kwargs)


def test_check_seed_bool_and_floats():
    assert check_seed(_np.int32(7)) == 7
    with pytest.raises(TypeError, match="^seed must be an integer, got float 1.0$"):
        check_seed(1.0)
    with pytest.raises(TypeError, match="^stderr_seed must be an integer, got bool True$"):
        check_seed(True, "stderr_seed")
    assert check_bool(False, "flag") is False
    with pytest.raises(TypeError, match="^flag must be a bool, got int 1$"):
        check_bool(1, "flag")
    assert check_positive_float(_np.float32(0.5), "lr") == 0.5
    assert check_positive_float(0, "tau", allow_zero=True) == 0.0
    for bad in (0.0, -1.0, float("inf"), float("nan"), True, "1"):
        with pytest.raises(ValueError, match="^lr must be a finite number > 0, got "):
            check_positive_float(bad, "lr")
    assert check_probability(1, "p") == 1.0
    with pytest.raises(ValueError, match=r"^holdout must be a number in \(0, 1\), got 1.0$"):
        check_probability(1.0, "holdout", low_open=True, high_open=True)
    with pytest.raises(ValueError, match=r"^p must be a number in \[0, 1\], got nan$"):
        check_probability(float("nan"), "p")


def test_check_finite_takes_either_sign_and_refuses_the_rest():
    from emergence_fast._validation import check_finite

    assert check_finite(-2, "level") == -2.0 and check_finite(_np.float32(0.5), "level") == 0.5
    for bad in (float("nan"), float("inf"), True, "1", None):
        with pytest.raises(ValueError, match="^level must be a finite number, got "):
            check_finite(bad, "level")
