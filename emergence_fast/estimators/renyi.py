r"""Matrix-based Rényi :math:`\alpha`-entropy and mutual information.

From the Gram matrix :math:`K` of a kernel on the :math:`N` samples, normalised to unit trace,
:math:`A = K / \operatorname{tr} K` (for the Gaussian kernel :math:`K_{ii} = 1`, so
:math:`A_{ij} = K_{ij} / (N\sqrt{K_{ii}K_{jj}}) = K_{ij}/N`),

.. math::

    S_\alpha(A) = \frac{1}{1-\alpha}\log\operatorname{tr}(A^\alpha)
                = \frac{1}{1-\alpha}\log\sum_i \lambda_i(A)^\alpha, \qquad
    S_1(A) = -\operatorname{tr}(A\log A) = -\sum_i \lambda_i\log\lambda_i ,

with :math:`\alpha > 0`; :math:`\alpha = 1` is the limit (von Neumann entropy). The joint
entropy uses the normalised Hadamard product and the MI the usual identity,

.. math::

    S_\alpha(A_X, A_Y) = S_\alpha\!\left(\frac{A_X \circ A_Y}{\operatorname{tr}(A_X \circ A_Y)}\right), \qquad
    I_\alpha(X;Y) = S_\alpha(A_X) + S_\alpha(A_Y) - S_\alpha(A_X, A_Y)

(Giraldo, Rao & Príncipe 2015, "Measures of entropy from data using infinitely divisible
kernels", IEEE Trans. Inf. Theory 61(1); Yu, Sanchez Giraldo, Jenssen &
Príncipe 2019, "Multivariate extension of matrix-based Rényi's α-order entropy functional",
IEEE TPAMI 42(11), for the joint form). The paper states :math:`S_\alpha` with
:math:`\log_2`; here it is in nats (natural log) and ``base=`` converts, as elsewhere.
Since :math:`S_\alpha(A_X, A_Y) \ge \max(S_\alpha(A_X), S_\alpha(A_Y))` (Yu et al. 2019),
:math:`I_\alpha \le \min(S_\alpha(A_X), S_\alpha(A_Y))`; and since every entropy here is at most
:math:`\log N`, :math:`I_\alpha \ge S_\alpha(A_X) + S_\alpha(A_Y) - \log N`. The latter makes the MI of
*independent* variables far from 0 when the bandwidth is small enough that each
:math:`S_\alpha` is near :math:`\log N` (Scott's rule with d >= 2 at a few hundred samples gives
:math:`I/S \approx 0.5`); with a wide kernel it is near 0 and can be slightly negative (the
joint is not subadditive in finite samples; at :math:`\alpha = 2`,
:math:`I_2 = \log\frac{\overline{k_X k_Y}}{\overline{k_X}\,\overline{k_Y}}` over all sample pairs with
:math:`k = K^2`). These are functionals of the Gram spectrum, not estimates of differential
entropy. For one-hot (categorical) rows and ``kernel="linear"``, :math:`A` has the empirical
category frequencies as eigenvalues, so :math:`S_\alpha` is the plug-in Rényi entropy of the
categories and the joint is the plug-in Rényi entropy of the pairs.

Kernels (``kernel=``):

* ``"rbf"``: :math:`K_{ij} = \exp(-\lVert x_i - x_j\rVert^2 / 2\sigma^2)`. ``bandwidth="scott"``
  is Scott's rule per dimension: each column is standardised (zero mean, unit variance over
  the batch cell; a constant column is left at zero) and :math:`\sigma = N^{-1/(4+d)}`
  (:math:`\gamma = 1`), i.e. a product kernel with per-dimension width
  :math:`s_j N^{-1/(4+d)}`. A float bandwidth is an isotropic :math:`\sigma` on the data as
  given. In high dimension Scott's :math:`\sigma \to 1` is small next to typical distances
  :math:`\approx\sqrt{2d}` of standardised data, so :math:`A \to I/N` and
  :math:`S_\alpha \to \log N`: choose the bandwidth deliberately there.
* ``"linear"``: :math:`K = X X^\top` on the data as given (not centred), :math:`A = K/\operatorname{tr}K`.
  A batch cell whose rows are all zero has :math:`\operatorname{tr}K = 0` and gives NaN.

Exact path (``approx=None``): ``torch.linalg.eigvalsh`` of :math:`A` in float64.
Eigenvalues at or below :math:`\lambda_{\max} N \varepsilon_{64}` (rounding level) are set to
0, so a rank-deficient :math:`A` gives the entropy of its numerical range; sums use
log-sum-exp, so large :math:`\alpha` does not underflow. Cost :math:`O(N^3)` per batch cell.

Fast path (``approx="lanczos"``): stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017,
"Fast estimation of tr(f(A)) via stochastic Lanczos quadrature", SIAM J. Matrix Anal. Appl.
38(4)): Hutchinson's estimator :math:`\operatorname{tr} f(A) \approx \frac1P\sum_p v_p^\top f(A) v_p`
with ``n_probes`` Rademacher probes :math:`v_p` (seeded by ``seed``, the same for every batch
cell, so a cell's estimate does not depend on its batch, and errors correlate across cells), each quadratic form by
``n_steps``-point Gauss quadrature from Lanczos with full reorthogonalisation, with
:math:`f(\lambda) = \lambda^\alpha` (or :math:`-\lambda\log\lambda` at :math:`\alpha = 1`).
``details=True`` reports the standard error across probes (delta method through the log).
That covers the probe noise only: the quadrature is exact for polynomials of degree
:math:`2\,\text{n\_steps} - 1` (so for integer :math:`\alpha < 2\,\text{n\_steps}`), but
converges slowly for :math:`\alpha < 1`, where :math:`\lambda^\alpha` is not smooth at the
many near-zero eigenvalues of an RBF Gram; raise ``n_steps`` there. Cost
:math:`O(\text{n\_steps}\cdot\text{n\_probes}\cdot N^2)`.

Every backend runs the same torch ops here (``backend`` is validated, not used).
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field

import torch

from .. import _dispatch
from .._validation import (as_samples, check_choice, check_int, check_paired, check_positive_float, constant_cells,
                           log_base)
from .registry import Details, Estimator, register
from .uncertainty import batch_invariant_std

KERNELS = ("rbf", "linear")
APPROXIMATIONS = (None, "lanczos")


@dataclass
class RenyiDiagnostics(Details):
    """What a matrix-based Rényi estimate rests on; tensors have the estimate's batch shape."""

    n: int
    alpha: float
    kernel: str
    bandwidth: float | None  # the sigma used (per side for MI: a tuple), None for the linear kernel
    approx: str | None
    stderr: torch.Tensor | None  # probe standard error for approx="lanczos", None for the exact path
    n_probes: int | None = None
    n_steps: int | None = None
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------- checks

