#!/usr/bin/env bash
# Configures and builds interest-ps into build/ (Release, CUDA when nvcc is found).
# Extra arguments go to cmake's configure step, e.g. launch/build.sh -DIPS_CUDA=OFF
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${IPS_BUILD_DIR:-$root/build}
jobs=${IPS_JOBS:-$(nproc)}
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release "$@" >"$build.configure.log" 2>&1 || {
  cat "$build.configure.log"; exit 1; }
cmake --build "$build" -j "$jobs"
