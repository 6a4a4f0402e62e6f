#!/usr/bin/env bash
# On a GPU machine, in one command and without network: build the CUDA extension with the machine's
# own torch and nvcc, run the GPU tests, and run the kernel benchmarks (Gram against dense matmul,
# token entropy against copy bandwidth, the fused Gaussian log-sum-exp against cdist + logsumexp,
# and the pytest-benchmark suites).
#
#   bash benchmarks/gpu.sh                     # results under $OUT, or ./gpu-out when OUT is unset
#   GPU_SH_DRY_RUN=1 bash benchmarks/gpu.sh    # print the steps, run nothing (no GPU needed)
#
# Nothing is fetched: it uses the machine's python3 (GPU_SH_PYTHON overrides), its torch, Triton and
# nvcc. A package the machine lacks comes from benchmarks/gpu_wheels/, which benchmarks/gpu_wheels.sh
# fills where pip can reach an index; only the wheels whose distribution is missing are installed
# (pip --target into GPU_SH_SITE, put on PYTHONPATH), so the machine's own copies are never shadowed.
# A step whose modules are still missing is skipped and says which.
#
# Every step runs under `timeout`; the whole run stops starting steps once GPU_SH_BUDGET_S seconds
# (default 450, so the run ends inside 8 minutes) are spent, and a step's limit is cut to what is left.
# A failed step does not stop the next. Tracked files are not edited: under $OUT it writes
#   results.md    a section for benchmarks/RESULTS.md (machine, date, command, tables, steps)
#   summary.json  the machine, every step's status, time and limit, the test counts
#   gpu.log       every step's full output;  tests.xml  the GPU tests (JUnit);  bench.json  pytest-benchmark
# and prints a short summary. Exit status: 0 when every step that ran passed, 1 when one failed or
# timed out, 2 when there is no CUDA device.
set -uo pipefail  # not -e: a failed step is recorded and the run goes on

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${GPU_SH_PYTHON:-python3}
BUDGET_S=${GPU_SH_BUDGET_S:-450}
DRY_RUN=${GPU_SH_DRY_RUN:-0}
SITE=${GPU_SH_SITE:-/tmp/emergence-fast-gpu-site}
WHEELS=benchmarks/gpu_wheels
OUT=$(realpath -m "${OUT:-$REPO/gpu-out}")
START=$SECONDS
FAILED=0

# The test files that hold GPU tests (pytest.mark.gpu, or tests.conftest.device_backend_pairs, which
# marks its CUDA pairs): tests/test_gpu_script.py checks that no GPU test lives outside them. Naming
# them keeps collection from importing modules whose optional packages the machine may lack.
GPU_TESTS=(tests/kernels tests/test_offload.py)

start_output() {  # $OUT with none of this script's earlier files; a scratch folder for the step logs
  mkdir -p "$OUT"
  rm -f "$OUT"/{results.md,summary.json,gpu.log,tests.xml,bench.json}  # this script's files only
  WORK=$(mktemp -d)
  trap 'rm -rf "$WORK"' EXIT
  STEPS=$WORK/steps.tsv
  : >"$STEPS"
}

record() {  # name status rc seconds timeout_s reason command
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$STEPS"
  printf '[gpu.sh] %-16s %-8s %4ss  %s\n' "$1" "$2" "$4" "$6"
}

