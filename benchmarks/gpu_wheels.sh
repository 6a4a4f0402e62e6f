#!/usr/bin/env bash
# Fill benchmarks/gpu_wheels/ (git-ignored) with the wheels listed in benchmarks/gpu_wheels.txt, for
# the GPU machine's CPython 3.12 on Linux x86-64, so that benchmarks/gpu.sh never needs a network there.
# Run it here, where pip reaches an index; then carry the folder with the run:
#   bash benchmarks/gpu_wheels.sh                 # PYTHON=... picks the pip to download with
#   run: command "bash benchmarks/gpu.sh", carry ["benchmarks/gpu_wheels"]
# GPU_WHEELS_PYTHON_VERSION (default 3.12) targets another CPython. The folder is emptied first, so it
# holds one version of each distribution (two would make pip refuse the whole install).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
DEST=benchmarks/gpu_wheels
rm -rf "$DEST"
mkdir -p "$DEST"
mapfile -t REQS < <(grep -v '^\s*\(#\|$\)' benchmarks/gpu_wheels.txt)
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
         manylinux_2_12_x86_64 manylinux2010_x86_64 manylinux1_x86_64; do
  PLATFORMS+=(--platform "$p")
done
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --implementation cp \
  --python-version "${GPU_WHEELS_PYTHON_VERSION:-3.12}" "${PLATFORMS[@]}" -d "$DEST" "${REQS[@]}"
ls -l "$DEST"
du -sh "$DEST"
