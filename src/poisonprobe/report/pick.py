"""The attacker's pick over seeds: what an attacker who runs every draw keeps.

The seeds of one cell that share the extractor and the train/test split are independent
draws of one attack (its starts, labels, subsets) against the same victim. An attacker can
run them all and keep the draw whose retrained victim has the highest clean-*train* loss
(``train_loss``: it needs the training data and the victim's recipe, which every attack here
already assumes, and no test data). The mean over seeds reports an average draw, so where
the draws spread it understates that attacker; the pick is the drop the report would show if
the draws had been starts of one run (``starts`` in tgda), for free.
"""

from __future__ import annotations

import math

import pandas as pd

from .stats import mean_ci, table_keys

NOT_ATTACKS = ("none", "bound")  # rows without an attack's poisons


def _one_victim(group: pd.DataFrame) -> bool:
    """Whether the rows share one extractor and one split (columns absent in older files
    count as shared): only then are the seeds draws against the same victim."""
    return all(
        col not in group or group[col].nunique(dropna=False) <= 1
        for col in (
            "extractor_seed",
            "split_seed",
        )
    )


def attackers_pick(df: pd.DataFrame) -> pd.DataFrame:
    """One row per attacked cell (``table_keys`` × eps) with at least two seeds against one
    victim: ``seeds``, ``mean`` drop and its 95 % half-width ``half``, the ``pick`` (the drop
    of the seed with the highest ``train_loss``; ties go to the lowest seed), ``pick_seed``,
    ``gain`` = pick − mean and ``gain_images`` (the gain in test images; NaN without
    ``n_test``). Empty when no cell qualifies."""
    if "train_loss" not in df:
        return pd.DataFrame()
    keys = [*table_keys(df), "eps"]
    rows = df[~df["attack"].isin(NOT_ATTACKS) & df["train_loss"].notna()]
    out = []
    for key, group in rows.groupby(keys, sort=False):
        if group["seed"].nunique() < 2 or not _one_victim(group):
            continue
        group = group.sort_values("seed", kind="stable")
        best = group.loc[group["train_loss"].idxmax()]  # first maximum: the lowest seed
        mean, half = mean_ci(group["drop"])
        n_test = group["n_test"].iloc[0] if "n_test" in group else math.nan
        gain = float(best["drop"]) - mean
        gain = 0.0 if abs(gain) < 1e-12 else gain  # the mean of equal drops, not a gain
        out.append(
            {
                **dict(zip(keys, key, strict=True)),
                "seeds": int(group["seed"].nunique()),
                "mean": mean,
                "half": half,
                "pick": float(best["drop"]),
                "pick_seed": int(best["seed"]),
                "gain": gain,
                "gain_images": gain * float(n_test) if n_test and n_test > 0 else math.nan,
            }
        )
    return pd.DataFrame(out)


def pick_headline(picks: pd.DataFrame) -> str | None:
    """``"in M of K cells, by up to X pt (where)"``: the cells of ``attackers_pick`` whose
    pick beats the mean drop by at least one test image; None when none does."""
    above = picks[picks["gain_images"] >= 1 - 1e-9] if not picks.empty else picks
    if above.empty:
        return None
    top = above.loc[above["gain"].idxmax()]
    where = f"{top['setting']} {top['attack']} [{top['regime']}] eps={top['eps']:g}"
    if top.get("defense", "none") != "none":
        where += f" {top['defense']}"
    return f"in {len(above)} of {len(picks)} cells, by up to {top['gain'] * 100:.1f} pt ({where})"


def pick_note(df: pd.DataFrame) -> str | None:
    """One console line when the attacker's pick beats the mean drop by at least one test
    image somewhere (None otherwise, and for single-seed runs)."""
    picks = attackers_pick(df)
    headline = pick_headline(picks)
    if headline is None:
        return None
    return (
        f"note: keeping the strongest of each cell's {int(picks['seeds'].max())} seeds "
        "(the highest clean-train loss of the retrained victim: no test data needed) beats "
        f"the mean drop by at least one test image {headline}: the means understate an "
        "attacker who runs every draw (report.md, Attacker's pick)"
    )
