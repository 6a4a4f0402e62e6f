r"""k-nearest-neighbour entropy (Kozachenko–Leonenko) and mutual information (KSG).

Entropy. With :math:`\epsilon_i` the distance (the radius, not the diameter) from sample
:math:`i` to its :math:`k`-th nearest neighbour among the other :math:`N-1` samples, and
:math:`c_d` the volume of the unit ball of the chosen norm,

.. math::

    \hat H(X) = \psi(N) - \psi(k) + \log c_d + \frac{d}{N}\sum_{i=1}^{N} \log \epsilon_i,
    \qquad c_d^{\max} = 2^d, \quad c_d^{\mathrm{euclid}} = \frac{\pi^{d/2}}{\Gamma(d/2 + 1)}

(Kozachenko & Leonenko 1987, "Sample estimate of the entropy of a random vector", Probl.
Inf. Transm. 23; Kraskov, Stögbauer & Grassberger 2004, PRE 69, 066138, eq. 20, where
:math:`\epsilon` is twice the distance and :math:`c_d = 1` for the max-norm: the same number).

Mutual information (KSG). In the joint space :math:`z = (x, y)` with the max-norm
:math:`\|z - z'\| = \max(\|x - x'\|_\infty, \|y - y'\|_\infty)`, let :math:`\epsilon_i` be the
distance to the :math:`k`-th joint neighbour. Variant 1 (KSG eq. 8):

.. math::

    \hat I^{(1)} = \psi(k) + \psi(N) - \big\langle \psi(n_x + 1) + \psi(n_y + 1) \big\rangle,

with :math:`n_x(i) = \#\{j \ne i : \|x_i - x_j\| < \epsilon_i\}` (strictly less), likewise
:math:`n_y`. Variant 2 (KSG eq. 9): with :math:`\epsilon_x(i), \epsilon_y(i)` the largest
marginal distances from :math:`i` to its :math:`k` joint neighbours,

.. math::

    \hat I^{(2)} = \psi(k) - \frac1k + \psi(N) - \big\langle \psi(n_x) + \psi(n_y) \big\rangle,

with :math:`n_x(i) = \#\{j \ne i : \|x_i - x_j\| \le \epsilon_x(i)\}`, likewise :math:`n_y`.

Computation. Exact brute force, tiled (:mod:`emergence_fast.ops.knn`, the reference of the
native kernels): query rows are processed in tiles so that no :math:`N \times N` distance
matrix is ever held, with leading batch dims flattened and run together. Distances are
``torch.cdist`` (max-norm, or Euclidean without the matmul shortcut, so every pair is the
same number whatever the tiling); float64 input is measured in float64, other dtypes in
float32, and the counts are exact comparisons of those numbers. With a native backend (``cpp``,
``triton``, ``cuda``) the max-norm searches (entropy with ``metric="max"`` and KSG) run in
``ops.knn.knn_maxnorm`` (the same distances bit for bit, hence the same radii and counts; the
tiling arguments do not apply); Euclidean entropy and the ``torch`` backend use the tiled torch
reference. The Triton and CUDA kernels hold k <= 32 (``_dispatch.register_k_max``): a larger
``k`` falls back under ``backend="auto"`` and raises a ``ValueError`` when they were asked for.
Cost is :math:`O(N^2 d)` per batch cell.

Low dimensions. Brute force loses to a space-partitioning tree when the (joint) dimension is
small and N large: measured here (2 vCPU, ``benchmarks/RESULTS.md``), a KD-tree KSG on 1+1
dims takes 0.45 s at N = 50,000 against 2.0 s for the C++ brute force, and still wins at 2+2
dims from N ~ 10,000, but loses at 4+4 dims and beyond (1.4–4x at N = 5,000–50,000). ``algorithm="kd_tree"`` runs
scipy's ``cKDTree`` (CPU tensors only, measured in float64, where ``|a - b|`` of float32 or
float64 inputs is the same subtraction the reference does, so float64 input gives the
reference's max-norm radii and counts exactly, and Euclidean radii to rounding; with tied
distances its variant-2 neighbours may be other tied points than the lowest-index ones).

One dimension. When every searched space is one variable (entropy of a 1-D x; KSG with
:math:`d_x = d_y = 1`) ``algorithm="sorted"`` needs no O(N^2) work (CPU tensors only): the
entropy's k nearest of a value are among its k neighbours on either side in sorted order
(O(N log N + N k)); KSG's joint k nearest come from one 2-D ``cKDTree`` query, and the
marginal counts :math:`n_x, n_y` are runs of the sorted marginals found by ``searchsorted``
(O(N log N)). Every distance is measured again in the working dtype as the reference measures
it, and the ends of each run are checked with the reference's exact comparison, so radii and
counts equal the brute force's, ties included (variant 2's tied neighbours at the radius are
taken by lowest index, as the reference does). One caveat for float32: the tree orders
neighbours by float64 distances, which order them as float32 would unless two values differ
by more than a factor of about :math:`2^{29}` in magnitude (where a float32 difference is not
exact in float64). Measured against scikit-learn's ``mutual_info_regression`` in
``benchmarks/knn_1d.py`` (``benchmarks/RESULTS.md``).

``"auto"`` (default) takes, on CPU, ``"sorted"`` for one-dimensional samples from
:math:`N \ge` 2,000 (below it the C++ brute force is as fast or faster), else ``"kd_tree"``
when :math:`D \le 4` and :math:`N \ge 2500 D`, ``D`` the searched space's dimension, else
``"brute"``; on accelerators always ``"brute"``.

Ties. The estimators assume distinct points; duplicates (a zero :math:`k`-NN distance, in the
joint space or, for MI, in either marginal) bias them, so they raise a ``ValueError``. For
discrete or quantised data pass ``jitter > 0``: each dimension of each batch cell is centred
on its mean and gets seeded Gaussian noise of standard deviation

.. math::

    s = \max\big(\mathrm{jitter} \cdot \mathrm{sd},\; 2^{10}\, \epsilon_w \max_i |x_i - \bar x|\big)

(``sd`` the dimension's sample standard deviation in its cell, ``jitter`` itself for a
constant dimension), drawn from ``torch.Generator().manual_seed(seed)``; every batch cell gets
the same standard-normal draw, so a cell's estimate does not depend on which batch it is
computed in. The noise is added in float64 and the result rounded to the working precision
(float32 for float16, bfloat16 and float32 input, float64 for float64; :math:`\epsilon_w` its
machine epsilon), which is why it has a floor: noise below :math:`2^{10}` units in the last
place of the dimension's largest centred value would be rounded away (``jitter=1e-10`` on
float32 data would leave every tie in place), so smaller requests are raised to it (about
:math:`10^{-4}` of that value in float32; centring first keeps an offset from coarsening it).
Both estimators are translation invariant, so centring changes no estimate. Ties that survive
the noise still raise, with the advice to raise ``jitter``.

Constant input. A cell in which every row of x (or of y) is the same point has exactly zero
mutual information, and KSG returns 0 there (before and whatever the jitter); its
Kozachenko–Leonenko entropy is that of a point mass, :math:`-\infty` (as the Gaussian
entropy's), not a duplicates error.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .._validation import (as_samples, check_choice, check_int, check_paired, check_positive_float, check_seed,
                           constant_cells, log_base)
from ..ops.knn import TILE_BYTES, _k_nearest_mask, check_tile_rows, knn_maxnorm, knn_radii, ksg_counts, pick_backend
from .registry import Details, Estimator, register

METRICS = ("max", "euclidean")
VARIANTS = (1, 2)
ALGORITHMS = ("auto", "brute", "kd_tree", "sorted")
_NATIVE = ("cpp", "triton", "cuda")
_SORTED_MIN_N = 2000  # "auto" takes the sorted search for 1-D samples from here (benchmarks/RESULTS.md)


def _check_k(k, n: int) -> None:
    check_int(k, "k", minimum=1)
    if k >= n:
        raise ValueError(f"k must be smaller than the number of samples N (k < N), got k={k} and N={n}")


def _check_jitter(jitter, seed) -> None:
    check_positive_float(jitter, "jitter", allow_zero=True)
    check_seed(seed)


def _work_dtype(*tensors: torch.Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


_JITTER_FLOOR_ULPS = 2.0**10  # noise of fewer ulps of the working precision would be rounded away


def _add_jitter(x: torch.Tensor, jitter: float, generator: torch.Generator) -> torch.Tensor:
    """``x [B, N, d]`` centred per dim and batch cell plus seeded noise (module docstring, Ties); noise drawn on the CPU.

    The noise is scaled for ``x``'s own dtype (the working precision): never below
    ``_JITTER_FLOOR_ULPS`` units in the last place of the largest centred value, so it survives
    the rounding back to that dtype. One standard-normal draw ``[N, d]`` serves every batch cell
    (scaled by each cell's own sd), as the Rényi Lanczos probes do: a cell's jitter, hence its
    estimate, does not depend on the batch it comes in, so estimating cells in memory-bounded
    chunks gives the numbers of one batch.
    """
    if not jitter:
        return x
    # One [B, N, d] float64 temporary, centred in place; the estimators are translation invariant.
    out = x.to(torch.float64, copy=True)
    out.sub_(out.mean(dim=-2, keepdim=True))
    sd = out.std(dim=-2, keepdim=True)
    peak = torch.maximum(out.amax(dim=-2, keepdim=True), -out.amin(dim=-2, keepdim=True))
    floor = _JITTER_FLOOR_ULPS * torch.finfo(x.dtype).eps * peak
    scale = torch.where(sd > 0, torch.maximum(jitter * sd, floor), torch.full_like(sd, float(jitter)))
    noise = torch.randn(x.shape[-2:], generator=generator, dtype=torch.float64).to(x.device)
    return out.addcmul_(noise, scale).to(x.dtype)


def _duplicates_error(space: str, jitter: float) -> ValueError:
    if jitter:
        return ValueError(
            f"{space} still has duplicate points after jitter={jitter!r} (a zero k-nearest-neighbour distance): the "
            "noise was too small to separate that many tied values at the working precision; pass a larger jitter "
            "(e.g. jitter=1e-3, in units of each dimension's standard deviation), or use a discrete estimator"
        )
    return ValueError(
        f"{space} has duplicate points (a zero k-nearest-neighbour distance), which biases the kNN estimator; "
        "pass jitter > 0 (e.g. jitter=1e-10) to break ties, or use a discrete estimator"
    )


def _max_multiplicity(x: torch.Tensor) -> int:
    """Largest number of identical rows within one batch cell of ``x [B, N, d]``.

    A point has a zero k-NN distance exactly when it shares its value with ``>= k`` others,
    i.e. when this exceeds ``k``; sorting costs far less than counting zeros in every tile.
    """
    batch, n, d = x.shape
    if d == 1 and x.device.type == "cpu":
        # One variable: runs of equal values in each sorted cell, far cheaper than unique rows; in numpy,
        # whose sort runs on one thread (torch's threaded sort and bincount stall on a loaded machine).
        xs = np.sort(x[..., 0].detach().numpy(), axis=-1)
        starts = np.ones(xs.shape, dtype=bool)
        starts[:, 1:] = xs[:, 1:] != xs[:, :-1]
        return int(np.diff(np.append(np.flatnonzero(starts), starts.size)).max())
    cell = torch.arange(batch, device=x.device).repeat_interleave(n).unsqueeze(-1).to(x.dtype)
    rows = torch.cat([cell, x.reshape(batch * n, -1)], dim=-1)
    return int(torch.unique(rows, dim=0, return_counts=True)[1].max())


def _pick_algorithm(algorithm: str, x: torch.Tensor, dims: int, one_d: bool) -> str:
    """The search that runs: ``"sorted"``, ``"kd_tree"`` or ``"brute"`` (module docstring, Low dimensions).

    ``dims`` is the searched space's dimension, ``one_d`` whether every searched space is one
    variable (entropy of a 1-D x, or KSG with dx = dy = 1).
    """
    check_choice(algorithm, "algorithm", ALGORITHMS)
    if algorithm in ("kd_tree", "sorted") and x.device.type != "cpu":
        raise ValueError(f"algorithm={algorithm!r} runs on CPU tensors only, got a tensor on {x.device}; "
                         "use algorithm='brute' (or 'auto') on accelerators")
    if algorithm == "sorted" and not one_d:
        raise ValueError("algorithm='sorted' needs one-dimensional samples (entropy: d = 1; KSG: dx = dy = 1), "
                         f"got a {dims}-dimensional search space; use 'auto', 'brute' or 'kd_tree'")
    if algorithm != "auto":
        return algorithm
    n = x.shape[-2]
    if x.device.type != "cpu":
        return "brute"
    if one_d and n >= _SORTED_MIN_N:
        return "sorted"
    return "kd_tree" if dims <= 4 and n >= 2500 * dims else "brute"


def _tree_radii(x: torch.Tensor, k: int, p: float) -> torch.Tensor:
    """KD-tree twin of :func:`~emergence_fast.ops.knn.knn_radii` for CPU ``x [B, N, d]``: the (k+1)-th
    distance counting self."""
    from scipy.spatial import cKDTree

    cells = x.double().numpy()
    radii = [cKDTree(c).query(c, k=[k + 1], p=p, workers=-1)[0][:, 0] for c in cells]
    return torch.from_numpy(np.stack(radii))


def _tree_ksg_counts(x: torch.Tensor, y: torch.Tensor, k: int, variant: int):
    """KD-tree twin of :func:`~emergence_fast.ops.knn.ksg_counts` for CPU tensors (float64 radii, int64 counts)."""
    from scipy.spatial import cKDTree

    out = []
    for xc, yc in zip(x.double().numpy(), y.double().numpy()):
        joint = np.concatenate([xc, yc], axis=1)
        dist, idx = cKDTree(joint).query(joint, k=k + 1, p=np.inf, workers=-1)
        eps = dist[:, -1]
        counts = []
        for marg in (xc, yc):
            if variant == 1:  # cKDTree counts d <= r; the largest float below eps makes it d < eps
                radius = np.nextafter(eps, 0.0)
            else:
                radius = np.abs(marg[idx] - marg[:, None, :]).max(axis=(1, 2))  # self adds 0
            within = cKDTree(marg).query_ball_point(marg, radius, p=np.inf, return_length=True, workers=-1)
            counts.append(within - 1)
        out.append((eps, *counts))
    eps, n_x, n_y = (np.stack(parts) for parts in zip(*out))
    return torch.from_numpy(eps), torch.from_numpy(n_x).long(), torch.from_numpy(n_y).long()


def _sorted_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """Sorted-array twin of :func:`~emergence_fast.ops.knn.knn_radii` for CPU ``x [B, N, 1]``: ``[B, N]`` in x's dtype.

    In one dimension the k nearest others of the value at sorted position p are among positions
    p-k .. p+k (|a - b| rounds monotonically in b), so the k-th smallest of those 2k distances,
    each the reference's |x_i - x_j| in x's dtype, is the reference's radius exactly.
    """
    values = x[..., 0].detach().numpy()
    order = np.argsort(values, axis=-1, kind="stable")
    xs = np.take_along_axis(values, order, axis=-1)
    n = xs.shape[-1]
    pad = np.full(xs.shape[:-1] + (k,), np.inf, dtype=xs.dtype)  # no neighbour beyond either end
    padded = np.concatenate([pad, xs, pad], axis=-1)
    shifts = [s for s in range(-k, k + 1) if s]
    dist = np.stack([np.abs(padded[..., k + s:k + s + n] - xs) for s in shifts], axis=-1)
    kth = np.partition(dist, k - 1, axis=-1)[..., k - 1]
    out = np.empty_like(kth)
    np.put_along_axis(out, order, kth, axis=-1)
    return torch.from_numpy(out)


def _count_within(xs: np.ndarray, q: np.ndarray, r: np.ndarray, strict: bool) -> np.ndarray:
    """``#{j : |xs_j - q_i| < r_i}`` (``strict``) or ``<= r_i`` per query, self included, with ``|xs_j - q_i|``
    rounded in the arrays' dtype exactly as the brute-force reference rounds it.

    ``xs`` is sorted; the rounded ``|xs_j - q|`` falls then rises with j, so the rows within are one
    run of positions. ``searchsorted`` on ``q -/+ r`` finds its ends to rounding; each end is then
    moved a whole run of equal values at a time until the exact comparison holds at it and fails
    beyond it (a few ulps: a handful of passes over the few rows that need them).
    """
    def inside(v, rows):
        d = np.abs(v - q[rows])
        return d < r[rows] if strict else d <= r[rows]

    n = xs.shape[0]
    lo = np.searchsorted(xs, q - r, side="left")
    hi = np.searchsorted(xs, q + r, side="right")
    for end, step_out, step_in in ((lo, -1, 0), (hi, 0, -1)):
        # step_out: offset of the next value outside this end; step_in: offset of the last value inside.
        # Only rows whose end just moved are looked at again.
        rows = np.arange(n)
        while rows.size:  # widen while the next value out is inside
            rows = rows[(end[rows] + step_out >= 0) & (end[rows] + step_out < n)]
            rows = rows[inside(xs[end[rows] + step_out], rows)]
            end[rows] = np.searchsorted(xs, xs[end[rows] + step_out], side="left" if step_out else "right")
        rows = np.arange(n)
        while rows.size:  # narrow while the last value in, on q's side of the run, is outside
            rows = rows[(end[rows] + step_in >= 0) & (end[rows] + step_in < n)]
            v = xs[end[rows] + step_in]
            rows = rows[(v <= q[rows] if step_in == 0 else v >= q[rows]) & ~inside(v, rows)]
            end[rows] = np.searchsorted(xs, xs[end[rows] + step_in], side="right" if step_in == 0 else "left")
    return np.maximum(hi - lo, 0)


def _sorted_ksg_counts(x: torch.Tensor, y: torch.Tensor, k: int, variant: int):
    """Twin of :func:`~emergence_fast.ops.knn.ksg_counts` for CPU ``x, y [B, N, 1]`` in O(N log N) per cell:
    the same radii (x's dtype) and int64 counts.

    The k nearest joint neighbours come from scipy's ``cKDTree`` (float64, which holds float32
    and float64 values exactly); their distances are then measured again in the working dtype,
    as the reference measures them. Variant 2's k nearest are the reference's (ties at the
    radius by lowest index): where the (k+1)-th nearest other is as far as the k-th, the tree's
    pick among the tied is arbitrary, so those rows are searched by brute force with the
    reference's rule. The marginal counts are runs of the sorted marginals (:func:`_count_within`).
    Each cell is processed in x-sorted row order (queries near in memory are near in space:
    measured at N = 50,000, ``searchsorted`` ~10x faster on them, the tree query ~15 %). The caller has
    checked that no value repeats more than k times in x or y, so each row's own index is among
    its k + 1 nearest in the tree's answer.
    """
    from scipy.spatial import cKDTree

    cells, n = x.shape[:2]
    radius = np.empty((cells, n), dtype=x.detach().numpy().dtype)
    counts = np.empty((2, cells, n), dtype=np.int64)
    extra = 1 if variant == 2 else 0  # one more neighbour, to see ties at the radius
    rows = np.arange(n)
    for c in range(cells):
        order = np.argsort(x[c, :, 0].detach().numpy(), kind="stable")
        xo, yo = x[c, order, 0].detach().numpy(), y[c, order, 0].detach().numpy()  # rows in x order
        joint = np.stack([xo, yo], axis=1).astype(np.float64)
        idx = cKDTree(joint).query(joint, k=k + 1 + extra, p=np.inf, workers=-1)[1]
        # Self first (a twin at distance 0 may come before it), then the others in the tree's order.
        idx = np.take_along_axis(idx, np.argsort(idx != rows[:, None], axis=1, kind="stable"), axis=1)[:, 1:]
        marg = [np.abs(m[idx] - m[:, None]) for m in (xo, yo)]  # [N, k + extra] in the working dtype
        near = np.maximum(*marg)
        eps = near[:, :k].max(axis=1)
        radius[c, order] = eps
        if variant == 1:
            bounds, strict = (eps, eps), True
        else:
            bounds, strict = [m[:, :k].max(axis=1) for m in marg], False
            tied = np.flatnonzero(near[:, k] == eps)
            if tied.size:  # by original index, as the reference breaks ties
                ext = _tied_extents(x[c, :, 0], y[c, :, 0], torch.from_numpy(order[tied]),
                                    torch.from_numpy(eps[tied]), k)
                for bound, e in zip(bounds, ext):
                    bound[tied] = e.numpy()
        y_order = np.argsort(yo, kind="stable")
        for m, (values, bound, by) in enumerate(((xo, bounds[0], rows), (yo, bounds[1], y_order))):
            within = np.empty(n, dtype=np.int64)
            sorted_values = values[by]
            within[by] = _count_within(sorted_values, sorted_values, bound[by], strict)
            self_in = (bound > 0) if strict else 1  # |x_i - x_i| = 0 counts only where it is below the bound
            counts[m, c, order] = within - self_in
    return torch.from_numpy(radius), torch.from_numpy(counts[0]), torch.from_numpy(counts[1])


def _tied_extents(x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor, eps: torch.Tensor, k: int):
    """Variant 2's marginal extents of ``rows`` by brute force over all N, with the reference's rule for the k
    nearest (``ops.knn._k_nearest_mask``: ties at the radius by lowest index); ``x, y [N]``, ``eps`` the rows'
    radii. Rows go in tiles of about ``TILE_BYTES``."""
    n = x.shape[0]
    tile = max(1, TILE_BYTES // (3 * n * x.element_size()))
    out = ([], [])
    for start in range(0, rows.numel(), tile):
        part = rows[start:start + tile]
        dx, dy = (torch.abs(m[part, None] - m[None, :]) for m in (x, y))
        for d in (dx, dy):
            d[torch.arange(part.numel()), part] = math.inf  # not its own neighbour
        mask = _k_nearest_mask(torch.maximum(dx, dy), eps[start:start + tile, None], k)
        for o, d in zip(out, (dx, dy)):
            o.append(torch.where(mask, d, torch.zeros_like(d)).amax(-1))
    return torch.cat(out[0]), torch.cat(out[1])


def _psi(v: int) -> float:
    return float(torch.special.digamma(torch.tensor(float(v), dtype=torch.float64)))


def _log_unit_ball(d: int, metric: str) -> float:
    if metric == "max":
        return d * math.log(2.0)
    return 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d + 1)


@dataclass
class KNNDetails(Details):
    """How a kNN estimate was computed: ``k``, the ``algorithm`` that ran (``"sorted"``, ``"kd_tree"`` or
    ``"brute"``), the ``backend`` of the neighbour search and the ``jitter`` added. No standard
    error of its own (``stderr`` is None: ``return_stderr`` uses the jackknife)."""

    k: int
    algorithm: str
    backend: str
    jitter: float
    stderr: None = None


def entropy(x, *, k: int = 3, metric: str = "max", jitter: float = 0.0, seed: int = 0, base=None, backend=None,
            algorithm: str = "auto", details: bool = False, _tile_rows=None):
    """Kozachenko–Leonenko differential entropy of ``x [..., N, d]`` per leading batch cell.

    Returns a float64 tensor of the batch shape, in nats (or in ``base``). ``metric`` is
    ``"max"`` (Chebyshev) or ``"euclidean"``; both estimate the same entropy. ``algorithm`` is
    ``"auto"``, ``"brute"``, ``"kd_tree"`` or ``"sorted"`` (d = 1 only; see the module docstring).
    A cell whose rows are all one point gets ``-inf`` (a point mass). Raises a ``ValueError`` on
    duplicate points unless ``jitter > 0`` (noise scaled for the working precision: module
    docstring, Ties), and on ties that survive the jitter; on ``algorithm="kd_tree"`` or
    ``"sorted"`` for a tensor off the CPU, and ``"sorted"`` for d > 1. ``details=True`` adds
    :class:`KNNDetails`.
    """
    x = as_samples(x, "x")
    chosen = pick_backend(backend, x.device, k)
    check_choice(metric, "metric", METRICS)
    n, d = x.shape[-2:]
    _check_k(k, n)
    _check_jitter(jitter, seed)
    unit = log_base(base)
    lead = x.shape[:-2]
    x3 = x.reshape(-1, n, d).to(_work_dtype(x))
    search = _pick_algorithm(algorithm, x3, d, d == 1)
    check_tile_rows(_tile_rows)
    value = torch.full(x3.shape[:1], -math.inf, dtype=torch.float64, device=x.device)  # a point mass: -inf
    live = ~constant_cells(x3)
    if bool(live.any()):
        x3 = _add_jitter(x3 if bool(live.all()) else x3[live], jitter, torch.Generator().manual_seed(seed))
        if search == "sorted":
            radii = _sorted_radii(x3, k).double()
        elif search == "kd_tree":
            radii = _tree_radii(x3, k, math.inf if metric == "max" else 2.0)
        elif chosen in _NATIVE and metric == "max":  # the native kernel does not tile: _tile_rows unused
            radii = knn_maxnorm(x3, d, k, 0, backend=chosen)[0].double()
        else:
            radii = knn_radii(x3, k, metric=metric, _tile_rows=_tile_rows).double()
        if bool((radii == 0).any()):
            raise _duplicates_error("x", jitter)
        value[live] = (_psi(n) - _psi(k) + _log_unit_ball(d, metric) + d * radii.log().mean(-1)).to(value.device)
    value = (value / unit).reshape(lead)
    if not details:
        return value
    return value, KNNDetails(k=k, algorithm=search, backend=chosen, jitter=jitter)


def mutual_information(x, y, *, k: int = 3, variant: int = 1, jitter: float = 0.0, seed: int = 0, base=None,
                       backend=None, algorithm: str = "auto", details: bool = False, _tile_rows=None):
    """KSG estimate of I(X;Y) between ``x [..., N, dx]`` and ``y [..., N, dy]`` per batch cell.

    ``variant`` is 1 or 2 (KSG eqs. 8 and 9); ``algorithm`` is ``"auto"``, ``"brute"``,
    ``"kd_tree"`` or ``"sorted"`` (dx = dy = 1 only; see the module docstring; the tree and the
    sorted search run on CPU tensors only and raise a ``ValueError`` elsewhere). Returns a
    float64 tensor of the batch shape, in nats (or in ``base``). The estimate can be slightly negative for independent variables.
    A cell in which x or y is constant (every row one point) gets exactly 0. Raises a
    ``ValueError`` on duplicate points (joint or in a marginal) unless ``jitter > 0`` (noise
    scaled for the working precision: module docstring, Ties), and on ties that survive it.
    ``details=True`` adds :class:`KNNDetails`.
    """
    x = as_samples(x, "x")
    y = as_samples(y, "y")
    check_paired(x, y)
    chosen = pick_backend(backend, x.device, k)
    check_int(variant, "variant", minimum=1, maximum=2)
    n = x.shape[-2]
    _check_k(k, n)
    _check_jitter(jitter, seed)
    unit = log_base(base)
    lead = x.shape[:-2]
    dtype = _work_dtype(x, y)
    x3, y3 = x.reshape(-1, n, x.shape[-1]).to(dtype), y.reshape(-1, n, y.shape[-1]).to(dtype)
    search = _pick_algorithm(algorithm, x3, x3.shape[-1] + y3.shape[-1], x3.shape[-1] == y3.shape[-1] == 1)
    check_tile_rows(_tile_rows)
    value = torch.zeros(x3.shape[:1], dtype=torch.float64, device=x.device)  # I = 0 where a side is constant
    live = ~(constant_cells(x3) | constant_cells(y3))
    if bool(live.any()):
        if not bool(live.all()):
            x3, y3 = x3[live], y3[live]
        generator = torch.Generator().manual_seed(seed)
        x3, y3 = _add_jitter(x3, jitter, generator), _add_jitter(y3, jitter, generator)
        value[live] = _ksg(x3, y3, k, variant, jitter, chosen, search, _tile_rows).to(value.device)
    value = (value / unit).reshape(lead)
    if not details:
        return value
    return value, KNNDetails(k=k, algorithm=search, backend=chosen, jitter=jitter)


def _ksg(x3: torch.Tensor, y3: torch.Tensor, k: int, variant: int, jitter: float, chosen: str, search: str,
         _tile_rows) -> torch.Tensor:
    """KSG estimate in nats ``[B]`` of ``x3 [B, N, dx]``, ``y3 [B, N, dy]`` (jittered, non-constant cells)."""
    n = x3.shape[-2]
    for name, z in (("x", x3), ("y", y3)):
        if _max_multiplicity(z) > k:
            raise _duplicates_error(name, jitter)
    if search == "sorted":
        radius, n_x, n_y = _sorted_ksg_counts(x3, y3, k, variant)
    elif search == "kd_tree":
        radius, n_x, n_y = _tree_ksg_counts(x3, y3, k, variant)
    elif chosen in _NATIVE:  # the native kernel does not tile: _tile_rows unused
        joint = torch.cat([x3, y3], dim=-1)
        radius, n_x, n_y = knn_maxnorm(joint, x3.shape[-1], k, variant, backend=chosen)
    else:
        radius, n_x, n_y = ksg_counts(x3, y3, k, variant, _tile_rows)
    if bool((radius == 0).any()):
        raise _duplicates_error("the joint sample (x, y)", jitter)
    psi = torch.special.digamma
    n_x, n_y = n_x.double(), n_y.double()
    if variant == 1:
        return _psi(k) + _psi(n) - (psi(n_x + 1) + psi(n_y + 1)).mean(-1)
    return _psi(k) - 1.0 / k + _psi(n) - (psi(n_x) + psi(n_y)).mean(-1)


def native_knn_for(device, backend=None) -> bool:
    """Whether the k-NN search runs in a native kernel with ``backend`` (default: the dispatch default) on ``device``."""
    try:
        return pick_backend(backend, torch.device(device), 3) in _NATIVE
    except ValueError:
        return False


def working_bytes(options: dict, n: int, dx: int, dy: int, batch: int, *, native_knn: bool = True) -> int:
    """Modelled peak working memory (bytes) of one KSG call on ``batch`` cells of float32 ``[n, dx]``, ``[n, dy]``
    (the inputs not counted; ``dy = 0`` for the entropy). ``native_knn``: the search runs in a native kernel
    (else the torch reference's distance tiles add ``4 x TILE_BYTES``). Measured by
    ``python -m benchmarks.estimate_memory`` (see :mod:`emergence_fast.estimate_memory`)."""
    elements = n * (dx + dy)
    # Measured at 64 x 512 x 576: 12 B per element at the peak -- the jittered float32 copies and their
    # concatenation (8 B) while one side's float64 jitter temporaries live; radii and counts per row.
    tree = 128 * n if dx + dy <= 4 else 0
    per_cell = 14 * elements + 64 * n + tree
    fixed = 16 * n * max(dx, dy) + (0 if native_knn else 4 * TILE_BYTES)  # the shared noise draw
    return batch * per_cell + fixed


register(Estimator(
    name="knn", summary="Kozachenko-Leonenko kNN differential entropy (Kraskov et al. 2004, eq. 20)",
    kind="sample", entropy=entropy, uncertainty="jackknife", working_bytes=working_bytes))
register(Estimator(
    name="ksg", summary="KSG kNN mutual information (Kraskov, Stoegbauer & Grassberger 2004, eqs. 8-9)",
    kind="sample", mutual_information=mutual_information, uncertainty="jackknife", ie=True,
    working_bytes=working_bytes,
    # Hidden states of discrete prefixes repeat exactly, which kNN counts cannot resolve: IE adds
    # a small jitter (scaled to the working precision) by default.
    ie_defaults={"jitter": 1e-4}))
