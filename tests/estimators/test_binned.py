"""Miller–Madow plug-in estimators against exact enumeration."""
import math
from collections import Counter

import numpy as np
import pytest
import torch

import emergence_fast as ef
from emergence_fast.estimators import binned


def miller_madow(symbols):
    counts = np.array(list(Counter(symbols).values()), dtype=np.float64)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum() + (len(counts) - 1) / (2 * counts.sum()))


def test_integer_codes_match_hand_enumeration(generator):
    x = torch.randint(0, 7, (3, 400, 2), generator=generator)
    y = (x[..., :1] + torch.randint(0, 2, (3, 400, 1), generator=generator)) % 5
    h = ef.entropy(x, method="binned")
    mi = ef.mutual_information(x, y, method="binned")
    for cell in range(3):
        xs = [tuple(r) for r in x[cell].tolist()]
        ys = [tuple(r) for r in y[cell].tolist()]
        joint = [a + b for a, b in zip(xs, ys)]
        assert abs(float(h[cell]) - miller_madow(xs)) < 1e-12
        assert abs(float(mi[cell]) - (miller_madow(xs) + miller_madow(ys) - miller_madow(joint))) < 1e-12


def test_token_ids_as_a_1d_tensor():
    ids = torch.arange(1000) % 10
    assert abs(float(ef.entropy(ids, method="binned")) - (math.log(10) + 9 / 2000)) < 1e-12
    assert abs(float(ef.entropy(ids, method="binned", base=2)) - (math.log2(10) + 9 / 2000 / math.log(2))) < 1e-12


def test_floats_are_binned_per_cell_and_dimension():
    x = torch.linspace(0, 1, 800, dtype=torch.float64).reshape(800, 1)
    codes = binned.discretise(x, 8)
    assert torch.equal(torch.bincount(codes.flatten()), torch.full((8,), 100))
    assert torch.equal(binned.discretise(torch.ones(5, 1), 4), torch.zeros(5, 1, dtype=torch.long))


def test_identical_and_independent_variables(generator):
    x = torch.randint(0, 4, (20000, 1), generator=generator)
    assert abs(float(ef.mutual_information(x, x, method="binned")) - float(ef.entropy(x, method="binned"))) < 1e-12
    y = torch.randint(0, 4, (20000, 1), generator=generator)
    assert abs(float(ef.mutual_information(x, y, method="binned"))) < 2e-3


def test_bad_bins():
    with pytest.raises(ValueError, match="bins"):
        ef.entropy(torch.randn(10, 1), method="binned", bins=0)


def test_plug_in_entropy_of_counts_is_exact_for_uniform_and_skips_empty_cells():
    assert float(binned.plug_in_entropy(torch.full((10,), 200))) == math.log(10)
    got = binned.plug_in_entropy(torch.tensor([[1, 3, 0], [2, 2, 0]]))
    assert got.dtype == torch.float64 and got.shape == (2,)
    expected = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    torch.testing.assert_close(got, torch.tensor([expected, math.log(2)], dtype=torch.float64), rtol=0, atol=1e-15)
