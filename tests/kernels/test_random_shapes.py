"""Property tests: every CPU backend equals the float64 reference on random shapes and layouts."""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from emergence_fast.ops.gram import gram
from emergence_fast.ops.softmax_entropy import softmax_entropy
from tests.conftest import cpu_backends

dims = st.integers(min_value=1, max_value=70)


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 3), n=st.integers(1, 150), da=dims, db=dims, transposed=st.booleans(),
       seed=st.integers(0, 2**31 - 1))
def test_gram_random_shapes(batch, n, da, db, transposed, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(batch, n, da, generator=g)
    b = torch.randn(batch, n, db, generator=g)
    if transposed:  # same values, column-major storage
        a = a.transpose(-1, -2).contiguous().transpose(-1, -2)
    expected = torch.matmul(a.double().transpose(-1, -2), b.double())
    for backend in cpu_backends():
        torch.testing.assert_close(gram(a, b, backend=backend).double(), expected, rtol=1e-4,
                                   atol=1e-4 * n**0.5, msg=lambda m: f"backend={backend}: {m}")


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 5), vocab=st.integers(1, 5000), scale=st.floats(0.01, 100.0),
       masked=st.floats(0.0, 0.9), seed=st.integers(0, 2**31 - 1))
def test_softmax_entropy_random_shapes(rows, vocab, scale, masked, seed):
    g = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(rows, vocab, generator=g)
    drop = torch.rand(rows, vocab, generator=g) < masked
    drop[:, 0] = False  # keep one live token per row
    logits[drop] = float("-inf")
    log_p = torch.log_softmax(logits.double(), -1)
    expected = -torch.where(log_p.exp() > 0, log_p.exp() * log_p, torch.zeros_like(log_p)).sum(-1)
    for backend in cpu_backends():
        torch.testing.assert_close(softmax_entropy(logits, backend=backend).double(), expected,
                                   rtol=1e-5, atol=2e-5, msg=lambda m: f"backend={backend}: {m}")
