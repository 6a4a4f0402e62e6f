"""Argument checks shared by every public function: fail early, name the argument."""
from __future__ import annotations

import math
import numbers
import os

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def as_samples(x, name: str, *, allow_integer: bool = False, min_samples: int = 2) -> torch.Tensor:
    """Validate a sample tensor ``[..., N, d]`` (a 1-D ``[N]`` is read as ``[N, 1]``)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [..., N, d], got {type(x).__name__}")
    if x.ndim == 0:
        raise ValueError(f"{name} must have shape [..., N, d] (or [N]), got a 0-d tensor")
    if x.ndim == 1:
        x = x.unsqueeze(-1)
    if x.dtype == torch.bool or not (x.is_floating_point() or allow_integer):
        expected = "a floating dtype or an integer dtype" if allow_integer else f"a floating dtype {FLOAT_DTYPES}"
        raise ValueError(f"{name} must have {expected}, got {x.dtype}")
    if x.is_complex():
        raise ValueError(f"{name} must be real, got {x.dtype}")
    if x.shape[-2] < min_samples:
        raise ValueError(f"{name} needs at least {min_samples} samples along dim -2 (N), got N={x.shape[-2]}")
    if x.shape[-1] < 1:
        raise ValueError(f"{name} needs at least one feature along dim -1 (d), got d=0")
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf")
    return x


def check_paired(x: torch.Tensor, y: torch.Tensor, names: tuple[str, str] = ("x", "y")) -> None:
    """x and y must share the sample axis and the leading batch dims."""
    if x.shape[-2] != y.shape[-2]:
        raise ValueError(f"{names[0]} and {names[1]} must have the same number of samples N (dim -2), "
                         f"got {x.shape[-2]} and {y.shape[-2]}")
    if x.shape[:-2] != y.shape[:-2]:
        raise ValueError(f"{names[0]} and {names[1]} must have the same leading batch dims, "
                         f"got {tuple(x.shape[:-2])} and {tuple(y.shape[:-2])}")
    if x.device != y.device:
        raise ValueError(f"{names[0]} and {names[1]} must be on the same device, got {x.device} and {y.device}")


def constant_cells(x: torch.Tensor) -> torch.Tensor:
    """Which cells of a sample tensor ``x [..., N, d]`` hold one point (every row equal to the first): bool ``[...]``.

    Such a cell carries no information: every mutual-information estimator returns exactly 0
    where either side is constant, instead of its own rounding or bias at zero.
    """
    return (x == x[..., :1, :]).flatten(-2).all(-1)


def log_base(base) -> float:
    """The divisor that turns nats into units of ``base`` (None = nats): ``log(base)``.

    The one check of ``base`` for every public function that takes it: ValueError unless it is
    None or a real number (not a bool) that is finite, positive and not 1 (``inf`` would turn
    every value into 0, ``1`` divide by zero, ``base <= 0`` have no logarithm).
    """
    if base is None:
        return 1.0
    if isinstance(base, bool) or not isinstance(base, (int, float)) or not base > 0 or base == 1 or not math.isfinite(base):
        raise ValueError(f"base must be a finite positive number other than 1 (e.g. 2 for bits), got {base!r}")
    return math.log(base)


def check_int(value, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an ``int``: a Python or numpy integer (not a bool) in ``[minimum, maximum]``.

    Raises ValueError ``"<name> must be an integer >= <minimum>, got <value>"`` (or ``in [a, b]``,
    ``<= b``) otherwise: a wrong type is reported like a wrong value, since both come from the
    same slip (``k=2.5``, ``k="3"``).
    """
    integral = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if integral and (minimum is None or value >= minimum) and (maximum is None or value <= maximum):
        return int(value)
    if minimum is not None and maximum is not None:
        expected = f"an integer in [{minimum}, {maximum}]"
    elif minimum is not None:
        expected = f"an integer >= {minimum}"
    elif maximum is not None:
        expected = f"an integer <= {maximum}"
    else:
        expected = "an integer"
    raise ValueError(f"{name} must be {expected}, got {value!r}")


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    """``value`` as an ``int >= minimum`` (default 1); ValueError naming ``name`` otherwise."""
    return check_int(value, name, minimum=minimum)


