#!/usr/bin/python3
"""Torch eager baselines for bench/attention_bench.cc, forward + backward per step.

--op din: the peer's ActivationUnit (MLP([q, k, q-k, q*k]) -> 80 -> 40 -> 1, sigmoid between),
          masked raw scores and the masked weighted sum, B=512, T=50, E=36 (peers/torch_models.py).
--op mha: SASRec's attention core, B=128, T=50, d=50, 1 head: causal + padding mask (-1e9),
          softmax, dropout 0.5, @ V.
Prints `torch_ms=<median ms per step>` as its last line. Uses the peer's tuning
(OMP_WAIT_POLICY=PASSIVE unless set) and torch.set_num_threads(--threads).
"""
import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402


def din_step_fn(batch: int):
    B, T, E = batch, 50, 36
    g = torch.Generator().manual_seed(1)
    net = nn.Sequential(nn.Linear(4 * E, 80), nn.Sigmoid(), nn.Linear(80, 40), nn.Sigmoid(),
                        nn.Linear(40, 1))
    q = (torch.rand(B, E, generator=g) - 0.5).requires_grad_()
    k = (torch.rand(B, T, E, generator=g) - 0.5).requires_grad_()
    length = torch.full((B,), T)
    mask = torch.arange(T)[None, :] >= (T - length)[:, None]
    up = torch.rand(B, E, generator=g) * 2 - 1

    def step():
        for p in [q, k, *net.parameters()]:
            p.grad = None
        qq = q.unsqueeze(1).expand_as(k)
        s = net(torch.cat([qq, k, qq - k, qq * k], dim=-1)).squeeze(-1)
        w = s * mask
        pooled = torch.bmm(w.unsqueeze(1), k).squeeze(1)
        (pooled * up).sum().backward()

    return step


def mha_step_fn(batch: int):
    B, T, d = batch, 50, 50
    g = torch.Generator().manual_seed(2)
    q, k, v = [(torch.rand(B, T, d, generator=g) * 2 - 1).requires_grad_() for _ in range(3)]
    up = torch.rand(B, T, d, generator=g) * 2 - 1
    seq_valid = torch.ones(B, T, dtype=torch.bool)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    allowed = causal[None] & seq_valid[:, None, :]
    drop = nn.Dropout(0.5)

    def step():
        for p in (q, k, v):
            p.grad = None
        s = q @ k.transpose(1, 2) / d ** 0.5
        a = drop(torch.softmax(s.masked_fill(~allowed, -1e9), dim=-1))
        ((a @ v) * up).sum().backward()

    return step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--op", choices=["din", "mha"], default="din")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.op == "din":
        step = din_step_fn(args.batch or 512)
    else:
        step = mha_step_fn(args.batch or 128)
    for _ in range(3):
        step()
    ms = []
    for _ in range(args.reps):
        t = time.perf_counter()
        for _ in range(args.iters):
            step()
        ms.append((time.perf_counter() - t) / args.iters * 1e3)
    ms.sort()
    print(f"torch {args.op} threads={args.threads} per-rep ms: " +
          " ".join(f"{m:.3f}" for m in ms))
    print(f"torch_ms={ms[len(ms) // 2]:.4f}")


if __name__ == "__main__":
    main()