def _check_alpha(alpha) -> float:
    return check_positive_float(alpha, "alpha")


def _check_bandwidth(bandwidth) -> None:
    if bandwidth == "scott" and isinstance(bandwidth, str):
        return
    try:
        check_positive_float(bandwidth, "bandwidth")
    except ValueError:
        raise ValueError(f"bandwidth must be 'scott' or a finite number > 0, got {bandwidth!r}") from None


def _check_options(alpha=1.01, kernel="rbf", bandwidth="scott", approx=None, n_probes=32, n_steps=40) -> float:
    alpha = _check_alpha(alpha)
    check_choice(kernel, "kernel", KERNELS)
    _check_bandwidth(bandwidth)
    check_choice(approx, "approx", APPROXIMATIONS)
    if approx is not None:
        check_int(n_probes, "n_probes", minimum=2)
        check_int(n_steps, "n_steps", minimum=1)
    return alpha


# ------------------------------------------------------------------------------------- matrices

def scott_bandwidth(n: int, d: int) -> float:
    """Scott's sigma on standardised data: ``N ** (-1 / (4 + d))``."""
    return float(n) ** (-1.0 / (4 + d))


def gram_matrix(x: torch.Tensor, *, kernel: str = "rbf", bandwidth="scott") -> tuple[torch.Tensor, float | None]:
    """Unit-trace Gram matrix ``A [..., N, N]`` (float64) of ``x [..., N, d]``, and the sigma used."""
    check_choice(kernel, "kernel", KERNELS)
    _check_bandwidth(bandwidth)
    x = x.to(torch.float64)
    n, d = x.shape[-2], x.shape[-1]
    if kernel == "linear":
        k = x @ x.transpose(-1, -2)
        return k / k.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None], None
    x = x - x.mean(dim=-2, keepdim=True)  # translation invariant; keeps the distance expansion well conditioned
    if bandwidth == "scott":
        std = x.square().mean(dim=-2, keepdim=True).sqrt()
        x = x / torch.where(std > 0, std, torch.ones_like(std))
        sigma = scott_bandwidth(n, d)
    else:
        sigma = float(bandwidth)
    sq = x.square().sum(-1)
    dist2 = (sq.unsqueeze(-1) + sq.unsqueeze(-2) - 2 * (x @ x.transpose(-1, -2))).clamp_min(0)
    dist2.diagonal(dim1=-2, dim2=-1).zero_()
    return torch.exp(dist2 / (-2 * sigma * sigma)) / n, sigma


