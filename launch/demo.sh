#!/usr/bin/env bash
# The main job on the built-in default: installs what is missing, builds, then
#   1. synthesizes a behaviour log with planted interests, drift, two domains and cold starts,
#   2. converts it into sharded training data (CTR protocol) and inspects it,
#   3. converts MovieLens-100K from ../shared/data (sequential-recommendation protocol) when present,
#   4. trains DIN on the peer's synthetic protocol (launch/configs/din_synthetic.pbtxt) and prints
#      its held-out AUC.
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
echo "== 4. ips train (DIN, synthetic protocol)"
$ips train --config launch/configs/din_synthetic.pbtxt --metrics_out "$out/din_metrics.jsonl"
echo "== demo finished; outputs in $out"
