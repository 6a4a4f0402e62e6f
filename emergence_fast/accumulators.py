"""Streaming state for estimators: exact, mergeable, serialisable.

:class:`GaussianMIAccumulator` keeps, per batch cell, the count and the double-double sums of
``z - c`` and ``(z - c)(z - c)^T`` for ``z = [x, y]`` and a reference row ``c``: chunks, shards,
ranks and resumed runs add up to the one-process state in any order, and memory is
O(batch x (dx + dy)^2), independent of N.

:class:`SubspaceGaussianAccumulator` bounds that memory at any width: the same statistics of
each side projected on a per-cell principal subspace found from a pilot sample.
:class:`PairReservoir` keeps a bottom-k sample of rows by a seeded hash of their global
index, which does not depend on the number of ranks, the shard sizes or the order of batches.
"""
from __future__ import annotations

import numpy as np
import torch

from . import distributed
from .ops.gram import gram
from ._validation import as_samples, check_int, check_positive_int
from .estimators import gaussian


_PIECE = 1 << 18


def _check_state(state, tensors: dict, values: dict, what: str, optional=()) -> None:
    """Refuse a state dict that is not one of ``what``'s, before any of it is loaded: ValueError naming the keys
    (TypeError when it is not a dict).

    ``tensors`` maps each tensor key to ``(shape, kind)`` with kind ``"float64"``, ``"float"`` (any
    floating dtype) or ``"int"`` (any integer dtype but bool); the keys in ``optional`` may also be
    None. ``values`` maps the other keys to the value they must have (or to a type they must be, for counters).
    """
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict from {what}.state_dict(), got {type(state).__name__}")
    expected = set(tensors) | set(values)
    missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or extra:
        raise ValueError(f"state is not a {what} state: missing keys {missing}, unexpected keys {extra}; "
                         "the state is unchanged")
    for key, wanted in values.items():
        found = state[key]
        if isinstance(wanted, type):
            if isinstance(found, bool) or not isinstance(found, wanted) or found < 0:
                raise ValueError(f"state[{key!r}] must be a non-negative {wanted.__name__}, got {found!r}; "
                                 "the state is unchanged")
        elif (tuple(found) if key == "batch_shape" and isinstance(found, (list, tuple)) else found) != wanted:
            raise ValueError(f"state[{key!r}] is {found!r}, but this {what} has {key}={wanted!r}; the state is unchanged")
    kinds = {"float64": lambda t: t.dtype == torch.float64, "float": lambda t: t.is_floating_point(),
             "int": lambda t: not t.is_floating_point() and not t.is_complex() and t.dtype != torch.bool}
    wrong = []
    for key, (shape, kind) in tensors.items():
        t = state[key]
        if t is None and key in optional:
            continue
        if not isinstance(t, torch.Tensor):
            wrong.append(f"{key}: a {type(t).__name__}, not a tensor")
        elif shape is not None and tuple(t.shape) != tuple(shape):
            wrong.append(f"{key}: shape {tuple(t.shape)}, expected {tuple(shape)}")
        elif not kinds[kind](t):
            wrong.append(f"{key}: dtype {t.dtype}, expected {'an integer dtype' if kind == 'int' else kind}")
        elif kind != "int" and not bool(torch.isfinite(t).all()):
            wrong.append(f"{key}: non-finite values")
    if wrong:
        raise ValueError(f"state has tensors of the wrong shape or dtype: {'; '.join(wrong)}; the state is unchanged")


class _ExactSum:
    """A float64 sum kept as an unevaluated pair ``hi + lo`` (cascaded summation): reproducible in any order.

    Each term's addition to ``hi`` is error-free transformed (TwoSum) and the rounding error
    is added to ``lo``, so ``hi + lo`` carries the exact sum to about 2^-100 of it; reading out
    ``fl(hi + lo)`` gives the same float64 whatever the order of the terms, except in the rare
    case where the exact sum lies that close to a rounding midpoint (Ogita, Rump & Oishi 2005,
    "Accurate sum and dot product", Algorithm 4.4; He & Ding 2001 for its use in parallel
    reductions). This is what lets N ranks reproduce one process's state. Cost: about eight
    in-place passes over the state per added term, against three for a plain Chan merge.
    """

    def __init__(self, shape, device):
        self.hi = torch.zeros(shape, dtype=torch.float64, device=device)
        self.lo = torch.zeros_like(self.hi)

    def add_(self, term: torch.Tensor, lo: torch.Tensor | None = None, where=slice(None)):
        hi, low = self.hi[where], self.lo[where]  # views of contiguous rows: updated in place
        hi, low = hi.view(-1), low.view(-1)
        term = term.reshape(-1)
        lo = None if lo is None else lo.reshape(-1)
        # Pieces of 2^18 elements keep the temporaries in cache (and out of fresh, page-faulting allocations).
        for start in range(0, hi.numel(), _PIECE):
            piece = slice(start, start + _PIECE)
            a, b = hi[piece], term[piece].to(torch.float64)
            s = a + b
            v = s - a
            b_err = b - v  # TwoSum: a + b = s + (a - (s - v)) + (b - v), exactly
            v.neg_().add_(s)
            a.sub_(v).add_(b_err)
            low[piece].add_(a)
            if lo is not None:
                low[piece].add_(lo[piece])
            a.copy_(s)

    def value(self, index=...) -> torch.Tensor:
        return self.hi[index] + self.lo[index]

    def reshaped(self, shape) -> "_ExactSum":
        """The same sums seen with another shape (views: updates go to this state)."""
        view = _ExactSum.__new__(_ExactSum)
        view.hi, view.lo = self.hi.view(shape), self.lo.view(shape)
        return view


