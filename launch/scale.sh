#!/usr/bin/env bash
# Weak- and strong-scaling sweeps of distributed `ips train` (launch/cluster_train.h) over lists of
# (workers, servers), on one host (oversubscribed when ranks > cores) or on the hosts of an
# Open MPI hostfile. For each point it runs
#   mpirun --oversubscribe [--allow-run-as-root] [--hostfile F] -np W+S ips train --config C \
#     --set cluster.num_ps=S --set data.batch_size=B ...
# (weak: B = --batch per worker, so the global batch grows with W; strong: B = --batch / W, the
# global batch fixed), parses the `RESULT train_cluster` line of worker 0, and writes
#   OUT/scale.csv   one row per point (plus a `local` row: single-process `ips train`, no MPI,
#                   whose step_ms is the compute time per batch used by bench/project_scaling.py)
#   OUT/scale.png   samples/s against workers, one line per (mode, servers), with ideal scaling
#   OUT/logs/       each run's stdout/stderr
#   OUT/projection.txt  bench/project_scaling.py's PROJECTION table from this CSV
# allreduce_bytes_per_step is what one worker sends per step in a ring all-reduce of the dense
# gradients, 2 (W - 1) / W * dense_floats * 4 (Open MPI picks its own algorithm; the ring is the
# bandwidth-optimal reference that bench/project_scaling.py also uses).
# and ends with one `RESULT scale ...` line. speedup = samples/s over the samples/s of the
# smallest worker count of the same (mode, servers); efficiency = speedup / (W / W_min).
#
# Usage: launch/scale.sh [--build DIR] [--mode weak|strong|both] [--workers 1,2,4]
#   [--servers 1,2] [--hostfile F] [--config C] [--steps N] [--warmup N] [--batch B]
#   [--threads T] [--out DIR] [--set path=value]... [--mpirun_args "..."] [--no_plot]
# The default sweep (weak, workers 1,2, servers 1, 30 steps) takes about a minute on 2 cores.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

build=build
mode=weak
workers=1,2
servers=1
hostfile=""
config=launch/configs/din_synthetic.pbtxt
steps=30
warmup=5
batch=512
threads=1
out=/tmp/ips-scale
mpirun_args=""
plot=1
sets=()

die() {
  echo "scale.sh: $*" >&2
  exit 1
}
need_value() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value"; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) need_value "$@"; build=$2; shift 2 ;;
    --mode) need_value "$@"; mode=$2; shift 2 ;;
    --workers) need_value "$@"; workers=$2; shift 2 ;;
    --servers) need_value "$@"; servers=$2; shift 2 ;;
    --hostfile) need_value "$@"; hostfile=$2; shift 2 ;;
    --config) need_value "$@"; config=$2; shift 2 ;;
    --steps) need_value "$@"; steps=$2; shift 2 ;;
    --warmup) need_value "$@"; warmup=$2; shift 2 ;;
    --batch) need_value "$@"; batch=$2; shift 2 ;;
    --threads) need_value "$@"; threads=$2; shift 2 ;;
    --out) need_value "$@"; out=$2; shift 2 ;;
    --set) need_value "$@"; sets+=(--set "$2"); shift 2 ;;
    --mpirun_args) need_value "$@"; mpirun_args=$2; shift 2 ;;
    --no_plot) plot=0; shift ;;
    -h | --help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

case "$mode" in
  weak) modes=(weak) ;;
  strong) modes=(strong) ;;
  both) modes=(weak strong) ;;
  *) die "--mode must be weak, strong or both (got '$mode')" ;;
