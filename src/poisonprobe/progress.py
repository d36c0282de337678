"""Rich progress bars that every stage can use, and that ``--quiet`` silences.

On a terminal: one overall bar plus transient stage bars. When the output is not a terminal
(a log file, CI), bars would print nothing for minutes or a wall of redraws, so the reporter
writes one plain line per finished cell instead.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")


class Reporter:
    """One overall bar plus transient per-stage bars; a quiet reporter shows nothing."""

    def __init__(self, quiet: bool = False, console: Console | None = None) -> None:
        self.quiet = quiet
        self.console = console or Console(stderr=True)
        self._progress: Progress | None = None
        self._overall: int | None = None
        self._done = 0
        self._total: int | None = None
        self._start = time.perf_counter()

    @property
    def lines(self) -> bool:
        """Plain lines instead of bars: not quiet, and the console is not a terminal."""
        return not self.quiet and not self.console.is_terminal

    @contextmanager
    def session(self, total: int, description: str = "cells"):
        """Show the overall bar (or count cells for the plain lines) for a run."""
        self._done, self._total, self._start = 0, total, time.perf_counter()
        if self.quiet or self.lines:
            yield self
            return
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        with self._progress:
            self._overall = self._progress.add_task(description, total=total)
            try:
                yield self
            finally:
                self._progress = None
                self._overall = None

    def advance(self, n: int = 1) -> None:
        self._done += n
        if self._progress is not None and self._overall is not None:
            self._progress.advance(self._overall, n)

    def cell_done(self, row: dict[str, Any]) -> None:
        """One line per finished cell when the output is not a terminal (bars otherwise)."""
        if not self.lines:
            return
        total = self._total or 0
        width = len(str(total))
        acc, drop = row.get("poisoned_acc"), row.get("drop")
        result = ""
        if isinstance(acc, float) and isinstance(drop, float) and not math.isnan(acc):
            result = f": acc {acc * 100:.1f}% drop {drop * 100:+.1f} pt"
        cell = " ".join(
            str(row.get(k)) for k in ("setting", "extractor", "attack", "regime") if row.get(k)
        )
        self.console.print(
            f"[{self._done + 1:>{width}}/{total}] {cell} eps={float(row['eps']):g} "
            f"defense={row.get('defense', '')}{result} "
            f"({time.perf_counter() - self._start:.0f}s)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )

    def describe(self, text: str) -> None:
        if self._progress is not None and self._overall is not None:
            self._progress.update(self._overall, description=text)

    def track(
        self, items: Iterable[T], description: str = "", total: int | None = None
    ) -> Iterator[T]:
        """Iterate with a transient stage bar (nothing when quiet or outside a session)."""
        if self.quiet or self.lines:
            yield from items
            return
        if self._progress is None:
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            ) as prog:
                yield from prog.track(items, total=total, description=description)
            return
        task = self._progress.add_task(f"  {description}", total=total)
        try:
            for item in items:
                yield item
                self._progress.advance(task)
        finally:
            self._progress.remove_task(task)

    def log(self, message: str) -> None:
        if not self.quiet:
            self.console.log(message)
