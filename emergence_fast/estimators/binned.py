r"""Plug-in (histogram) entropy and mutual information with the Miller–Madow correction.

For a discrete variable with :math:`m` occupied cells and counts :math:`n_j` out of :math:`N`:

.. math::

    \hat H = -\sum_j \frac{n_j}{N}\log\frac{n_j}{N} + \frac{m-1}{2N}, \qquad
    \hat I(X;Y) = \hat H(X) + \hat H(Y) - \hat H(X,Y)

(Miller 1955, "Note on the bias of information estimates"; Paninski 2003, Neural Comput. 15,
section 3). Integer inputs (token ids, discrete codes) are used as they are; each row of
``d`` integers is one symbol. Float inputs are cut into ``bins`` equal-width bins per
dimension over that batch cell's range; that suits low-dimensional data only, since the
number of cells grows as ``bins ** d``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import _dispatch
from .._validation import as_samples, check_int, check_paired, log_base
from .registry import Details, Estimator, register


@dataclass
class BinnedDetails(Details):
    """Float64 tensors of the batch shape: ``occupied``, the number of distinct symbols seen
    (for MI a trailing dim of 3: x, y, joint), and ``correction``, the Miller–Madow term
    :math:`(m - 1) / 2N` included in the value (for MI the sum over x, y minus joint), in the
    value's unit. No standard error of its own (``stderr`` is None)."""

    occupied: torch.Tensor
    correction: torch.Tensor
    stderr: None = None


def _check_bins(bins) -> None:
    check_int(bins, "bins", minimum=1)


def discretise(x: torch.Tensor, bins: int) -> torch.Tensor:
    """Integer codes ``[..., N, d]``: integers pass through, floats get equal-width bins per cell and dim."""
    if not x.is_floating_point():
        return x.long()
    x = x.double()
    lo = x.amin(dim=-2, keepdim=True)
    width = (x.amax(dim=-2, keepdim=True) - lo) / bins
    scaled = torch.where(width > 0, (x - lo) / torch.where(width > 0, width, 1.0), torch.zeros_like(x))
    return scaled.floor().clamp_(0, bins - 1).long()


def _symbols(codes: torch.Tensor) -> torch.Tensor:
    """One id per distinct row of d codes, unique within each batch cell: ``[B, N]``."""
    batch, n, _ = codes.shape
    cell = torch.arange(batch, device=codes.device).repeat_interleave(n).unsqueeze(-1)
    rows = torch.cat([cell, codes.reshape(batch * n, -1)], dim=-1)
    return torch.unique(rows, dim=0, return_inverse=True)[1].reshape(batch, n)


def plug_in_entropy(counts: torch.Tensor) -> torch.Tensor:
    """Plug-in (maximum-likelihood) entropy in nats of the counts along the last dim: ``[..., m]`` -> float64 ``[...]``.

    ``counts`` holds non-negative counts (any real or integer dtype; empty cells allowed) with a
    positive total ``N`` per row. Computed as ``log N - sum(c log c) / N``, which is exact for
    uniform counts (no per-term rounding of ``p = c / N``).
    """
    counts = counts.to(torch.float64)
    total = counts.sum(-1)
    return total.log() - torch.special.xlogy(counts, counts).sum(-1) / total


def _entropy_of_symbols(symbols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Miller–Madow entropy (nats) per row of ``symbols [B, N]`` (ids unique across rows), and the
    number of occupied cells per row."""
    batch, n = symbols.shape
    # _symbols numbers the rows' symbols in contiguous, increasing ranges: shift each to [0, N).
    local = symbols - symbols.min(-1, keepdim=True).values
    rows = torch.arange(batch, device=symbols.device).unsqueeze(-1) * n
    counts = torch.bincount((local + rows).reshape(-1), minlength=batch * n).reshape(batch, n)
    cells = (counts > 0).sum(-1).to(torch.float64)
    return plug_in_entropy(counts) + (cells - 1) / (2 * n), cells


def _prepare(x, name, bins, backend):
    _check_bins(bins)
    x = as_samples(x, name, allow_integer=True)
    _dispatch.resolve_backend(backend, x.device)
    return x, discretise(x, bins).reshape(-1, *x.shape[-2:])


def entropy(x, *, bins: int = 16, base=None, backend=None, details=False, seed=0):
    """Miller–Madow entropy of ``x [..., N, d]`` per batch cell: float64, in nats unless ``base``.

    A discrete entropy: a constant cell gives exactly 0. ``details=True`` adds
    :class:`BinnedDetails`. Counting runs as torch ops on every backend (``backend`` is
    validated, not used); deterministic (``seed`` is accepted and unused).
    """
    unit = log_base(base)
    x, codes = _prepare(x, "x", bins, backend)
    value, occupied = _entropy_of_symbols(_symbols(codes))
    value = (value / unit).reshape(x.shape[:-2])
    if not details:
        return value
    n = x.shape[-2]
    return value, BinnedDetails(occupied=occupied.reshape(x.shape[:-2]),
                                correction=((occupied - 1) / (2 * n) / unit).reshape(x.shape[:-2]))


def mutual_information(x, y, *, bins: int = 16, base=None, backend=None, details=False, seed=0):
    """Miller–Madow I(X;Y) = H(X) + H(Y) - H(X,Y) per batch cell: float64, in nats unless ``base``.

    ``details=True`` adds :class:`BinnedDetails`; deterministic (``seed`` is accepted and unused).
    """
    unit = log_base(base)
    x, cx = _prepare(x, "x", bins, backend)
    y, cy = _prepare(y, "y", bins, backend)
    check_paired(x, y)
    h, occupied = zip(*(_entropy_of_symbols(_symbols(c)) for c in (cx, cy, torch.cat([cx, cy], dim=-1))))
    value = ((h[0] + h[1] - h[2]) / unit).reshape(x.shape[:-2])
    if not details:
        return value
    occupied = torch.stack(occupied, -1)
    correction = (occupied[:, 0] + occupied[:, 1] - occupied[:, 2] - 1) / (2 * x.shape[-2]) / unit
    return value, BinnedDetails(occupied=occupied.reshape(*x.shape[:-2], 3), correction=correction.reshape(x.shape[:-2]))


register(Estimator(
    name="binned",
    summary="Plug-in entropy and MI with the Miller-Madow correction (Miller 1955; Paninski 2003 sec. 3)",
    kind="sample", mutual_information=mutual_information, entropy=entropy, uncertainty="jackknife",
    check_options=_check_bins))
