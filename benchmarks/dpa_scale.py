"""DPA with k = 50 at CIFAR-10 scale: 50,000 × 512 synthetic clustered features (10 classes),
50,000 3×32×32 images hashed for the partition, 10,000 test points.

Run: ``PYTHONPATH=src python benchmarks/dpa_scale.py``. Prints the seconds of the two stages
(partition hashing; 50 exact heads) and certified accuracy at radius 0/1/5/10/25.
"""

from __future__ import annotations

import time

import torch

from poisonprobe.bounds.dpa import certified_accuracy, certify, partition, votes
from poisonprobe.head.config import VictimConfig


def main() -> None:
    g = torch.Generator().manual_seed(0)
    n, d, k = 50_000, 512, 10
    y = torch.randint(0, k, (n,), generator=g)
    centers = torch.randn(k, d, generator=g)
    z = (centers[y] + 2.0 * torch.randn(n, d, generator=g)).relu()
    x = torch.rand(n, 3, 32, 32, generator=g)
    yt = torch.randint(0, k, (10_000,), generator=g)
    zt = (centers[yt] + 2.0 * torch.randn(10_000, d, generator=g)).relu()
    t0 = time.perf_counter()
    parts = partition(x, y, 50)
    t1 = time.perf_counter()
    counts = votes(z, y, parts, 50, k, VictimConfig(), zt)
    t2 = time.perf_counter()
    pred, radius = certify(counts)
    acc = certified_accuracy(pred, radius, yt, [0, 1, 5, 10, 25])
    print(f"hash {t1 - t0:.1f}s, 50 heads {t2 - t1:.1f}s, certified acc r=0/1/5/10/25:", acc)


if __name__ == "__main__":
    main()
