"""pytest-benchmark: Gram accumulation and fused token entropy per backend (never asserted)."""
import pytest
import torch

from benchmarks.conftest import sync, timed_backends
from emergence_fast.ops.gram import gram
from emergence_fast.ops.softmax_entropy import softmax_entropy

DEVICE, BACKENDS = timed_backends()
GRAM_SHAPES = [(1, 4096, 576), (32, 512, 64), (8, 2048, 256)] if DEVICE == "cpu" else \
    [(1, 65536, 1152), (240, 4096, 256), (64, 8192, 576)]
ENTROPY_SHAPES = [(64, 49152), (8, 256000)] if DEVICE == "cpu" else [(4096, 50257), (512, 256000)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", GRAM_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_gram(benchmark, backend, shape):
    a = torch.randn(*shape, device=DEVICE)

    def run():
        out = gram(a, a, backend=backend)
        sync(DEVICE)
        return out

    benchmark.extra_info["gflop"] = 2 * shape[0] * shape[1] * shape[2] ** 2 / 1e9
    benchmark(run)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", ENTROPY_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_token_entropy(benchmark, backend, shape):
    logits = torch.randn(*shape, device=DEVICE)

    def run():
        out = softmax_entropy(logits, backend=backend)
        sync(DEVICE)
        return out

    benchmark.extra_info["gbyte"] = logits.numel() * logits.element_size() / 1e9
    benchmark(run)
