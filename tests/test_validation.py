"""Bad input gets a ValueError that names the argument."""
import pytest
import torch

import emergence_fast as ef

GOOD = torch.randn(50, 3)


@pytest.mark.parametrize("x,y,match", [
    (torch.tensor([[float("nan")], [1.0]]), torch.randn(2, 1), "x contains NaN or Inf"),
    (GOOD, GOOD.clone().fill_(float("inf")), "y contains NaN or Inf"),
    (torch.randn(1, 3), torch.randn(1, 3), "x needs at least 2 samples"),
    (GOOD, torch.randn(49, 3), "same number of samples N"),
    (torch.ones(50, 3, dtype=torch.int32), GOOD, "x must have a floating dtype"),
    (torch.tensor(1.0), GOOD, "0-d tensor"),
    (torch.randn(2, 50, 3), torch.randn(3, 50, 3), "same leading batch dims"),
])
def test_mutual_information_rejects(x, y, match):
    with pytest.raises(ValueError, match=match):
        ef.mutual_information(x, y)


def test_non_tensor_and_unknown_method():
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        ef.entropy([[1.0, 2.0]])
    with pytest.raises(ValueError, match="method must be one of"):
        ef.entropy(GOOD, method="magic")
