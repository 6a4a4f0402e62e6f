"""The one place that picks a backend for a native op.

Backends: ``torch`` (pure-torch reference, always there), ``cpp`` (``emergence_fast._C``,
CPU tensors, OpenMP), ``triton`` (``emergence_fast.kernels``; CUDA tensors, or CPU tensors
under ``TRITON_INTERPRET=1``), ``cuda`` (``emergence_fast._C`` built with CUDA, CUDA tensors).
``auto`` takes the first available of cuda > triton > cpp > torch for the tensor's device,
except that the Triton interpreter is never chosen automatically (it is a correctness tool,
hundreds of times slower than the torch path).

The default comes from ``EMERGENCE_FAST_BACKEND`` (``auto`` when unset).

Each op lives in :mod:`emergence_fast.ops` (its torch reference, its checks and its wrapper) beside
its Triton kernel (``kernels/<op>.py``) and its C++ / CUDA sources (``csrc/cpu/<op>.cpp``,
``csrc/cuda/<op>.cu``). This module only imports downward (torch, ``_C``, ``kernels``): the ops
ask it for a backend, passing what a backend's kernel cannot serve in that call, and run the
native or Triton kernel through :func:`call_native` / :func:`call_triton`.
"""
from __future__ import annotations

import functools
import importlib
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import torch

BACKENDS = ("torch", "cpp", "triton", "cuda")
BACKEND_CHOICES = ("auto",) + BACKENDS
ENV_VAR = "EMERGENCE_FAST_BACKEND"
_AUTO_ORDER = ("cuda", "triton", "cpp", "torch")


@dataclass(frozen=True)
class BackendStatus:
    name: str
    available: bool
    devices: tuple[str, ...]
    reason: str


