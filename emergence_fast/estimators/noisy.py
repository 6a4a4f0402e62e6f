r"""Noisy-channel mutual information: well posed for deterministic maps.

For a deterministic network the mutual information between continuous layer states is
infinite or equals the entropy of the (discrete) input (Saxe et al., ICLR 2018; Goldfeld et al.,
"Estimating Information Flow in Deep Neural Networks", ICML 2019). Goldfeld et al. make it well
posed by adding isotropic Gaussian noise to the states. Here both sides get their own noise:

.. math::

    I_\sigma(X; Y) = I\big(X + \sigma_x Z_x;\; Y + \sigma_y Z_y\big),
    \qquad Z_x, Z_y \sim \mathcal N(0, I) \text{ independent},

under the empirical distribution of the :math:`N` paired rows (atom :math:`i` at
:math:`(x_i, y_i)` with probability :math:`p_i`; repeated rows may be passed once with a
count in ``weights``). With :math:`T_x = X + \sigma_x Z_x`, :math:`T_y`, :math:`T = (T_x, T_y)`
all conditionally independent given the atom,
:math:`I_\sigma = I(A; T_x) + I(A; T_y) - I(A; T)` and each term is a Gaussian-mixture entropy
minus the noise entropy (Goldfeld et al. 2019, Sec. 4, "sample propagation"):

.. math::

    I(A; T_c) = h\Big(\sum_j p_j\, \mathcal N(\mu^c_j, I)\Big) - h(\mathcal N(0, I))
              = \mathbb E_{i \sim p,\, z}\Big[-\log \sum_j p_j
                e^{-\frac12 \lVert \mu^c_i + z - \mu^c_j \rVert^2} - \tfrac12 \lVert z \rVert^2\Big],

in units where the noise is standard (:math:`\mu^x_i = (x_i - \bar x)/\sigma_x`). The expectation
is taken by Monte Carlo, ``n_draws`` draws of :math:`z` per atom, every atom enumerated with its
weight; the realised :math:`\tfrac12\lVert z\rVert^2` is a control variate that removes the
:math:`\chi^2` noise exactly, and in the combination it cancels altogether. The inner sum is one
fused kernel, :func:`emergence_fast.ops.gaussian_lse.gaussian_lse` (pairwise squared distances and a
log-sum-exp for the x, y and joint mixtures in one pass).

Properties (each checked in ``tests/estimators/test_noisy.py``): finite for any map; at most
:math:`\min(I(A;T_x), I(A;T_y)) \le H(p)` (data processing: :math:`T_x - A - T_y`), and every
per-draw term of :math:`I(A; T_c)` is at most :math:`-\log p_i`, so the one-sided values never
exceed the plug-in entropy; :math:`\sigma \to 0` gives the discrete MI of the distinct rows
(:math:`H(p)` for an injective pair), :math:`\sigma \to \infty` gives 0; it decreases as
:math:`\sigma` grows or as atoms merge.

Scale. ``sigma`` is relative: :math:`\sigma_x = \sigma\, r_x` with
:math:`r_x = (\sum_i p_i \lVert x_i - \bar x\rVert^2)^{1/2}` the cell's RMS radius. The channel
depends on the states only through :math:`\lVert \mu_i - \mu_j\rVert / \sigma`, so this makes
the value invariant to translating, rotating or rescaling a cell, and comparable across layers
of a residual stream whose norm grows with depth. States closer than about :math:`\sigma_x`
merge; ``sigma`` is the resolution: smaller values resolve finer distinctions (towards the
discrete MI), larger values keep only the coarse structure (towards 0).

Error. ``details`` carries the standard error: the Monte-Carlo variance from the spread of
the draws, a bound on the rounding of the kernel's sums in the input dtype (float32: about
``2.4e-7 x dim`` nats), plus the sampling variance of the plug-in by the delta method, with influence
function :math:`\varphi(m) = s_m - \rho_m - I + 1` (:math:`s_m` the atom's mean term,
:math:`\rho_m = \sum_c \pm \sum_i p_i \mathbb E[K^c_{im}/g^c_i]` its responsibility mass, one more
pass of the same kernel with the roles of atoms and draws swapped) and
:math:`\mathrm{Var} \approx \sum_m p_m \varphi(m)^2 / N`, :math:`N = \sum` weights. The estimand
is the noisy MI under the empirical distribution of the rows: exact for a discrete variable
whose rows are the data (the prefixes of Information Emergence). As an estimate of a
continuous population's noisy MI it is biased: each plug-in mixture entropy downward (concavity),
the MI upward, towards :math:`\log N` when the sample is sparse at scale :math:`\sigma`; the
bias shrinks with :math:`N` at a rate that worsens with dimension relative to :math:`\sigma`
(Goldfeld et al. 2020, "Convergence of smoothed empirical measures"), and
:func:`mutual_information` warns when it dominates.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from ..ops.gaussian_lse import gaussian_lse
from .._validation import as_samples, check_int, check_paired, check_positive_float, check_seed, log_base
from .registry import Details, Estimator, register

DEFAULT_SIGMA = 0.1  # chosen by the agreement study: README, benchmarks/ie_agreement.py
DEFAULT_DRAWS = 2
_SEED_STRIDE = 0x9E3779B1  # a cell's draws depend on (seed, cell) only, not on what else is in the batch


@dataclass
class NoisyDetails(Details):
    """Per batch cell, float64, in the unit of the value: ``stderr`` (Monte-Carlo and sampling,
    combined), ``mc_stderr`` (Monte-Carlo alone), the one-sided ``mi_x`` = I(A; T_x) and
    ``mi_y``; ``sigma_x``, ``sigma_y`` are the absolute noise scales used (the input's units);
    ``ceiling`` the discrete MI of the distinct rows, the limit as sigma -> 0."""

    stderr: torch.Tensor
    mc_stderr: torch.Tensor
    mi_x: torch.Tensor
    mi_y: torch.Tensor
    sigma_x: torch.Tensor
    sigma_y: torch.Tensor
    ceiling: torch.Tensor


MIN_SIGMA = 1e-9  # below this the noise is lost to float64 rounding of the scaled states
FLOAT64_BELOW_SIGMA = 1e-3  # float32 keeps about 7 digits: scaled states of 1/sigma plus unit noise need more


def check_options(sigma=DEFAULT_SIGMA, n_draws=DEFAULT_DRAWS, seed=0) -> None:
    """Refuse a bad ``sigma``, ``n_draws`` or ``seed`` with a ValueError naming it.

    The one place these options are checked: :func:`mutual_information` and Information Emergence
    (before its forward passes) both call it.
    """
    check_positive_float(sigma, "sigma")
    if sigma < MIN_SIGMA:
        raise ValueError(f"sigma must be at least {MIN_SIGMA:g} (the noise would be lost to float64 rounding of the "
                         f"states scaled by 1/sigma; the sigma -> 0 limit is the discrete MI), got {sigma!r}")
    check_int(n_draws, "n_draws", minimum=2)  # the Monte-Carlo error needs two draws per atom
    if not 0 <= check_seed(seed) < 2**63:  # the per-cell seeds are derived in int64
        raise ValueError(f"seed must be an integer in [0, 2**63), got {seed!r}")


def working_bytes(n_cells: int, n: int, dim: int, n_draws: int, itemsize: int = 4) -> int:
    """Peak temporaries of :func:`noisy_mi` on ``n_cells`` cells of ``n`` atoms and ``dim`` joint columns:
    the noise and the noisy queries (``n_draws n dim`` each), the scaled keys, and float64 per-draw terms."""
    return n_cells * ((2 * n_draws + 2) * n * dim * itemsize + n_draws * n * 96 + n * 64)


def _centred_scaled(x: torch.Tensor, p: torch.Tensor, sigma: float):
    """``(x - mean) / (sigma * r)`` per cell, with ``r`` the p-weighted RMS radius; also ``sigma * r``.

    The radius is taken of the states divided by their largest absolute deviation first, so
    squaring neither overflows nor underflows at any input scale the dtype can hold."""
    mean = (p.unsqueeze(-1) * x).sum(-2, keepdim=True)
    centred = x - mean
    peak = centred.abs().amax((-2, -1)).clamp_min(torch.finfo(x.dtype).tiny)  # [C]
    unit = centred / peak[:, None, None]
    relative = (p * unit.square().sum(-1)).sum(-1).sqrt()  # the radius in units of peak, in (0, sqrt(dim)]
    scaled = unit / (sigma * relative.clamp_min(torch.finfo(x.dtype).tiny))[:, None, None]
    return scaled, sigma * relative.double() * peak.double()


def _constant(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Cells whose weighted rows are all equal to the first weighted row: one distinct state."""
    first = x.gather(1, (p > 0).to(torch.int8).argmax(-1)[:, None, None].expand(-1, 1, x.shape[-1]))
    return ((x == first).all(-1) | (p == 0)).all(-1)


def noisy_mi(x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, sigma: float, n_draws: int, seed: int,
             cells: torch.Tensor | None = None, backend=None):
    """The estimator on ``x [C, n, dx]``, ``y [C, n, dy]`` (float32 or float64), ``weights [C, n]`` counts.

    Returns float64 ``(value, stderr, mc_stderr, mi_x, mi_y, sigma_x, sigma_y)`` in nats, ``[C]`` each.
    A cell with one distinct state on either side has I = 0 exactly and is returned as 0 with
    zero error. ``cells [C]`` int64: the cells' ids for the noise seeds (default ``0..C-1``), so
    a cell gets the same draws whichever batch it is computed in.
    """
    if sigma < FLOAT64_BELOW_SIGMA:
        x, y = x.double(), y.double()
    n_cells, n, dx = x.shape
    device, dtype = x.device, x.dtype
    cells = torch.arange(n_cells) if cells is None else cells.cpu()
    total = weights.to(torch.float64).sum(-1)
    p = (weights.to(torch.float64) / total.unsqueeze(-1)).to(dtype)
    constant = _constant(x, p) | _constant(y, p)
    u, sigma_x = _centred_scaled(x, p, sigma)
    v, sigma_y = _centred_scaled(y, p, sigma)
    keys = torch.cat([u, v], -1)  # [C, n, D]: unit noise in every column
    dim = keys.shape[-1]
    noise = torch.empty(n_cells, n_draws, n, dim, dtype=dtype, device=device)
    for c in range(n_cells):
        generator = torch.Generator(device=device).manual_seed((seed * _SEED_STRIDE + int(cells[c])) % (1 << 63))
        noise[c] = torch.randn(n_draws, n, dim, generator=generator, dtype=dtype, device=device)
    queries = (keys.unsqueeze(1) + noise).reshape(n_cells, n_draws * n, dim)
    log_p = p.log().unsqueeze(-1).expand(-1, -1, 3).contiguous()
    lse = gaussian_lse(queries, keys, log_p, dx, backend=backend)  # [C, K n, 3]
    half_sq = 0.5 * torch.stack([noise[..., :dx].square().sum(-1), noise[..., dx:].square().sum(-1)], -1)
    half_sq = half_sq.reshape(n_cells, n_draws * n, 2).double()
    lse64 = lse.double()
    terms = torch.stack([-lse64[..., 0] - half_sq[..., 0], -lse64[..., 1] - half_sq[..., 1]], -1)  # I(A;T_x), I(A;T_y)
    combined = lse64[..., 2] - lse64[..., 0] - lse64[..., 1]  # the chi-square terms cancel here exactly
    p64 = p.double()

    def per_atom(t):  # [C, K n] -> [C, n, K]
        return t.reshape(n_cells, n_draws, n).transpose(1, 2)

    atom_mean = per_atom(combined).mean(-1)  # [C, n]
    value = (p64 * atom_mean).sum(-1)
    one_sided = [(p64 * per_atom(terms[..., c]).mean(-1)).sum(-1) for c in range(2)]
    mc_var = (p64.square() * per_atom(combined).var(-1) / n_draws).sum(-1)
    # Responsibility mass of every atom in each mixture: the same kernel with atoms and draws swapped.
    log_r = (p64.log() - math.log(n_draws)).repeat(1, n_draws).unsqueeze(-1) - lse64  # [C, K n, 3]
    rho = gaussian_lse(keys, queries, log_r.to(dtype).contiguous(), dx, backend=backend).double().exp()  # [C, n, 3]
    influence = atom_mean - (rho[..., 0] + rho[..., 1] - rho[..., 2]) - value.unsqueeze(-1) + 1
    data_var = (p64 * influence.square()).sum(-1) / total
    # Rounding: each log-sum-exp is about -dim/2 and carries a relative error of a few ulps of the input dtype
    # (float32: about 3e-4 nats at dim 1152, measured against float64); the MI is a difference of three of them.
    rounding = 4 * torch.finfo(dtype).eps * dim / 2
    stderr = (mc_var + data_var + rounding**2).sqrt()
    out = [value, stderr, mc_var.sqrt(), *one_sided]
    out = [torch.where(constant, torch.zeros_like(t), t) for t in out]
    return (*out, sigma_x, sigma_y)


def _discrete_mi(x: torch.Tensor, y: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """H(x) + H(y) - H(x, y) of the distinct rows per cell, in nats: the sigma -> 0 limit."""
    out = torch.empty(x.shape[0], dtype=torch.float64)
    for c in range(x.shape[0]):
        entropies = []
        for rows in (x[c], y[c], torch.cat([x[c], y[c]], -1)):
            _, inverse = torch.unique(rows, dim=0, return_inverse=True)
            mass = torch.zeros(int(inverse.max()) + 1, dtype=torch.float64).index_add_(0, inverse.cpu(), p[c].cpu())
            mass = mass[mass > 0]
            entropies.append(float(-(mass * mass.log()).sum()))
        out[c] = entropies[0] + entropies[1] - entropies[2]
    return out


def mutual_information(x, y, *, sigma: float = DEFAULT_SIGMA, weights=None, n_draws: int = DEFAULT_DRAWS,
                       seed: int = 0, base=None, backend=None, details: bool = False):
    """Noisy-channel MI between ``x [..., N, dx]`` and ``y [..., N, dy]`` per batch cell (module docstring).

    The estimand is the noisy MI under the *empirical* distribution of the rows. That is the
    quantity of interest when the rows are draws of a discrete variable (prefixes and tokens in
    Information Emergence, whose exact entropy is computed from the same rows). For continuous
    data it estimates the population's noisy MI only when the sample is dense at scale sigma,
    roughly ``N >> (1 / sigma)^d``: with fewer rows every row is resolved as its own atom and the
    value tends to ``log N`` whatever the dependence (an upward bias the standard error does not
    cover). ``details.ceiling`` (the discrete MI of the distinct rows, the sigma -> 0 limit) shows
    how close a value is to that; a RuntimeWarning is raised when every row is distinct and the
    value exceeds half of it. Compare with :func:`emergence_fast.permutation_null` on such data.

    Parameters
    ----------
    sigma : float >= 1e-9
        Noise scale relative to each cell's RMS radius, per side (default 0.1). Below 1e-3 the
        computation runs in float64.
    weights : tensor broadcastable to ``[..., N]``, optional
        Counts of each row (default 1 each): pass repeated rows once with their count. Their
        sum is the sample size ``N`` of the sampling error, so it must be at least 2.
    n_draws : int >= 2
        Monte-Carlo noise draws per row (default 2).
    seed : int in [0, 2**63)
        Seeds the draws; a cell's draws depend on ``seed``, its position in the batch, the
        dtype and the device only.

    Returns
    -------
    float64 tensor of the batch shape, in nats unless ``base`` (2 for bits); with ``details``
    also a :class:`NoisyDetails`. float16/bfloat16 inputs are computed in float32. A cell with
    one distinct state (among rows of positive weight) on either side has I = 0 exactly and
    gets 0, with zero errors and a zero noise scale on that side.

    Raises
    ------
    ValueError
        ``sigma`` not finite and >= 1e-9, ``n_draws`` < 2, ``seed`` out of range, or bad
        ``weights`` (negative, non-finite, not broadcastable, summing to less than 2).
    """
    check_options(sigma, n_draws, seed)
    unit = log_base(base)
    x, y = as_samples(x, "x"), as_samples(y, "y")
    check_paired(x, y)
    dtype = torch.promote_types(torch.promote_types(x.dtype, y.dtype), torch.float32)
    lead, n = x.shape[:-2], x.shape[-2]
    x3 = x.to(dtype).reshape(-1, n, x.shape[-1])
    y3 = y.to(dtype).reshape(-1, n, y.shape[-1])
    if weights is None:
        w = torch.ones(x3.shape[:2], dtype=torch.float64, device=x.device)
    else:
        try:
            w = torch.as_tensor(weights, dtype=torch.float64, device=x.device).expand(*lead, n).reshape(-1, n)
        except (RuntimeError, TypeError, ValueError):
            shape = tuple(weights.shape) if isinstance(weights, torch.Tensor) else type(weights).__name__
            raise ValueError(f"weights must be broadcastable to [..., N] = {(*lead, n)}, got {shape}") from None
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
            raise ValueError("weights must be finite, non-negative counts")
        if bool((w.sum(-1) < 2).any()):
            raise ValueError(f"weights are counts whose sum is the sample size N, which must be at least 2 in every "
                             f"cell; got a sum of {float(w.sum(-1).min()):g} (pass counts, not probabilities)")
    p = w / w.sum(-1, keepdim=True)
    value, stderr, mc, mi_x, mi_y, sx, sy = noisy_mi(x3, y3, w, float(sigma), n_draws, seed, backend=backend)
    ceiling = _discrete_mi(x3, y3, p)
    every_row_distinct = ceiling >= torch.log((w > 0).sum(-1).double().cpu()) - 1e-9
    if bool((every_row_distinct & (value.cpu() > 0.5 * ceiling)).any()):
        warnings.warn("noisy MI: every row is distinct and the estimate is above half of log(N), its sigma -> 0 "
                      "limit: the sample is too sparse at this sigma for the value to estimate a population MI (it "
                      "tends to log N whatever the dependence); raise sigma or N, or compare with permutation_null",
                      RuntimeWarning, stacklevel=2)
    value = value.reshape(lead) / unit
    if not details:
        return value
    shaped = [t.reshape(lead) / unit for t in (stderr, mc, mi_x, mi_y, ceiling)]
    return value, NoisyDetails(*shaped[:4], sx.reshape(lead), sy.reshape(lead), shaped[4])


def weighted_mi(x, y, weights, options, *, cells, backend=None):
    """IE's atoms path (:class:`.registry.Estimator`): ``(value, stderr)`` in nats per cell of :func:`noisy_mi`."""
    return noisy_mi(x, y, weights, options["sigma"], options["n_draws"], options["seed"], cells=cells,
                    backend=backend)[:2]


def _ie_note(options) -> str:
    return (f"estimate: noisy-channel MI I(h_l + s Z; h_(l+1) + s Z') (Goldfeld et al. 2019) with s = "
            f"{options['sigma']} x each cell's RMS radius, over the distinct prefixes (macro) or tokens (micro) "
            "with their counts: finite for a deterministic network, at most the exact ceiling, and lower where the "
            "block merges inputs or crowds them closer than s; sigma is the resolution.")


register(Estimator(
    name="noisy",
    summary="Noisy-channel MI: I(X + sigma Z; Y + sigma Z') of the empirical atoms (module docstring)",
    kind="sample", mutual_information=mutual_information, uncertainty="own", ie=True, ie_note=_ie_note,
    weighted_mi=weighted_mi,
    weighted_working_bytes=lambda n_atoms, dim, options: working_bytes(1, n_atoms, dim, options["n_draws"]),
    ie_defaults={"sigma": DEFAULT_SIGMA, "n_draws": DEFAULT_DRAWS, "seed": 0}, check_options=check_options))
