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
batch dim, so they run in one batched call. The same seed draws the same subsets for x and y
(pairs stay paired), and estimators with a seed of their own (sliced projections, Lanczos
probes) keep it, so the jackknife measures sampling error at a fixed approximation; the
approximation's own Monte-Carlo error (sliced over slices, Rényi over probes) is then added in
quadrature. The jackknife describes the spread, not the bias: a biased estimator stays biased
(see ``permutation_null`` for the bias under independence).
"""
from __future__ import annotations

import inspect
import math

import torch

from .._validation import as_samples

_DELTA_METHOD = ("gaussian", "noisy")  # noisy: delta method plus Monte-Carlo spread
_HELD_OUT = ("infonce", "nwj", "mine", "smile")
_APPROXIMATION_ERROR = ("sliced", "renyi")


def _check_resamples(n_resamples, seed) -> None:
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 2:
        raise ValueError(f"n_resamples must be an integer >= 2, got {n_resamples!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"stderr_seed must be an integer, got {seed!r}")


def half_subsets(n: int, n_resamples: int, seed: int) -> torch.Tensor:
    """``[n_resamples, n // 2]`` row indices: random halves of ``range(n)``, without replacement, sorted."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.rand(n_resamples, n, generator=generator).argsort(-1)
    return order[:, : n // 2].sort(-1).values


def jackknife_stderr(estimator, samples: tuple, *, n_resamples: int = 32, seed: int = 0, **options) -> torch.Tensor:
    """Delete-half jackknife standard error of ``estimator(*samples, **options)`` per batch cell.

    ``samples`` are tensors ``[..., N, d]`` sharing ``N``; the subsets index dim ``-2`` of all of
    them alike. Returns a float64 tensor of the batch shape.
    """
    _check_resamples(n_resamples, seed)
    n = samples[0].shape[-2]
    if n < 4:
        raise ValueError(f"the jackknife standard error needs N >= 4 samples, got N={n}")
    index = half_subsets(n, n_resamples, seed).to(samples[0].device)
    stacked = [s.index_select(-2, index.flatten()).reshape(*s.shape[:-2], n_resamples, n // 2, s.shape[-1])
               for s in samples]
    estimates = estimator(*stacked, **options).double()
    dropped = n - n // 2
    return estimates.std(-1) * math.sqrt((n - dropped) / dropped)


def _takes_details(estimator) -> bool:
    return "details" in inspect.signature(estimator).parameters


def estimate_with_stderr(estimator, method: str, samples: tuple, options: dict, *, n_resamples: int = 32,
                         stderr_seed: int = 0):
    """``(value, stderr)`` for ``estimator(*samples, **options)``; see the module docstring for which error."""
    if options.get("details"):
        raise ValueError("return_stderr=True cannot be combined with details=True; details already carry "
                         "the estimator's own error where it has one")
    _check_resamples(n_resamples, stderr_seed)
    samples = tuple(as_samples(s, name) for s, name in zip(samples, ("x", "y")))
    if not _takes_details(estimator):
        value = estimator(*samples, **options)
        return value, jackknife_stderr(estimator, samples, n_resamples=n_resamples, seed=stderr_seed, **options)
    value, details = estimator(*samples, details=True, **options)
    own = details if isinstance(details, torch.Tensor) else getattr(details, "stderr", None)
    if own is not None and method in _DELTA_METHOD + _HELD_OUT:
        return value, own
    spread = jackknife_stderr(estimator, samples, n_resamples=n_resamples, seed=stderr_seed, **options)
    if own is not None and method in _APPROXIMATION_ERROR:
        spread = torch.sqrt(spread.square() + own.double().nan_to_num().square())
    return value, spread
