r"""Gaussian (log-det) entropy and mutual information.

For jointly Gaussian :math:`(X, Y)` with covariances :math:`\Sigma_X, \Sigma_Y, \Sigma_{XY}`:

.. math::

    H(X) = \tfrac12 \log\big((2\pi e)^{d} \det \Sigma_X\big), \qquad
    I(X;Y) = \tfrac12\big(\log\det\Sigma_X + \log\det\Sigma_Y - \log\det\Sigma_{XY}\big)

(Cover & Thomas, *Elements of Information Theory*, 2nd ed., Thm 8.4.1; the MI is the
canonical-correlation form :math:`-\tfrac12\sum_i \log(1-\rho_i^2)`). For non-Gaussian data
the Gaussian MI is a lower bound on the MI of any distribution with the same covariance.

Bias. With :math:`\nu = N-1` and :math:`S = W/\nu`, :math:`W \sim \mathcal W_d(\nu, \Sigma)`,

.. math::

    \mathbb E[\log\det S] = \log\det\Sigma + b_d(\nu), \qquad
    b_d(\nu) = d \log\tfrac{2}{\nu} + \sum_{i=0}^{d-1} \psi\!\left(\tfrac{\nu-i}{2}\right),

so ``bias_correction="wishart"`` subtracts :math:`b_d` exactly in expectation
(Misra, Singh & Demchuk 2005, "Estimation of the entropy of a multivariate normal
distribution", J. Multivariate Anal. 92). It needs :math:`N > d`. The plug-in MI is biased
upward by :math:`\tfrac12(b_{d_x} + b_{d_y} - b_{d_x+d_y}) > 0`; that number is reported
as ``expected_bias`` whether or not it is subtracted.

Rank deficiency. Hidden states are low rank and have massive-activation dimensions, so the
covariance is standardised to a correlation matrix (MI is invariant to per-variable scale)
and ``shrinkage`` :math:`\lambda` shrinks it towards the identity,
:math:`R_\lambda = (1-\lambda) R + \lambda I` (a diagonal target for the covariance). The
marginal blocks of :math:`R_\lambda` are the shrunk marginals, so the MI stays non-negative.
The Wishart correction assumes an unshrunk sample covariance.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy
import scipy.linalg
import torch

from ..ops.gram import gram
from .._validation import as_samples, check_choice, check_int, check_paired, check_probability, log_base
from .registry import Details, Estimator, register

BIAS_CORRECTIONS = ("none", "wishart")


@dataclass
class GaussianDiagnostics(Details):
    """What a Gaussian estimate rests on; tensors have the estimate's batch shape."""

    n: torch.Tensor
    dim: int
    rank: torch.Tensor
    effective_rank: torch.Tensor
    expected_bias: torch.Tensor
    bias_correction: str
    shrinkage: float
    stderr: torch.Tensor | None = None
    notes: list[str] = field(default_factory=list)


def moments(z: torch.Tensor, backend: str | None = None):
    """Count, mean and centred comoment ``M = (z - mean)^T (z - mean)`` of ``z [..., N, D]``.

    The Gram runs in float32 (float64 for float64 input) on data centred first, so
    massive-activation offsets do not cancel catastrophically. Centring goes through the first
    row, so a constant column becomes exactly zero (and is recognised as constant) in any dtype.
    """
    n = z.shape[-2]
    reference = z[..., :1, :].to(torch.float64)
    if z.dtype == torch.float64:
        shifted = z - reference
        shift_mean = shifted.sum(dim=-2) / n
        centred = shifted - shift_mean.unsqueeze(-2)
    else:
        # Sums of float32 (or narrower) values in float64 are exact, so a constant column's shift is exactly 0.
        shift_mean = (z.sum(dim=-2, dtype=torch.float64) - n * reference.squeeze(-2)) / n
        centred = z.float() - (reference.squeeze(-2) + shift_mean).float().unsqueeze(-2)
    mean = reference.squeeze(-2) + shift_mean
    comoment = gram(centred, centred, backend=backend).to(torch.float64)
    count = torch.full(z.shape[:-2], n, dtype=torch.int64, device=z.device)
    return count, mean, comoment


