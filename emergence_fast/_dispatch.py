"""The one place that picks a backend for a native op.

Backends: ``torch`` (pure-torch reference, always there), ``cpp`` (``emergence_fast._C``,
CPU tensors, OpenMP), ``triton`` (``emergence_fast.kernels``; CUDA tensors, or CPU tensors
under ``TRITON_INTERPRET=1``), ``cuda`` (``emergence_fast._C`` built with CUDA, CUDA tensors).
``auto`` takes the first available of cuda > triton > cpp > torch for the tensor's device,
except that the Triton interpreter is never chosen automatically (it is a correctness tool,
hundreds of times slower than the torch path).

The default comes from ``EMERGENCE_FAST_BACKEND`` (``auto`` when unset).
"""
from __future__ import annotations

import functools
import importlib
import math
import operator
import os
import warnings
from dataclasses import dataclass

import torch

BACKENDS = ("torch", "cpp", "triton", "cuda")
BACKEND_CHOICES = ("auto",) + BACKENDS
ENV_VAR = "EMERGENCE_FAST_BACKEND"
REGISTER_K_MAX = 32  # the Triton / CUDA kNN kernels hold each row's k nearest in registers
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
    try:
        import triton  # noqa: F401

        from emergence_fast.kernels import gaussian_lse, gram, knn, softmax_entropy
    except Exception as exc:
        return None, f"triton could not be imported ({type(exc).__name__}: {exc})"
    return {"gram": gram.gram, "softmax_entropy": softmax_entropy.softmax_entropy, "knn_maxnorm": knn.knn_maxnorm,
            "gaussian_lse": gaussian_lse.gaussian_lse}, ""


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


def resolve_backend(backend: str | None, device: torch.device) -> str:
    """Turn a user's ``backend=`` (or the env default) into a concrete backend for ``device``."""
    requested = backend if backend is not None else os.environ.get(ENV_VAR, "auto")
    if requested not in BACKEND_CHOICES:
        source = "backend" if backend is not None else ENV_VAR
        raise ValueError(f"{source} must be one of {BACKEND_CHOICES}, got {requested!r}")
    status = backends()
    if requested == "auto":
        for name in _AUTO_ORDER:
            if name == "triton" and device.type == "cpu":
                continue
            if status[name].available and device.type in status[name].devices:
                return name
        return "torch"
    chosen = status[requested]
    if not chosen.available or device.type not in chosen.devices:
        raise ValueError(
            f"backend={requested!r} cannot run on a {device.type} tensor here: {chosen.reason}. "
            f"Available: {[n for n, s in status.items() if s.available and device.type in s.devices]}"
        )
    return requested


