"""Measurement helpers shared by the benchmark cases: interleaved timing, peak memory,
machine description, and the data every case reuses (loaded once per process).

Timings on a shared 2-core box are noisy, so every comparison runs the baseline and our
implementation alternately in one process and reports medians.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

# --------------------------------------------------------------------------------- timing


@dataclass
class Samples:
    """Wall times of repeated calls of one function, plus the last call's return value."""

    seconds: list[float] = field(default_factory=list)
    result: Any = None

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")

    def spread(self) -> str:
        """``min–max`` of the samples, to show how noisy the box was."""
        if not self.seconds:
            return "-"
        return f"{min(self.seconds):.3g}–{max(self.seconds):.3g}"


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """One call, wall time in seconds (after a garbage collection, so it is not billed)."""
    gc.collect()
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def interleaved(fns: dict[str, Callable[[], Any]], reps: int) -> dict[str, Samples]:
    """Run every function ``reps`` times, alternating and rotating the order each round, so
    that a burst of load from other processes hits all contenders alike."""
    names = list(fns)
    out = {name: Samples() for name in names}
    for r in range(reps):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            result, seconds = timed(fns[name])
            out[name].seconds.append(seconds)
            out[name].result = result
    return out


def ratio(baseline: float, ours: float) -> float:
    return baseline / ours if ours > 0 else float("inf")


# --------------------------------------------------------------------------------- memory


def _trim_heap() -> None:
    """Hand freed heap pages back to the OS, so the RSS a measurement starts from is tight."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (Linux ≥ 4.0); also resets ``ru_maxrss``."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


MEMORY_METHOD = (
    "peak RSS growth: `resource.getrusage(RUSAGE_SELF).ru_maxrss` after the call minus the "
    "RSS before it, with the high-water mark reset through `/proc/self/clear_refs` first "
    "(torch's CPU tensors bypass tracemalloc)"
)


def peak_memory(fn: Callable[[], Any]) -> tuple[Any, float, float, bool]:
    """Call ``fn``; return (result, seconds, peak RSS growth in MiB, exact).

    ``exact`` is False when the high-water mark could not be reset: the growth is then a
    ``ru_maxrss`` delta, a lower bound (0 when an earlier peak was higher).
    """
    _trim_heap()
    exact = _reset_peak_rss()
    start = _rss_mib() if exact else _maxrss_mib()
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    return out, seconds, max(0.0, _maxrss_mib() - start), exact


# --------------------------------------------------------------------------------- machine


def machine() -> dict[str, str]:
    """What the numbers were measured on (the table's header)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": str(os.cpu_count()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": str(torch.get_num_threads()),
    }


def load_average() -> str:
    try:
        return " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


# --------------------------------------------------------------------------------- data


@cache
def digits_setting(name: str = "finetune"):
    """A setting of the embedded default run, prepared exactly as ``poisonprobe run`` does:
    cached SimCLR smallcnn on digits, cached features, exact clean head."""
    from poisonprobe.experiment.config import load_config
    from poisonprobe.experiment.prepare import prepare
    from poisonprobe.extractors.cache import FeatureCache
    from poisonprobe.progress import Reporter

    cfg = load_config(None)
    setting = next(s for s in cfg.settings if s.name == name)
    prep = prepare(
        setting, cfg.extractors[0], cfg, torch.device("cpu"), Reporter(quiet=True), FeatureCache()
    )
    return prep, cfg


def unconstrained_context(prep, eps: float, seed: int):
    """The ``AttackContext`` of an unconstrained cell of a ``digits_setting``: what the runner
    builds for (eps, seed), with a memo of its own."""
    from poisonprobe.attacks import AttackContext

    return AttackContext.build(
        prep.extractor,
        prep.target.train,
        eps,
        regime="unconstrained",
        victim=prep.clean_victim,
        z_train=prep.z_train,
        seed=seed,
        clean_head=prep.clean_head,
        memo={},
    )


def test_drop(prep, cfg, poison, eps: float, seed: int) -> float:
    """Test-accuracy drop (points) of the victim retrained on ``prep``'s clean training set
    plus ``poison``, no defence: the runner's own ``evaluate``, so the drop its row reports."""
    from poisonprobe.defenses.base import DefenseSpec
    from poisonprobe.experiment.cell import build_training_set, evaluate
    from poisonprobe.experiment.prepare import victim_config

    ts = build_training_set(prep, poison, 512)
    return 100 * evaluate(prep, ts, DefenseSpec(), eps, victim_config(cfg), seed)["drop"]