def wishart_logdet_bias(dim, n: torch.Tensor) -> torch.Tensor:
    r""":math:`b_d(\nu) = \mathbb E[\log\det S] - \log\det\Sigma` for a sample covariance of ``n`` draws.

    ``dim`` is an int or an integer tensor broadcastable to ``n`` (a dimension per cell); ``b_0 = 0``.
    """
    nu = n.to(torch.float64) - 1
    dims = torch.as_tensor(dim, device=nu.device)
    i = torch.arange(int(dims.max()) if dims.numel() else 0, dtype=torch.float64, device=nu.device)
    terms = torch.special.digamma((nu.unsqueeze(-1) - i) / 2)
    terms = torch.where(i < dims.unsqueeze(-1), terms, torch.zeros_like(terms))
    return dims * torch.log(2.0 / nu) + terms.sum(-1)


def _live_dims(comoment: torch.Tensor, dx: int, pca=None):
    """Per cell, the non-constant columns of x and of y (at most ``pca`` each): the dimensions that are random.

    A constant column has no sampling error, hence no Wishart bias: counting it would report a
    bias for (and, with ``bias_correction="wishart"``, subtract one from) a cell with nothing random.
    """
    live = comoment.diagonal(dim1=-2, dim2=-1) > 0
    kx, ky = live[..., :dx].sum(-1), live[..., dx:].sum(-1)
    if pca is not None:
        kx, ky = kx.clamp_max(pca), ky.clamp_max(pca)
    return kx, ky


def _standardise(cov: torch.Tensor, shrinkage: float):
    """log-variances and the (shrunk) correlation matrix; constant variables get an identity row."""
    var = cov.diagonal(dim1=-2, dim2=-1)
    constant = var <= 0
    std = torch.where(constant, torch.ones_like(var), var.sqrt())
    corr = cov / (std.unsqueeze(-1) * std.unsqueeze(-2))
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
    keep = (~constant).unsqueeze(-1) & (~constant).unsqueeze(-2)
    corr = torch.where(keep, corr, eye)
    if shrinkage:
        corr = (1 - shrinkage) * corr + shrinkage * eye
    log_var = torch.where(constant, torch.full_like(var, -math.inf), var.log())
    return log_var, corr


def logdet_psd(mat: torch.Tensor) -> torch.Tensor:
    """log det of symmetric PSD matrices: Cholesky, with an eigenvalue fallback that returns -inf when singular."""
    chol, info = torch.linalg.cholesky_ex(mat)
    pivots = chol.diagonal(dim1=-2, dim2=-1)
    out = 2 * pivots.log().sum(-1)
    # Rounding lets Cholesky "succeed" on singular matrices with ~eps-sized pivots: treat those as singular too.
    tiny = pivots.square().amin(-1) <= pivots.square().amax(-1) * mat.shape[-1] * torch.finfo(mat.dtype).eps
    failed = (info != 0) | tiny
    if bool(failed.any()):
        eig = torch.linalg.eigvalsh(mat[failed])
        tol = eig[..., -1:].clamp_min(0) * mat.shape[-1] * torch.finfo(mat.dtype).eps
        log_eig = torch.where(eig > tol, eig.clamp_min(torch.finfo(eig.dtype).tiny).log(), torch.full_like(eig, -math.inf))
        out[failed] = log_eig.sum(-1)
    return out


def _pseudo_logdet(mat: torch.Tensor):
    """Numerical rank and log pseudo-determinant (sum of log non-zero eigenvalues)."""
    eig = torch.linalg.eigvalsh(mat)
    tol = eig[..., -1:].clamp_min(0) * mat.shape[-1] * torch.finfo(mat.dtype).eps
    live = eig > tol
    return live.sum(-1), torch.where(live, eig.clamp_min(torch.finfo(eig.dtype).tiny).log(), 0.0).sum(-1)


def _singular_mi(corr: torch.Tensor, dx: int) -> torch.Tensor:
    """MI of a degenerate Gaussian on its support: +inf when the joint loses rank beyond its marginals."""
    rank_x, pld_x = _pseudo_logdet(corr[..., :dx, :dx])
    rank_y, pld_y = _pseudo_logdet(corr[..., dx:, dx:])
    rank_xy, pld_xy = _pseudo_logdet(corr)
    finite = 0.5 * (pld_x + pld_y - pld_xy)
    return torch.where(rank_xy < rank_x + rank_y, torch.full_like(finite, math.inf), finite)


