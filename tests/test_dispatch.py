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


def _gpu_machine(monkeypatch):
    """backends() as on a GPU machine with every backend built, whatever this machine has."""
    status = {name: _dispatch.BackendStatus(name, True, ("cpu", "cuda") if name == "torch" else
                                            ("cpu",) if name == "cpp" else ("cuda",), "test")
              for name in _dispatch.BACKENDS}
    monkeypatch.setattr(_dispatch, "backends", lambda: status)


def test_auto_passes_over_a_backend_refused_for_the_call(monkeypatch):
    _gpu_machine(monkeypatch)
    cuda = torch.device("cuda")
    assert _dispatch.resolve_backend("auto", cuda) == "cuda"
    assert _dispatch.resolve_backend("auto", cuda, {"cuda": "too big"}) == "triton"
    assert _dispatch.resolve_backend("auto", cuda, {"cuda": "too big", "triton": "too big"}) == "torch"
    monkeypatch.delenv(_dispatch.ENV_VAR, raising=False)
    assert _dispatch.resolve_backend(None, cuda, {"cuda": "too big", "triton": "too big"}) == "torch"


def test_an_explicit_backend_refused_for_the_call_says_why(monkeypatch):
    _gpu_machine(monkeypatch)
    cuda = torch.device("cuda")
    refused = {"cuda": "k <= 32, got k=40", "triton": "k <= 32, got k=40"}
    with pytest.raises(ValueError, match=r"^backend='cuda' cannot serve this call: k <= 32, got k=40\. "
                                         r"Use one of \['torch'\], or 'auto', which falls back to them$"):
        _dispatch.resolve_backend("cuda", cuda, refused)
    monkeypatch.setenv(_dispatch.ENV_VAR, "triton")
    with pytest.raises(ValueError, match=r"^EMERGENCE_FAST_BACKEND='triton' cannot serve this call: k <= 32"):
        _dispatch.resolve_backend(None, cuda, refused)
    assert _dispatch.resolve_backend("torch", cuda, refused) == "torch"


def test_knn_op_refuses_k_beyond_the_register_kernels(monkeypatch):
    """ops.knn.pick_backend turns the kernels' own limit into the refusal, and auto into a fallback."""
    from emergence_fast.ops import knn as knn_op

    _gpu_machine(monkeypatch)
    monkeypatch.setattr(_dispatch, "register_k_max", lambda backend: 32 if backend in ("triton", "cuda") else None)
    cuda = torch.device("cuda")
    assert knn_op.pick_backend("auto", cuda, 32) == "cuda"
    assert knn_op.pick_backend("auto", cuda, 33) == "torch"
    assert knn_op.pick_backend("auto", torch.device("cpu"), 33) == "cpp"
    for backend in ("triton", "cuda"):
        with pytest.raises(ValueError, match=rf"^backend='{backend}' cannot serve this call: its kNN kernel keeps "
                                             r"each row's k nearest in registers, so k <= 32, got k=33\."):
            knn_op.pick_backend(backend, cuda, 33)
