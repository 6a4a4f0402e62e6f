r"""Standard errors for every estimator: ``return_stderr=True`` of the public API.

Where an estimator has its own variance it is used: the delta method for Gaussian MI,
:math:`\mathrm{se}(\hat I) \approx \sqrt{\sum_i \rho_i^2 / N}` over the canonical correlations
:math:`\rho_i`, the delta method plus the Monte-Carlo spread for the noisy-channel MI
(:mod:`.noisy`), and the held-out standard error of the neural bounds. Everything else (kNN, KSG,
binned, matrix Rényi, sliced, Gaussian entropy, the ``chen2024`` preset) gets the
delete-half jackknife (Shao & Wu 1989, "A general theory for jackknife variance estimation",
Ann. Statist. 17): with :math:`\hat\theta_s` the estimate on a random subset of
:math:`m = \lfloor N/2 \rfloor` samples drawn without replacement, :math:`d = N - m`, and
:math:`R` subsets,

.. math::

    \widehat{\mathrm{Var}}(\hat\theta_N) = \frac{N - d}{d} \cdot \frac{1}{R - 1}
        \sum_{s=1}^{R} \big(\hat\theta_s - \bar\theta\big)^2 .

Subsets without replacement keep every point distinct, which the bootstrap does not: a
bootstrap resample duplicates points, and duplicates break the kNN estimators (zero
distances) and bias the binned ones. All :math:`R` subsets are stacked as one more leading
batch dim, so they run in one batched call; ``resamples_per_call`` splits them into several
calls of that many subsets to bound memory (the stacked copy costs :math:`R/2` times the input),
with the same result: each subset's estimate does not depend on the call it is in. Left unset, it
is chosen before any subset is made so that cells x subsets fit in ``WORKING_BYTES``. The same
seed draws the same subsets for x and y (pairs stay paired), and estimators with a seed of their own (sliced projections, Lanczos
probes) keep it, so the jackknife measures sampling error at a fixed approximation; the
approximation's own Monte-Carlo error (sliced over slices, Rényi over probes) is then added in
quadrature. The jackknife describes the spread, not the bias: a biased estimator stays biased
(see ``permutation_null`` for the bias under independence).
"""
from __future__ import annotations

import math
import warnings

import torch

from .._validation import as_samples, check_int, check_seed
from . import registry
from .knn import native_knn_for


def batch_invariant_std(t: torch.Tensor) -> torch.Tensor:
    """Sample standard deviation (``correction=1``) over the last dim of ``t [..., R]``: ``[...]``.

    Each row's value depends on that row alone, bit for bit. ``torch.std`` over a contiguous last
    dim does not guarantee that (measured on CPU: one row alone and the same row among six differ
    in the last bit), and a cell must get the same bits in any chunk of cells. Elementwise adds
    over the (short: resamples, probes, held-out minibatches) last dim make it so. ``R = 1``: NaN.
    """
    rows = t.movedim(-1, 0)
    n = rows.shape[0]
    total = rows[0].clone()
    for row in rows[1:]:
        total += row
    mean = total / n
    squares = torch.zeros_like(mean)
    for row in rows:
        squares += (row - mean).square()
    return (squares / (n - 1)).sqrt() if n > 1 else torch.full_like(mean, float("nan"))


def _check_resamples(n_resamples, seed) -> None:
    check_int(n_resamples, "n_resamples", minimum=2)
    check_seed(seed, "stderr_seed")


