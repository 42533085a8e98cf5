#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test; non-zero exit on any failure.
#   1. build/ : Release with CUDA when nvcc exists (CUDA sources must compile), ctest all labels
#      (gpu tests report SKIP when no device is visible — a skip is not a pass).
#   2. build-fuzz/ : clang + libFuzzer + ASan/UBSan, each fuzz target run for a bounded time.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
start=$(date +%s)
bash launch/install_deps.sh
jobs=${IPS_JOBS:-$(nproc)}

echo "== build (build/)"
bash launch/build.sh
echo "== test (build/)"
(cd build && ctest --output-on-failure -j "$jobs" --timeout 900)

if command -v clang++-14 >/dev/null; then
  echo "== fuzz (build-fuzz/)"
  cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIPS_CUDA=OFF \
    -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 -DIPS_BUILD_FUZZERS=ON \
    -DIPS_BUILD_BENCHMARKS=OFF >build-fuzz.configure.log 2>&1 || { cat build-fuzz.configure.log; exit 1; }
  cmake --build build-fuzz -j "$jobs" --target ips_fuzzers
  (cd build-fuzz && ctest --output-on-failure -L fuzz)
fi
echo "== all tests passed in $(( $(date +%s) - start ))s"
