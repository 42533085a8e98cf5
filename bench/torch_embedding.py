#!/usr/bin/env python3
"""PyTorch baseline for bench/embedding_bench.cc: the same shapes and table size.

Times torch.nn.functional.embedding (gather of a [512 x 50] index tensor into [512 x 50 x D])
and torch.nn.functional.embedding_bag(mode='sum') (pooled gather into [512 x D]) on a float32
table >= 8x the last-level cache, with fresh random indices every repetition, and prints
RESULT torch_embedding threads=N d18_gather_ms=... d18_bag_ms=... (min over repetitions, the
same statistic embedding_bench uses). Needs PyTorch (on this VM: /usr/bin/python3).
"""
import argparse
import time

import torch
import torch.nn.functional as F

BATCH, HISTORY = 512, 50


def llc_bytes():
    try:
        with open("/sys/devices/system/cpu/cpu0/cache/index3/size") as f:
            s = f.read().strip()
        mult = {"K": 1024, "M": 1024 * 1024}.get(s[-1], 1)
        v = int(s.rstrip("KM")) * mult
        if v > 0:
            return v
    except (OSError, ValueError):
        pass
    return 32 << 20


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    table_bytes = (8 * llc_bytes() + 4095) // 4096 * 4096
    flat = torch.empty(table_bytes // 4, dtype=torch.float32).uniform_(-1, 1)
    print(f"torch_embedding: torch {torch.__version__} threads={args.threads} "
          f"table={table_bytes / 2**20:.1f} MiB", flush=True)
    fields = [f"threads={args.threads}", f"table_mib={table_bytes >> 20}"]
    for dim in (18, 36, 64):
        rows = flat.numel() // dim
        weight = flat[: rows * dim].view(rows, dim)
        # Separate fresh index sets for gather and bag: no op reads rows another just read
        # (the LLC may be large).
        idx = [torch.randint(0, rows, (BATCH, HISTORY), dtype=torch.int64)
               for _ in range(args.reps)]
        bag_idx = [torch.randint(0, rows, (BATCH * HISTORY,), dtype=torch.int64)
                   for _ in range(args.reps)]
        offsets = torch.arange(0, BATCH * HISTORY, HISTORY, dtype=torch.int64)
        # Verify once before timing.
        out = F.embedding(idx[0], weight)
        assert torch.equal(out[3, 7], weight[idx[0][3, 7]])
        bag = F.embedding_bag(idx[0].reshape(-1), weight, offsets, mode="sum")
        assert torch.allclose(bag[5], weight[idx[0][5]].sum(0), atol=1e-4)
        t_gather, t_bag = [], []
        for r in range(args.reps):
            t0 = time.perf_counter()
            out = F.embedding(idx[r], weight)
            t_gather.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            bag = F.embedding_bag(bag_idx[r], weight, offsets, mode="sum")
            t_bag.append(time.perf_counter() - t0)
        g, b = min(t_gather) * 1e3, min(t_bag) * 1e3
        print(f"D={dim:<3} embedding {g:.3f} ms  embedding_bag(sum) {b:.3f} ms", flush=True)
        fields += [f"d{dim}_gather_ms={g:.4f}", f"d{dim}_bag_ms={b:.4f}"]
    print("RESULT torch_embedding " + " ".join(fields), flush=True)


if __name__ == "__main__":
    main()