def check_seed(value, name: str = "seed") -> int:
    """A seed: any Python or numpy integer (not a bool); TypeError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    return int(value)


def check_bool(value, name: str) -> bool:
    """A bool (not 0/1, not a string); TypeError naming ``name`` otherwise."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return value


def _real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def check_positive_float(value, name: str, *, allow_zero: bool = False) -> float:
    """``value`` as a finite ``float > 0`` (``>= 0`` with ``allow_zero``); ValueError naming ``name`` otherwise."""
    if _real(value) and (value > 0 or (allow_zero and value == 0)):
        return float(value)
    bound = ">= 0" if allow_zero else "> 0"
    raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")


def check_finite(value, name: str) -> float:
    """``value`` as a finite ``float`` of either sign (a Python or numpy real, not a bool); ValueError naming ``name``."""
    if _real(value):
        return float(value)
    raise ValueError(f"{name} must be a finite number, got {value!r}")


def check_probability(value, name: str, *, low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a float in ``[0, 1]`` (``(0, ...`` / ``..., 1)`` when open); ValueError naming ``name`` otherwise."""
    if _real(value) and (0 < value if low_open else 0 <= value) and (value < 1 if high_open else value <= 1):
        return float(value)
    interval = ("(0" if low_open else "[0") + ", " + ("1)" if high_open else "1]")
    raise ValueError(f"{name} must be a number in {interval}, got {value!r}")


def check_choice(value, name: str, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
               "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_bytes(value, name: str) -> int:
    """A memory size in bytes from an int or a string such as ``"256MB"``, ``"8GB"``, ``"1.5GiB"``.

    Raises ValueError naming ``name`` when the value is not a positive size.
    """
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a positive size such as 256MB or 8GB, got {value!r}")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str):
        text = value.strip().upper().replace(" ", "")
        number = text.rstrip("KMGTIB")
        unit = text[len(number):]
        if unit not in _SIZE_UNITS or not number:
            raise ValueError(f"{name} must be a positive size such as 256MB, 8GB or 1.5GiB, got {value!r}")
        try:
            scaled = float(number) * _SIZE_UNITS[unit]
        except ValueError:
            raise ValueError(f"{name} must be a positive size such as 256MB, 8GB or 1.5GiB, got {value!r}") from None
        if not math.isfinite(scaled):
            raise ValueError(f"{name} must be a finite positive size such as 256MB or 8GB, got {value!r}")
        size = int(scaled)
    else:
        raise ValueError(f"{name} must be a positive size such as 256MB or 8GB (or a number of bytes), got {value!r}")
    if size <= 0:
        raise ValueError(f"{name} must be a positive size, got {value!r}")
    return size


def format_bytes(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.3g} {unit}"
        size /= 1000
    return f"{size:.3g} TB"


def as_device(value, name: str) -> torch.device:
    """A ``torch.device`` from a str or device; TypeError/ValueError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (str, torch.device)):
        raise TypeError(f"{name} must be a str or a torch.device, got {type(value).__name__}")
    try:
        return torch.device(value)
    except RuntimeError as exc:
        raise ValueError(f"{name}={value!r} is not a valid torch device: {exc}") from exc


def physical_memory() -> int | None:
    """This machine's physical memory in bytes, or None where the OS does not say (``os.sysconf``)."""
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    return pages * page_size if pages > 0 and page_size > 0 else None



def check_fits_in_memory(name: str, value, need: int, what: str, remedy: str) -> None:
    """Work whose memory is known up front fails now, naming the argument, not later in the OOM killer.

    Raises ``ValueError``: ``"<name>=<value> needs <what>, about <need> of memory, more than this
    machine's <RAM>: <remedy>"`` when ``need`` bytes exceed :func:`physical_memory`.
    """
    available = physical_memory()
    if available is not None and need > available:
        raise ValueError(f"{name}={value} needs {what}, about {format_bytes(need)} of memory, more than this "
                         f"machine's {format_bytes(available)}: {remedy}")