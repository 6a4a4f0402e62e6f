"""Streaming state for estimators: exact, mergeable, serialisable.

:class:`GaussianMIAccumulator` keeps, per batch cell, the count, the float64 mean and the
centred comoment of ``z = [x, y]`` and combines chunks with the pairwise update of
Chan, Golub & LeVeque (1979, "Updating formulae and a pairwise algorithm for computing
sample variances"):

    n = n_a + n_b,  delta = mean_b - mean_a,
    mean = mean_a + delta * n_b / n,
    M = M_a + M_b + delta delta^T * n_a n_b / n.

So chunks, shards and resumed runs combine to the one-shot result up to float64 rounding,
and memory is O(batch x (dx + dy)^2), independent of N. Across ranks the same merge runs as
two all-reduces (:meth:`GaussianMIAccumulator.all_reduce`).

:class:`SubspaceGaussianAccumulator` bounds that memory at any width: the same statistics of
each side projected on a per-cell principal subspace found from a pilot sample.
:class:`PairReservoir` keeps a bottom-k sample of rows by a seeded hash of their global
index, which does not depend on the number of ranks, the shard sizes or the order of batches.
"""
from __future__ import annotations

import numpy as np
import torch

from . import distributed
from ._validation import as_samples
from .estimators import gaussian


