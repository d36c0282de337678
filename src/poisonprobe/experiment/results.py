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

KEY_COLUMNS = ["setting", "extractor", "attack", "regime", "eps", "defense", "seed"]
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
    "victim",
    "info",
]


def row_key(row: dict[str, Any]) -> tuple:
    """The identity of a cell; ``eps`` is rounded so 0.1 read back from CSV still matches."""
    return tuple(
        round(float(row[c]), 10) if c == "eps" else (int(row[c]) if c == "seed" else str(row[c]))
        for c in KEY_COLUMNS
    )


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(round(value, 6))
    return str(value)


class ResultsStore:
    """Append-only (from the user's view) results table at ``path``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, str]] = []
        if self.path.exists():
            with self.path.open(newline="") as fh:
                self.rows = list(csv.DictReader(fh))
        self._keys = {row_key(r) for r in self.rows}

    def __len__(self) -> int:
        return len(self.rows)

    def has(self, key: tuple) -> bool:
        return key in self._keys

    def append(self, row: dict[str, Any]) -> None:
        """Add one row and durably rewrite the file (never half-written)."""
        key = row_key(row)
        if key in self._keys:
            return
        self.rows.append({c: _fmt(row.get(c)) for c in COLUMNS})
        self._keys.add(key)
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
