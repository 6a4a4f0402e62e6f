r"""Permutation null for any MI estimator: its value when the pairing of x and y is destroyed.

Shuffling the rows of :math:`y` keeps both marginals and makes :math:`X \perp Y`, so the
estimator's mean over shuffles estimates its bias at zero dependence for this N and these
marginals (Good 2005, *Permutation, Parametric and Bootstrap Tests of Hypotheses*; used for MI
by e.g. Kraskov et al. 2004, section IV). All shuffles run in one batched call: the
permutations become a leading batch dim, which every estimator here accepts.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .._validation import as_samples, check_choice, check_paired
from . import MI_METHODS


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


def permutation_null(x, y, method: str = "gaussian", *, n_permutations: int = 32, seed: int = 0,
                     **options) -> PermutationNull:
    """Run ``method`` on ``x, y`` and on ``n_permutations`` row-shuffles of ``y`` (shared by all cells)."""
    check_choice(method, "method", MI_METHODS)
    if isinstance(n_permutations, bool) or not isinstance(n_permutations, int) or n_permutations < 2:
        raise ValueError(f"n_permutations must be an integer >= 2, got {n_permutations!r}")
    x = as_samples(x, "x")
    y = as_samples(y, "y")
    check_paired(x, y)
    estimate = MI_METHODS[method](x, y, **options)
    generator = torch.Generator().manual_seed(seed)
    order = torch.stack([torch.randperm(y.shape[-2], generator=generator) for _ in range(n_permutations)])
    shuffled = y[..., order.to(y.device), :]  # [..., P, N, dy]
    shuffled = shuffled.movedim(-3, 0)  # [P, ..., N, dy]
    null = MI_METHODS[method](x.expand(n_permutations, *x.shape), shuffled, **options)
    p_value = ((null >= estimate).sum(0) + 1) / (n_permutations + 1)
    return PermutationNull(estimate, null.mean(0), null.std(0), p_value.to(torch.float64), n_permutations)