class GaussianMIAccumulator:
    """Streaming sufficient statistics for Gaussian entropies and I(X;Y).

    Parameters
    ----------
    dx, dy : feature widths of x and y.
    batch_shape : leading dims of every update, e.g. ``(layers, positions)``.
    device : where the state lives (the model's device).
    backend : Gram backend for :func:`update` (see :func:`emergence_fast.backends`).
    """

    def __init__(self, dx: int, dy: int, batch_shape=(), *, device=None, backend=None):
        for name, value in (("dx", dx), ("dy", dy)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
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
        self.mean = torch.zeros(*batch_shape, dim, dtype=torch.float64, device=device)
        self.comoment = torch.zeros(*batch_shape, dim, dim, dtype=torch.float64, device=device)

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

    def update(self, x: torch.Tensor, y: torch.Tensor) -> "GaussianMIAccumulator":
        """Add paired samples ``x [*batch_shape, n, dx]``, ``y [*batch_shape, n, dy]``."""
        x, y = self._check_update(x, y)
        dtype = torch.promote_types(x.dtype, y.dtype)
        z = torch.cat([x.to(device=self.mean.device, dtype=dtype), y.to(device=self.mean.device, dtype=dtype)], -1)
        z = z.reshape(-1, *z.shape[-2:])
        for cells in self._cell_chunks():
            self._combine(cells, *gaussian.moments(z[cells], self.backend))
        return self

    def merge(self, other: "GaussianMIAccumulator") -> "GaussianMIAccumulator":
        """Fold in another accumulator's state (another shard, process or resumed run)."""
        if not isinstance(other, GaussianMIAccumulator):
            raise TypeError(f"other must be a GaussianMIAccumulator, got {type(other).__name__}")
        if (other.dx, other.dy, other.batch_shape) != (self.dx, self.dy, self.batch_shape):
            raise ValueError(f"other has (dx, dy, batch_shape)={(other.dx, other.dy, other.batch_shape)}, "
                             f"expected {(self.dx, self.dy, self.batch_shape)}")
        device = self.mean.device
        dim = self.dx + self.dy
        count, mean, comoment = (other.count.reshape(-1).to(device), other.mean.reshape(-1, dim).to(device),
                                 other.comoment.reshape(-1, dim, dim).to(device))
        for cells in self._cell_chunks():
            self._combine(cells, count[cells], mean[cells], comoment[cells])
        return self

    def all_reduce(self, world: "distributed.World") -> "GaussianMIAccumulator":
        """Combine every rank's state in place, so each rank holds the state of all ranks' samples.

        The count-weighted merge of Chan et al. written as sums: with :math:`n = \\sum_r n_r`,
        :math:`\\bar z = \\sum_r n_r \\bar z_r / n` and
        :math:`M = \\sum_r M_r + n_r (\\bar z_r - \\bar z)(\\bar z_r - \\bar z)^T`; a rank with no
        samples adds zeros. It equals merging the ranks one by one up to float64 rounding, and
        needs no buffer beyond the state itself.
        """
        if not world.distributed:
            return self
        dim = self.dx + self.dy
        own = self.count.to(torch.float64)
        total = distributed.all_reduce_sum_(self.count.clone(), world)
        weighted = distributed.all_reduce_sum_(self.mean * own.unsqueeze(-1), world)
        mean = weighted / total.clamp_min(1).to(torch.float64).unsqueeze(-1)
        flat_mean, flat_own = mean.reshape(-1, dim), own.reshape(-1)
        for cells in self._cell_chunks():
            delta = self.mean.view(-1, dim)[cells] - flat_mean[cells]
            self.comoment.view(-1, dim, dim)[cells].baddbmm_(
                delta.unsqueeze(-1), (flat_own[cells].unsqueeze(-1) * delta).unsqueeze(-2))
        distributed.all_reduce_sum_(self.comoment, world)
        self.mean, self.count = mean, total
        return self

    def _cell_chunks(self):
        """Slices of the flattened batch cells that bound the float64 temporaries to about 256 MiB."""
        cells = self.count.numel()
        step = max(1, (1 << 25) // (self.dx + self.dy) ** 2)
        return [slice(lo, min(lo + step, cells)) for lo in range(0, cells, step)]

    def _combine(self, cells: slice, count_b, mean_b, comoment_b):
        dim = self.dx + self.dy
        count = self.count.view(-1)[cells]
        mean = self.mean.view(-1, dim)[cells]
        comoment = self.comoment.view(-1, dim, dim)[cells]
        total = count + count_b
        safe_total = total.clamp_min(1).to(torch.float64)
        delta = mean_b - mean
        cross = (count.to(torch.float64) * count_b / safe_total).unsqueeze(-1)
        comoment.add_(comoment_b).baddbmm_(delta.unsqueeze(-1), (cross * delta).unsqueeze(-2))
        mean.add_(delta * (count_b / safe_total).unsqueeze(-1))
        count.copy_(total)

    def state_dict(self) -> dict:
        return {"dx": self.dx, "dy": self.dy, "batch_shape": self.batch_shape,
                "count": self.count.clone(), "mean": self.mean.clone(), "comoment": self.comoment.clone()}

    def load_state_dict(self, state: dict) -> "GaussianMIAccumulator":
        missing = {"dx", "dy", "batch_shape", "count", "mean", "comoment"} - set(state)
        if missing:
            raise ValueError(f"state is missing keys {sorted(missing)}")
        if (state["dx"], state["dy"], tuple(state["batch_shape"])) != (self.dx, self.dy, self.batch_shape):
            raise ValueError(f"state has (dx, dy, batch_shape)={(state['dx'], state['dy'], tuple(state['batch_shape']))}, "
                             f"expected {(self.dx, self.dy, self.batch_shape)}")
        device = self.mean.device
        self.count = state["count"].to(device=device, dtype=torch.int64).clone()
        self.mean = state["mean"].to(device=device, dtype=torch.float64).clone()
        self.comoment = state["comoment"].to(device=device, dtype=torch.float64).clone()
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

    Full-width moments cost :math:`8 (d_x + d_y)^2` bytes per cell (0.5 GB at d = 4096). This
    state costs :math:`8 (2r)^2 + 16 d r` bytes: for every cell, each side is standardised with
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
        if x.shape[-1] != self.dx or y.shape[-1] != self.dy or tuple(x.shape[:-2]) != self.batch_shape \
                or tuple(y.shape[:-2]) != self.batch_shape or x.shape[-2] != y.shape[-2]:
            raise ValueError(f"x, y must be [*{self.batch_shape}, n, {self.dx}] and [*{self.batch_shape}, n, {self.dy}], "
                             f"got {tuple(x.shape)} and {tuple(y.shape)}; the state is unchanged")
        self.inner.update(self._project(0, x), self._project(1, y))
        return self

    def all_reduce(self, world) -> "SubspaceGaussianAccumulator":
        """Combine every rank's state in place (see :meth:`GaussianMIAccumulator.all_reduce`)."""
        self.inner.all_reduce(world)
        distributed.all_reduce_sum_(self.total_sum, world)
        distributed.all_reduce_sum_(self.total_square, world)
        return self

    def captured_variance(self) -> torch.Tensor:
        """``[*batch_shape, 2]``: the fraction of each side's total standardised variance inside its subspace."""
        n = self.inner.count.to(torch.float64).unsqueeze(-1)
        total = self.total_square - self.total_sum.square().sum(-1) / n
        r = self.rank
        inside = torch.stack([self.inner.comoment[..., :r, :r].diagonal(dim1=-2, dim2=-1).sum(-1),
                              self.inner.comoment[..., r:, r:].diagonal(dim1=-2, dim2=-1).sum(-1)], -1)
        return inside / total

    def state_dict(self) -> dict:
        names = ("mean_x", "scale_x", "basis_x", "mean_y", "scale_y", "basis_y")
        return {"inner": self.inner.state_dict(), "total_sum": self.total_sum.clone(),
                "total_square": self.total_square.clone(),
                **{name: t.clone() for name, t in zip(names, (t for side in self.sides for t in side))}}

    @classmethod
    def from_state_dict(cls, state: dict, *, device=None, backend=None) -> "SubspaceGaussianAccumulator":
        moved = {name: state[name].to(device) for name in ("mean_x", "scale_x", "basis_x", "mean_y", "scale_y",
                                                           "basis_y")}
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
        for name, value in (("dx", dx), ("dy", dy), ("capacity", capacity)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
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
        if x.shape[-1] != self.dx or y.shape[-1] != self.dy or tuple(x.shape[:-2]) != self.batch_shape \
                or tuple(y.shape[:-2]) != self.batch_shape or x.shape[-2] != y.shape[-2]:
            raise ValueError(f"x, y must be [*{self.batch_shape}, n, {self.dx}] and [*{self.batch_shape}, n, {self.dy}], "
                             f"got {tuple(x.shape)} and {tuple(y.shape)}; the reservoir is unchanged")
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
        device = distributed.collective_device(world)
        keys = torch.stack([self.priority, self.index]).to(device)
        gathered = [torch.empty_like(keys) for _ in range(world.world_size)]
        torch.distributed.all_gather(gathered, keys, group=world.group)
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
        expected = (self.dx, self.dy, self.batch_shape, self.capacity)
        found = (state["dx"], state["dy"], tuple(state["batch_shape"]), state["capacity"])
        if found != expected:
            raise ValueError(f"state has (dx, dy, batch_shape, capacity)={found}, expected {expected}")
        self.seed = int(state["seed"])  # the seed is part of the sample, as a generator's state would be
        self.samples = state["samples"].to(self.samples).clone()
        self.index = state["index"].clone()
        self.priority = state["priority"].clone()
        self.seen = int(state["seen"])
        return self