esac
is_count() { [[ "$1" =~ ^[1-9][0-9]*$ ]]; }
IFS=, read -r -a worker_list <<<"$workers"
IFS=, read -r -a server_list <<<"$servers"
[[ ${#worker_list[@]} -gt 0 && ${#server_list[@]} -gt 0 ]] || die "empty --workers or --servers"
for v in "${worker_list[@]}"; do is_count "$v" || die "--workers: '$v' is not a count >= 1"; done
for v in "${server_list[@]}"; do is_count "$v" || die "--servers: '$v' is not a count >= 1"; done
for v in "$steps" "$batch" "$threads"; do
  is_count "$v" || die "--steps, --batch and --threads must be integers >= 1"
done
[[ "$warmup" =~ ^[0-9]+$ ]] || die "--warmup must be an integer >= 0"
# Sorted ascending: the first worker count of a series is its speedup base.
mapfile -t worker_list < <(printf '%s\n' "${worker_list[@]}" | sort -n -u)

# A relative path is the caller's (from their current directory), else the repository's: the
# defaults and the README's `--build build --config launch/configs/...` work from anywhere.
# Made absolute here, so every rank (and the logs) see the same file.
resolve() {
  if [[ "$1" = /* ]]; then
    echo "$1"
  elif [[ -e "$1" ]]; then
    echo "$PWD/$1"
  elif [[ -e "$root/$1" ]]; then
    echo "$root/$1"
  else
    echo "$PWD/$1"
  fi
}
config_given=$config
build=$(resolve "$build")
config=$(resolve "$config")
ips=$build/launch/ips
[[ -x "$ips" ]] || die "$ips not found: build it first (cmake --build $build --target ips)"
if [[ ! -f "$config" ]]; then
  if [[ "$config_given" = /* ]]; then
    die "config '$config' not found"
  fi
  die "config '$config_given' not found (looked in $PWD and $root)"
fi
if [[ -n "$hostfile" ]]; then
  [[ -f "$hostfile" ]] || die "hostfile '$hostfile' not found"
  hostfile=$(cd "$(dirname "$hostfile")" && pwd)/$(basename "$hostfile")
fi
command -v mpirun >/dev/null || die "mpirun not found (Open MPI: apt-get install openmpi-bin)"
if [[ $plot -eq 1 ]] && ! command -v gnuplot >/dev/null; then
  echo "scale.sh: gnuplot not found (apt-get install gnuplot-nox): CSV only" >&2
  plot=0
fi

mkdir -p "$out/logs"
csv=$out/scale.csv
cores=$(nproc)
mpi=(mpirun --oversubscribe)
[[ $(id -u) -eq 0 ]] && mpi+=(--allow-run-as-root)
[[ -n "$hostfile" ]] && mpi+=(--hostfile "$hostfile")
# shellcheck disable=SC2206  # deliberate word splitting of extra mpirun arguments
[[ -n "$mpirun_args" ]] && mpi+=($mpirun_args)
common=(--config "$config" --quiet --set "data.synthetic.steps=$steps"
  --set "data.synthetic.warmup_steps=$warmup" --set "train.num_threads=$threads")
# One held-out batch for the final AUC of a CTR model; sequence models have none (ips refuses the
# flag for them).
if ! "$ips" config print --config "$config" | grep -qE '^  type: (SASREC|GRU4REC)$'; then
  common+=(--eval_batches 1)
fi

# key=value of a RESULT line ($1) for key $2 ("" when absent).
field() { tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p" | head -n 1; }

echo "mode,workers,servers,ranks,cores,oversubscribed,batch_per_worker,global_batch,steps,\
samples_per_s,speedup,efficiency,step_ms,allreduce_ms,ps_bytes_per_step,dense_floats,\
allreduce_bytes_per_step,pull_p50_us,pull_p99_us,push_p50_us,push_p99_us,loss,auc" >"$csv"

# The single-process reference: compute time per batch without any transport.
echo "scale.sh: local reference (single process, batch $batch, $threads thread(s))" >&2
log=$out/logs/local
if ! "$ips" train "${common[@]}" --set "data.batch_size=$batch" "${sets[@]}" \
  >"$log.out" 2>"$log.err"; then
  tail -n 5 "$log.err" >&2
  die "the local reference run failed (log: $log.err)"
fi
line=$(grep '^RESULT train ' "$log.out" | tail -n 1)
local_sps=$(field "$line" samples_per_s)
local_step_ms=$(awk -v s="$local_sps" -v b="$batch" 'BEGIN { printf "%.3f", (s > 0 ? 1000 * b / s : 0) }')
echo "local,1,0,1,$cores,no,$batch,$batch,$steps,$local_sps,,,$local_step_ms,0,0,,0,,,,,\
$(field "$line" loss),$(field "$line" auc)" >>"$csv"

points=0
for m in "${modes[@]}"; do
  for s in "${server_list[@]}"; do
    base_sps=""
    base_w=""
    for w in "${worker_list[@]}"; do
      if [[ $m == weak ]]; then
        b=$batch
      else
        b=$((batch / w))
        if [[ $b -lt 1 ]]; then
          echo "scale.sh: strong, $w workers: global batch $batch < workers, skipped" >&2
          continue
        fi
      fi
      ranks=$((w + s))
      over=no
      [[ -z "$hostfile" && $ranks -gt $cores ]] && over=yes
      [[ -n "$hostfile" ]] && over=hostfile
      echo "scale.sh: $m workers=$w servers=$s batch/worker=$b ranks=$ranks" >&2
      log=$out/logs/$m-w$w-s$s
      if ! "${mpi[@]}" -np "$ranks" "$ips" train "${common[@]}" --set "cluster.num_ps=$s" \
        --set "data.batch_size=$b" "${sets[@]}" >"$log.out" 2>"$log.err"; then
        tail -n 5 "$log.err" >&2
        die "run $m workers=$w servers=$s failed (log: $log.err)"
      fi
      line=$(grep '^RESULT train_cluster ' "$log.out" | tail -n 1)
      [[ -n "$line" ]] || die "no RESULT train_cluster line in $log.out"
      sps=$(field "$line" samples_per_s)
      if [[ -z "$base_sps" ]]; then
        base_sps=$sps
        base_w=$w
      fi
      dense=$(field "$line" dense_floats)
      read -r speedup eff < <(awk -v s="$sps" -v b="$base_sps" -v w="$w" -v bw="$base_w" \
        'BEGIN { sp = b > 0 ? s / b : 0; printf "%.3f %.3f\n", sp, sp / (w / bw) }')
      echo "$m,$w,$s,$ranks,$cores,$over,$b,$((b * w)),$steps,$sps,$speedup,$eff,\
$(field "$line" step_ms),$(field "$line" allreduce_ms),$(field "$line" ps_bytes_per_step),\
$dense,$((2 * (w - 1) * ${dense:-0} * 4 / w)),$(field "$line" pull_p50_us),\
$(field "$line" pull_p99_us),$(field "$line" push_p50_us),$(field "$line" push_p99_us),\
$(field "$line" loss),$(field "$line" auc)" >>"$csv"
      points=$((points + 1))
    done
  done
done
[[ $points -gt 0 ]] || die "no point ran"
# Empty fields shown as '-' (column would merge them).
sed -e 's/,,/,-,/g' -e 's/,,/,-,/g' -e 's/,$/,-/' "$csv" | column -s, -t >&2 || cat "$csv" >&2

png=""
if [[ $plot -eq 1 ]]; then
  png=$out/scale.png
  plots=()
  for m in "${modes[@]}"; do
    for s in "${server_list[@]}"; do
      dat=$out/$m-s$s.dat
      awk -F, -v m="$m" -v s="$s" 'NR > 1 && $1 == m && $3 == s { print $2, $10 }' "$csv" >"$dat"
      [[ -s "$dat" ]] || continue
      plots+=("'$dat' using 1:2 with linespoints title '$m, $s PS'")
      # Ideal: the series' first point times W / W_min.
      read -r w0 s0 < <(head -n 1 "$dat")
      plots+=("'$dat' using 1:(\$1 / $w0 * $s0) with lines dashtype 2 title '$m, $s PS: ideal'")
    done
  done
  joined=$(printf '%s, ' "${plots[@]}")
  gnuplot <<EOF
set terminal png noenhanced size 900,600
set output '$png'
set title "ips train scaling ($(basename "$config"), $(hostname), $cores cores$([[ -n "$hostfile" ]] && echo ", hostfile"))"
set xlabel 'workers'
set ylabel 'samples/s (all workers)'
set key left top
set grid
set yrange [0:*]
set logscale x 2
set xtics ($(IFS=,; echo "${worker_list[*]}"))
plot ${joined%, }
EOF
fi

# The projection to many nodes from this sweep's measurements (defaults of the script: 25 Gbit/s,
# 10 us); bench/project_scaling.py --help for other networks.
if [[ -x /usr/bin/python3 ]]; then
  if /usr/bin/python3 "$root/bench/project_scaling.py" --csv "$csv" >"$out/projection.txt"; then
    grep -v '^RESULT' "$out/projection.txt" >&2
  else
    echo "scale.sh: the projection failed (see above)" >&2
  fi
fi

# Summary: the largest worker count of the first series against its base. speedup_2w is 2
# workers over 1, so "na" when the series has no 1-worker point (its speedups are then over its
# smallest worker count, and the 2-worker one would read 1.000).
summary=$(awk -F, -v m="${modes[0]}" -v s="${server_list[0]}" \
  'NR > 1 && $1 == m && $3 == s { w = $2; sp = $11; e = $12; if (w == 1) one = 1; if (w == 2) two = sp }
   END { printf "max_workers=%s speedup=%s efficiency=%s speedup_2w=%s", w, sp, e,
         (one && two != "") ? two : "na" }' "$csv")
echo "RESULT scale mode=$mode points=$points cores=$cores hosts=$([[ -n "$hostfile" ]] &&
  echo hostfile || echo local) local_step_ms=$local_step_ms $summary csv=$csv png=${png:-none}"
