"""The attacker's pick over seeds: what an attacker who runs every draw keeps.

The seeds of one cell that share the extractor and the train/test split are independent
draws of one attack (its starts, labels, subsets) against the same victim (where a config
also varies those, each victim gets its own pick and the picks are averaged). An attacker can
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
VICTIM_COLUMNS = ("extractor_seed", "split_seed")  # what else a config's seeds may vary


def _victims(group: pd.DataFrame) -> list[pd.DataFrame]:
    """A cell's rows split by victim (extractor and split; columns absent in older files
    count as shared), each sorted by seed: within one, the seeds are draws against it."""
    cols = [c for c in VICTIM_COLUMNS if c in group]
    parts = [g for _, g in group.groupby(cols, sort=True, dropna=False)] if cols else [group]
    return [g.sort_values("seed", kind="stable") for g in parts]


def attackers_pick(df: pd.DataFrame) -> pd.DataFrame:
    """One row per attacked cell (``table_keys`` × eps) with at least two seeds against each
    of its victims: ``seeds`` (per victim), ``victims``, the ``mean`` drop and its 95 %
    half-width ``half`` (as the drop table pools them), the ``pick`` (per victim the drop of
    the seed with the highest ``train_loss``, ties to the lowest seed; averaged over the
    victims), ``pick_seed`` (-1 when there are several victims), ``gain`` = pick − mean and
    ``gain_images`` (the gain in test images; NaN without ``n_test``). Empty when no cell
    qualifies."""
    if "train_loss" not in df:
        return pd.DataFrame()
    keys = [*table_keys(df), "eps"]
    rows = df[~df["attack"].isin(NOT_ATTACKS) & df["train_loss"].notna()]
    out = []
    for key, group in rows.groupby(keys, sort=False):
        victims = _victims(group)
        seeds = min(v["seed"].nunique() for v in victims)
        if seeds < 2:
            continue
        picked = [v.loc[v["train_loss"].idxmax()] for v in victims]  # first max: lowest seed
        pick = sum(float(p["drop"]) for p in picked) / len(picked)
        mean, half = mean_ci(group["drop"])
        n_test = group["n_test"].iloc[0] if "n_test" in group else math.nan
        gain = pick - mean
        gain = 0.0 if abs(gain) < 1e-12 else gain  # the mean of equal drops, not a gain
        out.append(
            {
                **dict(zip(keys, key, strict=True)),
                "seeds": seeds,
                "victims": len(victims),
                "mean": mean,
                "half": half,
                "pick": pick,
                "pick_seed": int(picked[0]["seed"]) if len(picked) == 1 else -1,
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