def _ranks(corr: torch.Tensor):
    """Numerical rank and the Roy-Vetterli effective rank exp(H(lambda / sum lambda))."""
    eig = torch.linalg.eigvalsh(corr).clamp_min(0)
    tol = eig[..., -1:] * corr.shape[-1] * torch.finfo(corr.dtype).eps
    rank = (eig > tol).sum(-1)
    p = eig / eig.sum(-1, keepdim=True)
    effective = torch.exp(-torch.where(p > 0, p * p.log(), torch.zeros_like(p)).sum(-1))
    return rank, effective


def check_options(bias_correction: str = "none", shrinkage: float = 0.0, pca=None, n_samples: int | None = None) -> None:
    """The options' values, before any data: ValueError naming the option.

    ``n_samples`` (when known up front, as in IE) also checks that the Wishart correction of
    ``pca`` components per side has the ``N > 2 pca`` samples it needs.
    """
    check_choice(bias_correction, "bias_correction", BIAS_CORRECTIONS)
    check_probability(shrinkage, "shrinkage", high_open=True)
    if pca is not None:
        check_int(pca, "pca", minimum=1)
    if bias_correction == "wishart" and pca and n_samples is not None and n_samples <= 2 * pca:
        raise ValueError(f"bias_correction='wishart' with pca={pca} needs more than {2 * pca} samples, got {n_samples}")


def _check_wishart(dim: int, n: torch.Tensor) -> None:
    if int(n.min()) <= dim:
        raise ValueError(f"bias_correction='wishart' needs N > d, got N={int(n.min())} and d={dim}; "
                         "use more samples or shrinkage with bias_correction='none'")


def _diagnostics(corr, n, dim, bias_nats, unit, bias_correction, shrinkage, quantity, stderr=None):
    rank, effective = _ranks(corr)
    notes = []
    if int(rank.min()) < dim and not shrinkage:
        notes.append(f"{quantity} is ill-posed: the covariance is singular (rank {int(rank.min())} < d={dim}); "
                     "the estimate is infinite. Use shrinkage > 0, a smaller pca, or more samples than dimensions.")
    worst = float(bias_nats.abs().max())
    if worst > 0.1:
        remedy = "it was subtracted." if bias_correction == "wishart" else "pass bias_correction='wishart' to remove it."
        notes.append(f"the plug-in estimate is biased by about {worst:.3g} nats at N={int(n.min())}, d={dim} "
                     f"(Wishart expectation); {remedy}")
    undefined = 0 if stderr is None else int(stderr.isnan().sum())
    if undefined:
        notes.append(f"the standard error is NaN in {undefined} of {stderr.numel()} cells: {quantity} is infinite "
                     "there (the joint covariance loses rank beyond its marginals), where the delta method does not "
                     "apply.")
    return GaussianDiagnostics(n, dim, rank, effective, bias_nats / unit, bias_correction, float(shrinkage),
                               None if stderr is None else stderr / unit, notes)


def entropy_from_moments(count, comoment, *, bias_correction="none", shrinkage=0.0, base=None, details=False):
    """Differential entropy of ``N(mean, M / (n-1))`` from accumulated moments, in nats unless ``base``."""
    check_options(bias_correction, shrinkage)
    unit = log_base(base)
    dim = comoment.shape[-1]
    cov = comoment / (count.to(torch.float64) - 1)[..., None, None]
    log_var, corr = _standardise(cov, shrinkage)
    logdet = log_var.sum(-1) + logdet_psd(corr)
    bias = 0.5 * wishart_logdet_bias(dim, count)
    if bias_correction == "wishart":
        _check_wishart(dim, count)
        logdet = logdet - 2 * bias
    value = 0.5 * (dim * math.log(2 * math.pi * math.e) + logdet) / unit
    if not details:
        return value
    diagnostics = _diagnostics(corr, count, dim, bias, unit, bias_correction, shrinkage, "the entropy")
    constant = int(torch.isinf(log_var).any(-1).sum())
    if constant:
        diagnostics.notes.append(f"the entropy is -inf in {constant} of {log_var[..., 0].numel()} cells: a constant "
                                 "column (zero variance) is a degenerate distribution, a point mass along it.")
    return value, diagnostics


