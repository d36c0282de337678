"""Old vs new drop per cell of two result files (same config but for attack parameters).

    python tools/compare_runs.py runs/final-default/results.csv runs/caps-x2/results.csv

Prints a markdown table with both drops, their difference in test images, and each side's
``attack_steps`` / ``converged`` / ``seconds``, plus the largest difference.
"""

from __future__ import annotations

import argparse

import pandas as pd

KEYS = ["setting", "attack", "regime", "eps", "defense", "seed"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    args = ap.parse_args()
    cols = KEYS + ["drop", "attack_steps", "converged", "seconds", "n_test"]
    a = pd.read_csv(args.a)[cols]
    b = pd.read_csv(args.b)[cols]
    a["attack"] = a["attack"].str.replace(r"\[.*\]$", "", regex=True)
    b["attack"] = b["attack"].str.replace(r"\[.*\]$", "", regex=True)
    m = a.merge(b, on=KEYS, suffixes=("_a", "_b"))
    m = m[m.attack != "none"]
    m["images"] = ((m.drop_b - m.drop_a) * m.n_test_a).round().astype(int)
    print(
        "| setting | attack | regime | eps | drop a | drop b | Δ images | steps a/b "
        "| converged a/b | s a/b |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for _, r in m.sort_values(KEYS).iterrows():
        print(
            f"| {r.setting} | {r.attack} | {r.regime} | {r.eps:g} | {100 * r.drop_a:.1f} | "
            f"{100 * r.drop_b:.1f} | {r.images:+d} | "
            f"{r.attack_steps_a:.0f}/{r.attack_steps_b:.0f} | "
            f"{r.converged_a}/{r.converged_b} | {r.seconds_a:.0f}/{r.seconds_b:.0f} |"
        )
    worst = m.loc[m.images.abs().idxmax()]
    print(
        f"\nlargest |Δ| = {abs(worst.images)} test images ({worst.setting} {worst.attack} "
        f"{worst.regime} eps {worst.eps:g}); cells within one image: "
        f"{int((m.images.abs() <= 1).sum())}/{len(m)}"
    )


if __name__ == "__main__":
    main()
