import os

# Must precede any triton import: the interpreter is how Triton kernels run on a CPU.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import settings  # noqa: E402

# CI must see the same examples as a developer: property tests draw from a fixed seed.
settings.register_profile("deterministic", derandomize=True, deadline=None)
settings.load_profile("deterministic")

from emergence_fast import backends  # noqa: E402


def cpu_backends() -> list[str]:
    return [name for name, status in backends().items() if status.available and "cpu" in status.devices]


def gpu_backends() -> list[str]:
    return [name for name, status in backends().items() if status.available and "cuda" in status.devices]


def device_backend_pairs():
    pairs = [pytest.param("cpu", b, id=f"cpu-{b}") for b in cpu_backends()]
    pairs += [pytest.param("cuda", b, id=f"cuda-{b}", marks=pytest.mark.gpu) for b in gpu_backends()]
    return pairs


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(1234)