def _gram_torch(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if a.dtype in (torch.float16, torch.bfloat16):
        a, b = a.float(), b.float()
    return torch.matmul(a.transpose(-1, -2), b)


def _softmax_entropy_torch(logits: torch.Tensor) -> torch.Tensor:
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    log_p = torch.log_softmax(logits, dim=-1)
    p = log_p.exp()
    return -torch.where(p > 0, p * log_p, torch.zeros_like(p)).sum(-1)


def _call_native(op: str, backend: str, *args):
    """``_C.<op>_cpu`` / ``_C.<op>_cuda`` on contiguous copies of the tensor arguments; other arguments
    (ints such as ``dx``) pass through. float16 / bfloat16 tensors go to the cpp ops as float32."""
    native, _ = _native()
    prepared: dict[int, torch.Tensor] = {}  # one conversion per distinct tensor: gram(a, a) stays symmetric
    for t in args:
        if isinstance(t, torch.Tensor) and id(t) not in prepared:
            half = backend == "cpp" and t.dtype in (torch.float16, torch.bfloat16)
            prepared[id(t)] = (t.float() if half else t).contiguous()
    suffix = {"cpp": "cpu", "cuda": "cuda"}[backend]
    return getattr(native, f"{op}_{suffix}")(*(prepared[id(a)] if isinstance(a, torch.Tensor) else a for a in args))


def gram(a: torch.Tensor, b: torch.Tensor, backend: str | None = None) -> torch.Tensor:
    """Batched cross-product ``a^T b``: ``a [..., N, da]``, ``b [..., N, db]`` -> ``[..., da, db]``.

    float64 in -> float64 out; float16 / bfloat16 / float32 in -> float32 accumulation and out.
    """
    name = resolve_backend(backend, a.device)
    lead = a.shape[:-2]
    a3 = a.reshape(-1, *a.shape[-2:])
    b3 = a3 if b is a else b.reshape(-1, *b.shape[-2:])
    if name == "torch":
        out = _gram_torch(a3, b3)
    elif name == "triton":
        if a3.dtype == torch.float64:
            out = _gram_torch(a3, b3)  # tl.dot has no float64 path: exactness beats speed here
        else:
            out = _triton_kernels()[0]["gram"](a3, b3)
    else:
        out = _call_native("gram", name, a3, b3)
    return out.reshape(*lead, a.shape[-1], b.shape[-1])


def softmax_entropy(logits: torch.Tensor, backend: str | None = None) -> torch.Tensor:
    """Entropy (nats) of ``softmax(logits)`` over the last dim, ``[..., V] -> [...]``, in one pass."""
    name = resolve_backend(backend, logits.device)
    lead = logits.shape[:-1]
    x2 = logits.reshape(-1, logits.shape[-1])
    if name == "torch":
        out = _softmax_entropy_torch(x2)
    elif name == "triton":
        if x2.dtype == torch.float64:
            out = _softmax_entropy_torch(x2)
        else:
            out = _triton_kernels()[0]["softmax_entropy"](x2)
    else:
        out = _call_native("softmax_entropy", name, x2)
    return out.reshape(lead)


def knn_maxnorm(z: torch.Tensor, dx: int, k: int, mode: int = 1, backend: str | None = None):
    """Exact max-norm k-NN search over ``z [..., N, D]`` (columns ``[0, dx)`` are x, the rest y).

    Returns ``(eps, n_x, n_y)``: ``eps [..., N]`` (z's dtype) is each row's distance to its
    ``k``-th nearest other row in the joint max-norm; ``mode`` 0 returns radii only (``dx == D``,
    ``n_x`` and ``n_y`` are ``None``); ``mode`` 1 / 2 return the KSG variant-1 / variant-2 marginal
    counts ``[..., N]`` int64. ``z`` is measured in its own dtype (float32 or float64).

    The ``torch`` backend is the tiled reference in :mod:`emergence_fast.estimators.knn`; ``cpp``
    is ``_C.knn_maxnorm_cpu``, ``triton`` is :mod:`emergence_fast.kernels.knn`, ``cuda`` is
    ``_C.knn_maxnorm_cuda``. All give bit-identical radii and exact counts; in mode 2 the k nearest
    are the k smallest (distance, index) pairs everywhere, so tied distances give the same extents
    on every backend. The Triton and CUDA kernels keep each row's k nearest in registers, up to
    ``REGISTER_K_MAX``; a larger ``k`` runs the torch reference on the same device.
    """
    name = resolve_backend(backend, z.device)
    if name in ("triton", "cuda") and k > REGISTER_K_MAX:
        name = "torch"
    lead, (n, d) = z.shape[:-2], z.shape[-2:]
    z3 = z.reshape(-1, n, d)
    if name == "cpp":
        eps, n_x, n_y = _native()[0].knn_maxnorm_cpu(z3.contiguous(), dx, k, mode)
    elif name == "cuda":
        eps, n_x, n_y = _native()[0].knn_maxnorm_cuda(z3.contiguous(), dx, k, mode)
    elif name == "triton":
        eps, n_x, n_y = _triton_kernels()[0]["knn_maxnorm"](z3, dx, k, mode)
    else:
        from .estimators import knn  # deferred: knn imports this module

        if mode == 0:
            eps, n_x, n_y = knn.knn_radii(z3, k, metric="max"), None, None
        else:
            eps, n_x, n_y = knn._ksg_counts(z3[..., :dx], z3[..., dx:], k, mode)
    if mode == 0:
        return eps.reshape(*lead, n), None, None
    return eps.reshape(*lead, n), n_x.reshape(*lead, n), n_y.reshape(*lead, n)


def _gaussian_lse_torch(queries: torch.Tensor, keys: torch.Tensor, log_weights: torch.Tensor, dx: int,
                        chunk_bytes: int = 1 << 26) -> torch.Tensor:
    """Reference for :func:`gaussian_lse`: direct differences, query rows in chunks of bounded memory."""
    b, m, d = queries.shape
    n = keys.shape[1]
    out = torch.empty(b, m, 3, dtype=queries.dtype, device=queries.device)
    rows = max(1, chunk_bytes // max(1, b * n * d * queries.element_size()))
    for lo in range(0, m, rows):
        diff = (queries[:, lo:lo + rows, None, :] - keys[:, None, :, :]).square()  # [B, rows, N, D]
        sq_x, sq_y = diff[..., :dx].sum(-1), diff[..., dx:].sum(-1)
        for c, sq in enumerate((sq_x, sq_y, sq_x + sq_y)):
            out[:, lo:lo + rows, c] = torch.logsumexp(log_weights[:, None, :, c] - 0.5 * sq, dim=-1)
    return out


def gaussian_lse(queries: torch.Tensor, keys: torch.Tensor, log_weights: torch.Tensor, dx: int,
                 backend: str | None = None) -> torch.Tensor:
    r"""Log-sum-exp of Gaussian kernels between query rows and weighted key rows, in one fused pass.

    ``queries [..., M, D]``, ``keys [..., N, D]`` (same float dtype: float32 or float64; columns
    ``[0, dx)`` are x, ``[dx, D)`` y), ``log_weights [..., N, 3]`` -> ``[..., M, 3]`` in the
    input dtype:

    .. math::

        \mathrm{out}[m, c] = \log \sum_n \exp\big(w[n, c] - \tfrac12 \lVert q_m - k_n \rVert_c^2\big)

    with :math:`\lVert\cdot\rVert_c` over the x columns (c = 0), the y columns (c = 1) and all
    columns (c = 2). This is the log-density (up to a constant) of a mixture of unit isotropic
    Gaussians centred at the keys, for the x marginal, the y marginal and the joint at once: the
    inner loop of the noisy-channel MI (:mod:`emergence_fast.estimators.noisy`). Distances are
    direct differences, never ``|q|^2 + |k|^2 - 2 q.k``, which cancels catastrophically for
    states far from the origin relative to the noise. A ``-inf`` weight drops its key (padding);
    a row whose keys are all dropped (or ``N = 0``) gets ``-inf``. Weights must be below ``+inf``
    and the states finite.

    Backends: ``torch`` is :func:`_gaussian_lse_torch` (query rows in memory-bounded chunks),
    ``cpp`` is ``_C.gaussian_lse_cpu`` (OpenMP, AVX2), ``triton`` is
    :mod:`emergence_fast.kernels.gaussian_lse`, ``cuda`` is ``_C.gaussian_lse_cuda``. All
    accumulate in the input dtype; they agree to rounding (float32: ~1e-6 relative).

    Raises ValueError for a dtype other than float32 / float64, dtypes or devices that differ
    between the three tensors, shapes that do not fit together, or ``dx`` outside ``[0, D]``
    (or not an integer); TypeError when an argument is not a tensor.
    """
    dx = _check_gaussian_lse(queries, keys, log_weights, dx)
    name = resolve_backend(backend, queries.device)
    lead, (m, d), n = queries.shape[:-2], queries.shape[-2:], keys.shape[-2]
    b = math.prod(lead)  # explicit: reshape(-1, ...) is ambiguous when M, N or D is 0
    q3, k3, w3 = queries.reshape(b, m, d), keys.reshape(b, n, d), log_weights.reshape(b, n, 3)
    if name == "torch":
        out = _gaussian_lse_torch(q3, k3, w3, dx)
    elif name == "triton":
        out = _triton_kernels()[0]["gaussian_lse"](q3, k3, w3, dx)
    else:
        out = _call_native("gaussian_lse", name, q3, k3, w3, dx)
    return out.reshape(*lead, m, 3)


def _check_gaussian_lse(queries, keys, log_weights, dx) -> int:
    """The argument checks of :func:`gaussian_lse`, the same errors on every backend; returns ``dx`` as an int."""
    for arg, t in (("queries", queries), ("keys", keys), ("log_weights", log_weights)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"gaussian_lse: {arg} must be a tensor, got {type(t).__name__}")
    if queries.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"gaussian_lse: queries must be float32 or float64, got {queries.dtype} "
                         "(cast float16 / bfloat16 states to float32 first)")
    for arg, t in (("keys", keys), ("log_weights", log_weights)):
        if t.dtype != queries.dtype:
            raise ValueError(f"gaussian_lse: {arg} must have the queries' dtype {queries.dtype}, got {t.dtype}")
        if t.device != queries.device:
            raise ValueError(f"gaussian_lse: {arg} must be on the queries' device {queries.device}, got {t.device}")
    if queries.dim() < 2:
        raise ValueError(f"gaussian_lse: queries must be [..., M, D], got shape {tuple(queries.shape)}")
    lead, d = queries.shape[:-2], queries.shape[-1]
    if keys.dim() != queries.dim() or keys.shape[:-2] != lead or keys.shape[-1] != d:
        raise ValueError(f"gaussian_lse: keys must be [..., N, D] with the queries' leading dims {tuple(lead)} "
                         f"and D={d}, got shape {tuple(keys.shape)}")
    if log_weights.shape != (*keys.shape[:-1], 3):
        raise ValueError(f"gaussian_lse: log_weights must be [..., N, 3] = {(*keys.shape[:-1], 3)}, "
                         f"got shape {tuple(log_weights.shape)}")
    try:
        dx_int = None if isinstance(dx, bool) else operator.index(dx)  # numpy / torch integers too
    except TypeError:
        dx_int = None
    if dx_int is None or not 0 <= dx_int <= d:
        raise ValueError(f"gaussian_lse: dx must be an int in [0, D={d}], got {dx!r}")
    return dx_int