class GaussianMIAccumulator:
    r"""Streaming sufficient statistics for Gaussian entropies and I(X;Y), reproducible across ranks.

    Per batch cell it keeps the count and the sums :math:`S_1 = \sum_i (z_i - c)`,
    :math:`S_2 = \sum_i (z_i - c)(z_i - c)^T` of ``z = [x, y]`` shifted by a reference row
    :math:`c` (the first row it sees, or :meth:`set_reference`): shifted data keep a
    massive-activation offset from cancelling in the float32 Gram of each update, and sums,
    unlike running means, are the same whatever the order in which the updates and the
    shards are added. The sums are double-double (:class:`_ExactSum`), so one process, N ranks
    (:meth:`all_reduce`), a merge and a resumed run give the same state bit for bit in
    practice; ``mean`` and ``comoment`` are read out as
    :math:`c + S_1/n` and :math:`S_2 - S_1 S_1^T / n`.

    Memory is ``16 (dx + dy)^2`` bytes per cell, independent of N.

    Parameters
    ----------
    dx, dy : feature widths of x and y.
    batch_shape : leading dims of every update, e.g. ``(layers, positions)``.
    device : where the state lives (the model's device).
    backend : Gram backend for :func:`update` (see :func:`emergence_fast.backends`).
    """

    def __init__(self, dx: int, dy: int, batch_shape=(), *, device=None, backend=None):
        dx, dy = check_positive_int(dx, "dx"), check_positive_int(dy, "dy")
        try:
            batch_shape = tuple(int(b) for b in batch_shape)
        except TypeError:
            raise ValueError(f"batch_shape must be a sequence of ints, got {batch_shape!r}") from None
        if any(b < 1 for b in batch_shape):
            raise ValueError(f"batch_shape must hold positive ints, got {batch_shape}")
        self.dx, self.dy, self.batch_shape, self.backend = dx, dy, batch_shape, backend
        device = torch.device(device) if device is not None else torch.device("cpu")
        dim = dx + dy
        self.count = torch.zeros(batch_shape, dtype=torch.int64, device=device)
        self.reference = None
        self.s1 = _ExactSum((*batch_shape, dim), device)
        self.s2 = _ExactSum((*batch_shape, dim, dim), device)

    def _check_update(self, x, y):
        x = as_samples(x, "x", min_samples=1)
        y = as_samples(y, "y", min_samples=1)
        for name, t, width in (("x", x, self.dx), ("y", y, self.dy)):
            if t.shape[-1] != width:
                raise ValueError(f"{name} has {t.shape[-1]} features (dim -1) but this accumulator was built "
                                 f"with d{name}={width}; its state is unchanged")
            if tuple(t.shape[:-2]) != self.batch_shape:
                raise ValueError(f"{name} has leading dims {tuple(t.shape[:-2])} but this accumulator expects "
                                 f"batch_shape={self.batch_shape}; its state is unchanged")
        if x.shape[-2] != y.shape[-2]:
            raise ValueError(f"x and y must have the same number of samples N (dim -2), got {x.shape[-2]} and "
                             f"{y.shape[-2]}; the state is unchanged")
        return x, y

    def set_reference(self, x: torch.Tensor, y: torch.Tensor) -> "GaussianMIAccumulator":
        """Shift by the row ``[x, y]`` (``[*batch_shape, 1, d]`` each) instead of the first row seen.

        Ranks that must add up to one process's state share one reference; call it before any update.
        """
        if int(self.count.sum()):
            raise ValueError("set_reference must come before the first update; the state is unchanged")
        x, y = self._check_update(x, y)
        self.reference = torch.cat([x[..., 0, :], y[..., 0, :]], -1).to(device=self.count.device, dtype=torch.float64)
        return self

    def update(self, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None = None) -> "GaussianMIAccumulator":
        """Add paired samples ``x [*batch_shape, n, dx]``, ``y [*batch_shape, n, dy]``.

        ``weights [*batch_shape, n]`` (integer counts >= 0, default all 1) adds row ``i`` as
        ``weights[..., i]`` identical samples: the state of the rows repeated, without repeating them.
        Raises ValueError, leaving the state unchanged, on another shape or a non-integer or negative weight.
        """
        x, y = self._check_update(x, y)
        if weights is not None and (not isinstance(weights, torch.Tensor) or tuple(weights.shape) != tuple(x.shape[:-1])
                                    or weights.is_floating_point() or weights.is_complex() or bool((weights < 0).any())):
            raise ValueError(f"weights must be an integer tensor of counts >= 0 of shape {tuple(x.shape[:-1])} "
                             f"([*batch_shape, n]); the state is unchanged")
        if self.reference is None:
            self.set_reference(x[..., :1, :], y[..., :1, :])
        dtype = torch.promote_types(x.dtype, y.dtype)
        z = torch.cat([x.to(device=self.count.device, dtype=dtype), y.to(device=self.count.device, dtype=dtype)], -1)
        z, reference = z.reshape(-1, *z.shape[-2:]), self.reference.reshape(-1, 1, self.dx + self.dy)
        if weights is not None:
            weights = weights.to(self.count.device).reshape(-1, z.shape[-2])
        for cells in self._cell_chunks():
            # Shift in float64, then the Gram in the data's precision (float32 unless float64 came in).
            shifted = (z[cells].to(torch.float64) - reference[cells]).to(z.dtype if z.dtype == torch.float64
                                                                         else torch.float32)
            if weights is None:
                count = torch.full((shifted.shape[0],), shifted.shape[-2], dtype=torch.int64)
                s1, rows = shifted.sum(-2, dtype=torch.float64), shifted
            else:  # sum_i w_i z_i z_i^T is the Gram of the rows scaled by sqrt(w_i)
                w = weights[cells].unsqueeze(-1)
                count = w.sum((-2, -1))
                s1, rows = (w * shifted).sum(-2, dtype=torch.float64), shifted * w.to(shifted.dtype).sqrt()
            self._add(cells, count, s1, gram(rows, rows, backend=self.backend))
        return self

    def _add(self, cells, count, s1, s2, s1_lo=None, s2_lo=None):
        dim = self.dx + self.dy
        # Cells that are still empty take the first term as it is: exact, and a tenth of the cost.
        first = not bool(self.count.view(-1)[cells].any())
        self.count.view(-1)[cells] += count.to(self.count.device)
        for total, term, lo, shape in ((self.s1, s1, s1_lo, (-1, dim)), (self.s2, s2, s2_lo, (-1, dim, dim))):
            if first:
                total.hi.view(shape)[cells] = term
                total.lo.view(shape)[cells] = 0.0 if lo is None else lo
                continue
            total.reshaped(shape).add_(term, lo, cells)

    def merge(self, other: "GaussianMIAccumulator") -> "GaussianMIAccumulator":
        """Fold in another accumulator's state (another shard, process or resumed run).

        With the same reference the sums add reproducibly; otherwise ``other`` is re-shifted to
        this reference first (exact algebra, float64 rounding).
        """
        if not isinstance(other, GaussianMIAccumulator):
            raise TypeError(f"other must be a GaussianMIAccumulator, got {type(other).__name__}")
        if other is self:
            raise ValueError("other is this accumulator: merging a state with itself would count every sample twice")
        if (other.dx, other.dy, other.batch_shape) != (self.dx, self.dy, self.batch_shape):
            raise ValueError(f"other has (dx, dy, batch_shape)={(other.dx, other.dy, other.batch_shape)}, "
                             f"expected {(self.dx, self.dy, self.batch_shape)}")
        if other.reference is None:
            return self
        if self.reference is None:
            self.reference = other.reference.to(self.count.device).clone()
        dim = self.dx + self.dy
        device = self.count.device
        count = other.count.reshape(-1).to(device)
        s1_hi, s1_lo = other.s1.hi.reshape(-1, dim).to(device), other.s1.lo.reshape(-1, dim).to(device)
        s2_hi, s2_lo = other.s2.hi.reshape(-1, dim, dim).to(device), other.s2.lo.reshape(-1, dim, dim).to(device)
        shift = (other.reference.to(device) - self.reference).reshape(-1, dim)  # other's rows = ours + shift
        for cells in self._cell_chunks():
            if bool(shift[cells].any()):
                s1 = s1_hi[cells] + s1_lo[cells]
                n, d = count[cells].to(torch.float64)[:, None], shift[cells]
                s2 = (s2_hi[cells] + s2_lo[cells] + d.unsqueeze(-1) * s1.unsqueeze(-2) + s1.unsqueeze(-1) * d.unsqueeze(-2)
                      + (n * d).unsqueeze(-1) * d.unsqueeze(-2))
                self._add(cells, count[cells], s1 + n * d, s2)
            else:
                self._add(cells, count[cells], s1_hi[cells], s2_hi[cells], s1_lo[cells], s2_lo[cells])
        return self

    def reduce_to_owners(self, world: "distributed.World") -> range:
        """Sum every rank's state into the rank that owns it, split along the first batch dim.

        Rank ``r`` owns the rows ``distributed.shard(batch_shape[0], r)`` (IE: the layers it will
        estimate) and ends with their exact one-process state; its other rows are left
        meaningless. Each owner gathers its rows' double-double sums from every rank and adds
        them in rank order, so a rank receives about one state's worth of bytes whatever the
        number of ranks (an all-gather of whole states would receive ``world_size - 1`` of them).
        Every rank must have used the same reference (:meth:`set_reference`).

        Returns the range of rows this rank owns.
        """
        rows = self.batch_shape[0] if self.batch_shape else 1
        if not world.distributed:
            return range(rows)
        if self.reference is None:
            raise ValueError("merging ranks needs the reference row shared by every rank: call set_reference first")
        dim = self.dx + self.dy
        distributed.all_reduce_sum_(self.count, world)
        per_row = self.count.numel() // rows
        step = max(1, (1 << 24) // (dim * dim * world.world_size * per_row))  # about 128 MiB gathered at once
        for owner in range(world.world_size):
            owned = distributed.shard(rows, distributed.World(owner, world.world_size))
            for start in range(owned.start, owned.stop, step):
                chunk = slice(start, min(start + step, owned.stop))
                for total in (self.s1, self.s2):
                    part = torch.stack([total.hi[chunk], total.lo[chunk]])
                    parts = distributed.gather(part, world, dst=owner)
                    if world.rank == owner:
                        summed = _ExactSum(part.shape[1:], part.device)
                        for piece in parts:
                            summed.add_(piece[0].to(part.device), piece[1].to(part.device))
                        total.hi[chunk], total.lo[chunk] = summed.hi, summed.lo
        return distributed.shard(rows, world)

    def all_reduce(self, world: "distributed.World") -> "GaussianMIAccumulator":
        """Combine every rank's state in place: each rank then holds the state of all ranks' samples.

        :meth:`reduce_to_owners`, then each owner broadcasts its rows: what one process
        accumulating every sample would hold. A rank without samples adds zeros.
        """
        if not world.distributed:
            return self
        self.reduce_to_owners(world)
        rows = self.batch_shape[0] if self.batch_shape else 1
        for owner in range(world.world_size):
            owned = distributed.shard(rows, distributed.World(owner, world.world_size))
            if len(owned):
                for total in (self.s1, self.s2):
                    for t in (total.hi, total.lo):
                        t[owned.start:owned.stop] = distributed.broadcast_(t[owned.start:owned.stop].contiguous(),
                                                                           world, src=owner)
        return self

    def _cell_chunks(self):
        """Slices of the flattened batch cells that bound the float64 temporaries to about 256 MiB."""
        cells = self.count.numel()
        step = max(1, (1 << 25) // (self.dx + self.dy) ** 2)
        return [slice(lo, min(lo + step, cells)) for lo in range(0, cells, step)]

    def moments(self, index=...):
        """``(count, mean, comoment)`` of the cells ``index`` selects along the leading batch dims (float64)."""
        count = self.count[index]
        n = count.to(torch.float64).clamp_min(1).unsqueeze(-1)
        s1 = self.s1.value(index)
        reference = torch.zeros_like(s1) if self.reference is None else self.reference[index]
        comoment = self.s2.value(index) - s1.unsqueeze(-1) * (s1 / n).unsqueeze(-2)
        comoment = 0.5 * (comoment + comoment.transpose(-1, -2))  # exact symmetry for the Cholesky downstream
        return count, reference + s1 / n, comoment

    @property
    def mean(self) -> torch.Tensor:
        return self.moments()[1]

    @property
    def comoment(self) -> torch.Tensor:
        return self.moments()[2]

    def state_dict(self) -> dict:
        """The state's tensors, by reference as in ``torch.nn.Module.state_dict`` (no copy of GBs of state)."""
        return {"dx": self.dx, "dy": self.dy, "batch_shape": self.batch_shape, "count": self.count,
                "reference": self.reference, "s1": self.s1.hi, "s1_lo": self.s1.lo, "s2": self.s2.hi,
                "s2_lo": self.s2.lo}

    def load_state_dict(self, state: dict) -> "GaussianMIAccumulator":
        """Load a :meth:`state_dict` of an accumulator of the same ``dx``, ``dy`` and ``batch_shape``.

        Raises ValueError, leaving the state unchanged, on missing or unexpected keys, other
        widths or batch shape, and tensors of the wrong shape or dtype (float64 sums, integer counts).
        """
        dim = self.dx + self.dy
        cells = self.batch_shape
        shapes = {"count": (cells, "int"), "reference": ((*cells, dim), "float64"),
                  "s1": ((*cells, dim), "float64"), "s1_lo": ((*cells, dim), "float64"),
                  "s2": ((*cells, dim, dim), "float64"), "s2_lo": ((*cells, dim, dim), "float64")}
        values = {"dx": self.dx, "dy": self.dy, "batch_shape": cells}
        _check_state(state, shapes, values, "GaussianMIAccumulator", optional=("reference",))
        if bool((state["count"] < 0).any()):
            raise ValueError("state['count'] has negative counts; the state is unchanged")
        device = self.count.device
        self.count = state["count"].to(device=device, dtype=torch.int64).clone()
        self.reference = None if state["reference"] is None else state["reference"].to(device, torch.float64).clone()
        for total, hi, lo in ((self.s1, "s1", "s1_lo"), (self.s2, "s2", "s2_lo")):
            total.hi = state[hi].to(device=device, dtype=torch.float64).clone()
            total.lo = state[lo].to(device=device, dtype=torch.float64).clone()
        return self

    def _ready(self):
        if int(self.count.min()) < 2:
            raise ValueError(f"the accumulator needs at least 2 samples per cell, has {int(self.count.min())}")

    def mutual_information(self, **options):
        """I(X;Y) per cell; options as :func:`emergence_fast.estimators.gaussian.mutual_information_from_moments`."""
        self._ready()
        return gaussian.mutual_information_from_moments(self.count, self.comoment, self.dx, **options)

    def entropy_x(self, **options):
        self._ready()
        return gaussian.entropy_from_moments(self.count, self.comoment[..., : self.dx, : self.dx], **options)

    def entropy_y(self, **options):
        self._ready()
        return gaussian.entropy_from_moments(self.count, self.comoment[..., self.dx:, self.dx:], **options)


def _check_pairs(x, y, dx: int, dy: int, batch_shape: tuple, what: str) -> None:
    if x.shape[-1] != dx or y.shape[-1] != dy or tuple(x.shape[:-2]) != batch_shape \
            or tuple(y.shape[:-2]) != batch_shape or x.shape[-2] != y.shape[-2]:
        raise ValueError(f"x, y must be [*{batch_shape}, n, {dx}] and [*{batch_shape}, n, {dy}], "
                         f"got {tuple(x.shape)} and {tuple(y.shape)}; the {what} is unchanged")


def standardised_basis(rows: torch.Tensor, rank: int, weights: torch.Tensor | None = None):
    """Per-cell mean, scale and top-``rank`` principal directions of standardised ``rows``.

    Parameters
    ----------
    rows : ``[C, m, d]`` float tensor, ``m`` rows per cell.
    rank : directions kept, ``1 <= rank``; at most ``min(m, d)`` are returned.
    weights : ``[C, m]`` non-negative row weights (counts), or None for ones.

    Returns
    -------
    mean, scale : ``[C, d]`` float64: the weighted mean and standard deviation (1 where a
        column is constant), so ``(rows - mean) / scale`` has unit variance per column, the
        standardisation of :func:`emergence_fast.estimators.gaussian.mutual_information_from_moments`.
    basis : ``[C, d, r]`` float64 with orthonormal columns: the right singular vectors of the
        weighted standardised rows, i.e. the top eigenvectors of their correlation matrix,
        largest first.
    """
    rows = rows.to(torch.float64)
    w = torch.ones(rows.shape[:-1], dtype=torch.float64, device=rows.device) if weights is None else \
        weights.to(device=rows.device, dtype=torch.float64)
    n = w.sum(-1, keepdim=True)
    mean = (w.unsqueeze(-1) * rows).sum(-2) / n
    centred = rows - mean.unsqueeze(-2)
    var = (w.unsqueeze(-1) * centred.square()).sum(-2) / (n - 1).clamp_min(1)
    scale = torch.where(var > 0, var.sqrt(), torch.ones_like(var))
    standard = centred / scale.unsqueeze(-2) * w.sqrt().unsqueeze(-1)
    rank = min(rank, rows.shape[-2], rows.shape[-1])
    basis = torch.linalg.svd(standard, full_matrices=False)[2][..., :rank, :].transpose(-1, -2)
    return mean, scale, basis


class SubspaceGaussianAccumulator:
    r"""Gaussian sufficient statistics of each side projected on a per-cell principal subspace.

    Full-width moments cost :math:`16 (d_x + d_y)^2` bytes per cell (1 GB at d = 4096). This
    state costs about :math:`16 (2r)^2 + 16 d r` bytes: for every cell, each side is standardised with
    a pilot sample's mean and scale and projected on the pilot's top-``r`` principal
    directions (:func:`standardised_basis`), and the projections
    :math:`u = ((x - \mu_p)/s_p) Q_x`, :math:`v = ((y - \mu_p)/s_p) Q_y` are folded into a
    :class:`GaussianMIAccumulator` of width ``r + r``. This is the two-pass principal-subspace
    scheme of randomised PCA (Halko, Martinsson & Tropp 2011, SIAM Review 53(2), §4 and §5.5:
    a range found on a sample, then a Rayleigh–Ritz step on the projected covariance): the
    top-``k`` eigenvectors of the projected covariance are those of the full correlation
    whenever the latter lie in the subspace, exactly so when the pilot is the whole data.

    To say how much is lost, it also keeps the total standardised variance of each side, so
    :meth:`captured_variance` gives, per cell and side, the fraction of it inside the subspace.

    Parameters
    ----------
    mean_x, scale_x, basis_x, mean_y, scale_y, basis_y : from :func:`standardised_basis`, with
        shapes ``[*batch_shape, d]`` and ``[*batch_shape, d, r]`` (float64).
    backend : Gram backend for the projected moments.
    """

    def __init__(self, mean_x, scale_x, basis_x, mean_y, scale_y, basis_y, *, backend=None):
        self.batch_shape = tuple(basis_x.shape[:-2])
        self.rank = basis_x.shape[-1]
        if tuple(basis_y.shape[:-2]) != self.batch_shape or basis_y.shape[-1] != self.rank:
            raise ValueError(f"basis_x {tuple(basis_x.shape)} and basis_y {tuple(basis_y.shape)} must share the batch "
                             "shape and the rank r")
        self.sides = [(mean_x, scale_x, basis_x), (mean_y, scale_y, basis_y)]
        self.dx, self.dy = basis_x.shape[-2], basis_y.shape[-2]
        device = basis_x.device
        self.inner = GaussianMIAccumulator(self.rank, self.rank, self.batch_shape, device=device, backend=backend)
        # The projections are centred on the pilot mean already: zero is a shared reference every rank knows.
        zeros = torch.zeros(*self.batch_shape, 1, self.rank, dtype=torch.float64, device=device)
        self.inner.set_reference(zeros, zeros)
        # Per side: sum and sum of squares of the standardised coordinates, summed over columns at the end.
        self.total_sum = torch.zeros(*self.batch_shape, 2, max(self.dx, self.dy), dtype=torch.float64, device=device)
        self.total_square = torch.zeros(*self.batch_shape, 2, dtype=torch.float64, device=device)

    @property
    def count(self) -> torch.Tensor:
        return self.inner.count

    def _project(self, side: int, t: torch.Tensor) -> torch.Tensor:
        mean, scale, basis = self.sides[side]
        standard = (t.to(torch.float32) - mean.float().unsqueeze(-2)) / scale.float().unsqueeze(-2)
        width = standard.shape[-1]
        self.total_sum[..., side, :width] += standard.sum(-2, dtype=torch.float64)
        self.total_square[..., side] += standard.square().sum((-2, -1), dtype=torch.float64)
        return standard @ basis.float()

    def update(self, x: torch.Tensor, y: torch.Tensor) -> "SubspaceGaussianAccumulator":
        """Add paired samples ``x [*batch_shape, n, dx]``, ``y [*batch_shape, n, dy]``."""
        _check_pairs(x, y, self.dx, self.dy, self.batch_shape, "state")
        self.inner.update(self._project(0, x), self._project(1, y))
        return self

    def all_reduce(self, world) -> "SubspaceGaussianAccumulator":
        """Combine every rank's state in place (see :meth:`GaussianMIAccumulator.all_reduce`)."""
        self.inner.all_reduce(world)
        self._reduce_totals(world)
        return self

    def reduce_to_owners(self, world) -> range:
        """See :meth:`GaussianMIAccumulator.reduce_to_owners`; the variance totals (diagnostic) go to every rank."""
        self._reduce_totals(world)
        return self.inner.reduce_to_owners(world)

    def _reduce_totals(self, world):
        distributed.all_reduce_sum_(self.total_sum, world)
        distributed.all_reduce_sum_(self.total_square, world)

    def captured_variance(self, index=...) -> torch.Tensor:
        """``[*batch_shape, 2]`` (or the cells ``index`` selects): the fraction of each side's total
        standardised variance inside its subspace."""
        count, _, comoment = self.inner.moments(index)
        n = count.to(torch.float64).unsqueeze(-1)
        total = self.total_square[index] - self.total_sum[index].square().sum(-1) / n
        r = self.rank
        inside = torch.stack([comoment[..., :r, :r].diagonal(dim1=-2, dim2=-1).sum(-1),
                              comoment[..., r:, r:].diagonal(dim1=-2, dim2=-1).sum(-1)], -1)
        # A constant side (a position holding one token, at the embedding) has nothing to capture.
        return torch.where(total > 0, inside / total.clamp_min(torch.finfo(torch.float64).tiny), 1.0)

    def state_dict(self) -> dict:
        names = ("mean_x", "scale_x", "basis_x", "mean_y", "scale_y", "basis_y")
        return {"inner": self.inner.state_dict(), "total_sum": self.total_sum, "total_square": self.total_square,
                **dict(zip(names, (t for side in self.sides for t in side)))}

    @classmethod
    def from_state_dict(cls, state: dict, *, device=None, backend=None) -> "SubspaceGaussianAccumulator":
        """The accumulator a :meth:`state_dict` describes, on ``device``.

        Raises ValueError on missing or unexpected keys and on tensors whose shapes or dtypes do
        not fit together (the batch shape, widths and rank are read from ``basis_x`` and ``basis_y``).
        """
        sides = ("mean_x", "scale_x", "basis_x", "mean_y", "scale_y", "basis_y")
        bases = [state.get(name) if isinstance(state, dict) else None for name in ("basis_x", "basis_y")]
        if not all(isinstance(b, torch.Tensor) and b.ndim >= 2 for b in bases):
            raise ValueError("state must be a SubspaceGaussianAccumulator.state_dict() with tensors basis_x and basis_y "
                             "of shape [*batch_shape, d, r]")
        cells, (dx, rank), dy = tuple(bases[0].shape[:-2]), bases[0].shape[-2:], bases[1].shape[-2]
        shapes = {"mean_x": ((*cells, dx), "float"), "scale_x": ((*cells, dx), "float"),
                  "basis_x": ((*cells, dx, rank), "float"), "mean_y": ((*cells, dy), "float"),
                  "scale_y": ((*cells, dy), "float"), "basis_y": ((*cells, dy, rank), "float"),
                  "total_sum": ((*cells, 2, max(dx, dy)), "float"), "total_square": ((*cells, 2), "float")}
        _check_state({k: v for k, v in state.items() if k != "inner"}, shapes, {}, "SubspaceGaussianAccumulator")
        if "inner" not in state:
            raise ValueError("state is not a SubspaceGaussianAccumulator state: missing keys ['inner']")
        moved = {name: state[name].to(device) for name in sides}
        self = cls(**moved, backend=backend)
        self.inner.load_state_dict(state["inner"])
        self.total_sum = state["total_sum"].to(self.total_sum).clone()
        self.total_square = state["total_square"].to(self.total_square).clone()
        return self


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def hash_priority(index: torch.Tensor, seed: int) -> torch.Tensor:
    """A seeded pseudo-random priority in ``[0, 2^63)`` per global row index (SplitMix64; Steele et al. 2014).

    Used for bottom-k sampling: keeping the k rows of smallest priority is a uniform sample
    without replacement that any partition of the rows reaches exactly (Cohen & Kaplan 2007,
    "Summarizing data using bottom-k sketches").
    """
    z = (index.detach().cpu().numpy().astype(np.uint64) + np.uint64(1)) * _GOLDEN + np.uint64(seed * 0xD1B54A32D192ED03 % 2**64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return torch.from_numpy((z >> np.uint64(1)).astype(np.int64))


class PairReservoir:
    """A bounded, seeded, uniform sample of paired rows per batch cell, for sample-based estimators.

    Bottom-k sampling: every row gets the priority :func:`hash_priority` of its *global* index
    (its sample number in the whole dataset) and the ``capacity`` rows of smallest priority are
    kept, in increasing index. The kept set and its order depend only on the seed and the
    indices offered, never on how the rows were split into batches, shards or ranks, so a
    resumed run, a merge and an all-reduce over ranks all give the one-process reservoir
    exactly. All cells keep the same samples; ``index`` records which. Memory is
    ``O(batch x capacity x (dx + dy))`` whatever N is.
    """

    def __init__(self, dx: int, dy: int, batch_shape=(), *, capacity: int = 1024, seed: int = 0, device=None,
                 dtype=torch.float32):
        dx, dy, capacity = (check_positive_int(dx, "dx"), check_positive_int(dy, "dy"),
                            check_positive_int(capacity, "capacity"))
        seed = check_int(seed, "seed", minimum=0)
        self.dx, self.dy, self.batch_shape, self.capacity, self.seed = dx, dy, tuple(batch_shape), capacity, seed
        self.samples = torch.zeros(*self.batch_shape, capacity, dx + dy, dtype=dtype,
                                   device=torch.device(device) if device is not None else None)
        self.index = torch.full((capacity,), -1, dtype=torch.int64)
        self.priority = torch.full((capacity,), torch.iinfo(torch.int64).max, dtype=torch.int64)
        self.seen = 0

    def _keep(self, priority: torch.Tensor, index: torch.Tensor):
        """Positions of the ``capacity`` smallest (priority, index) pairs, in increasing index."""
        order = torch.argsort(index, stable=True)
        order = order[torch.argsort(priority[order], stable=True)][: self.capacity]
        return order[torch.argsort(index[order])]

    def update(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None = None) -> "PairReservoir":
        """Offer rows ``x [*batch_shape, n, dx]``, ``y [*batch_shape, n, dy]`` with global ``index [n]``.

        ``index`` defaults to the next ``n`` row numbers of this stream (``seen, seen + 1, …``).
        Indices must not repeat across updates: each names one sample of the dataset.
        """
        _check_pairs(x, y, self.dx, self.dy, self.batch_shape, "reservoir")
        n = x.shape[-2]
        index = torch.arange(self.seen, self.seen + n) if index is None else torch.as_tensor(index, dtype=torch.int64).cpu()
        if index.shape != (n,):
            raise ValueError(f"index must have shape [{n}], got {tuple(index.shape)}; the reservoir is unchanged")
        held = min(self.seen, self.capacity)
        candidates = torch.cat([self.priority[:held], hash_priority(index, self.seed)])
        indices = torch.cat([self.index[:held], index])
        keep = self._keep(candidates, indices)
        pairs = torch.cat([x, y.to(x.dtype)], dim=-1).to(self.samples)
        rows = torch.cat([self.samples[..., :held, :], pairs], dim=-2)
        self.samples[..., : keep.numel(), :] = rows[..., keep.to(rows.device), :]
        self.index[: keep.numel()] = indices[keep]
        self.priority[: keep.numel()] = candidates[keep]
        self.seen += n
        return self

    def merge(self, other: "PairReservoir") -> "PairReservoir":
        """Fold in a reservoir of other rows of the same dataset (a shard); the result is the union's bottom-k."""
        if not isinstance(other, PairReservoir):
            raise TypeError(f"other must be a PairReservoir, got {type(other).__name__}")
        if other is self:
            raise ValueError("other is this reservoir: merging a reservoir with itself would offer every kept row "
                             "twice and double seen")
        expected = (self.dx, self.dy, self.batch_shape, self.capacity, self.seed)
        found = (other.dx, other.dy, other.batch_shape, other.capacity, other.seed)
        if found != expected:
            raise ValueError(f"other has (dx, dy, batch_shape, capacity, seed)={found}, expected {expected}")
        x, y = other.pairs()
        held = x.shape[-2]
        seen = self.seen
        self.update(x, y, other.index[:held])
        self.seen = seen + other.seen
        return self

    def all_reduce(self, world) -> "PairReservoir":
        """Make every rank hold the bottom-k of all ranks' rows: the reservoir of one process.

        Ranks exchange only priorities and indices; each winning row is then written by the one
        rank that holds it into a zero buffer, and the buffers are summed (:func:`distributed.owner_sum`).
        """
        if not world.distributed:
            return self
        gathered = distributed.all_gather(torch.stack([self.priority, self.index]), world)
        priority = torch.cat([g[0].cpu() for g in gathered])
        index = torch.cat([g[1].cpu() for g in gathered])
        owner = torch.arange(world.world_size).repeat_interleave(self.capacity)
        slot = torch.arange(self.capacity).repeat(world.world_size)
        live = index >= 0
        keep = self._keep(priority[live], index[live])
        winners_owner, winners_slot = owner[live][keep], slot[live][keep]
        mine = winners_owner == world.rank
        merged = torch.zeros_like(self.samples)
        target = mine.nonzero().squeeze(-1)
        merged[..., target.to(merged.device), :] = self.samples[..., winners_slot[mine].to(merged.device), :]
        self.samples = distributed.owner_sum(merged, world)
        self.index.fill_(-1)
        self.priority.fill_(torch.iinfo(torch.int64).max)
        self.index[: keep.numel()] = index[live][keep]
        self.priority[: keep.numel()] = priority[live][keep]
        seen = torch.tensor([self.seen], dtype=torch.int64)
        self.seen = int(distributed.all_reduce_sum_(seen, world))
        return self

    def pairs(self):
        """The kept rows: ``x [*batch_shape, m, dx]``, ``y [*batch_shape, m, dy]`` with ``m = min(seen, capacity)``."""
        m = min(self.seen, self.capacity)
        return self.samples[..., :m, : self.dx], self.samples[..., :m, self.dx:]

    def state_dict(self) -> dict:
        return {"dx": self.dx, "dy": self.dy, "batch_shape": self.batch_shape, "capacity": self.capacity,
                "seed": self.seed, "samples": self.samples.clone(), "index": self.index.clone(),
                "priority": self.priority.clone(), "seen": self.seen}

    def load_state_dict(self, state: dict) -> "PairReservoir":
        """Load a :meth:`state_dict` of a reservoir of the same ``dx``, ``dy``, ``batch_shape`` and ``capacity``.

        Raises ValueError, leaving the reservoir unchanged, on missing or unexpected keys, other
        sizes, tensors of the wrong shape or dtype, or kept rows that disagree with ``seen``.
        """
        cells, width = self.batch_shape, self.dx + self.dy
        shapes = {"samples": ((*cells, self.capacity, width), "float"), "index": ((self.capacity,), "int"),
                  "priority": ((self.capacity,), "int")}
        values = {"dx": self.dx, "dy": self.dy, "batch_shape": cells, "capacity": self.capacity, "seed": int,
                  "seen": int}
        _check_state(state, shapes, values, "PairReservoir")
        if state["seed"] >= 2**63:
            raise ValueError(f"state['seed'] must be below 2**63, got {state['seed']}; the reservoir is unchanged")
        held = int((state["index"] >= 0).sum())
        if held != min(state["seen"], self.capacity) or bool((state["index"][:held] < 0).any()):
            raise ValueError(f"state holds {held} rows but has seen={state['seen']} with capacity={self.capacity}: "
                             "not a reservoir's state; the reservoir is unchanged")
        self.seed = int(state["seed"])  # the seed is part of the sample, as a generator's state would be
        self.samples = state["samples"].to(self.samples).clone()
        self.index = state["index"].to(device="cpu", dtype=torch.int64).clone()
        self.priority = state["priority"].to(device="cpu", dtype=torch.int64).clone()
        self.seen = int(state["seen"])
        return self
