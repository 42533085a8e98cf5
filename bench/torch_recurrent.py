#!/usr/bin/python3
"""Times torch.nn.GRU forward+backward (the peer's DIEN GRU: batch_first, unpacked, full lengths)
or the peer's AUGRU loop, with random upstream gradients on all states and the final state.

The timed region is forward + autograd backward, like our recurrent_bench / recurrent_gpu_bench.
CPU: torch.set_num_threads(--threads); run it with OMP_WAIT_POLICY=PASSIVE like the peer's
bench.py (bench/recurrent.sh does). CUDA: cuDNN, synchronised around the timed region.
Last stdout line: RESULT torch_recurrent cell=... device=... ms=... cpu_ms=... (medians over
--iters; cpu_ms = process CPU time, which includes OpenBLAS's spinning idle workers).
Needs Debian's /usr/bin/python3 (torch 1.13) here; any torch on the GPU machine.
"""
import argparse
import importlib.util
import os
import statistics
import sys
import time

import torch


def load_peer_augru():
    """The AUGRU class from shared/peers/torch_models.py (not copied: imported from there)."""
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.environ.get("IPS_PEERS_DIR", os.path.join(here, "..", "..", "shared", "peers"))
    spec = importlib.util.spec_from_file_location("peer_models", os.path.join(path, "torch_models.py"))
    if spec is None or spec.loader is None:
        sys.exit(f"torch_recurrent.py: cannot load {path}/torch_models.py (set IPS_PEERS_DIR)")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.AUGRU


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--cell", default="gru", choices=["gru", "augru"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--input", type=int, default=36)
    ap.add_argument("--hidden", type=int, default=36)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    if min(args.threads, args.batch, args.steps, args.input, args.hidden, args.iters) < 1:
        sys.exit("torch_recurrent.py: sizes, --threads and --iters must be >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("torch_recurrent.py: --device cuda but torch sees no CUDA device")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = torch.device(args.device)
    B, T, I, H = args.batch, args.steps, args.input, args.hidden
    x = torch.randn(B, T, I, device=dev, requires_grad=True)
    g_states = torch.randn(B, T, H, device=dev)
    g_final = torch.randn(B, H, device=dev)
    if args.cell == "gru":
        net = torch.nn.GRU(I, H, batch_first=True).to(dev)

        def step():
            states, hn = net(x)
            torch.autograd.backward([states, hn[0]], [g_states, g_final])
    else:
        net = load_peer_augru()(I, H).to(dev)
        att = torch.rand(B, T, device=dev, requires_grad=True)
        mask = torch.ones(B, T, dtype=torch.bool, device=dev)

        def step():
            final = net(x, att, mask)  # the peer's AUGRU returns only the final state
            torch.autograd.backward([final], [g_final])

    times, cpu_times = [], []
    for i in range(args.warmup + args.iters):
        if args.device == "cuda":
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        if args.device == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append((time.perf_counter() - t0) * 1e3)
            cpu_times.append((time.process_time() - c0) * 1e3)
        net.zero_grad(set_to_none=True)
        x.grad = None
    ms, cpu_ms = statistics.median(times), statistics.median(cpu_times)
    print(f"torch {args.cell} {args.device} B={B} T={T} I={I} H={H}: fwd+bwd median {ms:.3f} ms "
          f"(min {min(times):.3f}; process cpu {cpu_ms:.3f} ms)", file=sys.stderr)
    print(f"RESULT torch_recurrent cell={args.cell} device={args.device} ms={ms:.3f} B={B} T={T} "
          f"I={I} H={H} threads={args.threads} cpu_ms={cpu_ms:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
