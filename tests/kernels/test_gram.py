"""Every Gram backend against a float64 torch reference."""
import pytest
import torch

from emergence_fast.ops.gram import gram
from tests.conftest import device_backend_pairs

SHAPES = [  # (batch dims, N, da, db)
    ((), 1, 1, 1),
    ((), 37, 5, 19),
    ((3,), 200, 70, 33),
    ((2, 3), 65, 17, 129),
    ((1,), 300, 64, 64),
]


def reference(a, b):
    return torch.matmul(a.double().transpose(-1, -2), b.double())


@pytest.mark.parametrize("device,backend", device_backend_pairs())
@pytest.mark.parametrize("lead,n,da,db", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_gram_matches_float64_reference(device, backend, lead, n, da, db, dtype, generator):
    a = torch.randn(*lead, n, da, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(*lead, n, db, generator=generator).to(device=device, dtype=dtype)
    out = gram(a, b, backend=backend)
    assert out.shape == (*lead, da, db)
    assert out.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    expected = reference(a, b)  # the reference sees the same rounded inputs
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(out.double().cpu(), expected.cpu(), rtol=tol, atol=tol * (n ** 0.5))


@pytest.mark.parametrize("device,backend", device_backend_pairs())
def test_gram_on_non_contiguous_and_shared_inputs(device, backend, generator):
    base = torch.randn(4, 90, 40, generator=generator, device=device)
    a = base.transpose(0, 1)[:, ::2].transpose(0, 1)  # [2, 90, 40] strided view
    b = base[1:3, :, 5:25]
    assert not a.is_contiguous() and not b.is_contiguous()
    torch.testing.assert_close(gram(a, b, backend=backend).double(), reference(a, b), rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(gram(a, a, backend=backend).double(), reference(a, a), rtol=1e-4, atol=1e-3)
