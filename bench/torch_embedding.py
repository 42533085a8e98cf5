#!/usr/bin/env python3
"""PyTorch baseline for bench/embedding_bench.cc: the same shapes and table size.

Times torch.nn.functional.embedding (gather of a [512 x 50] index tensor into [512 x 50 x D])
and torch.nn.functional.embedding_bag(mode='sum') (pooled gather into [512 x D]) on a float32
table >= 8x the last-level cache, with fresh random indices every repetition, and prints
RESULT torch_embedding threads=N d18_gather_ms=... d18_bag_ms=... (min over repetitions, the
same statistic and by default the same number of repetitions as embedding_bench). Needs
PyTorch (on this VM: /usr/bin/python3).

--serve is how embedding_bench (and so bench/embedding.sh) uses it: the table is built as above,
then one command per stdin line is answered with one stdout line, so the C++ bench can time
torch's op right next to its own in every repetition (both see the same machine load):
  dim D      -> "ok" once the [rows x D] view is set up and F.embedding / embedding_bag verified
  gather     -> seconds of one F.embedding on fresh random [512 x 50] indices
  bag        -> seconds of one F.embedding_bag(mode='sum') on fresh random indices
  quit (EOF) -> exits
The first line it prints is "ready thp_fraction=F torch=VERSION".

--hugepages madvise(MADV_HUGEPAGE)s the table's memory before its first touch (through ctypes
on the tensor's data_ptr), as embedding_bench --hugepages does for its own table, so both run
on the same kind of pages; the fraction actually backed by huge pages is printed either way.
"""
import argparse
import ctypes
import ctypes.util
import sys
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


HUGE = 2 << 20
MADV_HUGEPAGE = 14


def madvise_hugepages(ptr, nbytes):
    """madvise(MADV_HUGEPAGE) on the 2 MiB-aligned part of [ptr, ptr + nbytes)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    lo = (ptr + HUGE - 1) // HUGE * HUGE
    hi = (ptr + nbytes) // HUGE * HUGE
    if hi <= lo or libc.madvise(lo, hi - lo, MADV_HUGEPAGE) != 0:
        print(f"madvise(MADV_HUGEPAGE) failed (errno {ctypes.get_errno()}); normal pages",
              file=sys.stderr, flush=True)


def huge_page_fraction(ptr, nbytes):
    """Fraction of [ptr, ptr + nbytes) backed by THP (AnonHugePages in /proc/self/smaps)."""
    huge_kib, overlap = 0, False
    try:
        with open("/proc/self/smaps") as f:
            for line in f:
                head = line.split()[0]
                if "-" in head and not head.endswith(":"):
                    a, b = (int(x, 16) for x in head.split("-"))
                    overlap = a < ptr + nbytes and b > ptr
                elif overlap and head == "AnonHugePages:":
                    huge_kib += int(line.split()[1])
    except OSError:
        return -1.0
    return min(1.0, huge_kib * 1024 / nbytes)


def view_and_verify(flat, dim):
    rows = flat.numel() // dim
    weight = flat[: rows * dim].view(rows, dim)
    idx = torch.randint(0, rows, (BATCH, HISTORY), dtype=torch.int64)
    offsets = torch.arange(0, BATCH * HISTORY, HISTORY, dtype=torch.int64)
    out = F.embedding(idx, weight)
    assert torch.equal(out[3, 7], weight[idx[3, 7]])
    bag = F.embedding_bag(idx.reshape(-1), weight, offsets, mode="sum")
    assert torch.allclose(bag[5], weight[idx[5]].sum(0), atol=1e-4)
    return rows, weight, offsets


def serve(flat, thp):
    print(f"ready thp_fraction={thp:.4f} torch={torch.__version__}", flush=True)
    weight = None
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        if cmd[0] == "dim":
            rows, weight, offsets = view_and_verify(flat, int(cmd[1]))
            print("ok", flush=True)
        elif cmd[0] == "gather" and weight is not None:
            idx = torch.randint(0, rows, (BATCH, HISTORY), dtype=torch.int64)
            t0 = time.perf_counter()
            out = F.embedding(idx, weight)
            dt = time.perf_counter() - t0
            del out
            print(f"{dt:.9f}", flush=True)
        elif cmd[0] == "bag" and weight is not None:
            idx = torch.randint(0, rows, (BATCH * HISTORY,), dtype=torch.int64)
            t0 = time.perf_counter()
            out = F.embedding_bag(idx, weight, offsets, mode="sum")
            dt = time.perf_counter() - t0
            del out
            print(f"{dt:.9f}", flush=True)
        else:
            print(f"error: bad command {line.strip()!r}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--hugepages", action="store_true")
    ap.add_argument("--serve", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    table_bytes = (8 * llc_bytes() + 4095) // 4096 * 4096
    flat = torch.empty(table_bytes // 4, dtype=torch.float32)  # not touched yet
    if args.hugepages:
        madvise_hugepages(flat.data_ptr(), table_bytes)
    flat.uniform_(-1, 1)
    thp = huge_page_fraction(flat.data_ptr(), table_bytes)
    print(f"torch_embedding: torch {torch.__version__} threads={args.threads} "
          f"table={table_bytes / 2**20:.1f} MiB, {thp * 100:.1f}% on huge pages", flush=True,
          file=sys.stderr if args.serve else sys.stdout)
    fields = [f"threads={args.threads}", f"table_mib={table_bytes >> 20}",
              f"hugepages={int(args.hugepages)}", f"thp_fraction={thp:.4f}"]
    if args.serve:
        serve(flat, thp)
        return
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
