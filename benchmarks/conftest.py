import os

os.environ.setdefault("TRITON_INTERPRET", "0")

import pytest  # noqa: E402
import torch  # noqa: E402

from emergence_fast import backends  # noqa: E402


def timed_backends():
    """Backends worth timing here: the Triton interpreter is a correctness tool, not a speed one."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    names = [n for n, s in backends().items() if s.available and device in s.devices]
    if device == "cpu":
        names = [n for n in names if n != "triton"]
    return device, names


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


@pytest.fixture(autouse=True)
def _threads():
    torch.manual_seed(0)
