"""The paper's four findings, re-measured: a markdown table from a findings run.

    poisonprobe run configs/findings.yaml --out runs/findings
    python tools/findings_table.py runs/findings/results.csv

Each finding is a paired difference of accuracy drops (pt) per seed — same setting, eps,
seed, so the extractor, split and clean head are shared — with a 95 % Student-t interval
over the seeds (``report.stats.mean_ci``). "holds" when the interval lies on the claimed side
of 0, "same sign, not significant" when only the mean does, "does not hold" otherwise.
"Best of" a group is the per-seed maximum drop over the group's attacks (and regimes).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pandas as pd

from poisonprobe.report.schema import flags, read_results
from poisonprobe.report.stats import mean_ci

INPUT = ("gc-input", "tgda", "tgda-aware")  # input-space attacks (valid images: box regime)
# the feature-targeted attack inverted to images, from GC's poisons and from kkt's (built to
# pass sphere+slab: the fair FT counterpart of the defence-aware input-space attacks)
FT_IMAGES = ("ft-decoder", "ft-match", "ft-decoder-kkt", "ft-match-kkt")
FEATURE = ("ft-ideal", "ft-feasible", "tgda-feature", "tgda-feature-aware", "kkt", "min-max")


@dataclass(frozen=True)
class Group:
    attacks: tuple[str, ...]
    regimes: tuple[str, ...] = ("box", "feature")

    def best(self, df: pd.DataFrame, setting: str, defense: str) -> pd.Series:
        """Per-seed best drop (pt) of the group in one setting under one defence."""
        rows = df[
            (df.setting == setting)
            & (df.defense == defense)
            & df.attack.isin(self.attacks)
            & df.regime.isin(self.regimes)
        ]
        return 100 * rows.groupby("seed")["drop"].max()


def verdict(diff: pd.Series) -> tuple[str, str]:
    mean, half = mean_ci(diff)
    text = f"{mean:+.1f} ± {half:.1f} (n={diff.notna().sum()})"
    if mean - half > 0:
        return text, "holds"
    if mean > 0:
        return text, "same sign, not significant"
    return text, "does not hold"


def findings(df: pd.DataFrame) -> list[tuple[str, str, str, str]]:
    """(finding, where, paired difference, verdict) rows."""
    everything = Group(INPUT + FT_IMAGES + ("emn", "label-flip"))
    out = []
    for defense in ("none", "sphere+slab"):
        diff = everything.best(df, "transfer", defense) - everything.best(df, "finetune", defense)
        out.append(
            (
                "1. transfer more vulnerable than fine-tuning",
                f"best image attack, {defense}",
                *verdict(diff),
            )
        )
    for setting in ("finetune", "transfer"):
        no_def = Group(INPUT).best(df, setting, "none") - Group(FT_IMAGES).best(df, setting, "none")
        out.append(
            ("2a. input-space ≥ FT without countermeasures", f"{setting}, none", *verdict(no_def))
        )
        with_def = Group(FT_IMAGES).best(df, setting, "sphere+slab") - Group(INPUT).best(
            df, setting, "sphere+slab"
        )
        out.append(
            (
                "2b. FT > input-space under sphere+slab",
                f"{setting}, sphere+slab",
                *verdict(with_def),
            )
        )
    for setting in ("finetune", "transfer"):
        gap = Group(FEATURE, ("feature",)).best(df, setting, "none") - Group(FT_IMAGES).best(
            df, setting, "none"
        )
        out.append(
            (
                "3. inversion is the bottleneck (feature-space best − image best)",
                f"{setting}, none",
                *verdict(gap),
            )
        )
    for setting in ("finetune", "transfer"):
        weak = Group(("label-flip",)).best(df, setting, "none") - Group(("emn",)).best(
            df, setting, "none"
        )
        out.append(("4. EMN weak: label-flip − EMN", f"{setting}, none", *verdict(weak)))
    return out


ORDER = ("label-flip", "gc-input", "tgda", "tgda-aware", "emn") + FT_IMAGES
ORDER += FEATURE[2:] + FEATURE[:2]


def drops_table(df: pd.DataFrame) -> list[str]:
    """Mean drop ± CI (pt) per attack and regime, both settings, without and with the
    defence (in brackets: % of poisons it removed); ``*`` where a seed hit its step cap."""
    head = "| attack | regime | finetune none | finetune sphere+slab | transfer none | "
    lines = [head + "transfer sphere+slab |", "|---|---|---|---|---|---|"]
    for attack in ORDER:
        for regime in ("unconstrained", "box", "feature"):
            rows = df[(df.attack == attack) & (df.regime == regime)]
            if rows.empty:
                continue
            cells = []
            for setting in ("finetune", "transfer"):
                for defense in ("none", "sphere+slab"):
                    cell = rows[(rows.setting == setting) & (rows.defense == defense)]
                    mean, half = mean_ci(100 * cell["drop"])
                    capped = bool(flags(cell["converged"]).eq(False).fillna(False).any())
                    text = f"{mean:.1f} ± {half:.1f}" + ("*" if capped else "")
                    if defense != "none":
                        text += f" ({100 * cell['poison_removed'].fillna(0).mean():.0f} %)"
                    cells.append(text)
            lines.append(f"| {attack} | {regime} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results")
    args = ap.parse_args()
    df = read_results(args.results)
    print("| finding | where | paired difference, pt (mean ± 95% CI over seeds) | verdict |")
    print("|---|---|---|---|")
    for row in findings(df):
        print("| " + " | ".join(row) + " |")
    print()
    print("\n".join(drops_table(df)))


if __name__ == "__main__":
    main()