@functools.lru_cache(maxsize=None)
def _native():
    """The compiled extension, or the reason it is missing (warned once)."""
    try:
        return importlib.import_module("emergence_fast._C"), ""
    except Exception as exc:  # an ImportError or a broken .so: either way fall back
        reason = f"emergence_fast._C could not be loaded ({type(exc).__name__}: {exc})"
        warnings.warn(
            f"{reason}; using the pure-torch reference path. "
            "Build it with `pip install --no-build-isolation -e .`.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None, reason


@functools.lru_cache(maxsize=None)
def _triton_kernels():
    """The Triton kernel modules by op name, or the reason they cannot be imported."""
    try:
        import triton  # noqa: F401

        from emergence_fast.kernels import gaussian_lse, gram, knn, softmax_entropy
    except Exception as exc:
        return None, f"triton could not be imported ({type(exc).__name__}: {exc})"
    return {"gram": gram, "softmax_entropy": softmax_entropy, "knn_maxnorm": knn, "gaussian_lse": gaussian_lse}, ""


def _triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def backends() -> dict[str, BackendStatus]:
    """What each backend can run on here, and why not where it cannot."""
    native, native_reason = _native()
    triton_ops, triton_reason = _triton_kernels()
    has_gpu = torch.cuda.is_available()
    status = {"torch": BackendStatus("torch", True, ("cpu", "cuda") if has_gpu else ("cpu",), "pure-torch reference")}

    status["cpp"] = BackendStatus(
        "cpp", native is not None, ("cpu",) if native is not None else (), native_reason or "C++ CPU ops (OpenMP)"
    )

    if native is None:
        cuda_reason = native_reason
    elif not getattr(native, "with_cuda", False):
        cuda_reason = "emergence_fast._C was built without CUDA (needs a CUDA build of torch and nvcc)"
    elif not has_gpu:
        cuda_reason = "no CUDA device visible"
    else:
        cuda_reason = "CUDA C++ ops"
    cuda_ok = cuda_reason == "CUDA C++ ops"
    status["cuda"] = BackendStatus("cuda", cuda_ok, ("cuda",) if cuda_ok else (), cuda_reason)

    if triton_ops is None:
        status["triton"] = BackendStatus("triton", False, (), triton_reason)
    elif _triton_interpreted():
        status["triton"] = BackendStatus("triton", True, ("cpu",), "Triton interpreter (TRITON_INTERPRET=1): correct but slow")
    elif has_gpu:
        status["triton"] = BackendStatus("triton", True, ("cuda",), "Triton kernels on the GPU")
    else:
        status["triton"] = BackendStatus(
            "triton", False, (), "no CUDA device, and TRITON_INTERPRET=1 was not set before triton was imported"
        )
    return status


def resolve_backend(backend: str | None, device: torch.device, refused: Mapping[str, str] | None = None) -> str:
    """Turn a user's ``backend=`` (or the env default) into a concrete backend for ``device``.

    ``refused`` maps a backend to why its kernel cannot serve this particular call (a limit, such as
    ``k`` beyond the register-list kNN kernels'; never ``torch``): ``auto`` passes over it, and an
    explicit request for it (``backend=`` or ``EMERGENCE_FAST_BACKEND``) raises.

    Raises ValueError for an unknown name, a backend that cannot run on ``device`` here (with the
    reason and the backends that can), or an explicitly requested backend in ``refused`` (with its
    reason).
    """
    refused = refused or {}
    requested = backend if backend is not None else os.environ.get(ENV_VAR, "auto")
    source = "backend" if backend is not None else ENV_VAR
    if requested not in BACKEND_CHOICES:
        raise ValueError(f"{source} must be one of {BACKEND_CHOICES}, got {requested!r}")
    status = backends()
    runnable = [n for n, s in status.items() if s.available and device.type in s.devices]
    if requested == "auto":
        for name in _AUTO_ORDER:
            if name == "triton" and device.type == "cpu":
                continue
            if name in runnable and name not in refused:
                return name
        return "torch"
    if requested not in runnable:
        raise ValueError(
            f"backend={requested!r} cannot run on a {device.type} tensor here: {status[requested].reason}. "
            f"Available: {runnable}"
        )
    if requested in refused:
        others = [n for n in runnable if n not in refused]
        raise ValueError(f"{source}={requested!r} cannot serve this call: {refused[requested]}. "
                         f"Use one of {others}, or 'auto', which falls back to them")
    return requested


def register_k_max(backend: str) -> int | None:
    """Largest ``k`` of ``backend``'s register-list kNN kernel, ``None`` where it has none here.

    ``cuda`` reads ``_C.REGISTER_K_MAX`` (declared once, in ``csrc/native_limits.h``); ``triton``
    reads ``kernels.knn.MAX_K``, the same number (tests check they agree). ``cpp`` and ``torch``
    have no such limit; an unavailable backend gives ``None`` too (it is refused for that reason).
    """
    if backend == "cuda":
        native = _native()[0]
        return int(native.REGISTER_K_MAX) if native is not None and native.with_cuda else None
    if backend == "triton":
        kernels = _triton_kernels()[0]
        return None if kernels is None else kernels["knn_maxnorm"].MAX_K
    return None


def call_native(op: str, backend: str, *args):
    """``_C.<op>_cpu`` (``backend="cpp"``) / ``_C.<op>_cuda`` (``"cuda"``) on contiguous copies of the
    tensor arguments; other arguments (ints such as ``dx``) pass through. float16 / bfloat16 tensors
    go to the cpp ops as float32. ``backend`` comes from :func:`resolve_backend`."""
    native, _ = _native()
    prepared: dict[int, torch.Tensor] = {}  # one conversion per distinct tensor: gram(a, a) stays symmetric
    for t in args:
        if isinstance(t, torch.Tensor) and id(t) not in prepared:
            half = backend == "cpp" and t.dtype in (torch.float16, torch.bfloat16)
            prepared[id(t)] = (t.float() if half else t).contiguous()
    suffix = {"cpp": "cpu", "cuda": "cuda"}[backend]
    return getattr(native, f"{op}_{suffix}")(*(prepared[id(a)] if isinstance(a, torch.Tensor) else a for a in args))


def call_triton(op: str, *args, **kwargs):
    """The Triton kernel ``kernels.<module>.<op>`` on ``args`` (the triton backend, from :func:`resolve_backend`)."""
    return getattr(_triton_kernels()[0][op], op)(*args, **kwargs)
