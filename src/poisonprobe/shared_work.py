"""Work that several attacks (and bounds) of one (setting, extractor, seed) reuse, billed
once and visibly.

FT stages 1–2, the decoder, GradPC targets and the minimax loop are computed by the first
attack that needs them and reused by the rest. Without bookkeeping the reusers would report
``attack_seconds`` ≈ 0 for work they depend on; ``SharedWork`` remembers what each piece cost,
and the runner writes the cost of every piece an attack used in ``shared_seconds``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")


class SharedWork(dict):
    """A memo (``ctx.memo``) that also records each entry's compute seconds and which
    entries were used since the last ``take_used()``."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: dict[Hashable, float] = {}
        self.used: set[Hashable] = set()

    def take_used(self) -> float:
        """Seconds of the shared work used since the last call (then forgotten)."""
        total = sum(self.seconds.get(key, 0.0) for key in self.used)
        self.used = set()
        return total


def offer(memo: dict[Any, Any], key: Hashable, value: Any, seconds: float) -> None:
    """Leave ``value`` (what cost its maker ``seconds``, already billed to it) for later
    ``shared`` calls; not marked used, so the maker is not billed twice."""
    memo[key] = value
    if isinstance(memo, SharedWork):
        memo.seconds[key] = seconds


def shared(memo: dict[Any, Any], key: Hashable, compute: Callable[[], T]) -> T:
    """``memo[key]``, computing it once with ``compute()``; a plain dict works too (tests)."""
    if key not in memo:
        t0 = time.perf_counter()
        memo[key] = compute()
        if isinstance(memo, SharedWork):
            memo.seconds[key] = time.perf_counter() - t0
    if isinstance(memo, SharedWork):
        memo.used.add(key)
    return memo[key]
