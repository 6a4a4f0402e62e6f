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


@pytest.fixture(scope="session")
def induction_family(tmp_path_factory):
    """Folder of an induction checkpoint family (emergence_fast.families.induction) trained once per session.

    The default configuration's first 1000 steps (the same trajectory), 21 checkpoints every 50 steps:
    25-55 s on one thread of the shared 2-core CPU, depending on its load. Measured: the in-context loss
    sits at log 32 = 3.47 nats to step 250, falls to 1.6 by step 500 and stays near 1.4 from step 600 (a
    logistic fit: location 337 steps, 95% CI [320, 355], 10-90% width 282); the first-half loss stays at
    log 32 throughout.
    """
    from emergence_fast.families import induction

    return induction.train_family(tmp_path_factory.mktemp("induction") / "family", progress=False, steps=1000,
                                  checkpoints=21, seed=0)
