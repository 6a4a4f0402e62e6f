r"""Permutation null for any MI estimator: its value when the pairing of x and y is destroyed.

Shuffling the rows of :math:`y` keeps both marginals and makes :math:`X \perp Y`, so the
estimator's mean over shuffles estimates its bias at zero dependence for this N and these
marginals (Good 2005, *Permutation, Parametric and Bootstrap Tests of Hypotheses*; used for MI
by e.g. Kraskov et al. 2004, section IV). The shuffles run batched: the permutations become a
leading batch dim, which every estimator here accepts, in groups planned to fit in memory.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .._validation import as_samples, check_int, check_paired, check_seed
from . import registry
from .uncertainty import group_size


@dataclass
class PermutationNull:
    """Per batch cell: the estimate, the null mean and spread, and a one-sided permutation p-value."""

    estimate: torch.Tensor
    null_mean: torch.Tensor
    null_std: torch.Tensor
    p_value: torch.Tensor
    n_permutations: int

    @property
    def excess(self) -> torch.Tensor:
        """The estimate minus its value under independence."""
        return self.estimate - self.null_mean


def permutation_null(x, y, method: str = "gaussian", *, n_permutations: int = 32, permutation_seed: int = 0,
                     permutations_per_call: int | None = None, **options) -> PermutationNull:
    """Run ``method`` on ``x, y`` and on ``n_permutations`` row-shuffles of ``y`` (shared by all cells).

    ``permutation_seed`` draws the shuffles; ``options`` go to the estimator (its own ``seed``
    among them, fixed across shuffles). Every value is in the method's unit: nats unless ``base``
    is among ``options``; ``details=True`` is refused (the null is a set of values). The shuffles
    of all cells run as one more batch dim, ``permutations_per_call`` at a time (default: as many
    as fit, with their copies of ``y``, in ``uncertainty.WORKING_BYTES``, planned before any is
    made; the grouping changes memory and time, not the result).
    """
    estimator = registry.get(method, "mutual_information").mutual_information
    if options.get("details"):
        raise ValueError("permutation_null takes no details=True: it returns values (call the method for details)")
    check_int(n_permutations, "n_permutations", minimum=2)
    check_seed(permutation_seed, "permutation_seed")
    if permutations_per_call is not None:
        check_int(permutations_per_call, "permutations_per_call", minimum=1)
    x = as_samples(x, "x")
    y = as_samples(y, "y")
    check_paired(x, y)
    estimate = estimator(x, y, **options)  # validates the options before the plan reads them
    if permutations_per_call is None:
        permutations_per_call = group_size(method, options, (x, y), x.shape[-2], n_permutations)
    generator = torch.Generator().manual_seed(permutation_seed)
    order = torch.stack([torch.randperm(y.shape[-2], generator=generator) for _ in range(n_permutations)])
    null = []
    for part in torch.tensor_split(order, math.ceil(n_permutations / permutations_per_call)):
        shuffled = y[..., part.to(y.device), :].movedim(-3, 0)  # [p, ..., N, dy]: only this group's copies
        null.append(estimator(x.expand(part.shape[0], *x.shape), shuffled, **options))
        del shuffled
    null = torch.cat(null)
    p_value = ((null >= estimate).sum(0) + 1) / (n_permutations + 1)
    return PermutationNull(estimate, null.mean(0), null.std(0), p_value.to(torch.float64), n_permutations)
