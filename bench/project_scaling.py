#!/usr/bin/python3
"""PROJECTION of distributed `ips train` throughput to many nodes (an analytic model, not a run).

Inputs are measured by launch/scale.sh (its scale.csv) or given as flags:
  t_compute  ms per batch of one worker without any transport: the `local` row's step_ms
             (single-process ips train: dedup, in-process table work, forward, backward, update)
  B_ps       bytes one worker moves to/from the parameter servers per step (pull keys + rows,
             push keys + gradients, control): ps_bytes_per_step of the 1-worker row
  D          dense floats all-reduced per step: dense_floats
and the network: bandwidth bw (bytes/s per node NIC, each direction) and one-way latency a.

Model, one worker per node, P parameter-server nodes, N worker nodes, batch b per worker:
  t_pp(N)  = max(B_ps / bw, N * B_ps / (P * bw)) + 4 a
             (a worker's own NIC, or its 1/N share of the P servers' NICs, whichever is slower;
             one pull and one push round trip per step, each fanned out to the servers in
             parallel)
  t_ar(N)  = 2 (N - 1) / N * 4 D / bw + L(N)
             (ring all-reduce; L = 2 (N - 1) a for the ring, 2 ceil(log2 N) a for a tree)
             and 0 for N = 1
  t_step(N) = t_compute + (1 - overlap) * t_pp(N) + t_ar(N)
  samples/s(N) = N * b / t_step(N),  efficiency(N) = t_compute / t_step(N)
overlap is the fraction of the pull/push hidden behind compute (the trainer prefetches batch
t+1's pull during batch t; 0 = none, the conservative default). Not modelled: PS CPU time for the
table work (assumed to scale with P), stragglers, and contention beyond the NIC.
"""
import argparse
import csv
import math
import sys


def fail(msg):
    print("project_scaling: " + msg, file=sys.stderr)
    sys.exit(1)


