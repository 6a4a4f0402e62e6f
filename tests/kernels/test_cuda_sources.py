"""The CUDA sources compile with a standalone nvcc (no GPU and no CUDA build of torch needed).

The extension itself can only be built where torch has CUDA; this keeps csrc/cuda/*.cu from
rotting on CPU-only machines. Each file takes ~15-30 s here (the torch headers dominate).
"""

import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

CUDA_DIR = Path(__file__).resolve().parents[2] / "csrc" / "cuda"
CU_FILES = sorted(CUDA_DIR.glob("*.cu"))
NVCC = shutil.which("nvcc")
TIMEOUT_S = 300

pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc not found on PATH")


def _include_flags():
    torch_ext = pytest.importorskip("torch.utils.cpp_extension")
    dirs = list(torch_ext.include_paths()) + [sysconfig.get_paths()["include"]]
    return [f"-I{d}" for d in dirs]


def test_cuda_sources_exist():
    assert CU_FILES, f"no .cu files under {CUDA_DIR}"


@pytest.mark.parametrize("source", CU_FILES, ids=[p.name for p in CU_FILES])
def test_cuda_source_compiles(source, tmp_path):
    obj = tmp_path / (source.stem + ".o")
    cmd = [NVCC, "-c", "-arch=sm_90", "-std=c++17", "-DWITH_CUDA", *_include_flags(), str(source), "-o", str(obj)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"nvcc timed out after {TIMEOUT_S} s on {source.name}")
    if proc.returncode != 0:
        print(proc.stderr)
    assert proc.returncode == 0, f"nvcc failed on {source.name}:\n{proc.stderr[-8000:]}"
    assert obj.exists() and obj.stat().st_size > 0
