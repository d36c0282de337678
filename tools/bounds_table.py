"""Attacks vs the certified loss bound, per setting, defence and eps: a markdown table.

    poisonprobe run configs/bounds-default.yaml --out runs/bounds-default
    python tools/bounds_table.py runs/bounds-default/results.csv

``clean``: clean-train CE of the unpoisoned head under that defence; ``best attack``: the
strongest (by clean-train CE of its retrained head) among the attacks whose poisons lie in the
bound's feasible set (every feature attack but ft-ideal, whose features leave the clean box,
and label flipping); its drop in pt; ``ft-ideal`` for reference (not covered by the bound);
``bound``: ``bound_loss``; ``share``: (best − clean) / (bound − clean), the part of the
certified headroom an attack reaches.
"""

from __future__ import annotations

import argparse

import pandas as pd

from poisonprobe.report.schema import read_results

OUTSIDE_THE_BOX = ("ft-ideal",)


def rows(df: pd.DataFrame) -> list[str]:
    out = [
        "| setting | defense | eps | clean | best attack (train CE) | drop pt | ft-ideal | bound "
        "| share |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    keys = ["setting", "defense", "eps"]
    for (setting, defense, eps), g in df.groupby(keys, sort=False):
        bound = g[g.attack == "bound"]["bound_loss"]
        clean = g[g.attack == "none"]["train_loss"]
        inside = g[~g.attack.isin(("none", "bound", *OUTSIDE_THE_BOX))]
        if bound.empty or clean.empty or inside.empty:
            continue
        best = inside.loc[inside["train_loss"].idxmax()]
        ideal = g[g.attack == "ft-ideal"]["train_loss"]
        b, c = float(bound.iloc[0]), float(clean.iloc[0])
        share = (best.train_loss - c) / (b - c) if b > c else float("nan")
        out.append(
            f"| {setting} | {defense} | {eps:g} | {c:.3f} | {best.attack} {best.train_loss:.3f} "
            f"| {100 * best['drop']:.1f} | {ideal.iloc[0] if len(ideal) else float('nan'):.3f} "
            f"| {b:.3f} | {100 * share:.0f} % |"
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results")
    args = ap.parse_args()
    print("\n".join(rows(read_results(args.results))))


if __name__ == "__main__":
    main()
