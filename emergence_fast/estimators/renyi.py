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

* ``"rbf"``: :math:`K_{ij} = \exp(-\lVert x_i - x_j\rVert^2 / 2\sigma^2)`.
  ``bandwidth="median"`` (the default) is the median heuristic: :math:`\sigma = m/\sqrt2` with
  :math:`m` the median Euclidean distance over the row pairs :math:`i < j` of the cell (data as
  given; the mean of the two middle values when the count is even), i.e.
  :math:`K = \exp(-\lVert x-x'\rVert^2/m^2)`, so a typical pair has :math:`K_{ij} \approx e^{-1}`
  in any dimension (one of the conventions discussed by Garreau, Jitkrittum & Kanagawa 2017,
  "Large sample analysis of the median heuristic", arXiv:1707.07269; Gretton et al. take
  :math:`\sigma = m`). Above ``MEDIAN_ROWS`` rows the median is taken on
  a seeded (``seed``) subsample of ``MEDIAN_ROWS`` rows, the same rows for every batch cell.
  Where more than half the pairs coincide (m = 0) the root-mean-square pairwise distance
  replaces m. ``bandwidth="scott"`` is Scott's rule per dimension: each column is
  standardised (zero mean, unit variance over the batch cell; a constant column is left at
  zero) and :math:`\sigma = N^{-1/(4+d)}` (:math:`\gamma = 1`), i.e. a product kernel with
  per-dimension width :math:`s_j N^{-1/(4+d)}`. In high dimension Scott's :math:`\sigma \to 1` is
  small next to typical distances :math:`\approx\sqrt{2d}` of standardised data, so
  :math:`A \to I/N` and :math:`S_\alpha \to \log N` (at N = 4096, d = 32 every entropy and MI
  equals log N): that is why the default changed from ``"scott"`` to ``"median"`` (issue #14;
  results with the default differ from earlier versions, pass ``bandwidth="scott"`` for the old
  ones). A float bandwidth is an isotropic :math:`\sigma` on the data as given.
* ``"linear"``: :math:`K = X X^\top` on the data as given (not centred), :math:`A = K/\operatorname{tr}K`.
  A batch cell whose rows are all zero is constant and gets 0 like any constant cell; a joint
  with :math:`\operatorname{tr}(K_X \circ K_Y) = 0` (each row zero in x or in y) has no
  unit-trace form and gives NaN.
  Exact paths never form the N×N Gram when d < N: the nonzero spectrum of :math:`XX^\top` is that
  of :math:`X^\top X` (d×d), so :math:`S_\alpha` costs :math:`O(Nd^2 + d^3)` (Skean et al. 2025,
  "Layer by Layer: uncovering hidden representations in language models", ICML). The joint
  :math:`A_X \circ A_Y` is the Gram of the row-wise Kronecker features :math:`x_i \otimes y_i`
  (dimension :math:`d_x d_y`), used in its :math:`d_x d_y \times d_x d_y` form when
  :math:`d_x d_y < N`, else the N×N Hadamard product. Both forms are exact (the same eigenvalues,
  with the same rounding threshold below).

Exact path (``approx=None``): ``torch.linalg.eigvalsh`` in float64 (of :math:`A`, or of the
smaller linear-kernel form above). Eigenvalues at or below :math:`\lambda_{\max} N \varepsilon_{64}`
(rounding level) are set to 0, so a rank-deficient :math:`A` gives the entropy of its numerical
range; sums use log-sum-exp, so large :math:`\alpha` does not underflow. Cost :math:`O(N^3)` per
batch cell for the RBF kernel.

Fast path (``approx="lanczos"``): stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017,
"Fast estimation of tr(f(A)) via stochastic Lanczos quadrature", SIAM J. Matrix Anal. Appl.
38(4)) on the N×N Gram, either kernel: Hutchinson's estimator :math:`\operatorname{tr} f(A) \approx \frac1P\sum_p v_p^\top f(A) v_p`
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

