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

Inner estimator ``"ksg"``: the projections of every slice are drawn as one batched matmul,
``[..., N, d] @ [S, d, k] -> [..., S, N, k]``, and KSG (:mod:`.knn`) runs on all slices and
cells in one call (the KD-tree path takes over for ``2k <= 4`` and large N).

Max-sliced with the KSG inner estimator has no closed form and KSG (a count of neighbours) has
no gradient, so the slices are found by gradient ascent on a smooth surrogate, the
matrix-based Rényi MI of order 2 on minibatches (:mod:`.renyi`; with unit-trace Gram matrices
:math:`A`, :math:`S_2(A) = -\log \|A\|_F^2`, so
:math:`I_2 = \log\|A_x \circ A_y\|_F^2 / \mathrm{tr}(A_x \circ A_y)^2 - \log\|A_x\|_F^2 - \log\|A_y\|_F^2`,
differentiable in the slices, RBF kernel with Scott's bandwidth on standardised projections).
Slices are kept orthonormal by a QR retraction, several random restarts run as one batch, the
best restart per cell is chosen by KSG on the training half, and the value reported is KSG at
that slice on the held-out half, so the selection does not inflate it. The result is a lower
bound on the max-sliced MI up to KSG's own error: the ascent may miss the global maximum.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .._validation import (as_samples, check_choice, check_int, check_paired, check_positive_float, check_probability,
                           check_seed, constant_cells, log_base)
from . import gaussian, knn, renyi
from .registry import Details, Estimator, register

INNER_ESTIMATORS = ("gaussian", "ksg")


@dataclass
class SlicedDetails(Details):
    """``stderr``: the Monte-Carlo standard error of the mean over ``n_slices`` slices (float64
    of the batch shape, the value's unit; NaN with one slice). It is the approximation's error
    at fixed data, not the sampling error (``return_stderr`` adds the jackknife's)."""

    stderr: torch.Tensor
    k: int
    n_slices: int


@dataclass
class MaxSlicedDetails(Details):
    """The best slices found. ``inner="gaussian"``: ``canonical_correlations [..., k]`` (the
    closed form's top-k); ``inner="ksg"``: ``x_slice [..., dx, k]``, ``y_slice [..., dy, k]``
    (NaN for a constant cell) and ``train_value`` (the ascent's best KSG value on the training
    rows, the value's unit). No standard error of its own."""

    canonical_correlations: torch.Tensor | None = None
    x_slice: torch.Tensor | None = None
    y_slice: torch.Tensor | None = None
    train_value: torch.Tensor | None = None
    stderr: None = None


def random_stiefel(dim: int, k: int, n_slices: int, generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """``n_slices`` uniform draws of ``dim x k`` matrices with orthonormal columns (QR of a Gaussian, sign-fixed)."""
    gauss = torch.randn(n_slices, dim, k, generator=generator, dtype=dtype)
    q, r = torch.linalg.qr(gauss)
    return q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)


def check_options(k=1, n_slices=128, inner="gaussian", seed=0, width=None) -> None:
    """The options' values before any data: ValueError/TypeError naming the option (``width``, when
    known up front as in IE: the width of each side, which bounds ``k``)."""
    check_int(k, "k", minimum=1, maximum=width)
    check_int(n_slices, "n_slices", minimum=1)
    check_choice(inner, "inner", INNER_ESTIMATORS)
    check_seed(seed)


def _check(k, n_slices, inner, dx, dy, seed):
    check_options(k, n_slices, inner, seed)
    if k > min(dx, dy):
        raise ValueError(f"k must be at most min(dx, dy) = {min(dx, dy)}, got {k}")


def _joint_comoment(x, y, backend):
    x = as_samples(x, "x")
    y = as_samples(y, "y")
    check_paired(x, y)
    dtype = torch.promote_types(x.dtype, y.dtype)
    count, _, comoment = gaussian.moments(torch.cat([x.to(dtype), y.to(dtype)], dim=-1), backend)
    return count, comoment, x.shape[-1], y.shape[-1]


def mutual_information_from_moments(count, comoment, dx: int, *, k: int = 1, n_slices: int = 128, seed: int = 0,
                                    base=None, details: bool = False):
    """k-sliced MI with the Gaussian inner estimator from the joint comoment of ``[x, y]`` (first ``dx``
    columns x), per batch cell, in nats unless ``base`` (the KSG inner estimator needs the samples)."""
    dy = comoment.shape[-1] - dx
    _check(k, n_slices, "gaussian", dx, dy, seed)
    unit = log_base(base)
    generator = torch.Generator().manual_seed(seed)
    a = random_stiefel(dx, k, n_slices, generator).to(comoment.device)
    b = random_stiefel(dy, k, n_slices, generator).to(comoment.device)
    basis = comoment.new_zeros(n_slices, dx + dy, 2 * k)
    basis[:, :dx, :k] = a
    basis[:, dx:, k:] = b
    # M @ [all slices side by side], then each slice's B^T: a broadcast ``B^T @ M[..., None] @ B`` would
    # materialise M once per slice (5 GB for 8 cells of width 1152 and 64 slices).
    dim = dx + dy
    right = (comoment @ basis.permute(1, 0, 2).reshape(dim, -1)).reshape(*comoment.shape[:-1], n_slices, 2 * k)
    projected = torch.einsum("sdk,...dsl->...skl", basis, right)  # [..., slices, 2k, 2k]
    per_slice = gaussian.mutual_information_from_moments(count.unsqueeze(-1).expand(projected.shape[:-2]),
                                                         projected, k)
    value = per_slice.mean(-1) / unit
    if not details:
        return value
    spread = per_slice.std(-1) / n_slices**0.5 if n_slices > 1 else torch.full_like(value, math.nan)
    return value, SlicedDetails(stderr=spread / unit, k=k, n_slices=n_slices)


