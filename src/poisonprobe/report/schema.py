"""``results.csv`` as the report, the CLI and the tools read it: the one reader (required
columns, numeric types), the one parse of the JSON columns (``info``, ``stages``) and of the
boolean ``converged``. The writer and the column list are ``experiment/results.py``."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import ConfigError, error_gist
from ..experiment.results import KEY_COLUMNS

# what the report and `export` read; older files may lack the other columns
REQUIRED_COLUMNS = [*KEY_COLUMNS, "source", "target", "n_poison", "clean_acc", "poisoned_acc"]
NUMERIC_COLUMNS = ["eps", "seed", "n_poison", "clean_acc", "poisoned_acc"]
JSON_COLUMNS = ("info", "stages")
"""Columns holding one JSON object per row (read them with ``json_cell``)."""


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


def json_cell(value: object) -> dict[str, Any]:
    """One ``info`` / ``stages`` cell as a dict; a missing cell, or text that is not a JSON
    object (a hand-edited or truncated file), reads as empty rather than stopping a report."""
    if not isinstance(value, str) or not value:
        return {}
    try:
        parsed = json.loads(value)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def flags(column: pd.Series) -> pd.Series:
    """A boolean column (``converged``) as True / False / <NA>: pandas reads it as bools,
    strings or floats depending on its missing cells (rows of non-iterative attacks)."""
    text = column.astype(str).str.lower()
    out = pd.Series(pd.NA, index=column.index, dtype="boolean")
    out[text.isin(("true", "1", "1.0"))] = True
    out[text.isin(("false", "0", "0.0"))] = False
    return out


def _infos(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Each row's ``info`` as a dict (empty for rows or files without one)."""
    return [json_cell(v) for v in df["info"]] if "info" in df else [{} for _ in df.index]


def info_value(df: pd.DataFrame, key: str) -> pd.Series:
    """Per row: the number ``info[key]`` (``in_feature_box``); NaN where a row lacks it."""
    values = [info.get(key) for info in _infos(df)]
    return pd.Series(
        [float(v) if isinstance(v, int | float) else math.nan for v in values],
        index=df.index,
        dtype=float,
    )


def info_flag(df: pd.DataFrame, key: str) -> pd.Series:
    """Per row: the boolean ``info[key]`` its attack reported (``still_rising``,
    ``never_improved``); False for rows without it (non-iterative attacks, older files)."""
    return pd.Series([bool(info.get(key, False)) for info in _infos(df)], index=df.index)


def covered_by_bound(df: pd.DataFrame) -> pd.Series:
    """Per row: whether every poison's features lie in the clean-feature box, the certified
    loss bound's set (``info["in_feature_box"]`` = 1): True / False / <NA> (not measured:
    unattacked rows, older files)."""
    share = info_value(df, "in_feature_box")
    out = pd.Series(pd.NA, index=df.index, dtype="boolean")
    measured = share.notna()
    out[measured] = share[measured] >= 1.0 - 1e-12
    return out
