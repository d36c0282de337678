"""Resource guards: refuse a run that will not fit in memory instead of being OOM-killed."""

from __future__ import annotations

from pathlib import Path

from ..errors import ResourceError


def available_memory_bytes() -> int | None:
    """``MemAvailable`` from /proc/meminfo (None where unknown: the guard then stays quiet)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def feature_memory_bytes(n_train: int, n_test: int, dim: int, max_eps: float) -> int:
    """Features of train, test and the largest poison set (float32), plus the float64
    copy the exact head solver makes of the training set."""
    n_poison = int(round(max_eps * n_train))
    n_victim = n_train + n_poison
    return 4 * dim * (n_train + n_test + n_poison) + 8 * dim * n_victim


def check_memory(
    n_train: int, n_test: int, dim: int, max_eps: float, what: str, available: int | None = None
) -> int:
    """Raise ResourceError when the estimate exceeds available memory; return the estimate."""
    need = feature_memory_bytes(n_train, n_test, dim, max_eps)
    have = available_memory_bytes() if available is None else available
    if have is not None and need > have:
        raise ResourceError(
            f"{what}: features need about {need / 2**30:.1f} GiB but only "
            f"{have / 2**30:.1f} GiB is available; use a subset of the data, a smaller "
            "extractor, or a machine with more memory"
        )
    return need
