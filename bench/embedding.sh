#!/usr/bin/env bash
# Runs the PyTorch baseline and then embedding_bench with its result, so the last line is
# embedding_bench's RESULT with the ours-vs-torch ratios. Usage:
#   bench/embedding.sh BUILD_DIR [--threads N]    (PYTHON overrides the interpreter with torch)
set -euo pipefail
build=${1:?usage: bench/embedding.sh BUILD_DIR [--threads N]}
shift
threads=2
if [[ "${1:-}" == "--threads" ]]; then threads=${2:?}; fi
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-/usr/bin/python3}
torch_out=$(mktemp)
trap 'rm -f "$torch_out"' EXIT
"$python" "$here/torch_embedding.py" --threads "$threads" | tee "$torch_out"
"$build/bench/embedding_bench" --threads "$threads" --torch_result "$torch_out"
