"""The one confidence interval the report uses, in tables and plots alike."""

from __future__ import annotations

import math

import pandas as pd


def mean_ci(values: pd.Series) -> tuple[float, float]:
    """Mean and the half-width of a 95% Student-t interval over replicates (0 for one).

    Replicates are the rows pooled into one cell: attack seeds, and where the config varies
    them, pre-training seeds (``extractor.seed``) and train/test splits (``split_seeds``).
    """
    vals = values.dropna().astype(float)
    n = len(vals)
    if n == 0:
        return float("nan"), float("nan")
    if n == 1:
        return float(vals.iloc[0]), 0.0
    from scipy.stats import t

    return float(vals.mean()), float(t.ppf(0.975, n - 1) * vals.std(ddof=1) / math.sqrt(n))


def table_keys(df: pd.DataFrame) -> list[str]:
    """Columns that tell cells apart; ``config_id`` too when a folder holds several configs."""
    keys = ["setting", "extractor", "attack", "regime", "defense"]
    if "config_id" in df.columns and df["config_id"].nunique(dropna=False) > 1:
        keys.insert(0, "config_id")
    return keys
