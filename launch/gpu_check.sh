#!/usr/bin/env bash
# GPU check for the lent GPU machine: builds the kernels library with CUDA, runs every ctest
# labelled `gpu` (CUDA vs CPU parity), then every GPU benchmark binary (build-gpu/bench/*_gpu_bench)
# and prints a table of their RESULT lines: op, figure, value, target, met?
#
# Usage (repo root):  launch/gpu_check.sh [--build-without-device] [--full]
#   --full   builds the whole project instead of the kernels alone, so the `gpu` tests of the
#            models (tests/models/*_gpu_test.cc: every model on CUDA vs the CPU, and under the
#            trainers) run too; needs every build dependency (Protobuf, glog, Open MPI, ...), e.g.
#            the debs of ../shared/tools/device-debs.sh unpacked under IPS_DEPS_PREFIX.
# Environment:
#   CMAKE_PREFIX_PATH   where cmake finds GoogleTest etc. when the machine lacks them (the lead
#                       unpacks Debian debs under /opt/deps: see ../shared/tools/device-debs.sh);
#                       passed through to cmake. /opt/deps/usr is added automatically if present.
#   IPS_DEPS_PREFIX     unpacked debs prefix (default /opt/deps)
#   IPS_GPU_BUILD_DIR   build directory (default build-gpu)
#   IPS_CUDA_ARCHS      CMAKE_CUDA_ARCHITECTURES (default 90: H100/H200)
#   IPS_JOBS            build parallelism (default: all cores)
#   IPS_BENCH_TIMEOUT   seconds per benchmark binary (default 300)
# Exit status: 0 when every gpu test passed and every benchmark verified (or, without a CUDA
# device, after reporting that cleanly); 1 when a gpu test failed (or skipped although a device is
# visible); 2 when a benchmark failed;
# 3 when the environment is missing something (cmake, nvcc, GoogleTest); 4 when the build failed.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

build_without_device=0
kernels_only=ON
table_from=""
while (($#)); do
  arg=$1
  shift
  case $arg in
    --build-without-device) build_without_device=1 ;;
    --full) kernels_only=OFF ;;
    --table-from) table_from=$1; shift ;;
    -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "gpu_check: unknown argument '$arg' (see --help)" >&2; exit 3 ;;
  esac
done

# One row per target key of each RESULT line. The figure a target applies to is `ratio` for a
# bare `target`, else the first key containing the target's suffix (target_bwd -> min_bwd_ratio).
# Direction: speedups (vs_, speedup), bandwidths (gbs, gbps) and ratios below 1 (efficiencies)
# must reach the target; time-over-floor ratios (>= 1), overheads and *_ms figures must stay
# under it.
table_rows() {
  awk -v rc="$2" -v bin="$1" '
    function dir(key, target) {
      if (key ~ /vs_|speedup|gbs|gbps|efficiency/) return "ge";
      if (key ~ /ratio/) return (target + 0 < 1) ? "ge" : "le";
      if (key ~ /overhead|_ms$|^ms$/) return "le";
      return "?";
    }
    {
      if ($0 == "") { printf "%s|-|-|-|FAILED (rc=%s, no RESULT line)\n", bin, rc; exit }
      op = $2; n = 0;
      for (i = 3; i <= NF; i++) { split($i, kv, "="); n++; k[n] = kv[1]; v[n] = kv[2] }
      rows = 0;
      for (i = 1; i <= n; i++) {
        if (k[i] !~ /^target/) continue;
        suffix = k[i]; sub(/^target_?/, "", suffix); fig = "";
        for (j = 1; j <= n && fig == ""; j++) {
          if (k[j] ~ /^target/) continue;
          if (suffix == "" && k[j] == "ratio") fig = j;
          if (suffix != "" && index(k[j], suffix) > 0) fig = j;
        }
        rows++;
        if (fig == "") { printf "%s|(none for %s)|-|%s|?\n", op, k[i], v[i]; continue }
        d = dir(k[fig], v[i]); met = "?";
        if (d == "ge") met = (v[fig] + 0 >= v[i] + 0) ? "yes" : "NO";
        if (d == "le") met = (v[fig] + 0 <= v[i] + 0) ? "yes" : "NO";
        printf "%s|%s|%s|%s %s|%s\n", op, k[fig], v[fig], (d == "ge" ? ">=" : (d == "le" ? "<=" : "")), v[i], met;
      }
      if (rows == 0) printf "%s|(no target in RESULT)|-|-|-\n", op;
      if (rc != 0) printf "%s|exit status %s|-|-|FAILED\n", op, rc;
    }' <<<"$3"
}

format_table() { awk -F'|' '{ printf "%-24s %-26s %-12s %-10s %s\n", $1, $2, $3, $4, $5 }'; }

# Hidden self-test of the table: --table-from FILE with lines "binary|rc|RESULT ...".
if [[ -n $table_from ]]; then
  {
    echo "op|figure|value|target|met?"
    while IFS='|' read -r bin rc line; do table_rows "$bin" "$rc" "$line"; done <"$table_from"
  } | format_table
  exit 0
fi

build=${IPS_GPU_BUILD_DIR:-build-gpu}
jobs=${IPS_JOBS:-$(nproc)}
archs=${IPS_CUDA_ARCHS:-90}
bench_timeout=${IPS_BENCH_TIMEOUT:-300}

