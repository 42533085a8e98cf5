#!/usr/bin/python3
"""Cross-checks worker/metrics and worker/synthetic_batches against sklearn and the peer's code.

Writes two data files computed by the peer (shared/peers/data.py) and sklearn, then runs the
C++ tests' PeerCheck.* cases on them:

  /usr/bin/python3 bench/peer_check/metrics_vs_peer.py --build-dir /work/build-x

* metrics: roc_auc_score and log_loss (float32 predictions, eps="auto") on random data with
  ties, and the peer's rank_metrics on random candidate lists with ties (k = 10 and 3).
* synthetic: the peer's Synthetic(items=100000, cats=100, seq=50): its CDF table (ours within
  1e-14 relative: numpy's `**` uses SVML pow on AVX-512 machines, 1 ulp off libm's in ~28% of
  entries), its u -> item map at random u (EQUAL) and exactly at / just below its CDF entries
  (equal, or off by one only where u is within 1e-14 of our boundary), its categories (ours =
  peer + 1, EQUAL), and
  statistics of 20 peer CTR batches of 512 (label rate, share of positives/negatives whose target
  is in the history's mode category), which ours must match within sampling error.

Needs /usr/bin/python3 with numpy and sklearn (the peer's environment). The C++ tests skip
these cases when the files are not given, so ctest never depends on Python.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "..", "shared", "peers"))
import data  # noqa: E402  (the peer's module)


def write_metrics_file(path: str, rng: np.random.Generator) -> None:
    with open(path, "w") as f:
        for n, levels in [(50, 4), (2000, 30), (5000, 10**6)]:
            p = (rng.integers(0, levels + 1, n) / levels).astype(np.float32)
            y = (rng.random(n) < 0.4).astype(np.float32)
            u = rng.integers(0, 50, n)
            auc = roc_auc_score(y, p)
            ll = log_loss(y, p)  # eps="auto": float32 eps for float32 input
            f.write(f"binary {n}\n")
            for i in range(n):
                f.write(f"{p[i]:.9g} {int(y[i])} {u[i]}\n")
            f.write(f"expect {auc:.17g} {ll:.17g}\n")
        for users, cands, k, levels in [(300, 101, 10, 20), (200, 11, 3, 3), (100, 51, 10, 10**6)]:
            s = (rng.integers(0, levels + 1, (users, cands)) / levels).astype(np.float32)
            m = data.rank_metrics(s.astype(np.float64), k=k)
            f.write(f"rank {users} {cands} {k}\n")
            for row in s:
                f.write(" ".join(f"{v:.9g}" for v in row) + "\n")
            f.write(f"expect {m['hr10']:.17g} {m['ndcg10']:.17g} {m['auc']:.17g}\n")


def write_synthetic_file(path: str, rng: np.random.Generator) -> None:
    items, cats, seq = 100000, 100, 50
    ds = data.Synthetic(items, cats, seq)
    with open(path, "w") as f:
        f.write(f"options {items} {cats} {seq} 1.1\n")
        us = np.concatenate([rng.random(20000), ds.cdf[rng.integers(0, items, 2000)],
                             np.nextafter(ds.cdf[rng.integers(0, items, 2000)], 0), [0.0]])
        us = us[us < 1.0]
        ids = np.minimum(np.searchsorted(ds.cdf, us, side="right"), items - 1) + 1
        f.write(f"u {len(us)}\n")
        for u, i in zip(us, ids):
            f.write(f"{u:.17g} {i}\n")
        idx = np.concatenate([np.arange(0, 1000), rng.integers(0, items, 3000)])
        f.write(f"cdf {len(idx)}\n")
        for i in idx:
            f.write(f"{i} {ds.cdf[i]:.17g}\n")
        sample = np.concatenate([np.arange(1, 2001), rng.integers(1, items + 1, 3000)])
        f.write(f"cat {len(sample)}\n")
        for i in sample:
            f.write(f"{i} {ds.item_cat[i] + 1}\n")  # ours = peer + 1 (0 = padding)
        brng = np.random.default_rng(0)
        rows = pos = pos_in = neg_in = 0
        for _ in range(20):
            b = ds.ctr_batch(brng, 512)
            counts = np.zeros((512, cats), np.int64)
            np.add.at(counts, (np.repeat(np.arange(512), seq), b["hist_cat"].ravel()), 1)
            mode = counts.argmax(1)
            inmode = b["cat"] == mode
            lab = b["label"] == 1
            rows += 512
            pos += lab.sum()
            pos_in += (inmode & lab).sum()
            neg_in += (inmode & ~lab).sum()
        f.write(f"stats {rows} {pos} {pos_in} {neg_in}\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", required=True, help="build dir holding the test binaries")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    def find(name: str) -> str:
        for root, _, files in os.walk(args.build_dir):
            if name in files:
                return os.path.join(root, name)
        raise SystemExit(f"{name} not found under {args.build_dir}")

    rng = np.random.default_rng(args.seed)
    rc = 0
    with tempfile.TemporaryDirectory() as tmp:
        mpath, spath = os.path.join(tmp, "metrics.txt"), os.path.join(tmp, "synthetic.txt")
        write_metrics_file(mpath, rng)
        write_synthetic_file(spath, rng)
        for binary, path in [("metrics_test", mpath), ("synthetic_batches_test", spath)]:
            env = dict(os.environ, IPS_PEER_CHECK_FILE=path)
            r = subprocess.run([find(binary), "--gtest_filter=PeerCheck.*"], env=env,
                               capture_output=True, text=True)
            print(r.stdout[-3000:], end="")
            skipped = "SKIPPED" in r.stdout
            ok = r.returncode == 0 and not skipped
            print(f"{binary}: {'ok' if ok else 'FAILED'}", file=sys.stderr)
            rc |= 0 if ok else 1
    print(f"RESULT peer_check_metrics_synthetic ok={int(rc == 0)}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
