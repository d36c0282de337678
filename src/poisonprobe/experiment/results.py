"""The results store: one CSV row per cell, rewritten atomically after every row.

A run killed at any point leaves either the old or the new complete file (temp file +
``os.replace``), so rerunning the same command resumes without losing or duplicating rows.
"""

from __future__ import annotations

import csv
import io
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import ConfigError, ResourceError, error_gist

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
    "target_acc",
    "gc_objective",
    "eps_needed",
    "seconds",
    "attack_seconds",
    "stages",
    "cell_id",
    "config_id",
    "train_loss",
    "bound_loss",
    "bound_error",
    "info",
]


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

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
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
        self.rows.append({c: _fmt(row.get(c)) for c in COLUMNS})
        self._ids.add(cell)
        self._by_key.setdefault(row_key(row), set()).add(cell)
        self._write()

    def _write(self) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, buf.getvalue())

    def frame(self) -> pd.DataFrame:
        return read_results(self.path) if self.rows else pd.DataFrame(columns=COLUMNS)


# what the report and `export` read; older files may lack the other columns
REQUIRED_COLUMNS = [*KEY_COLUMNS, "source", "target", "n_poison", "clean_acc", "poisoned_acc"]
NUMERIC_COLUMNS = ["eps", "seed", "n_poison", "clean_acc", "poisoned_acc"]


def read_results(path: str | Path) -> pd.DataFrame:
    """A run's ``results.csv``; a file that is not one raises a one-line ``ConfigError``."""
    try:
        df = pd.read_csv(path, keep_default_na=True)
    except (OSError, ValueError, csv.Error) as err:  # pandas' parser errors are ValueErrors
        raise ConfigError(
            f"{path} is not a results table ({error_gist(err)}); pass the --out folder of a run"
        ) from None
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ConfigError(
            f"{path} lacks the column(s) {', '.join(missing)}; it is not a poisonprobe results.csv"
        )
    for col in NUMERIC_COLUMNS:
        if len(df) and not pd.api.types.is_numeric_dtype(df[col]):
            raise ConfigError(
                f"{path}: column {col!r} holds non-numbers; it is not a poisonprobe results.csv"
            )
    return df


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same folder and ``os.replace``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", newline="") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except PermissionError:
        raise ResourceError(
            f"cannot write {path}: permission denied; choose another --out"
        ) from None
    except OSError as err:
        if err.errno == 28:
            raise ResourceError(f"cannot write {path}: the disk is full; free space") from None
        raise ResourceError(f"cannot write {path}: {err.strerror}") from None