def top_eigenvectors(mat: torch.Tensor, k: int) -> torch.Tensor:
    """Eigenvectors ``[..., n, k]`` of the ``k`` largest eigenvalues (ascending) of symmetric ``mat [..., n, n]``.

    On the CPU, LAPACK's ``syevr`` restricted to those eigenpairs (``scipy.linalg.eigh`` with
    ``subset_by_index``): Householder tridiagonalisation, then only ``k`` eigenvectors found and
    transformed back, against all ``n`` for a full ``torch.linalg.eigh``. At ``n = 576``, ``k = 8``
    (IE's ``pca=8`` on SmolLM2) it is 1.9-3.4x faster than ``torch.linalg.eigh`` and spans the same
    subspace to 1e-14 (benchmarks/RESULTS.md, "IE estimate stage"). Elsewhere, or when ``k >= n``,
    ``torch.linalg.eigh``. Where eigenvalues tie at the ``k``-th, either returns some basis of the tied
    eigenspace's share; the Gaussian MI of a principal subspace does not depend on the basis within it.
    """
    n = mat.shape[-1]
    if mat.device.type != "cpu" or k >= n or not mat.shape[:-2].numel():
        return torch.linalg.eigh(mat)[1][..., n - k:]
    flat = mat.detach().reshape(-1, n, n).numpy()
    vectors = [scipy.linalg.eigh(m, subset_by_index=[n - k, n - 1], driver="evr", check_finite=False)[1] for m in flat]
    return torch.from_numpy(numpy.stack(vectors)).reshape(*mat.shape[:-2], n, k).to(mat.dtype)


def principal_subspace(corr: torch.Tensor, dx: int, k: int):
    """``(joint, kx)``: the ``[..., kx + ky, kx + ky]`` joint covariance of the top-``k`` principal components of
    x (the first ``dx`` columns of ``corr [..., d, d]``) and, separately, of y, and ``kx = min(k, dx)``.

    The components come from :func:`top_eigenvectors` (only ``k`` eigenvectors per side, not all of
    them); the result depends only on the two subspaces, not on the basis within them.
    """
    dim = corr.shape[-1]
    kx, ky = min(k, dx), min(k, dim - dx)
    basis = corr.new_zeros(*corr.shape[:-2], dim, kx + ky)
    basis[..., :dx, :kx] = top_eigenvectors(corr[..., :dx, :dx], kx)
    basis[..., dx:, kx:] = top_eigenvectors(corr[..., dx:, dx:], ky)
    return basis.transpose(-1, -2) @ corr @ basis, kx


def _support_whitener(cov: torch.Tensor) -> torch.Tensor:
    """``W [..., d, d]`` with ``W^T C W`` the identity on the support of a PSD ``C`` and 0 off it.

    Eigenvalues at most ``d * eps`` of the largest count as zero (a singular direction, such as a
    duplicated column), so a singular ``C`` is whitened on its support, and a zero ``C`` gives 0.
    """
    eig, vec = torch.linalg.eigh(cov)
    tol = eig[..., -1:].clamp_min(0) * cov.shape[-1] * torch.finfo(cov.dtype).eps
    live = eig > tol
    inv_sqrt = torch.where(live, eig.clamp_min(torch.finfo(eig.dtype).tiny).rsqrt(), torch.zeros_like(eig))
    return vec * inv_sqrt.unsqueeze(-2)