def joint_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``A ∘ B / tr(A ∘ B)``: the normalised Hadamard product used for joint entropy."""
    h = a * b
    return h / h.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None]


# ----------------------------------------------------------------------------------- exact path

def _spectral_entropy(eig: torch.Tensor, alpha: float) -> torch.Tensor:
    """S_alpha (nats) from eigenvalues ``[..., N]`` of unit-trace PSD matrices."""
    n = eig.shape[-1]
    tol = eig[..., -1:].clamp_min(0) * n * torch.finfo(eig.dtype).eps
    live = eig > tol
    log_eig = torch.where(live, eig.clamp_min(torch.finfo(eig.dtype).tiny).log(), torch.full_like(eig, -math.inf))
    if alpha == 1.0:
        return -torch.where(live, eig * log_eig, torch.zeros_like(eig)).sum(-1)
    return torch.logsumexp(alpha * log_eig, dim=-1) / (1 - alpha)


def matrix_entropy(a: torch.Tensor, alpha: float = 1.01, *, base=None) -> torch.Tensor:
    """Exact S_alpha of unit-trace symmetric PSD matrices ``a [..., N, N]`` (float64 eigenvalues), in nats unless ``base``."""
    alpha = _check_alpha(alpha)
    unit = log_base(base)
    eig = torch.linalg.eigvalsh(a.to(torch.float64))
    return _spectral_entropy(eig, alpha) / unit


# --------------------------------------------------------------------------------- Lanczos path

def _lanczos_trace(a: torch.Tensor, alpha: float, n_probes: int, n_steps: int, seed: int):
    """Stochastic Lanczos quadrature of tr f(A) for ``a [B, N, N]``: (mean, standard error) per cell, ``[B]``."""
    batch, n, _ = a.shape
    steps = min(n_steps, n)
    gen = torch.Generator().manual_seed(seed)
    # One probe set shared by every batch cell: a cell's estimate does not depend on the batch it came in.
    probes = torch.randint(0, 2, (n, n_probes), generator=gen).to(a.device, torch.float64) * 2 - 1
    probes = probes.expand(batch, n, n_probes)
    q = probes / math.sqrt(n)  # [B, N, P]: the layout for the matvec A @ Q
    basis = q.new_zeros(batch, n_probes, steps, n)  # [B, P, m, N]: the layout for reorthogonalisation
    basis[:, :, 0] = q.transpose(-1, -2)
    diag, off = [], []
    prev, beta_prev = torch.zeros_like(q), torch.zeros(batch, 1, n_probes, dtype=torch.float64, device=a.device)
    for k in range(steps):
        w = a @ q
        alpha_k = (q * w).sum(-2, keepdim=True)
        diag.append(alpha_k)
        if k == steps - 1:
            break
        w = (w - alpha_k * q - beta_prev * prev).transpose(-1, -2).unsqueeze(-1)  # [B, P, N, 1]
        done = basis[:, :, : k + 1]
        for _ in range(2):  # full reorthogonalisation, twice ("twice is enough")
            w = w - done.transpose(-1, -2) @ (done @ w)
        w = w.squeeze(-1).transpose(-1, -2)  # [B, N, P]
        beta_k = w.norm(dim=-2, keepdim=True)
        broken = beta_k <= 1e-12  # invariant subspace: the quadrature is already exact; decouple the rest
        beta_k = torch.where(broken, torch.zeros_like(beta_k), beta_k)
        off.append(beta_k)
        prev, q = q, torch.where(broken, torch.zeros_like(w), w / torch.where(broken, torch.ones_like(beta_k), beta_k))
        beta_prev = beta_k
        basis[:, :, k + 1] = q.transpose(-1, -2)
    m = len(diag)
    tri = torch.diag_embed(torch.cat(diag, dim=-2).transpose(-1, -2))  # [B, P, m, m]
    if m > 1:
        sub = torch.cat(off, dim=-2).transpose(-1, -2)  # [B, P, m-1]
        tri = tri + torch.diag_embed(sub, offset=1) + torch.diag_embed(sub, offset=-1)
    theta, vecs = torch.linalg.eigh(tri)
    weight = vecs[..., 0, :].square()
    # Nodes at rounding level are zero eigenvalues (as in the exact path); lambda^alpha is steep there for alpha < 1.
    theta = torch.where(theta > theta[..., -1:].clamp_min(0) * n * torch.finfo(theta.dtype).eps, theta,
                        torch.zeros_like(theta))
    if alpha == 1.0:
        f = -torch.where(theta > 0, theta * theta.clamp_min(torch.finfo(theta.dtype).tiny).log(),
                         torch.zeros_like(theta))
    else:
        f = theta.pow(alpha)
    y = n * (weight * f).sum(-1)  # v^T f(A) v with ||v||^2 = N, [B, P]
    z = n * (weight * theta).sum(-1)  # v^T A v (exact up to rounding), known mean tr(A) = 1
    # Control variate: tr f(A) = E[y - c (z - 1)] for any c; the least-squares c removes the probe noise
    # that f(A) shares with A (all of it for a rank-1 A, most of it for alpha near 1).
    yc, zc = y - y.mean(-1, keepdim=True), z - z.mean(-1, keepdim=True)
    var_z = zc.square().sum(-1)
    c = torch.where(var_z > 0, (yc * zc).sum(-1) / torch.where(var_z > 0, var_z, torch.ones_like(var_z)),
                    torch.zeros_like(var_z))
    adjusted = y - c.unsqueeze(-1) * (z - 1)
    # batch_invariant_std: a cell's standard error must not depend on the batch it came in (probes are shared for that).
    return adjusted.mean(-1), batch_invariant_std(adjusted) / math.sqrt(n_probes)


def _lanczos_entropy(a: torch.Tensor, alpha: float, n_probes: int, n_steps: int, seed: int):
    """(S_alpha, standard error) in nats for ``a [..., N, N]``."""
    lead = a.shape[:-2]
    trace, se = _lanczos_trace(a.reshape(-1, *a.shape[-2:]), alpha, n_probes, n_steps, seed)
    if alpha == 1.0:
        value, stderr = trace, se
    else:
        value, stderr = trace.log() / (1 - alpha), se / (trace * abs(1 - alpha))
    return value.reshape(lead), stderr.reshape(lead)


# ------------------------------------------------------------------------------------ public API

def _entropy_of(a, alpha, approx, n_probes, n_steps, seed):
    if approx is None:
        return _spectral_entropy(torch.linalg.eigvalsh(a), alpha), None
    return _lanczos_entropy(a, alpha, n_probes, n_steps, seed)


def entropy(x, *, alpha: float = 1.01, kernel: str = "rbf", bandwidth="scott", approx=None, n_probes: int = 32,
            n_steps: int = 40, seed: int = 0, base=None, backend=None, details=False):
    """Matrix-based Rényi alpha-entropy of ``x [..., N, d]`` per leading batch cell.

    Returns a float64 tensor of the batch shape, in nats unless ``base`` is given (and
    :class:`RenyiDiagnostics` when ``details``; with ``approx="lanczos"`` it carries the
    standard error across probes). Holds ``[..., N, N]`` float64 Gram matrices in memory. A
    constant cell (one point) gets exactly 0: its Gram matrix has rank one.
    """
    alpha = _check_options(alpha, kernel, bandwidth, approx, n_probes, n_steps)
    unit = log_base(base)
    x = as_samples(x, "x")
    _dispatch.resolve_backend(backend, x.device)
    a, sigma = gram_matrix(x, kernel=kernel, bandwidth=bandwidth)
    value, stderr = _entropy_of(a, alpha, approx, n_probes, n_steps, seed)
    # One point: a rank-one Gram matrix, S = 0 exactly (the eigensolver leaves rounding of ~1e-14).
    constant = constant_cells(x)
    value = torch.where(constant, torch.zeros_like(value), value) / unit
    if stderr is not None:
        stderr = torch.where(constant, torch.zeros_like(stderr), stderr)
    if not details:
        return value
    return value, RenyiDiagnostics(x.shape[-2], alpha, kernel, sigma, approx,
                                   None if stderr is None else stderr / unit,
                                   n_probes if approx else None, n_steps if approx else None)


def mutual_information(x, y, *, alpha: float = 1.01, kernel: str = "rbf", bandwidth="scott", approx=None,
                       n_probes: int = 32, n_steps: int = 40, seed: int = 0, base=None, backend=None,
                       details=False):
    """Matrix-based Rényi I_alpha(X;Y) = S(A_x) + S(A_y) - S(A_x ∘ A_y / tr) per batch cell, in nats unless ``base``.

    Each side gets its own Gram matrix (with ``bandwidth="scott"``, its own sigma from its own
    d). With ``approx="lanczos"`` the three entropies use independent probes (seeds ``seed``,
    ``seed + 1``, ``seed + 2``) and the reported standard error is their root sum of squares.
    A cell where x or y is constant gets exactly 0 (and a zero standard error).
    """
    alpha = _check_options(alpha, kernel, bandwidth, approx, n_probes, n_steps)
    unit = log_base(base)
    x = as_samples(x, "x")
    y = as_samples(y, "y")
    check_paired(x, y)
    _dispatch.resolve_backend(backend, x.device)
    ax, sigma_x = gram_matrix(x, kernel=kernel, bandwidth=bandwidth)
    ay, sigma_y = gram_matrix(y, kernel=kernel, bandwidth=bandwidth)
    parts = [_entropy_of(m, alpha, approx, n_probes, n_steps, seed + i)
             for i, m in enumerate((ax, ay, joint_matrix(ax, ay)))]
    constant = constant_cells(x) | constant_cells(y)  # I(X; c) = 0 exactly, not the eigensolver's rounding
    value = torch.where(constant, 0.0, parts[0][0] + parts[1][0] - parts[2][0]) / unit
    if not details:
        return value
    stderr = None
    if approx is not None:
        stderr = torch.sqrt(parts[0][1].square() + parts[1][1].square() + parts[2][1].square())
        stderr = torch.where(constant, 0.0, stderr) / unit
    return value, RenyiDiagnostics(x.shape[-2], alpha, kernel, None if sigma_x is None else (sigma_x, sigma_y),
                                   approx, stderr, n_probes if approx else None, n_steps if approx else None)


def working_bytes(options: dict, n: int, dx: int, dy: int, batch: int, *, native_knn: bool = True) -> int:
    """Modelled peak working memory (bytes) of one call on ``batch`` cells of ``n`` rows (inputs not counted;
    ``native_knn`` unused). Gram matrices ``[n, n]`` float64: squared distances, kernel, both sides, their
    Hadamard product and eigenvalue workspace (at most 8 live); Lanczos keeps fewer but stores its basis."""
    elements = n * (dx + dy)
    if options.get("approx") == "lanczos":
        # per probe: the Krylov basis [steps, n], the tridiagonal matrices and their eigenvectors, the iterates
        defaults = inspect.signature(mutual_information).parameters
        probes = options.get("n_probes") or defaults["n_probes"].default
        steps = min(options.get("n_steps") or defaults["n_steps"].default, n)
        per_cell = 6 * 8 * n * n + 8 * probes * (2 * steps * n + 6 * steps * steps + 6 * n)
    else:
        per_cell = 8 * 8 * n * n
    return batch * (per_cell + 16 * elements) + 3 * 8 * n * n


register(Estimator(
    name="renyi",
    summary="Matrix-based Renyi alpha-entropy and MI of Gram matrices (Giraldo, Rao & Principe 2015, eqs. 5, 9)",
    kind="sample", mutual_information=mutual_information, entropy=entropy, uncertainty="jackknife+own", ie=True,
    check_options=_check_options, working_bytes=working_bytes))