# --- Environment -----------------------------------------------------------------------------------
deps=${IPS_DEPS_PREFIX:-/opt/deps}
if [[ -d $deps/usr ]]; then
  export PATH=$deps/usr/bin:$PATH
  export LD_LIBRARY_PATH=$deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
  case ":${CMAKE_PREFIX_PATH:-}:" in
    *":$deps/usr:"*) ;;
    *) export CMAKE_PREFIX_PATH=${CMAKE_PREFIX_PATH:+$CMAKE_PREFIX_PATH:}$deps/usr ;;
  esac
fi
if [[ -x /usr/local/cuda/bin/nvcc ]] && ! command -v nvcc >/dev/null; then
  export PATH=$PATH:/usr/local/cuda/bin
fi

device_visible() {
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
    return 0
  fi
  compgen -G '/dev/nvidia[0-9]*' >/dev/null
}

if ! device_visible; then
  echo "gpu_check: no CUDA device visible (no GPU from nvidia-smi -L, no /dev/nvidia*)"
  if [[ $build_without_device == 0 ]]; then
    echo "gpu_check: SKIPPED (nothing to check here; --build-without-device compiles and runs the" \
      "gpu tests anyway, which then skip)"
    exit 0
  fi
  have_device=0
else
  have_device=1
fi

missing=()
command -v cmake >/dev/null || missing+=("cmake (unpack the cmake deb under $deps or put it on PATH)")
command -v nvcc >/dev/null || missing+=("nvcc (CUDA toolkit; expected in /usr/local/cuda/bin)")
gtest_found=0
cpp=${CMAKE_PREFIX_PATH:-}
for prefix in /usr /usr/local ${cpp//:/ }; do
  [[ -d $prefix/include/gtest ]] && gtest_found=1
done
[[ $gtest_found == 1 ]] ||
  missing+=("GoogleTest headers (no include/gtest under /usr, /usr/local or CMAKE_PREFIX_PATH='${CMAKE_PREFIX_PATH:-}'; unpack libgtest-dev + googletest debs: ../shared/tools/device-debs.sh)")
if ((${#missing[@]})); then
  for m in "${missing[@]}"; do echo "gpu_check: missing $m" >&2; done
  exit 3
fi

# --- Build -----------------------------------------------------------------------------------------
prefix_arg=()
[[ -n ${CMAKE_PREFIX_PATH:-} ]] && prefix_arg=("-DCMAKE_PREFIX_PATH=${CMAKE_PREFIX_PATH//:/;}")
echo "== gpu_check: configure $build (CUDA archs $archs)"
if ! cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DIPS_KERNELS_ONLY=$kernels_only -DIPS_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES="$archs" "${prefix_arg[@]}" >"$build.configure.log" 2>&1; then
  cat "$build.configure.log"
  echo "gpu_check: configure FAILED" >&2
  exit 4
fi
echo "== gpu_check: build (-j $jobs)"
if ! cmake --build "$build" -j "$jobs" >"$build.build.log" 2>&1; then
  grep -E "error|Error" -A3 "$build.build.log" | head -60
  echo "gpu_check: build FAILED (full log: $build.build.log)" >&2
  exit 4
fi

# --- Tests -----------------------------------------------------------------------------------------
echo "== gpu_check: ctest -L gpu"
(cd "$build" && ctest -L gpu --output-on-failure) | tee "$build.gpu_ctest.log"
test_rc=${PIPESTATUS[0]}
skipped=$(grep -c '(Skipped)' "$build.gpu_ctest.log")

# --- Benchmarks ------------------------------------------------------------------------------------
results=()  # "binary|rc|RESULT line"
bench_failed=0
if [[ $have_device == 1 ]]; then
  while IFS= read -r bin; do
    name=$(basename "$bin")
    echo "== gpu_check: $name"
    log="$build/$name.log"
    timeout "$bench_timeout" "$bin" >"$log" 2>"$log.err"
    rc=$?
    tail -n 3 "$log.err" >&2
    line=$(grep '^RESULT ' "$log" | tail -n 1)
    echo "${line:-(no RESULT line)}"
    [[ $rc != 0 || -z $line ]] && bench_failed=1
    results+=("$name|$rc|$line")
  done < <(find "$build/bench" -maxdepth 2 -type f -perm -u+x -name '*_gpu_bench' 2>/dev/null | sort)
fi

echo
echo "== gpu_check summary"
if [[ $have_device == 0 ]]; then
  echo "no CUDA device visible: gpu tests built (and skipped), benchmarks not run"
else
  {
    echo "op|figure|value|target|met?"
    for r in "${results[@]}"; do
      IFS='|' read -r bin rc line <<<"$r"
      table_rows "$bin" "$rc" "$line"
    done
  } | format_table
  ((${#results[@]})) || echo "(no *_gpu_bench binaries found under $build/bench)"
fi
if [[ $test_rc != 0 ]]; then
  echo "gpu_check: gpu tests FAILED (ctest rc=$test_rc)"
  exit 1
fi
if [[ $have_device == 0 ]]; then
  echo "gpu_check: gpu tests built; $skipped skipped for lack of a device (a skip is not a pass)"
  exit 0
fi
if [[ $skipped != 0 ]]; then
  # A device is visible, so a skip means the tests could not use it (driver/runtime mismatch).
  echo "gpu_check: $skipped gpu test binaries SKIPPED although a device is visible"
  exit 1
fi
echo "gpu_check: gpu tests passed"
if [[ $bench_failed != 0 ]]; then
  echo "gpu_check: a benchmark FAILED (verification or no RESULT line)"
  exit 2
fi
exit 0
