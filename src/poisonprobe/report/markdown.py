"""``report.md``: the results as readable tables (mean ± 95% CI over seeds)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ..experiment.results import atomic_write_text, read_results
from .stats import mean_ci, table_keys


def fmt_cell(mean: float, half: float, pct: bool = True) -> str:
    if math.isnan(mean):
        return "–"
    scale = 100.0 if pct else 1.0
    if half and not math.isnan(half) and half > 0:
        return f"{mean * scale:.1f} ± {half * scale:.1f}"
    return f"{mean * scale:.1f}"


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub markdown table (no extra dependency)."""
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(str(v) for v in row.tolist()) + " |")
    return "\n".join(lines)


def drop_table(df: pd.DataFrame, value: str = "drop") -> pd.DataFrame:
    """Rows (setting, extractor, attack, regime, defense) × columns eps, cells mean ± CI."""
    keys = table_keys(df)
    eps_values = sorted(df["eps"].unique())
    out = []
    for key, group in df.groupby(keys, sort=False):
        row = dict(zip(keys, key, strict=True))
        for eps in eps_values:
            mean, half = mean_ci(group.loc[group["eps"] == eps, value])
            row[f"eps={eps:g}"] = fmt_cell(mean, half)
        out.append(row)
    return pd.DataFrame(out)


def summary_text(df: pd.DataFrame) -> str:
    parts = []
    for (setting, extractor), g in df.groupby(["setting", "extractor"], sort=False):
        clean = g["clean_acc"].iloc[0]
        parts.append(
            f"- **{setting}** ({g['source'].iloc[0]} → {g['target'].iloc[0]}, {extractor}): "
            f"clean test accuracy {clean * 100:.1f}%, seeds {sorted(g['seed'].unique().tolist())}"
        )
    return "\n".join(parts)


def write_report(out_dir: str | Path) -> Path:
    """Write ``out_dir/report.md`` from ``out_dir/results.csv``; returns its path."""
    out_dir = Path(out_dir)
    df = read_results(out_dir / "results.csv")
    lines = ["# poisonprobe report", "", summary_text(df), ""]
    lines += [
        "## Accuracy drop (percentage points, mean ± 95% CI over seeds)",
        "",
        "Drop = clean accuracy − accuracy of the victim retrained on the poisoned (and "
        "defended) training set. `regime`: `unconstrained` = no input countermeasure, "
        "`box` = poisons are valid images, `feature` = features injected directly (upper "
        "bound), `-` = no attack.",
        "",
        markdown_table(drop_table(df, "drop")),
        "",
        "## Poisoned test accuracy (%)",
        "",
        markdown_table(drop_table(df, "poisoned_acc")),
        "",
    ]
    if "defense" in df and (df["defense"] != "none").any():
        rem = df[df["defense"] != "none"].copy()
        lines += [
            "## Defence removal rates (%, mean over seeds)",
            "",
            markdown_table(
                rem.groupby(["setting", "attack", "regime", "defense", "eps"], sort=False)[
                    ["poison_removed", "clean_removed"]
                ]
                .mean()
                .mul(100)
                .round(1)
                .reset_index()
            ),
            "",
        ]
    extras = out_dir.glob("*.png")
    images = sorted(p.name for p in extras)
    if images:
        lines += ["## Figures", ""] + [f"![{name}]({name})" for name in images] + [""]
    cols = [
        "setting",
        "attack",
        "regime",
        "eps",
        "defense",
        "seed",
        "n_poison",
        "clean_acc",
        "poisoned_acc",
        "drop",
        "seconds",
    ]
    full = df[cols].copy()
    for c in ("clean_acc", "poisoned_acc", "drop"):
        full[c] = full[c].map(lambda v: f"{v:.4f}")
    full["seconds"] = full["seconds"].map(lambda v: f"{v:.2f}")
    lines += ["## All rows", "", markdown_table(full), ""]
    path = out_dir / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