Fast path (``approx="nystrom"``, RBF kernel): Nyström with a spectral shift. ``n_landmarks``
rows drawn uniformly without replacement (seeded by ``seed``; the same rows for every batch
cell and for x, y and the joint, so a cell's value does not depend on its batch and the three
errors of an MI partly cancel) give :math:`Q = C W^{+} C^\top` (:math:`C = K_{:,L}`,
:math:`W = K_{LL}`), whose r nonzero eigenvalues come from an m×m problem. The residual
:math:`R = K - Q` is positive semi-definite with a known trace :math:`\operatorname{tr}K - \operatorname{tr}Q`;
it is replaced by that trace spread evenly over the :math:`N - r` directions outside the range
of :math:`Q` (in the spirit of the spectral-shifting Nyström of Wang, Zhang, Qian & Zhang 2014,
KDD), which keeps :math:`\operatorname{tr}\hat A = 1`. With
:math:`\varepsilon = \operatorname{tr}R/\operatorname{tr}K` (reported per cell as
``details.residual``; the largest of the three matrices for an MI), :math:`\lVert A - \hat A\rVert_1 \le 2\varepsilon`,
so by the Fannes–Audenaert inequality the von Neumann entropy (:math:`\alpha = 1`) is within
:math:`\varepsilon\log(N-1) + h(\varepsilon)` nats of the exact one (:math:`h` the binary
entropy; for :math:`\varepsilon \le 1 - 1/N`). The bound is informative only when :math:`\varepsilon` is
small (low dimension, wide kernels: d = 2, N = 600, m = 100 gives ε < 0.01 and S within 1 %).
In high dimension it is uninformative: at N = 4096, d = 32 with the median bandwidth
(benchmarks/RESULTS.md, issue #14) ε is 0.47 at the default m = 512, where S is +4.6 % and
I +4.7 % off at 14× the exact speed (m = 1024: ε = 0.36, +2.3 % / +0.5 % at 4.4×): the Gram has a
bulk of O(N) comparable eigenvalues that no rank-m form holds, and the even spread overstates
its entropy. Random Fourier features (Rahimi & Recht 2007) were measured worse at every speed
and are not offered. Cost :math:`O(N m (d + m) + m^3)`. For the
linear kernel ``"nystrom"`` takes the exact path above (already :math:`O(Nd^2)` when d < N).

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
BANDWIDTHS = ("median", "scott")
APPROXIMATIONS = (None, "lanczos", "nystrom")
# Rows the median heuristic looks at: ~5e5 pairs put the sample median within a fraction of a
# percent of the all-pairs one, at 8 MB of distances per cell.
MEDIAN_ROWS = 1024


@dataclass
class RenyiDiagnostics(Details):
    """What a matrix-based Rényi estimate rests on; tensors have the estimate's batch shape."""

    n: int
    alpha: float
    kernel: str
    # The sigma used: a float (a given bandwidth, Scott's), a float64 tensor of the batch shape (the median
    # heuristic), per side for MI (a tuple); None for the linear kernel.
    bandwidth: float | torch.Tensor | tuple | None
    approx: str | None
    stderr: torch.Tensor | None  # probe standard error for approx="lanczos", None otherwise
    n_probes: int | None = None
    n_steps: int | None = None
    n_landmarks: int | None = None
    # approx="nystrom": the trace fraction of the Gram the Nyström form leaves out (the module docstring's bound)
    residual: torch.Tensor | None = None
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------- checks

def _check_alpha(alpha) -> float:
    return check_positive_float(alpha, "alpha")


def _check_bandwidth(bandwidth) -> None:
    if isinstance(bandwidth, str) and bandwidth in BANDWIDTHS:
        return
    try:
        check_positive_float(bandwidth, "bandwidth")
    except ValueError:
        raise ValueError(f"bandwidth must be 'median', 'scott' or a finite number > 0, got {bandwidth!r}") from None


def _check_options(alpha=1.01, kernel="rbf", bandwidth="median", approx=None, n_probes=32, n_steps=40,
                   n_landmarks=512) -> float:
    alpha = _check_alpha(alpha)
    check_choice(kernel, "kernel", KERNELS)
    _check_bandwidth(bandwidth)
    check_choice(approx, "approx", APPROXIMATIONS)
    if approx == "lanczos":
        check_int(n_probes, "n_probes", minimum=2)
        check_int(n_steps, "n_steps", minimum=1)
    if approx == "nystrom":
        check_int(n_landmarks, "n_landmarks", minimum=1)
    return alpha


# ------------------------------------------------------------------------------------- matrices

def scott_bandwidth(n: int, d: int) -> float:
    """Scott's sigma on standardised data: ``N ** (-1 / (4 + d))``."""
    return float(n) ** (-1.0 / (4 + d))


def _sample_rows(n: int, m: int, seed: int, device) -> torch.Tensor:
    """``m`` of ``n`` row indices, uniformly without replacement, from ``seed`` alone (so the same for every cell)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:m].to(device)


def _squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``|a_i - b_j|^2 [..., N, M]`` by the Gram expansion (inputs centred by the caller for conditioning)."""
    dist2 = a.square().sum(-1).unsqueeze(-1) + b.square().sum(-1).unsqueeze(-2) - 2 * (a @ b.transpose(-1, -2))
    return dist2.clamp_min(0)


def median_bandwidth(x: torch.Tensor, *, seed: int = 0) -> torch.Tensor:
    """Median-heuristic sigma of ``x [..., N, d]``: ``median_{i<j} |x_i - x_j| / sqrt(2)``, float64 ``[...]``.

    Above ``MEDIAN_ROWS`` rows, on the rows ``seed`` draws (the same for every cell). Where the
    median is 0 (more than half the pairs coincide) the root-mean-square pair distance replaces
    it; a cell of one repeated point gets 1.0 (its Gram matrix is all ones for any sigma).
    """
    x = x.to(torch.float64)
    n = x.shape[-2]
    if n > MEDIAN_ROWS:
        x = x[..., _sample_rows(n, MEDIAN_ROWS, seed, x.device), :]
        n = MEDIAN_ROWS
    x = x - x.mean(dim=-2, keepdim=True)
    i, j = torch.triu_indices(n, n, 1, device=x.device)
    dist2 = _squared_distances(x, x)[..., i, j]
    pairs = dist2.shape[-1]
    # Selection, not a sort (measured ~1.7x faster at 1024 rows); the two middle values (1-based ranks).
    low = dist2.kthvalue((pairs + 1) // 2, dim=-1).values
    high = dist2.kthvalue(pairs // 2 + 1, dim=-1).values
    median = (low.sqrt() + high.sqrt()) / 2
    rms = dist2.mean(-1).sqrt()
    spread = torch.where(median > 0, median, torch.where(rms > 0, rms, torch.full_like(rms, math.sqrt(2))))
    return spread / math.sqrt(2)


def _rbf_features(x: torch.Tensor, bandwidth, seed: int):
    """``(z, sigma)``: ``x [..., N, d]`` centred and scaled so that ``K = exp(-|z_i - z_j|^2 / 2)``, float64."""
    x = x.to(torch.float64)
    x = x - x.mean(dim=-2, keepdim=True)  # translation invariant; keeps the distance expansion well conditioned
    if bandwidth == "scott":
        std = x.square().mean(dim=-2, keepdim=True).sqrt()
        sigma = scott_bandwidth(x.shape[-2], x.shape[-1])
        return x / torch.where(std > 0, std, torch.ones_like(std)) / sigma, sigma
    if bandwidth == "median":
        sigma = median_bandwidth(x, seed=seed)
        return x / sigma[..., None, None], sigma
    return x / float(bandwidth), float(bandwidth)


def _rbf_gram(z: torch.Tensor) -> torch.Tensor:
    """Unit-trace Gram ``exp(-|z_i - z_j|^2 / 2) / N``, ``[..., N, N]``."""
    dist2 = _squared_distances(z, z)
    dist2.diagonal(dim1=-2, dim2=-1).zero_()
    return torch.exp(dist2 / -2) / z.shape[-2]


def gram_matrix(x: torch.Tensor, *, kernel: str = "rbf", bandwidth="median", seed: int = 0):
    """Unit-trace Gram matrix ``A [..., N, N]`` (float64) of ``x [..., N, d]``, and the sigma used.

    A linear-kernel cell of zero rows gets the zero matrix. The sigma is a float, a float64 tensor of the batch shape (``bandwidth="median"``; ``seed``
    picks its subsample above ``MEDIAN_ROWS`` rows), or None for the linear kernel.
    """
    check_choice(kernel, "kernel", KERNELS)
    _check_bandwidth(bandwidth)
    x = x.to(torch.float64)
    if kernel == "linear":
        return _unit_trace(x @ x.transpose(-1, -2)), None
    z, sigma = _rbf_features(x, bandwidth, seed)
    return _rbf_gram(z), sigma


def _unit_trace(k: torch.Tensor) -> torch.Tensor:
    """``k / tr k`` for PSD ``k [..., N, N]``; left at zero where the trace is 0 (0/0 would break the eigensolver)."""
    trace = k.diagonal(dim1=-2, dim2=-1).sum(-1)
    return k / torch.where(trace > 0, trace, torch.ones_like(trace))[..., None, None]


def joint_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``A ∘ B / tr(A ∘ B)``: the normalised Hadamard product used for joint entropy (zero where the trace is 0)."""
    return _unit_trace(a * b)


# ----------------------------------------------------------------------------------- exact path

def _spectral_entropy(eig: torch.Tensor, alpha: float, size: int | None = None,
                      count: torch.Tensor | None = None) -> torch.Tensor:
    """S_alpha (nats) from eigenvalues ``[..., k]`` of unit-trace PSD ``size``-square matrices.

    ``size`` (default k) sets the rounding threshold, so the k < N nonzero eigenvalues of an N×N
    matrix are thresholded as its full list would be; ``count [..., k]`` gives multiplicities
    (the Nyström shift's repeated eigenvalue).
    """
    size = eig.shape[-1] if size is None else size
    weight = torch.ones_like(eig) if count is None else count
    tol = eig.amax(-1, keepdim=True).clamp_min(0) * size * torch.finfo(eig.dtype).eps
    live = (eig > tol) & (weight > 0)
    log_eig = torch.where(live, eig.clamp_min(torch.finfo(eig.dtype).tiny).log(), torch.full_like(eig, -math.inf))
    if alpha == 1.0:
        return -torch.where(live, weight * eig * log_eig, torch.zeros_like(eig)).sum(-1)
    log_weight = torch.where(live, weight.clamp_min(1).log(), torch.zeros_like(eig))
    return torch.logsumexp(alpha * log_eig + log_weight, dim=-1) / (1 - alpha)


def matrix_entropy(a: torch.Tensor, alpha: float = 1.01, *, base=None) -> torch.Tensor:
    """Exact S_alpha of unit-trace symmetric PSD matrices ``a [..., N, N]`` (float64 eigenvalues), in nats unless ``base``."""
    alpha = _check_alpha(alpha)
    unit = log_base(base)
    eig = torch.linalg.eigvalsh(a.to(torch.float64))
    return _spectral_entropy(eig, alpha) / unit


def _unit_trace_entropy(k: torch.Tensor, alpha: float, size: int) -> torch.Tensor:
    """Exact S_alpha of ``k / tr k`` for PSD ``k [..., D, D]`` holding the nonzero spectrum of a ``size``-square
    matrix; NaN where ``tr k = 0`` (no unit-trace form exists; LAPACK would fail on the 0/0 matrix)."""
    live = k.diagonal(dim1=-2, dim2=-1).sum(-1) > 0
    value = _spectral_entropy(torch.linalg.eigvalsh(_unit_trace(k)), alpha, size=size)
    return torch.where(live, value, torch.full_like(value, math.nan))


def _linear_entropy(features: torch.Tensor, alpha: float) -> torch.Tensor:
    """Exact S_alpha of ``A = F F^T / |F|^2`` for ``features [..., N, D]``: through ``F^T F`` (D×D) when D < N."""
    n, dim = features.shape[-2:]
    f = features.to(torch.float64)
    return _unit_trace_entropy(f.transpose(-1, -2) @ f if dim < n else f @ f.transpose(-1, -2), alpha, n)


def _linear_joint_entropy(x: torch.Tensor, y: torch.Tensor, alpha: float) -> torch.Tensor:
    """Exact S_alpha of ``A_x ∘ A_y / tr``: the Gram of the row-wise ``x_i ⊗ y_i`` (dx·dy features) when dx·dy < N."""
    n, dx, dy = x.shape[-2], x.shape[-1], y.shape[-1]
    x, y = x.to(torch.float64), y.to(torch.float64)
    if dx * dy < n:
        return _linear_entropy((x.unsqueeze(-1) * y.unsqueeze(-2)).flatten(-2), alpha)
    return _unit_trace_entropy((x @ x.transpose(-1, -2)) * (y @ y.transpose(-1, -2)), alpha, n)


# --------------------------------------------------------------------------------- Nyström path

def _nystrom_entropy(z: torch.Tensor, alpha: float, n_landmarks: int, seed: int):
    """(S_alpha, residual trace fraction), each ``[...]``, of the unit-bandwidth RBF Gram of ``z [..., N, D]``
    by the spectrally shifted Nyström form (module docstring)."""
    n = z.shape[-2]
    m = min(n_landmarks, n)
    landmarks = z[..., _sample_rows(n, m, seed, z.device), :]
    c = torch.exp(_squared_distances(z, landmarks) / -2)  # [..., N, m]
    w = torch.exp(_squared_distances(landmarks, landmarks) / -2)
    w.diagonal(dim1=-2, dim2=-1).fill_(1.0)
    lam, u = torch.linalg.eigh(w)
    # The pseudo-inverse square root of W: directions at its rounding level carry only noise.
    keep = lam > lam[..., -1:].clamp_min(0) * m * torch.finfo(lam.dtype).eps
    inv_sqrt = torch.where(keep, lam.clamp_min(torch.finfo(lam.dtype).tiny).rsqrt(), torch.zeros_like(lam))
    b = c @ (u * inv_sqrt.unsqueeze(-2))  # Q = C W^+ C^T = B B^T
    mu = torch.linalg.eigvalsh(b.transpose(-1, -2) @ b).clamp_min(0)  # the nonzero spectrum of Q
    outside = n - keep.sum(-1).to(torch.float64)  # directions outside the range of Q
    left = (n - mu.sum(-1)).clamp_min(0)  # tr R = tr K - tr Q, with tr K = N
    shift = torch.where(outside > 0, left / outside.clamp_min(1), torch.zeros_like(left))
    eig = torch.cat([mu, shift.unsqueeze(-1)], -1) / n
    count = torch.cat([torch.ones_like(mu), outside.unsqueeze(-1)], -1)
    return _spectral_entropy(eig, alpha, size=n, count=count), left / n


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

def entropy(x, *, alpha: float = 1.01, kernel: str = "rbf", bandwidth="median", approx=None, n_probes: int = 32,
            n_steps: int = 40, n_landmarks: int = 512, seed: int = 0, base=None, backend=None, details=False):
    """Matrix-based Rényi alpha-entropy of ``x [..., N, d]`` per leading batch cell.

    ``approx``: None (exact; for the linear kernel through the d×d form when d < N), ``"lanczos"``
    (``n_probes``, ``n_steps``) or ``"nystrom"`` (``n_landmarks``; the RBF kernel, exact for the
    linear one); see the module docstring for costs and errors. ``seed`` draws the probes, the
    landmarks and the median heuristic's subsample (above ``MEDIAN_ROWS`` rows). The default
    ``bandwidth="median"`` replaced ``"scott"`` (which saturates at log N in high dimension), so
    RBF results with the default differ from earlier versions.

    Returns a float64 tensor of the batch shape, in nats unless ``base`` is given (and
    :class:`RenyiDiagnostics` when ``details``; with ``approx="lanczos"`` it carries the
    standard error across probes, with ``"nystrom"`` the residual trace fraction). The exact
    RBF and Lanczos paths hold ``[..., N, N]`` float64 Gram matrices in memory. A constant cell
    (one point) gets exactly 0: its Gram matrix has rank one. Raises ValueError on a bad option
    or on samples with NaN/inf.
    """
    alpha = _check_options(alpha, kernel, bandwidth, approx, n_probes, n_steps, n_landmarks)
    unit = log_base(base)
    x = as_samples(x, "x")
    _dispatch.resolve_backend(backend, x.device)
    sigma = stderr = residual = None
    if approx == "lanczos":
        a, sigma = gram_matrix(x, kernel=kernel, bandwidth=bandwidth, seed=seed)
        value, stderr = _lanczos_entropy(a, alpha, n_probes, n_steps, seed)
    elif kernel == "linear":
        value = _linear_entropy(x, alpha)
    else:
        z, sigma = _rbf_features(x, bandwidth, seed)
        if approx == "nystrom":
            value, residual = _nystrom_entropy(z, alpha, n_landmarks, seed)
        else:
            value = _spectral_entropy(torch.linalg.eigvalsh(_rbf_gram(z)), alpha)
    # One point: a rank-one Gram matrix, S = 0 exactly (the eigensolver leaves rounding of ~1e-14).
    constant = constant_cells(x)
    value = torch.where(constant, torch.zeros_like(value), value) / unit
    if not details:
        return value
    if stderr is not None:
        stderr = torch.where(constant, torch.zeros_like(stderr), stderr) / unit
    if residual is not None:
        residual = torch.where(constant, torch.zeros_like(residual), residual)
    return value, _diagnostics(x.shape[-2], alpha, kernel, sigma, approx, stderr, n_probes, n_steps, n_landmarks,
                               residual)


def _diagnostics(n, alpha, kernel, sigma, approx, stderr, n_probes, n_steps, n_landmarks, residual):
    lanczos = approx == "lanczos"
    nystrom = approx == "nystrom" and kernel == "rbf"
    return RenyiDiagnostics(n, alpha, kernel, sigma, approx, stderr, n_probes if lanczos else None,
                            n_steps if lanczos else None, n_landmarks if nystrom else None, residual)


def mutual_information(x, y, *, alpha: float = 1.01, kernel: str = "rbf", bandwidth="median", approx=None,
                       n_probes: int = 32, n_steps: int = 40, n_landmarks: int = 512, seed: int = 0, base=None,
                       backend=None, details=False):
    """Matrix-based Rényi I_alpha(X;Y) = S(A_x) + S(A_y) - S(A_x ∘ A_y / tr) per batch cell, in nats unless ``base``.

    ``x [..., N, dx]``, ``y [..., N, dy]``; returns float64 of the batch shape. Options as for
    :func:`entropy`. Each side gets its own Gram matrix (its own sigma: the median heuristic or
    Scott's rule from its own d). With ``approx="lanczos"`` the three entropies use independent
    probes (seeds ``seed``, ``seed + 1``, ``seed + 2``) and the reported standard error is their
    root sum of squares; with ``"nystrom"`` all three use the same landmark rows (the RBF joint
    is the RBF Gram of the concatenated scaled rows) and ``details.residual`` is the largest
    of their residual trace fractions. A cell where x or y is constant gets exactly 0 (and a
    zero standard error). Raises ValueError on a bad option, NaN/inf samples or unequal N.
    """
    alpha = _check_options(alpha, kernel, bandwidth, approx, n_probes, n_steps, n_landmarks)
    unit = log_base(base)
    x = as_samples(x, "x")
    y = as_samples(y, "y")
    check_paired(x, y)
    _dispatch.resolve_backend(backend, x.device)
    sigma_x = sigma_y = stderr = residual = None
    if approx == "lanczos":
        ax, sigma_x = gram_matrix(x, kernel=kernel, bandwidth=bandwidth, seed=seed)
        ay, sigma_y = gram_matrix(y, kernel=kernel, bandwidth=bandwidth, seed=seed)
        parts = [_lanczos_entropy(m, alpha, n_probes, n_steps, seed + i)
                 for i, m in enumerate((ax, ay, joint_matrix(ax, ay)))]
        (hx, sx), (hy, sy), (hj, sj) = parts
        stderr = torch.sqrt(sx.square() + sy.square() + sj.square())
    elif kernel == "linear":
        hx, hy, hj = _linear_entropy(x, alpha), _linear_entropy(y, alpha), _linear_joint_entropy(x, y, alpha)
    else:
        zx, sigma_x = _rbf_features(x, bandwidth, seed)
        zy, sigma_y = _rbf_features(y, bandwidth, seed)
        if approx == "nystrom":
            # exp(-|zx|^2/2) exp(-|zy|^2/2) = exp(-|[zx, zy]|^2/2): the joint is one more RBF Gram.
            parts = [_nystrom_entropy(z, alpha, n_landmarks, seed) for z in (zx, zy, torch.cat([zx, zy], -1))]
            (hx, rx), (hy, ry), (hj, rj) = parts
            residual = torch.maximum(torch.maximum(rx, ry), rj)
        else:
            ax, ay = _rbf_gram(zx), _rbf_gram(zy)
            hx, hy, hj = [_spectral_entropy(torch.linalg.eigvalsh(m), alpha) for m in (ax, ay, joint_matrix(ax, ay))]
    constant = constant_cells(x) | constant_cells(y)  # I(X; c) = 0 exactly, not the eigensolver's rounding
    value = torch.where(constant, 0.0, hx + hy - hj) / unit
    if not details:
        return value
    if stderr is not None:
        stderr = torch.where(constant, 0.0, stderr) / unit
    if residual is not None:
        residual = torch.where(constant, 0.0, residual)
    return value, _diagnostics(x.shape[-2], alpha, kernel, None if sigma_x is None else (sigma_x, sigma_y), approx,
                               stderr, n_probes, n_steps, n_landmarks, residual)


def working_bytes(options: dict, n: int, dx: int, dy: int, batch: int, *, native_knn: bool = True) -> int:
    """Modelled peak working memory (bytes) of one call on ``batch`` cells of ``n`` rows (inputs not counted;
    ``native_knn`` unused). Exact RBF: Gram matrices ``[n, n]`` float64 (squared distances, kernel, both sides,
    their Hadamard product and eigenvalue workspace: at most 8 live). Exact linear: the d×d and Kronecker forms
    when ``dx * dy < n``. Lanczos keeps fewer Grams but stores its basis; Nyström ``[n, m]`` and ``[m, m]`` blocks."""
    defaults = inspect.signature(mutual_information).parameters
    option = lambda name: options.get(name) or defaults[name].default  # noqa: E731
    elements = n * (dx + dy)
    approx, joint = options.get("approx"), dx * dy
    if approx == "lanczos":
        # per probe: the Krylov basis [steps, n], the tridiagonal matrices and their eigenvectors, the iterates
        probes, steps = option("n_probes"), min(option("n_steps"), n)
        per_cell = 6 * 8 * n * n + 8 * probes * (2 * steps * n + 6 * steps * steps + 6 * n)
    elif option("kernel") == "linear" and joint < n:
        # the Kronecker features [n, dx*dy], their square form and eigenvalue workspace, the sides' d×d forms
        per_cell = 8 * (n * joint + 4 * joint * joint + 4 * (dx * dx + dy * dy))
    elif approx == "nystrom" and option("kernel") == "rbf":
        m, rows = min(option("n_landmarks"), n), min(n, MEDIAN_ROWS)
        # C and B [n, m], W, its eigenvectors and B^T B [m, m], the scaled and joint rows, the median's distances
        per_cell = 8 * (3 * n * m + 4 * m * m + 2 * elements + 3 * rows * rows)
    else:
        per_cell = 8 * 8 * n * n
    return batch * (per_cell + 16 * elements) + 3 * 8 * n * n

register(Estimator(
    name="renyi",
    summary="Matrix-based Renyi alpha-entropy and MI of Gram matrices (Giraldo, Rao & Principe 2015, eqs. 5, 9)",
    kind="sample", mutual_information=mutual_information, entropy=entropy, uncertainty="jackknife+own", ie=True,
    check_options=_check_options, working_bytes=working_bytes))
