#!/usr/bin/env bash
# Runs the attention CPU benchmarks against torch eager on identical shapes, same thread count.
# This 2-vCPU VM is shared and noisy, so each op runs ROUNDS alternating rounds (torch, ours) and
# the medians are compared. MHA (SASRec shape) first, then DIN; the last line is
#   RESULT din_attention_cpu ours_ms=... torch_ms=... ratio=torch/ours target=1.5
# Usage: bench/attention.sh [BUILD_DIR] [THREADS] [ROUNDS]   (defaults: ./build 2 3)
# Torch gets the peer's tuning (OMP_WAIT_POLICY=PASSIVE); it needs Debian's /usr/bin/python3.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
build="${1:-build}"
threads="${2:-2}"
rounds="${3:-3}"
bin="${build}/bench/attention_bench"
if [[ ! -x "${bin}" ]]; then
  echo "attention.sh: ${bin} not found; build the attention_bench target first" >&2
  exit 1
fi
py=/usr/bin/python3
if ! "${py}" -c "import torch" 2>/dev/null; then
  echo "attention.sh: ${py} has no torch (see shared/peers/README.md)" >&2
  exit 1
fi
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for op in mha din; do
  torch_all=""
  ours_all=""
  for ((r = 1; r <= rounds; ++r)); do
    t="$(OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}" "${py}" "${here}/torch_attention.py" \
      --op "${op}" --threads "${threads}" --reps 3 | sed -n 's/^torch_ms=//p')"
    o="$("${bin}" --op="${op}" --threads="${threads}" --reps=3 2>/dev/null |
      sed -n 's/^RESULT .* ours_ms=\([0-9.e+-]*\).*/\1/p')"
    if [[ -z "${t}" || -z "${o}" ]]; then
      echo "attention.sh: ${op} round ${r} failed (torch '${t}', ours '${o}')" >&2
      exit 1
    fi
    echo "${op} round ${r}: torch ${t} ms, ours ${o} ms"
    torch_all+=" ${t}"
    ours_all+=" ${o}"
  done
  tm="$(echo "${torch_all}" | median)"
  om="$(echo "${ours_all}" | median)"
  name="din_attention_cpu"
  [[ "${op}" == "mha" ]] && name="mha_attention_cpu"
  awk -v n="${name}" -v o="${om}" -v t="${tm}" -v th="${threads}" -v r="${rounds}" \
    'BEGIN {printf "RESULT %s ours_ms=%.3f torch_ms=%.3f ratio=%.2f target=1.5 threads=%d rounds=%d\n", n, o, t, t / o, th, r}'
done