def _project(z: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """``z [..., N, d]`` through every slice ``basis [..., S, d, k]`` at once: ``[..., S, N, k]``."""
    return z.unsqueeze(-3) @ basis.to(z.dtype)


def mutual_information(x, y, *, k: int = 1, n_slices: int = 128, inner: str = "gaussian", seed: int = 0,
                       base=None, backend=None, details: bool = False, inner_options: dict | None = None):
    """k-sliced MI of ``x [..., N, dx]`` and ``y [..., N, dy]``: the mean over ``n_slices`` random slices.

    Returns a float64 tensor of the batch shape, in nats unless ``base`` is given.

    ``inner`` is ``"gaussian"`` (from the comoment) or ``"ksg"`` (``inner_options`` go to
    :func:`.knn.mutual_information`, e.g. ``{"k": 5}``). With ``details=True`` also returns the
    Monte-Carlo standard error of that mean over slices (:class:`SlicedDetails`).
    """
    if inner != "ksg":
        if inner_options:
            raise ValueError(f"inner_options apply to inner='ksg' only, got {inner_options!r} with inner={inner!r}")
        count, comoment, dx, _ = _joint_comoment(x, y, backend)
        check_choice(inner, "inner", INNER_ESTIMATORS)
        return mutual_information_from_moments(count, comoment, dx, k=k, n_slices=n_slices, seed=seed, base=base,
                                               details=details)
    x, y = as_samples(x, "x"), as_samples(y, "y")
    check_paired(x, y)
    _check(k, n_slices, inner, x.shape[-1], y.shape[-1], seed)
    unit = log_base(base)
    generator = torch.Generator().manual_seed(seed)
    a = random_stiefel(x.shape[-1], k, n_slices, generator).to(x.device)
    b = random_stiefel(y.shape[-1], k, n_slices, generator).to(x.device)
    per_slice = knn.mutual_information(_project(x, a), _project(y, b), backend=backend, **(inner_options or {}))
    value = per_slice.mean(-1) / unit
    if not details:
        return value
    spread = per_slice.std(-1) / n_slices**0.5 if n_slices > 1 else torch.full_like(value, math.nan)
    return value, SlicedDetails(stderr=spread / unit, k=k, n_slices=n_slices)


def _renyi2_mi(px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """Order-2 matrix-based Rényi MI of projections ``[..., m, k]``: the smooth ascent objective."""
    ax, _ = renyi.gram_matrix(px, bandwidth="scott")
    ay, _ = renyi.gram_matrix(py, bandwidth="scott")
    joint = renyi.joint_matrix(ax, ay)
    frobenius2 = lambda a: a.square().sum((-2, -1))  # noqa: E731
    return frobenius2(joint).log() - frobenius2(ax).log() - frobenius2(ay).log()


def _check_ascent(steps, lr, restarts, batch_size, holdout) -> None:
    for name, value in (("steps", steps), ("restarts", restarts), ("batch_size", batch_size)):
        check_int(value, name, minimum=1)
    check_positive_float(lr, "lr")
    check_probability(holdout, "holdout", low_open=True, high_open=True)


def _ascend_slices(x, y, k, steps, lr, restarts, batch_size, generator):
    """Gradient ascent of the Rényi-2 surrogate over orthonormal slices, ``restarts`` per cell at once.

    ``x [B, n, dx]``, ``y [B, n, dy]`` -> slices ``[B, R, dx, k]``, ``[B, R, dy, k]``.
    """
    batch, n = x.shape[:2]
    raw_a = random_stiefel(x.shape[-1], k, batch * restarts, generator).reshape(batch, restarts, -1, k)
    raw_b = random_stiefel(y.shape[-1], k, batch * restarts, generator).reshape(batch, restarts, -1, k)
    raw_a, raw_b = raw_a.to(x.device).requires_grad_(), raw_b.to(x.device).requires_grad_()
    optimiser = torch.optim.Adam([raw_a, raw_b], lr=lr)
    m = min(batch_size, n)
    for _ in range(steps):
        rows = torch.randperm(n, generator=generator)[:m].to(x.device)
        a, b = torch.linalg.qr(raw_a)[0], torch.linalg.qr(raw_b)[0]
        objective = _renyi2_mi(_project(x[:, rows], a), _project(y[:, rows], b))
        optimiser.zero_grad(set_to_none=True)
        (-objective.sum()).backward()
        optimiser.step()
    with torch.no_grad():
        return torch.linalg.qr(raw_a)[0], torch.linalg.qr(raw_b)[0]


def max_sliced_mutual_information(x, y, *, k: int = 1, inner: str = "gaussian", base=None, backend=None,
                                  steps: int = 200, lr: float = 0.05, restarts: int = 4, batch_size: int = 256,
                                  holdout: float = 0.5, seed: int = 0, inner_options: dict | None = None,
                                  details: bool = False):
    """Max-sliced MI: the best k-dimensional slices of each side; float64 of the batch shape, in nats unless ``base``.

    A singular marginal (a duplicated column) is measured on its support, and a constant side gives 0.

    ``inner="gaussian"``: the closed form over canonical correlations (the ascent options are
    unused; ``details=True`` adds :class:`MaxSlicedDetails` with the top-k canonical correlations). ``inner="ksg"``: gradient ascent on training rows (a ``1 - holdout`` fraction),
    then KSG on the held-out rows at the best slice (see the module docstring); ``details=True``
    also returns ``{"x_slice", "y_slice", "train_value"}`` per cell.
    """
    unit = log_base(base)
    if inner != "ksg":
        count, comoment, dx, dy = _joint_comoment(x, y, backend)
        _check(k, 1, inner, dx, dy, seed)
        rho = gaussian.canonical_correlations(comoment, dx)[..., :k]
        value = (-0.5 * torch.log1p(-rho.square())).sum(-1) / unit
        return (value, MaxSlicedDetails(canonical_correlations=rho)) if details else value
    x, y = as_samples(x, "x"), as_samples(y, "y")
    check_paired(x, y)
    _check(k, 1, inner, x.shape[-1], y.shape[-1], seed)
    _check_ascent(steps, lr, restarts, batch_size, holdout)
    lead, n = x.shape[:-2], x.shape[-2]
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator).to(x.device)
    n_hold = int(round(holdout * n))
    held, train = order[:n_hold], order[n_hold:]
    x3 = x.reshape(-1, n, x.shape[-1]).double()
    y3 = y.reshape(-1, n, y.shape[-1]).double()
    # A constant side has I = 0 on every slice (and no bandwidth for the surrogate): 0, NaN slices, no ascent.
    live = ~(constant_cells(x3) | constant_cells(y3))
    value = torch.zeros(x3.shape[0], dtype=torch.float64, device=x.device)
    train_value = torch.zeros_like(value)
    x_slice = torch.full((x3.shape[0], x3.shape[-1], k), math.nan, dtype=torch.float64, device=x.device)
    y_slice = torch.full((x3.shape[0], y3.shape[-1], k), math.nan, dtype=torch.float64, device=x.device)
    if bool(live.any()):
        xl, yl = (x3, y3) if bool(live.all()) else (x3[live], y3[live])
        a, b = _ascend_slices(xl[:, train], yl[:, train], k, steps, lr, restarts, batch_size, generator)
        ksg = lambda rows, sa, sb: knn.mutual_information(_project(xl[:, rows], sa), _project(yl[:, rows], sb),  # noqa: E731
                                                          backend=backend, **(inner_options or {}))
        train_values = ksg(train, a, b)  # [B, R]
        best = train_values.argmax(-1)
        pick = lambda s: s[torch.arange(s.shape[0]), best].unsqueeze(1)  # noqa: E731
        value[live] = ksg(held, pick(a), pick(b)).squeeze(-1)
        train_value[live] = train_values.amax(-1)
        x_slice[live], y_slice[live] = pick(a).squeeze(1), pick(b).squeeze(1)
    result = (value / unit).reshape(lead)
    if not details:
        return result
    return result, MaxSlicedDetails(x_slice=x_slice.reshape(*lead, -1, k), y_slice=y_slice.reshape(*lead, -1, k),
                                    train_value=(train_value / unit).reshape(lead))


register(Estimator(
    name="sliced",
    summary="k-sliced MI: mean MI of random k-dim projections (Goldfeld & Greenewald 2021; Goldfeld et al. 2022)",
    kind="moment", mutual_information=mutual_information, mi_from_moments=mutual_information_from_moments,
    uncertainty="jackknife+own", ie=True,
    subspace_note=lambda options, rank: f"sliced MI with slices drawn inside the rank-{rank} subspace",
    ie_min_rank=lambda options: options.get("k", 1),
    # IE: 4-dimensional slices see more of a block's map than 1-dimensional ones; 64 slices keep
    # the Monte-Carlo error below the sampling error at the demo's N (the agreement study).
    ie_defaults={"k": 4, "n_slices": 64, "seed": 0}, check_options=check_options))
register(Estimator(
    name="max_sliced",
    summary="Max-sliced MI: the best k-dim projections (Tsur, Goldfeld & Greenewald 2023)",
    kind="sample", mutual_information=max_sliced_mutual_information, uncertainty="jackknife"))
