"""Every fused softmax-entropy backend against a float64 reference."""
import math

import pytest
import torch

from emergence_fast.ops.softmax_entropy import softmax_entropy
from tests.conftest import device_backend_pairs


def reference(logits):
    x = logits.double()
    log_p = torch.log_softmax(x, -1)
    p = log_p.exp()
    return -torch.where(p > 0, p * log_p, torch.zeros_like(p)).sum(-1)


@pytest.mark.parametrize("device,backend", device_backend_pairs())
@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (2, 5, 1000), (2, 50257), (1, 256000)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_softmax_entropy_matches_reference(device, backend, shape, dtype, generator):
    logits = (3 * torch.randn(*shape, generator=generator)).to(device=device, dtype=dtype)
    out = softmax_entropy(logits, backend=backend)
    assert out.shape == shape[:-1]
    tol = 1e-10 if dtype == torch.float64 else 2e-5 * max(1.0, math.log(shape[-1]))
    torch.testing.assert_close(out.double().cpu(), reference(logits).cpu(), rtol=tol, atol=tol)


@pytest.mark.parametrize("device,backend", device_backend_pairs())
def test_masked_and_extreme_logits(device, backend, generator):
    logits = torch.randn(4, 3000, generator=generator) * 1e4  # near one-hot rows
    logits[1, ::2] = -math.inf
    logits[2, 1:] = -math.inf  # a single live token: entropy exactly 0
    logits[3] = 0.0  # uniform: log V
    logits = logits.to(device)
    out = softmax_entropy(logits, backend=backend).double().cpu()
    torch.testing.assert_close(out, reference(logits).cpu(), rtol=1e-5, atol=1e-5)
    assert out[2] == 0
    assert abs(float(out[3]) - math.log(3000)) < 1e-5


@pytest.mark.parametrize("device,backend", device_backend_pairs())
def test_non_contiguous_rows(device, backend, generator):
    logits = torch.randn(6, 500, generator=generator, device=device)[::2]
    torch.testing.assert_close(softmax_entropy(logits, backend=backend).double(), reference(logits),
                               rtol=1e-5, atol=1e-5)