def half_subsets(n: int, n_resamples: int, seed: int) -> torch.Tensor:
    """``[n_resamples, n // 2]`` row indices: random halves of ``range(n)``, without replacement, sorted."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.rand(n_resamples, n, generator=generator).argsort(-1)
    return order[:, : n // 2].sort(-1).values


WORKING_BYTES = 2**31  # room for stacked resamples or permutations and their estimates, when no group size is given


def _call_bytes(method: str, options: dict, n: int, widths: tuple, batch: int, device) -> int:
    """Modelled peak bytes of one call of ``method`` on ``batch`` cells of ``n`` rows (beyond its input)."""
    dx, dy = widths[0], widths[1] if len(widths) > 1 else 0
    return registry.get(method).call_bytes(options, n, dx, dy, batch,
                                           native_knn=native_knn_for(device, options.get("backend")))


def group_size(method: str, options: dict, samples: tuple, rows: int, total: int, budget: int | None = None) -> int:
    """How many of ``total`` resamples (or permutations) of ``rows`` rows one estimator call may stack.

    The largest count whose stacked copies of ``samples`` (``[..., N, d]`` each, every batch cell)
    and modelled working memory fit in ``budget`` bytes (default ``WORKING_BYTES``), computed before
    any work; at least two
    (a batched product of one rounds differently, :mod:`emergence_fast.estimate_memory`), so a
    cell's result does not depend on the grouping.
    """
    cells = math.prod(samples[0].shape[:-2])
    widths = tuple(s.shape[-1] for s in samples)
    itemsize = max(s.element_size() for s in samples)

    def cost(r: int) -> int:
        stacked = r * cells * rows * sum(widths) * itemsize
        return stacked + _call_bytes(method, options, rows, widths, r * cells, samples[0].device)

    budget = WORKING_BYTES if budget is None else budget
    slope = cost(2) - cost(1)  # the model is affine in the batch
    fits = (budget - (cost(1) - slope)) // slope if slope > 0 else total
    return int(min(total, max(2, fits)))


def _check_resamples_per_call(resamples_per_call) -> None:
    if resamples_per_call is not None:
        check_int(resamples_per_call, "resamples_per_call", minimum=1)


def jackknife_stderr(estimator, samples: tuple, options: dict | None = None, *, n_resamples: int = 32, seed: int = 0,
                     resamples_per_call: int | None = None) -> torch.Tensor:
    """Delete-half jackknife standard error of ``estimator(*samples, **options)`` per batch cell.

    ``seed`` draws the subsets; an estimator's own ``seed`` (its jitter, projections, critics) is
    one of ``options``, kept fixed across subsets.

    ``samples`` are tensors ``[..., N, d]`` sharing ``N``; the subsets index dim ``-2`` of all of
    them alike. ``resamples_per_call`` (default all ``n_resamples``) is how many subsets are
    stacked into one estimator call: the stacked copies hold ``resamples_per_call * (N // 2)``
    rows per cell. Returns a float64 tensor of the batch shape.
    """
    _check_resamples(n_resamples, seed)
    _check_resamples_per_call(resamples_per_call)
    n = samples[0].shape[-2]
    if n < 4:
        raise ValueError(f"the jackknife standard error needs N >= 4 samples, got N={n}")
    index = half_subsets(n, n_resamples, seed).to(samples[0].device)
    # Calls of near-equal size (differing by at most one subset), never a lone subset when avoidable.
    calls = 1 if resamples_per_call is None else math.ceil(n_resamples / resamples_per_call)
    estimates = []
    for part in torch.tensor_split(index, calls):
        stacked = [s.index_select(-2, part.flatten()).reshape(*s.shape[:-2], part.shape[0], n // 2, s.shape[-1])
                   for s in samples]
        estimates.append(estimator(*stacked, **(options or {})).double())
        del stacked
    estimates = torch.cat(estimates, -1)
    dropped = n - n // 2
    return batch_invariant_std(estimates) * math.sqrt((n - dropped) / dropped)


def warn_undefined(stderr: torch.Tensor, method: str) -> None:
    """A ``RuntimeWarning`` saying in how many cells a standard error is NaN (undefined), if any."""
    undefined = int(stderr.isnan().sum())
    if undefined:
        warnings.warn(f"return_stderr: the standard error of the {method} estimate is NaN in {undefined} of "
                      f"{stderr.numel()} cells: it is undefined there (an estimate, or its value on half the samples, "
                      "that is not finite: a singular or degenerate cell such as fewer distinct samples than "
                      "dimensions; or, for a neural bound, a single held-out minibatch)", RuntimeWarning, stacklevel=3)


def estimate_with_stderr(estimator, method: str, samples: tuple, options: dict, *, n_resamples: int = 32,
                         stderr_seed: int = 0, resamples_per_call: int | None = None):
    """``(value, stderr)`` for ``estimator(*samples, **options)``, by the ``uncertainty`` rule that the
    registered estimator ``method`` declares (:class:`.registry.Estimator`; module docstring).

    ``resamples_per_call`` bounds how many jackknife subsets run in one call (see
    :func:`jackknife_stderr`); it changes memory and time, not the result. By default it is
    planned up front (:func:`group_size`) so that the stacked subsets of every cell and the
    estimator's modelled working memory fit in ``WORKING_BYTES`` (2 GiB). Where the error is
    undefined (a non-finite value or subset estimate: a singular or degenerate cell) it is NaN;
    it never raises for that (:func:`warn_undefined` says so to a user; IE notes it instead).
    """
    if options.get("details"):
        raise ValueError("return_stderr=True cannot be combined with details=True; details already carry "
                         "the estimator's own error where it has one")
    rule = registry.get(method).uncertainty
    _check_resamples(n_resamples, stderr_seed)
    _check_resamples_per_call(resamples_per_call)
    samples = tuple(as_samples(s, name) for s, name in zip(samples, ("x", "y")))
    own = None
    if rule == "jackknife":
        value = estimator(*samples, **options)  # validates the options before the plan reads them
    else:
        value, details = estimator(*samples, details=True, **options)
        own = getattr(details, "stderr", None)
        if rule == "own" and own is not None:
            return value, own
    if resamples_per_call is None:  # bound the stacked half-samples before any of them is made
        resamples_per_call = group_size(method, options, samples, samples[0].shape[-2] // 2, n_resamples)
    spread = jackknife_stderr(estimator, samples, options, n_resamples=n_resamples, seed=stderr_seed,
                              resamples_per_call=resamples_per_call)
    if rule == "jackknife+own" and own is not None:
        spread = torch.sqrt(spread.square() + own.double().nan_to_num().square())
    return value, spread
