#!/usr/bin/env bash
# Runs embedding_bench with the PyTorch baseline (bench/torch_embedding.py --serve) as its
# co-process, timed interleaved with ours; the last line is embedding_bench's RESULT with the
# ours-vs-torch ratios. Both get the same threads, repetitions and kind of pages. Usage:
#   bench/embedding.sh BUILD_DIR [--threads N] [--reps R] [--hugepages]
# (PYTHON overrides the interpreter with torch; --hugepages madvises both tables to THP.)
set -euo pipefail
usage="usage: bench/embedding.sh BUILD_DIR [--threads N] [--reps R] [--hugepages]"
build=${1:?$usage}
shift
threads=2
reps=100
huge=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --threads) threads=${2:?$usage}; shift 2 ;;
    --reps) reps=${2:?$usage}; shift 2 ;;
    --hugepages) huge=(--hugepages); shift ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-/usr/bin/python3}
"$build/bench/embedding_bench" --threads "$threads" --reps "$reps" ${huge[@]+"${huge[@]}"} \
  --torch_python "$python" --torch_script "$here/torch_embedding.py"
