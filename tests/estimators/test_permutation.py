"""The permutation null against the exact Wishart expectation of the Gaussian plug-in bias."""
import pytest
import torch

import emergence_fast as ef
from emergence_fast.estimators import gaussian


def test_gaussian_null_mean_matches_the_wishart_bias(generator):
    x = torch.randn(300, 8, generator=generator, dtype=torch.float64)
    y = x[:, :4] @ torch.randn(4, 6, generator=generator, dtype=torch.float64) + torch.randn(
        300, 6, generator=generator, dtype=torch.float64)
    null = ef.permutation_null(x, y, n_permutations=200, permutation_seed=1)
    bias = 0.5 * (gaussian.wishart_logdet_bias(8, torch.tensor(300)) + gaussian.wishart_logdet_bias(6, torch.tensor(300))
                  - gaussian.wishart_logdet_bias(14, torch.tensor(300)))
    # Shuffling keeps the (non-Gaussian-free) marginals and breaks dependence: E[null] = the exact plug-in bias.
    assert abs(float(null.null_mean) - float(bias)) < 4 * float(null.null_std) / 200**0.5 + 1e-3
    assert float(null.p_value) == pytest.approx(1 / 201) and float(null.excess) > 0.5
    assert torch.equal(null.estimate, ef.mutual_information(x, y))


def test_batched_cells_and_other_methods(generator):
    x = torch.randn(2, 400, 1, generator=generator, dtype=torch.float64)
    y = torch.cat([x[:1] + 0.5 * torch.randn(1, 400, 1, generator=generator, dtype=torch.float64),
                   torch.randn(1, 400, 1, generator=generator, dtype=torch.float64)])
    null = ef.permutation_null(x, y, method="ksg", n_permutations=16, k=3)
    assert null.estimate.shape == null.null_mean.shape == (2,)
    assert float(null.p_value[0]) < 0.1 and float(null.p_value[1]) > 0.05
    assert abs(float(null.null_mean[1])) < 0.05


def test_bad_arguments(generator):
    x = torch.randn(50, 2, generator=generator)
    with pytest.raises(ValueError, match="n_permutations"):
        ef.permutation_null(x, x, n_permutations=1)
    with pytest.raises(ValueError, match="method must be one of"):
        ef.permutation_null(x, x, method="magic")


def test_the_estimators_seed_and_the_shuffles_seed_are_two_arguments(generator):
    x = torch.randn(300, 3, generator=generator, dtype=torch.float64)
    y = x + torch.randn(300, 3, generator=generator, dtype=torch.float64)
    null = ef.permutation_null(x, y, method="sliced", n_permutations=4, seed=7, n_slices=8)
    assert torch.equal(null.estimate, ef.mutual_information(x, y, method="sliced", seed=7, n_slices=8))
    assert not torch.equal(null.estimate, ef.mutual_information(x, y, method="sliced", seed=0, n_slices=8))
    other = ef.permutation_null(x, y, method="sliced", n_permutations=4, seed=7, n_slices=8, permutation_seed=1)
    assert torch.equal(other.estimate, null.estimate) and not torch.equal(other.null_mean, null.null_mean)
    with pytest.raises(ValueError, match="permutation_null takes no details=True"):
        ef.permutation_null(x, y, details=True)
