import os

import pytest
import torch

import emergence_fast as ef
from emergence_fast import _dispatch


def test_backends_report_every_backend_with_a_reason():
    status = ef.backends()
    assert set(status) == set(_dispatch.BACKENDS)
    assert status["torch"].available
    for s in status.values():
        assert s.reason


def test_native_and_triton_are_built_for_the_test_run():
    # make test builds _C and installs triton; a silent fallback would leave those paths untested.
    if os.environ.get("EMERGENCE_FAST_NO_EXT") == "1":
        pytest.skip("native build disabled by EMERGENCE_FAST_NO_EXT=1")
    status = ef.backends()
    assert status["cpp"].available, status["cpp"].reason
    assert status["triton"].available, status["triton"].reason


def test_auto_never_picks_the_triton_interpreter_on_cpu():
    assert _dispatch.resolve_backend("auto", torch.device("cpu")) in ("cpp", "torch")


def test_env_var_sets_the_default(monkeypatch):
    monkeypatch.setenv(_dispatch.ENV_VAR, "torch")
    assert _dispatch.resolve_backend(None, torch.device("cpu")) == "torch"
    monkeypatch.setenv(_dispatch.ENV_VAR, "fastest")
    with pytest.raises(ValueError, match="EMERGENCE_FAST_BACKEND"):
        _dispatch.resolve_backend(None, torch.device("cpu"))


def test_unknown_or_unavailable_backend_names_the_argument():
    with pytest.raises(ValueError, match="backend must be one of"):
        ef.token_entropy(torch.zeros(2, 3), backend="numpy")
    if not ef.backends()["cuda"].available:
        with pytest.raises(ValueError, match="backend='cuda' cannot run on a cpu tensor"):
            ef.token_entropy(torch.zeros(2, 3), backend="cuda")