# step NAME TIMEOUT_S "MODULES IT IMPORTS" COMMAND...
step() {
  local name=$1 limit=$2 needs=$3
  shift 3
  if [ "$DRY_RUN" = 1 ]; then
    printf 'STEP %s timeout=%s needs=%s: %s\n' "$name" "$limit" "${needs// /,}" "$*"
    return 0
  fi
  local left=$((BUDGET_S - (SECONDS - START)))
  if ((left < 15)); then
    record "$name" skipped 0 0 "$limit" "the ${BUDGET_S} s budget was spent" "$*"
    return 0
  fi
  ((limit > left)) && limit=$left
  local missing modules
  read -ra modules <<<"$needs"
  if ((${#modules[@]})) && ! missing=$("$PY" -m benchmarks.gpu_report needs "${modules[@]}"); then
    record "$name" skipped 0 0 "$limit" "missing module(s): $missing (not on the machine nor in $WHEELS)" "$*"
    return 0
  fi
  local log=$WORK/$name.log t0=$SECONDS rc status reason=""
  printf '\n===== %s (limit %s s): %s\n' "$name" "$limit" "$*" >>"$OUT/gpu.log"
  timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1
  rc=$?
  cat "$log" >>"$OUT/gpu.log"
  if ((rc == 0)); then
    status=ok
  elif ((rc == 124 || rc == 137)); then
    status=timeout reason="stopped after $limit s"
  else
    status=failed reason="exit status $rc"
  fi
  record "$name" "$status" "$rc" $((SECONDS - t0)) "$limit" "$reason" "$*"
  if [ "$status" != ok ]; then
    FAILED=1
    echo "----- last lines of $name (all of it in gpu.log):"
    tail -n 25 "$log"
  fi
  return 0
}

preflight() {  # returns 1 (after writing the summary) when there is no CUDA device
  echo "[gpu.sh] $("$PY" -c 'import sys; print(sys.executable, sys.version.split()[0])' 2>&1), out: $OUT"
  if ! "$PY" -m benchmarks.gpu_report env --require-cuda >"$WORK/env.json" 2>&1; then
    cat "$WORK/env.json"
    echo "[gpu.sh] torch sees no CUDA device (or torch is missing): nothing to build or measure here"
    record preflight failed 2 0 0 "no CUDA device" "$PY -m benchmarks.gpu_report env --require-cuda"
    "$PY" -m benchmarks.gpu_report summary --steps "$STEPS" --out "$OUT" --budget-s "$BUDGET_S"
    return 1
  fi
  "$PY" -m benchmarks.gpu_report header "$OUT/results.md"
  # Wheels installed by the first step are found by every later one. torch's build looks for ninja and
  # setup.py for nvcc on PATH: add the python's own scripts folder (its ninja) and CUDA's bin folder.
  local scripts cuda_bin=${CUDA_HOME:-/usr/local/cuda}/bin
  scripts=$("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
  export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH} PATH=$SITE/bin:$scripts:$PATH
  if ! command -v nvcc >/dev/null && [ -x "$cuda_bin/nvcc" ]; then
    export PATH=$PATH:$cuda_bin
  fi
  command -v nvcc >/dev/null || echo "[gpu.sh] no nvcc on PATH nor in $cuda_bin: the cuda backend will not be built"
}

run_steps() {
  step wheels 60 "pip" "$PY" -m benchmarks.gpu_report install-wheels "$WHEELS" "$SITE"
  # The native ops against this machine's torch and nvcc, in place (editable: kernels/ is mapped into the
  # package by setup.py); MAX_JOBS feeds ninja, TORCH_CUDA_ARCH_LIST unset builds for the visible GPU.
  step build 240 "torch setuptools pip" env MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
    "$PY" -m pip install -v --no-build-isolation --no-deps --no-index -e .
  step backends 30 "torch emergence_fast" "$PY" -m emergence_fast.cli backends
  # Real Triton compilation, not the interpreter that tests/conftest.py selects by default on a CPU.
  # Triton compiles each kernel variant on first use, one at a time per process: the tests are spread
  # over 8 processes when pytest-xdist is there (the image has it), else they run in one.
  # addopts is replaced so that the run does not need pytest-benchmark's --benchmark-disable option.
  local parallel=()
  "$PY" -c "import xdist" 2>/dev/null && parallel=(-n 8)
  step tests 180 "pytest hypothesis torch emergence_fast" env TRITON_INTERPRET=0 \
    "$PY" -m pytest "${GPU_TESTS[@]}" -m gpu "${parallel[@]}" -q -o addopts=-ra -p no:cacheprovider \
    --junit-xml="$OUT/tests.xml"
  # Kernels against dense matmul (Gram) and copy bandwidth (token entropy), then the fused Gaussian LSE.
  step roofline 90 "torch emergence_fast" env TRITON_INTERPRET=0 \
    "$PY" -m benchmarks.roofline --reps 10 --write "$OUT/results.md"
  step gaussian_lse 60 "torch emergence_fast" env TRITON_INTERPRET=0 \
    "$PY" -m benchmarks.gaussian_lse --sizes 256,1024 --dtype float32 --write "$OUT/results.md"
  step gaussian_lse64 60 "torch emergence_fast" env TRITON_INTERPRET=0 \
    "$PY" -m benchmarks.gaussian_lse --sizes 256,1024 --dtype float64 --write "$OUT/results.md"
  step pytest_bench 120 "pytest pytest_benchmark scipy torch emergence_fast" env TRITON_INTERPRET=0 \
    "$PY" -m pytest benchmarks -q -o addopts=-ra -p no:cacheprovider --benchmark-enable --benchmark-only \
    --benchmark-max-time=0.5 --benchmark-min-rounds=3 --benchmark-json="$OUT/bench.json"
}

main() {
  cd "$REPO" || return 1
  if [ "$DRY_RUN" = 1 ]; then
    run_steps
    return 0
  fi
  start_output
  preflight || return 2
  run_steps
  "$PY" -m benchmarks.gpu_report summary --steps "$STEPS" --out "$OUT" --budget-s "$BUDGET_S" || FAILED=1
  return "$FAILED"
}

# Sourcing defines the functions without running anything (tests/test_gpu_script.py drives step()).
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  main
  exit $?
fi
