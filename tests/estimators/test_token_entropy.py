import math

import pytest
import torch

import emergence_fast as ef
from tests.conftest import cpu_backends


@pytest.mark.parametrize("backend", cpu_backends())
def test_token_entropy_matches_reference_and_bits(backend, generator):
    logits = torch.randn(2, 3, 1000, generator=generator)
    expected = -(torch.softmax(logits.double(), -1) * torch.log_softmax(logits.double(), -1)).sum(-1)
    out = ef.token_entropy(logits, backend=backend)
    assert out.shape == (2, 3)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ef.token_entropy(logits, base=2, backend=backend).double(), expected / math.log(2),
                               rtol=1e-5, atol=1e-5)


def test_uniform_and_masked_rows():
    logits = torch.zeros(2, 1024)
    logits[1, 512:] = -math.inf
    torch.testing.assert_close(ef.token_entropy(logits), torch.tensor([math.log(1024), math.log(512)]))


@pytest.mark.parametrize("logits,match", [
    (torch.tensor([[0.0, float("nan")]]), "NaN"),
    (torch.tensor([[0.0, float("inf")]]), r"\+Inf"),
    (torch.full((2, 3), -math.inf), "every entry is -Inf"),
    (torch.ones(2, 3, dtype=torch.long), "floating dtype"),
    (torch.zeros(2, 0), "V >= 1"),
])
def test_bad_logits(logits, match):
    with pytest.raises(ValueError, match=match):
        ef.token_entropy(logits)
