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
    df = df[df["attack"] != "bound"]  # certified-bound rows have no accuracy (bound_table)
    eps_values = sorted(df["eps"].unique())
    out = []
    for key, group in df.groupby(keys, sort=False):
        row = dict(zip(keys, key, strict=True))
        for eps in eps_values:
            mean, half = mean_ci(group.loc[group["eps"] == eps, value])
            row[f"eps={eps:g}"] = fmt_cell(mean, half)
        out.append(row)
    return pd.DataFrame(out)


def bound_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per (setting, extractor, defence, eps): the certified loss bound, the best attack's
    clean-train loss (and which attack), and the implied error bound."""
    if "bound_loss" not in df or not (df["attack"] == "bound").any():
        return pd.DataFrame()
    out = []
    keys = ["setting", "extractor", "defense", "eps"]
    for key, g in df.groupby(keys, sort=False):
        b = g[g["attack"] == "bound"]
        if b.empty:
            continue
        att = g[~g["attack"].isin(["bound", "none"])].dropna(subset=["train_loss"])
        att = att.groupby(["attack", "regime"])["train_loss"].mean()
        best = (
            (f"{att.idxmax()[0]} [{att.idxmax()[1]}]", f"{att.max():.3f}")
            if len(att)
            else (
                "–",
                "–",
            )
        )
        clean = b["train_loss"].mean()  # bound rows carry the unpoisoned head's loss
        out.append(
            {
                **dict(zip(keys, key, strict=True)),
                "clean loss": f"{clean:.3f}",
                "best attack": best[0],
                "its loss": best[1],
                "bound_loss": f"{b['bound_loss'].mean():.3f}",
                "bound_error": f"{b['bound_error'].mean() * 100:.1f}%",
            }
        )
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
    bounds = bound_table(df)
    if not bounds.empty:
        lines += [
            "## Certified loss bound vs attacks (clean-train CE of the retrained head)",
            "",
            "`bound_loss` upper-bounds the clean-train loss of the victim retrained on clean ∪ "
            "ANY feasible poison set of that size (feature box ∩ the oracle defence; "
            "Steinhardt et al. 2017); `bound_error` = min(1, bound_loss / log 2).",
            "",
            markdown_table(bounds),
            "",
        ]
    certified = out_dir / "certified.csv"
    if certified.exists():
        cert = pd.read_csv(certified)
        cert = cert[cert["radius"].isin([0, 1, 5, 10, 25])].copy()
        cert["certified_acc"] = (cert["certified_acc"] * 100).round(1)
        lines += [
            "## DPA certified accuracy (%) by radius (inserted/removed points)",
            "",
            markdown_table(cert),
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
