"""Launch facts shared by the Triton kernels: interpreter or GPU, the GPU's SM count, and the tiles
of the row-block kernels (knn, gaussian_lse)."""
import os

import torch
import triton

_SM_COUNT = {}


def interpreting(t: torch.Tensor, op: str) -> bool:
    """True when ``t``'s kernel runs under the Triton interpreter; CPU tensors without it raise."""
    interpreter = os.environ.get("TRITON_INTERPRET", "0") == "1"
    if t.device.type == "cpu" and not interpreter:
        raise RuntimeError(f"{op}: CPU tensors need the Triton interpreter; set TRITON_INTERPRET=1 before importing triton")
    return interpreter or t.device.type == "cpu"


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA ``device`` (cached: the query is a driver call)."""
    idx = device.index if device.index is not None else torch.cuda.current_device()
    if idx not in _SM_COUNT:
        _SM_COUNT[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
    return _SM_COUNT[idx]


def gpu_row_tiles(dtype: torch.dtype, batch: int, rows: int, n_sm: int) -> tuple[int, int]:
    """``(BLOCK_M, BLOCK_N)`` of a row-block kernel on the GPU; a fixed table, no autotuning.

    64 (fp32) / 32 (fp64) points a tile; 64 query rows a program, halved down to 16 while the
    grid (``batch`` x row blocks) would not cover the ``n_sm`` SMs twice.
    """
    block_n = 64 if dtype == torch.float32 else 32
    block_m = 64
    while block_m > 16 and batch * triton.cdiv(rows, block_m) < 2 * n_sm:
        block_m //= 2
    return block_m, block_n


def row_tiles(t: torch.Tensor, op: str, batch: int, rows: int, points: int, block_m=None,
              block_n=None) -> tuple[int, int, bool]:
    """``(BLOCK_M, BLOCK_N, on_gpu)`` for a kernel whose programs own BLOCK_M query rows of one batch
    cell and sweep ``points`` in BLOCK_N tiles; ``block_m`` / ``block_n`` override (tests force
    several tiles with them). Under the interpreter, whose cost is per program and per op: few,
    wide programs."""
    if interpreting(t, op):
        tiles, on_gpu = (min(64, triton.next_power_of_2(rows)), min(256, triton.next_power_of_2(points))), False
    else:
        tiles, on_gpu = gpu_row_tiles(t.dtype, batch, rows, sm_count(t.device)), True
    return block_m or tiles[0], block_n or tiles[1], on_gpu
