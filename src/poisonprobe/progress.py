"""Rich progress bars that every stage can use, and that ``--quiet`` silences."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

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

    @contextmanager
    def session(self, total: int, description: str = "cells"):
        """Show the overall bar for the duration of a run."""
        if self.quiet:
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
        if self._progress is not None and self._overall is not None:
            self._progress.advance(self._overall, n)

    def describe(self, text: str) -> None:
        if self._progress is not None and self._overall is not None:
            self._progress.update(self._overall, description=text)

    def track(
        self, items: Iterable[T], description: str = "", total: int | None = None
    ) -> Iterator[T]:
        """Iterate with a transient stage bar (nothing when quiet or outside a session)."""
        if self.quiet:
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