def one_thread_children(codes: dict[Any, str], jobs: int) -> dict[Any, Any]:
    """Run each Python ``code`` in a fresh one-thread process, ``jobs`` at a time: by key, the
    last line each printed, parsed as JSON (a failing child raises with its output)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(code: str) -> Any:
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        )
        return json.loads(out.stdout.strip().splitlines()[-1])

    with ThreadPoolExecutor(jobs) as pool:
        return dict(zip(codes, pool.map(run, codes.values()), strict=True))


class RandomProjection(nn.Module):
    """A fixed extractor for CIFAR-shaped images: normalise, flatten, Gaussian projection,
    ReLU (non-negative features, like a real extractor's). Cheap enough on 2 cores for 60k
    images, unlike a ResNet; the head-side costs depend only on (N, d, k)."""

    def __init__(self, domain, dim: int = 512, seed: int = 0) -> None:
        super().__init__()
        from poisonprobe.extractors.archs import Normalize

        n_in = domain.channels * domain.height * domain.width
        gen = torch.Generator().manual_seed(seed)
        self.normalize = Normalize(domain.mean, domain.std, domain.channels)
        self.register_buffer("proj", torch.randn(n_in, dim, generator=gen) / n_in**0.5)
        self.feature_dim = dim
        self.domain = domain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.normalize(x).flatten(1) @ self.proj)


@dataclass
class CifarFeatures:
    """CIFAR-10 from the extracted JPEG folders, with fixed random-projection features."""

    splits: Any  # DatasetSplits
    extractor: RandomProjection
    z_train: torch.Tensor
    z_test: torch.Tensor
    order: torch.Tensor  # a fixed permutation: the first N indices give nested subsets


# the shared CIFAR-10 archive next to the checkout (extracted once into the data cache);
# POISONPROBE_BENCH_CIFAR overrides it with any dataset spec, e.g. imagefolder:/data/cifar10
_SHARED_CIFAR = Path(__file__).resolve().parents[1].parent / "shared/data/cifar10-jpg.tar.gz"
CIFAR_SPEC = os.environ.get("POISONPROBE_BENCH_CIFAR", f"imagefolder:{_SHARED_CIFAR}")


@cache
def cifar_features(dim: int = 512) -> CifarFeatures:
    from poisonprobe.data import load_dataset
    from poisonprobe.extractors.cache import encode_batched

    splits = load_dataset(CIFAR_SPEC)
    ext = RandomProjection(splits.domain, dim).eval()
    z_train = encode_batched(ext, splits.train.x, 2048)
    z_test = encode_batched(ext, splits.test.x, 2048)
    order = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(1))
    return CifarFeatures(splits, ext, z_train, z_test, order)


_HEADS: dict[int, Any] = {}


def cifar_subset(n: int):
    """The first ``n`` training points of the fixed order: (dataset, features, clean head)."""
    from poisonprobe.head.config import VictimConfig
    from poisonprobe.head.train import train_head

    cf = cifar_features()
    idx = cf.order[:n]
    train = cf.splits.train.subset(idx)
    z = cf.z_train[idx]
    if n not in _HEADS:
        _HEADS[n] = train_head(z, train.y, train.n_classes, VictimConfig())
    return train, z, _HEADS[n]


def remember_head(n: int, head) -> None:
    """Share an exact clean head computed elsewhere (e.g. by the victim benchmark)."""
    _HEADS.setdefault(n, head)


@dataclass
class CifarExtractor:
    """The CPU CIFAR-10 recipe's real extractor (``configs/cifar10-cpu.yaml``: smallcnn,
    SimCLR, 5 epochs on a stratified 5,000-image subset), from the pre-training cache."""

    extractor: nn.Module
    pretrain_seconds: float
    cached: bool


@cache
def cifar_smallcnn() -> CifarExtractor:
    """Pre-trained once and cached like ``poisonprobe run configs/cifar10-cpu.yaml`` does
    (shared cache: either one fills it for the other; ~4 min on 2 cores when cold)."""
    from poisonprobe.data import load_dataset
    from poisonprobe.extractors.pretrain import get_or_pretrain

    subset = CIFAR_SPEC + ("&" if "?" in CIFAR_SPEC else "?") + "train=5000&test=2000"
    t0 = time.perf_counter()
    ext, _, cached = get_or_pretrain(
        load_dataset(subset).train, "smallcnn", "simclr", epochs=5, batch_size=256, seed=0
    )
    return CifarExtractor(ext.eval(), time.perf_counter() - t0, cached)
