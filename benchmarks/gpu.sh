#!/usr/bin/env bash
# On a GPU machine, in one command: build the CUDA extension, run the GPU tests, run the
# benchmarks, and append the numbers to benchmarks/RESULTS.md.
# Uses the machine's CUDA torch when one is installed (TORCH_SPEC=torch keeps it).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
python3 -m venv --system-site-packages .venv-gpu
PY=.venv-gpu/bin/python
$PY -m pip install -q numpy scipy pybind11 ninja pytest pytest-benchmark hypothesis
$PY -c "import triton" 2>/dev/null || $PY -m pip install -q triton
$PY -m pip install -q --no-build-isolation -e .
$PY -m emergence_fast.cli backends
TRITON_INTERPRET=0 $PY -m pytest tests -q -k "cuda or gpu or triton or gram or entropy or knn or gaussian_lse" -p no:cacheprovider
$PY -m pytest benchmarks --benchmark-enable --benchmark-only -q --benchmark-json="${OUT:-.}/bench.json"
$PY -m benchmarks.roofline --write benchmarks/RESULTS.md
# The noisy-channel MI's fused kernel (cuda and triton backends) against cdist + logsumexp, fp32 and fp64.
$PY -m benchmarks.gaussian_lse --write benchmarks/RESULTS.md
$PY -m benchmarks.gaussian_lse --dtype float64 --write benchmarks/RESULTS.md
# The user-facing benchmark on the GPU, and IE under NCCL when there are GPUs for two ranks (never run yet).
$PY -m emergence_fast.cli bench --out "${OUT:-.}/bench-gpu"
if [ "$(python3 -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
  $PY -m torch.distributed.run --standalone --nproc_per_node=2 -m emergence_fast.cli ie --device cuda \
      --dist-backend nccl --n-samples 1024 --quiet --out "${OUT:-.}/ie-nccl"
  $PY -m emergence_fast.cli ie --device cuda --n-samples 1024 --quiet --out "${OUT:-.}/ie-one"
  $PY -c "import json,sys; a,b=(json.load(open(f'${OUT:-.}/{d}/ie.json')) for d in ('ie-one','ie-nccl')); \
print('nccl vs one process, max |diff| macro:', max(abs(x-y) for r,s in zip(a['macro'],b['macro']) for x,y in zip(r,s)))"
fi