def from_csv(path):
    """Returns (t_compute_ms, ps_bytes, dense_floats, batch) read from scale.sh's CSV."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        fail("cannot read %s: %s" % (path, e))
    need = {"mode", "workers", "step_ms", "ps_bytes_per_step", "dense_floats", "batch_per_worker"}
    if not rows or not need.issubset(rows[0].keys()):
        fail("%s: not a launch/scale.sh CSV (needs columns %s)" % (path, ", ".join(sorted(need))))
    local = [r for r in rows if r["mode"] == "local"]
    one = [r for r in rows if r["mode"] != "local" and r["workers"] == "1"]
    if not local:
        fail("%s: no `local` row (the single-process reference)" % path)
    if not one:
        fail("%s: no 1-worker row (needed for the PS bytes per step)" % path)
    dense = [r["dense_floats"] for r in rows if r["mode"] != "local" and r["dense_floats"]]
    try:
        return (float(local[0]["step_ms"]), float(one[0]["ps_bytes_per_step"]),
                float(dense[0]) if dense else 0.0, int(local[0]["batch_per_worker"]))
    except ValueError as e:
        fail("%s: bad number: %s" % (path, e))


def project(n, servers, t_compute_ms, ps_bytes, dense_floats, batch, bw, lat_s, overlap, tree):
    t_c = t_compute_ms / 1e3
    t_pp = max(ps_bytes / bw, n * ps_bytes / (servers * bw)) + 4 * lat_s
    if n > 1:
        lat_term = (2 * math.ceil(math.log2(n)) if tree else 2 * (n - 1)) * lat_s
        t_ar = 2.0 * (n - 1) / n * 4 * dense_floats / bw + lat_term
    else:
        t_ar = 0.0
    t_step = t_c + (1 - overlap) * t_pp + t_ar
    return t_step, t_pp, t_ar, n * batch / t_step, t_c / t_step


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--csv", help="scale.csv from launch/scale.sh (inputs not given as flags)")
    p.add_argument("--compute_ms", type=float, help="t_compute: ms per batch per worker")
    p.add_argument("--ps_bytes", type=float, help="B_ps: bytes per step per worker to/from PS")
    p.add_argument("--dense_floats", type=float, help="D: dense floats all-reduced per step")
    p.add_argument("--batch", type=int, help="b: samples per worker per step")
    p.add_argument("--bandwidth_gbps", type=float, default=25.0,
                   help="per-node NIC bandwidth, Gbit/s each direction (default 25)")
    p.add_argument("--latency_us", type=float, default=10.0,
                   help="one-way message latency, microseconds (default 10)")
    p.add_argument("--nodes", default="1,2,4,8,16,32,64,128,256",
                   help="worker node counts (default 1,2,...,256)")
    p.add_argument("--servers", type=int, default=0,
                   help="PS nodes; 0 = ceil(N * --ps_ratio)")
    p.add_argument("--ps_ratio", type=float, default=0.25,
                   help="PS nodes per worker node when --servers is 0 (default 0.25)")
    p.add_argument("--overlap", type=float, default=0.0,
                   help="fraction of pull/push hidden behind compute, 0..1 (default 0)")
    p.add_argument("--allreduce", choices=["ring", "tree"], default="ring",
                   help="latency term of the all-reduce (default ring)")
    a = p.parse_args()

    t_c = ps_bytes = dense = batch = None
    if a.csv:
        t_c, ps_bytes, dense, batch = from_csv(a.csv)
    t_c = a.compute_ms if a.compute_ms is not None else t_c
    ps_bytes = a.ps_bytes if a.ps_bytes is not None else ps_bytes
    dense = a.dense_floats if a.dense_floats is not None else dense
    batch = a.batch if a.batch is not None else batch
    for name, v in (("compute_ms", t_c), ("ps_bytes", ps_bytes), ("dense_floats", dense),
                    ("batch", batch)):
        if v is None:
            fail("--%s is needed (or --csv)" % name)
        if v < 0 or (name in ("compute_ms", "batch") and v <= 0):
            fail("--%s must be positive (got %s)" % (name, v))
    if a.bandwidth_gbps <= 0 or a.latency_us < 0 or not 0 <= a.overlap <= 1:
        fail("--bandwidth_gbps > 0, --latency_us >= 0 and 0 <= --overlap <= 1 are needed")
    if a.servers < 0 or a.ps_ratio <= 0:
        fail("--servers >= 0 and --ps_ratio > 0 are needed")
    try:
        nodes = [int(x) for x in a.nodes.split(",")]
    except ValueError:
        fail("--nodes must be a comma-separated list of integers (got '%s')" % a.nodes)
    if not nodes or min(nodes) < 1:
        fail("--nodes must be integers >= 1")

    bw = a.bandwidth_gbps * 1e9 / 8
    lat = a.latency_us * 1e-6
    print("PROJECTION (analytic model, not measured): t_compute=%.3f ms, B_ps=%.0f bytes/step, "
          "D=%.0f floats, b=%d, bw=%.1f Gbit/s, latency=%.1f us, overlap=%.2f, all-reduce=%s"
          % (t_c, ps_bytes, dense, batch, a.bandwidth_gbps, a.latency_us, a.overlap,
             a.allreduce))
    print("PROJECTION %6s %4s %10s %10s %10s %14s %10s"
          % ("nodes", "ps", "t_pp_ms", "t_ar_ms", "t_step_ms", "samples_per_s", "efficiency"))
    last = None
    for n in nodes:
        s = a.servers if a.servers > 0 else max(1, math.ceil(n * a.ps_ratio))
        t_step, t_pp, t_ar, sps, eff = project(n, s, t_c, ps_bytes, dense, batch, bw, lat,
                                               a.overlap, a.allreduce == "tree")
        print("PROJECTION %6d %4d %10.3f %10.3f %10.3f %14.1f %10.3f"
              % (n, s, t_pp * 1e3, t_ar * 1e3, t_step * 1e3, sps, eff))
        last = (n, sps, eff)
    print("RESULT scale_projection projection=yes nodes=%d samples_per_s=%.1f efficiency=%.3f "
          "bandwidth_gbps=%g latency_us=%g compute_ms=%.3f ps_bytes=%.0f dense_floats=%.0f"
          % (last[0], last[1], last[2], a.bandwidth_gbps, a.latency_us, t_c, ps_bytes, dense))


if __name__ == "__main__":
    main()
