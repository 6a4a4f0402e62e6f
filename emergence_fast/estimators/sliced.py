r"""Sliced and max-sliced mutual information.

k-sliced MI (Goldfeld & Greenewald 2021, "Sliced mutual information: a scalable measure of
statistical dependence", NeurIPS; k-sliced: Goldfeld, Greenewald, Nuradha, Reeves 2022):

.. math::

    \mathrm{SI}_k(X;Y) = \mathbb E_{A, B}\big[ I(A^\top X; B^\top Y) \big],

with :math:`A \in \mathbb R^{d_x \times k}`, :math:`B \in \mathbb R^{d_y \times k}` drawn uniformly
from the Stiefel manifolds (orthonormal columns). It is well defined and estimable at rates
that do not degrade with :math:`d`, so it suits high-dimensional activations where
:math:`I(X;Y)` itself is ill-posed. Max-sliced MI replaces the expectation by a maximum over
:math:`A, B` (Tsur, Goldfeld, Greenewald 2023).

Inner estimator ``"gaussian"``: a Gaussian MI depends on the data only through the
covariance, so each slice's value is computed exactly from the projected comoment
:math:`P^\top M P` of one pass over the data: the slices cost :math:`O(d^2 k)` each, not
another pass. With that inner estimator max-sliced MI has a closed form: the maximum over
:math:`A, B` of the Gaussian MI of the projections is
:math:`-\tfrac12\sum_{i \le k}\log(1-\rho_i^2)` over the top-:math:`k` canonical
correlations (Hotelling 1936), so no gradient ascent is needed.
"""
from __future__ import annotations

import torch

from .._validation import as_samples, check_choice, check_paired, log_base
from . import gaussian

INNER_ESTIMATORS = ("gaussian",)


def random_stiefel(dim: int, k: int, n_slices: int, generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """``n_slices`` uniform draws of ``dim x k`` matrices with orthonormal columns (QR of a Gaussian, sign-fixed)."""
    gauss = torch.randn(n_slices, dim, k, generator=generator, dtype=dtype)
    q, r = torch.linalg.qr(gauss)
    return q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)


def _check(k, n_slices, inner, dx, dy):
    for name, value in (("k", k), ("n_slices", n_slices)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if k > min(dx, dy):
        raise ValueError(f"k must be at most min(dx, dy) = {min(dx, dy)}, got {k}")
    check_choice(inner, "inner", INNER_ESTIMATORS)


def _joint_comoment(x, y, backend):
    x = as_samples(x, "x")
    y = as_samples(y, "y")
    check_paired(x, y)
    dtype = torch.promote_types(x.dtype, y.dtype)
    count, _, comoment = gaussian.moments(torch.cat([x.to(dtype), y.to(dtype)], dim=-1), backend)
    return count, comoment, x.shape[-1], y.shape[-1]


def mutual_information_from_moments(count, comoment, dx: int, *, k: int = 1, n_slices: int = 128,
                                    inner: str = "gaussian", seed: int = 0, base=None, details: bool = False):
    """k-sliced MI from the joint comoment of ``[x, y]`` (first ``dx`` columns x), per batch cell."""
    dy = comoment.shape[-1] - dx
    _check(k, n_slices, inner, dx, dy)
    generator = torch.Generator().manual_seed(seed)
    a = random_stiefel(dx, k, n_slices, generator).to(comoment.device)
    b = random_stiefel(dy, k, n_slices, generator).to(comoment.device)
    basis = comoment.new_zeros(n_slices, dx + dy, 2 * k)
    basis[:, :dx, :k] = a
    basis[:, dx:, k:] = b
    projected = basis.transpose(-1, -2) @ comoment.unsqueeze(-3) @ basis  # [..., slices, 2k, 2k]
    per_slice = gaussian.mutual_information_from_moments(count.unsqueeze(-1).expand(projected.shape[:-2]),
                                                         projected, k)
    value = per_slice.mean(-1) / log_base(base)
    if not details:
        return value
    if n_slices == 1:
        return value, torch.full_like(value, float("nan"))
    return value, per_slice.std(-1) / n_slices**0.5 / log_base(base)


def mutual_information(x, y, *, k: int = 1, n_slices: int = 128, inner: str = "gaussian", seed: int = 0,
                       base=None, backend=None, details: bool = False):
    """k-sliced MI of ``x [..., N, dx]`` and ``y [..., N, dy]``: the mean over ``n_slices`` random slices.

    With ``details=True`` also returns the Monte-Carlo standard error of that mean.
    """
    count, comoment, dx, _ = _joint_comoment(x, y, backend)
    return mutual_information_from_moments(count, comoment, dx, k=k, n_slices=n_slices, inner=inner, seed=seed,
                                           base=base, details=details)


def max_sliced_mutual_information(x, y, *, k: int = 1, inner: str = "gaussian", base=None, backend=None):
    """Max-sliced MI: the best k-dimensional slices of each side; closed form for the Gaussian inner estimator."""
    count, comoment, dx, dy = _joint_comoment(x, y, backend)
    _check(k, 1, inner, dx, dy)
    rho = gaussian.canonical_correlations(comoment, dx)[..., :k]
    return (-0.5 * torch.log1p(-rho.square())).sum(-1) / log_base(base)