def canonical_correlations(cov: torch.Tensor, dx: int) -> torch.Tensor:
    r"""Canonical correlations ``[..., min(dx, dy)]``, descending, of the covariance ``cov [..., dx + dy, dx + dy]``.

    Singular values of :math:`W_x^\top \Sigma_{xy} W_y` with :math:`W` the pseudo-inverse square
    roots of the marginal correlation matrices (:func:`_support_whitener`): a singular marginal
    (a duplicated column, fewer samples than dimensions) gives the correlations of its support,
    and a constant column, or a constant side, adds only zeros. Never raises on finite input.
    """
    var = cov.diagonal(dim1=-2, dim2=-1)
    live = var > 0
    std = torch.where(live, var.clamp_min(torch.finfo(var.dtype).tiny).sqrt(), torch.ones_like(var))
    corr = cov / (std.unsqueeze(-1) * std.unsqueeze(-2))
    corr = torch.where(live.unsqueeze(-1) & live.unsqueeze(-2), corr, torch.zeros_like(corr))  # constants: off support
    wx, wy = _support_whitener(corr[..., :dx, :dx]), _support_whitener(corr[..., dx:, dx:])
    whitened = wx.transpose(-1, -2) @ corr[..., :dx, dx:] @ wy
    return torch.linalg.svdvals(whitened).clamp(0, 1)


def mutual_information_from_moments(count, comoment, dx, *, bias_correction="none", shrinkage=0.0, pca=None,
                                    base=None, details=False, seed=0):
    r"""I(X;Y) from the joint comoment of ``[x, y]`` whose first ``dx`` columns are x, in nats unless ``base``.

    ``pca=k`` measures I between the top-``k`` principal components of each side (of the
    correlation matrix, so massive-activation dims do not take every component); by the
    data-processing inequality that is a lower bound on I(X;Y), and it stays well posed when
    N or the number of distinct states is far below the width. ``details=True`` adds the
    delta-method standard error :math:`\sqrt{\sum_i \rho_i^2 / N}` over canonical correlations
    :math:`\rho_i` (Kullback 1959), valid when the :math:`\rho_i` are away from 0; on a
    singular marginal it is that of the support (as the value is), and it is NaN, with a note,
    where the value is infinite.

    A cell where either side is constant (every column of x, or of y, has zero variance) gets
    exactly 0, its standard error and expected bias 0. The Wishart bias counts only the
    non-constant columns (at most ``pca`` per side): constant ones have no sampling error.
    Deterministic: ``seed`` is accepted for the common signature and unused.
    """
    check_options(bias_correction, shrinkage, pca)
    unit = log_base(base)
    kx, ky = _live_dims(comoment, dx, pca)
    constant_side = (kx == 0) | (ky == 0)
    _, corr = _standardise(comoment, shrinkage)
    if pca is not None:
        corr, dx = principal_subspace(corr, dx, pca)
    dim = corr.shape[-1]
    value = 0.5 * (logdet_psd(corr[..., :dx, :dx]) + logdet_psd(corr[..., dx:, dx:]) - logdet_psd(corr))
    singular = ~torch.isfinite(value)
    if bool(singular.any()):
        value[singular] = _singular_mi(corr[singular], dx)
    bias = 0.5 * (wishart_logdet_bias(kx, count) + wishart_logdet_bias(ky, count) - wishart_logdet_bias(kx + ky, count))
    if bias_correction == "wishart":
        _check_wishart(int((kx + ky).max()) if kx.numel() else 0, count)
        value = value - bias
    # I(X; c) = 0 exactly; the log-dets above leave rounding of a few ulps there.
    value = torch.where(constant_side, torch.zeros_like(value), value) / unit
    if not details:
        return value
    stderr = (canonical_correlations(corr, dx).square().sum(-1) / count.to(torch.float64)).sqrt()
    stderr = torch.where(torch.isfinite(value), stderr, torch.full_like(stderr, math.nan))
    return value, _diagnostics(corr, count, dim, bias, unit, bias_correction, shrinkage, "the mutual information",
                               stderr)


def entropy(x, *, bias_correction="none", shrinkage=0.0, base=None, backend=None, details=False, seed=0):
    """Gaussian differential entropy of ``x [..., N, d]`` per leading batch cell.

    Returns a float64 tensor of the batch shape, in nats unless ``base`` is given (``base=2``:
    bits), and :class:`GaussianDiagnostics` when ``details``. A constant column makes it ``-inf``
    (a degenerate distribution), as does any singular covariance without ``shrinkage``. The
    estimate is deterministic: ``seed`` is accepted for the common signature and unused.
    """
    x = as_samples(x, "x")
    count, _, comoment = moments(x, backend)
    return entropy_from_moments(count, comoment, bias_correction=bias_correction, shrinkage=shrinkage, base=base,
                                details=details)


