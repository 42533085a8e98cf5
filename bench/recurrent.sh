#!/bin/bash
# CPU GRU/AUGRU forward+backward, ours (bench/recurrent_bench) vs torch 1.13 (bench/
# torch_recurrent.py: nn.GRU unpacked like the peer, and the peer's AUGRU loop), at the DIEN shape
# B=512 T=50 I=H=36, with the same thread count on both sides.
#
# Usage: bench/recurrent.sh [BUILD_DIR]      (default: ./build; env THREADS, default 2)
# Prints, last two lines:
#   RESULT gru_cpu ours_ms=... torch_ms=... ratio=torch/ours target=1.5 ... load1=...
# (wall-clock medians; *_cpu_ms = process CPU time; load1 = the 1-minute load average after the
# runs, since on a shared VM wall times are only comparable at similar load)
#   RESULT augru_cpu augru_ms=... gru_ms=... ratio=augru/gru target<=1.3 torch_augru_ms=...
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
build="${1:-build}"
threads="${THREADS:-2}"
bench_bin="$build/bench/recurrent_bench"
if [[ ! -x "$bench_bin" ]]; then
  echo "recurrent.sh: $bench_bin not found (build the recurrent_bench target)" >&2
  exit 1
fi
if ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
  echo "recurrent.sh: /usr/bin/python3 has no torch" >&2
  exit 1
fi
# Same runtime tuning as the peer's bench.py; OpenBLAS (used by both) gets the same threads.
export OMP_WAIT_POLICY=PASSIVE
export OPENBLAS_NUM_THREADS="$threads"

ours="$("$bench_bin" --threads "$threads" | tail -n 1)"
torch_gru="$(/usr/bin/python3 "$here/torch_recurrent.py" --threads "$threads" | tail -n 1)"
torch_augru="$(/usr/bin/python3 "$here/torch_recurrent.py" --cell augru --iters 5 \
  --threads "$threads" | tail -n 1)"
echo "$ours"
echo "$torch_gru"
echo "$torch_augru"

get() {  # get KEY LINE -> value of KEY=value in LINE
  local v
  v="$(tr ' ' '\n' <<<"$2" | sed -n "s/^$1=//p" | head -n 1)"
  if [[ -z "$v" ]]; then
    echo "recurrent.sh: no $1= in: $2" >&2
    exit 1
  fi
  echo "$v"
}
gru_ms="$(get gru_ms "$ours")"
gru_cpu_ms="$(get gru_cpu_ms "$ours")"
augru_ms="$(get augru_ms "$ours")"
torch_ms="$(get ms "$torch_gru")"
torch_cpu_ms="$(get cpu_ms "$torch_gru")"
torch_augru_ms="$(get ms "$torch_augru")"
ratio="$(awk -v t="$torch_ms" -v o="$gru_ms" 'BEGIN { printf "%.2f", t / o }')"
aratio="$(awk -v a="$augru_ms" -v g="$gru_ms" 'BEGIN { printf "%.2f", a / g }')"
echo "RESULT gru_cpu ours_ms=$gru_ms torch_ms=$torch_ms ratio=$ratio target=1.5 threads=$threads" \
  "ours_cpu_ms=$gru_cpu_ms torch_cpu_ms=$torch_cpu_ms load1=$(cut -d' ' -f1 /proc/loadavg)"
echo "RESULT augru_cpu augru_ms=$augru_ms gru_ms=$gru_ms ratio=$aratio target<=1.3" \
  "torch_augru_ms=$torch_augru_ms threads=$threads"
