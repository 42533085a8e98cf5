#!/usr/bin/env bash
# The main job on the built-in default: installs what is missing, builds, then
#   1. synthesizes a behaviour log with planted interests, drift, two domains and cold starts,
#   2. converts it into sharded training data (CTR protocol) and inspects it,
#   3. converts MovieLens-100K from ../shared/data (sequential-recommendation protocol) when present,
#   4. the main job: DIN on the peer's synthetic protocol (launch/configs/din_synthetic.pbtxt) with
#      2 parameter servers + 2 workers under mpirun; prints the held-out AUC,
#   5. the same model in one process with checkpoints, exported to a serving bundle, and a few
#      users scored by `ips serve` (JSON lines in, scores out).
# Everything it writes goes under ${IPS_DEMO_DIR:-/tmp/ips-demo}.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash launch/install_deps.sh
bash launch/build.sh
ips=build/launch/ips
out=${IPS_DEMO_DIR:-/tmp/ips-demo}
rm -rf "$out"
mkdir -p "$out"

echo "== 1. ips data synth"
$ips data synth --output "$out/events.tsv.gz" --events 2000000 --users 20000 --items 50000 \
  --categories 200 --seed 1
echo "== 2. ips data convert (events, ctr protocol) + inspect"
$ips data convert --format events --input "$out/events.tsv.gz" --output "$out/synth-ctr" \
  --protocol ctr --shards 2 --seed 1
$ips data inspect "$out/synth-ctr"
shared=${IPS_SHARED_DATA:-$root/../shared/data}
if [[ -f "$shared/movielens-100k/u.data.gz" ]]; then
  echo "== 3. ips data convert (movielens100k, seqrec protocol) + inspect"
  $ips data convert --format movielens100k --input "$shared/movielens-100k" \
    --output "$out/ml100k" --protocol seqrec --shards 2 --seed 0
  $ips data inspect "$out/ml100k"
else
  echo "== 3. skipped: $shared/movielens-100k not found"
fi
mpi_root=()
[[ "$(id -u)" == 0 ]] && mpi_root=(--allow-run-as-root)
echo "== 4. mpirun -np 4 ips train (DIN, synthetic protocol): 2 parameter servers + 2 workers"
mpirun "${mpi_root[@]}" --oversubscribe -np 4 $ips train \
  --config launch/configs/din_synthetic.pbtxt --set cluster.num_ps=2 \
  --metrics_out "$out/din_cluster_metrics.jsonl"
echo "== 5. ips train (one process, checkpoints) -> ips export -> ips serve"
$ips train --config launch/configs/din_synthetic.pbtxt --set data.synthetic.steps=40 \
  --set checkpoint.dir="$out/ckpt" --set checkpoint.every_steps=20 --quiet
$ips export --checkpoint "$out/ckpt" --output "$out/bundle"
cat >"$out/requests.jsonl" <<'JSON'
{"user": 1, "history": [3, 17, 17, 42, 108, 5, 77], "candidates": [3, 17, 250000, 999999]}
{"user": 2, "history": [1000, 2000, 3000], "candidates": [1000, 1, 2, 500000]}
{"user": 3, "history": [], "candidates": [1, 10, 100]}
JSON
$ips serve --bundle "$out/bundle" <"$out/requests.jsonl"
echo "== demo finished; outputs in $out"