def mutual_information(x, y, *, bias_correction="none", shrinkage=0.0, pca=None, base=None, backend=None,
                       details=False, seed=0):
    """Gaussian mutual information between ``x [..., N, dx]`` and ``y [..., N, dy]`` per batch cell.

    Returns a float64 tensor of the batch shape, in nats unless ``base`` is given (``base=2``:
    bits); see :func:`mutual_information_from_moments` for the options, ``details`` and the
    value at singular or constant cells. Deterministic: ``seed`` is accepted and unused.
    """
    x = as_samples(x, "x")
    y = as_samples(y, "y")
    check_paired(x, y)
    dtype = torch.promote_types(x.dtype, y.dtype)
    z = torch.cat([x.to(dtype), y.to(dtype)], dim=-1)
    count, _, comoment = moments(z, backend)
    return mutual_information_from_moments(count, comoment, x.shape[-1], bias_correction=bias_correction,
                                           shrinkage=shrinkage, pca=pca, base=base, details=details)


def mutual_information_from_subspace_moments(count, comoment, dx, *, pca=None, **options):
    """As :func:`mutual_information_from_moments`, for a comoment of coordinates already standardised
    and rotated to principal directions (IE's subspace state): ``pca=k`` keeps the top ``k`` of them by
    variance without standardising again."""
    if pca:
        comoment, dx = principal_subspace(comoment, dx, pca)
    return mutual_information_from_moments(count, comoment, dx, **options)


def _ie_notes(options, input_ids, macro, micro, macro_bias, micro_bias, unit) -> list[str]:
    """IE notes of the Gaussian estimate: why cells are infinite, a too-wide ``pca``, the Wishart bias."""
    notes = []
    if not (bool(torch.isfinite(macro).all()) and bool(torch.isfinite(micro).all())):
        notes.append("the Gaussian MI is ill-posed where it is infinite (a singular covariance: fewer distinct states "
                     "than dimensions); lower pca or add shrinkage.")
    dims = 2 * options["pca"] if options.get("pca") else None
    distinct = [int(torch.unique(input_ids[:, : t + 1], dim=0).shape[0]) for t in range(input_ids.shape[1])]
    if dims is not None and min(distinct) <= dims:
        notes.append(f"macro: position {distinct.index(min(distinct))} has {min(distinct)} distinct prefixes, not more "
                     f"than the {dims} joint dimensions: its covariance is singular.")
    if bool(torch.isfinite(macro_bias).any()):
        worst = max(float(macro_bias.abs().max()), float(micro_bias.abs().max()))
        done = "subtracted" if options.get("bias_correction") == "wishart" else "not subtracted"
        notes.append(f"expected plug-in bias (Wishart) up to {worst:.3g} {unit} at N={input_ids.shape[0]}; {done}.")
    return notes


def _subspace_note(options, rank) -> str:
    if options.get("pca"):
        return f"Gaussian MI of the top-{options['pca']} principal components"
    return (f"Gaussian MI of the whole rank-{rank} subspace (a lower bound on the full-width Gaussian MI by the "
            "data-processing inequality)")


register(Estimator(
    name="gaussian",
    summary="Gaussian log-det entropy and MI (Cover & Thomas Thm 8.4.1; Wishart bias: Misra et al. 2005)",
    kind="moment", mutual_information=mutual_information, entropy=entropy,
    mi_from_moments=mutual_information_from_moments,
    mi_from_subspace_moments=mutual_information_from_subspace_moments, uncertainty="own", ie=True,
    subspace_note=_subspace_note, ie_min_rank=lambda options: options.get("pca") or 0, ie_notes=_ie_notes,
    # Full-width log-dets of hidden states (d ~ 10^3, low rank) are singular at any practical N:
    # IE takes the top 8 principal components per side and subtracts the Wishart bias.
    ie_defaults={"pca": 8, "bias_correction": "wishart"}, check_options=check_options))
