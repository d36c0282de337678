"""The results store: one CSV row per cell, rewritten atomically after every row.

A run killed at any point leaves either the old or the new complete file (temp file +
``os.replace``), so rerunning the same command resumes without losing or duplicating rows.
"""

from __future__ import annotations

import csv
import io
import math
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .._io import atomic_write_bytes_via
from ..errors import ResourceError

KEY_COLUMNS = [
    "setting",
    "extractor",
    "attack",
    "regime",
    "eps",
    "defense",
    "seed",
    "extractor_seed",
    "split_seed",
]
"""What a row is about (the human key); ``cell_id`` says how it was computed."""
INT_KEYS = ("seed", "extractor_seed", "split_seed")
COLUMNS = [
    "setting",
    "source",
    "target",
    "extractor",
    "attack",
    "regime",
    "eps",
    "defense",
    "seed",
    "extractor_seed",
    "split_seed",
    "n_clean",
    "n_poison",
    "clean_acc",
    "poisoned_acc",
    "drop",
    "poison_removed",
    "clean_removed",
    "target_head_acc",
    "gc_objective",
    "eps_needed",
    "seconds",
    "attack_seconds",
    "shared_seconds",
    "stages",
    "cell_id",
    "config_id",
    "n_test",
    "clean_acc_lo",
    "clean_acc_hi",
    "poisoned_acc_lo",
    "poisoned_acc_hi",
    "attack_objective",
    "attack_steps",
    "converged",
    "victim",
    "train_loss",
    "bound_loss",
    "bound_error",
    "info",
]

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson_interval(acc: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score 95% interval of an accuracy measured on ``n`` test images.

    On a 40-image test set one image is 2.5 pt, so a drop means little without it; Wilson's
    interval stays inside [0, 1] and is sane at accuracies of 0 and 1, unlike the normal one.
    """
    if n <= 0 or math.isnan(acc):
        return float("nan"), float("nan")
    z2 = z * z
    centre = (acc + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(acc * (1 - acc) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def with_intervals(row: dict[str, Any]) -> dict[str, Any]:
    """The row plus the Wilson intervals of its accuracies (when it says ``n_test``)."""
    n = row.get("n_test")
    if n in (None, ""):
        return row
    out = dict(row)
    for col in ("clean_acc", "poisoned_acc"):
        if row.get(col) not in (None, ""):
            out[f"{col}_lo"], out[f"{col}_hi"] = wilson_interval(float(row[col]), int(n))
    return out


def replicate(value: Any) -> int:
    """A replicate-axis value as an int; missing (older files: empty, NaN) means 0."""
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return 0
    return int(value)


def row_key(row: dict[str, Any]) -> tuple:
    """What a row is about; ``eps`` is rounded so 0.1 read back from CSV still matches.

    Files written before the replicate axes existed lack ``extractor_seed``/``split_seed``:
    they were 0 then.
    """
    return tuple(
        round(float(row[c]), 10)
        if c == "eps"
        else (replicate(row.get(c)) if c in INT_KEYS else str(row[c]))
        for c in KEY_COLUMNS
    )


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(round(value, 6))
    return str(value)


class ResultsStore:
    """Append-only (from the user's view) results table at ``path``, keyed by ``cell_id``."""

    def __init__(
        self, path: str | Path, on_append: Callable[[dict[str, Any]], None] | None = None
    ) -> None:
        self.path = Path(path)
        self.on_append = on_append  # e.g. the reporter's one line per finished cell
        self.rows: list[dict[str, str]] = []
        if self.path.exists():
            with self.path.open(newline="") as fh:
                self.rows = list(csv.DictReader(fh))
        self._ids = {r.get("cell_id") or "" for r in self.rows} - {""}
        self._by_key: dict[tuple, set[str]] = {}
        for r in self.rows:
            self._by_key.setdefault(row_key(r), set()).add(r.get("cell_id") or "")

    def __len__(self) -> int:
        return len(self.rows)

    def has(self, cell: str) -> bool:
        """Is the row with this fingerprint already here (computed exactly so)?"""
        return cell in self._ids

    def conflicts(self, row: dict[str, Any]) -> bool:
        """Does the file hold a row about the same cell computed differently?"""
        ids = self._by_key.get(row_key(row), set())
        return bool(ids - {row["cell_id"]})

    def append(self, row: dict[str, Any]) -> None:
        """Add one row and durably rewrite the file (never half-written)."""
        cell = row["cell_id"]
        if cell in self._ids:
            return
        row = with_intervals(row)
        self.rows.append({c: _fmt(row.get(c)) for c in COLUMNS})
        self._ids.add(cell)
        self._by_key.setdefault(row_key(row), set()).add(cell)
        self._write()
        if self.on_append is not None:
            self.on_append(row)

    def _write(self) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, buf.getvalue())


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same folder and ``os.replace``."""
    path = Path(path)
    try:
        atomic_write_bytes_via(path, lambda fh: fh.write(text), mode="w")
    except PermissionError:
        raise ResourceError(
            f"cannot write {path}: permission denied; choose another --out"
        ) from None
    except OSError as err:
        if err.errno == 28:
            raise ResourceError(f"cannot write {path}: the disk is full; free space") from None
        raise ResourceError(f"cannot write {path}: {err.strerror}") from None


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` that does not exist yet (None if ``path`` exists)."""
    path = Path(path).absolute()
    if path.exists():
        return None
    missing = path
    while not missing.parent.exists():
        missing = missing.parent
    return missing


@contextmanager
def discard_if_failed(out_dir: Path) -> Iterator[None]:
    """Remove the output folder a failed run created, unless it already holds results.

    A config or data error found after the folder was made would otherwise leave an empty
    ``runs/x`` behind; a run that wrote rows keeps them, so rerunning resumes.
    """
    created = _first_missing(out_dir)
    try:
        yield
    except BaseException:
        if created is not None and not (Path(out_dir) / "results.csv").exists():
            shutil.rmtree(created, ignore_errors=True)
        raise
