"""Old vs new drops of every attack over three seeds: a markdown table from sweep runs.

    poisonprobe run configs/sweep.yaml --out runs/sweep
    git show c327b9f:docs/sweep/results.csv > sweep-old.csv   # the fixed-step code's sweep
    python tools/sweep_table.py runs/sweep/results.csv --old sweep-old.csv

Several results files may be given (e.g. seed 0 from the default run, seeds 1-2 from a
run of the sweep config with ``seeds: [1, 2]``): their rows are pooled by cell. Each cell
shows the mean drop (pt) ± the half-width of a 95 % Student-t interval over the attack seeds
(``report.stats.mean_ci``: it varies the attacks' random draws, not the extractor or the
split), the attacker's pick (``report.pick``: the drop of the seed whose retrained victim has
the highest clean-train loss, and that seed), the mean attack steps, how many seeds converged
(stopped on their plateau, not on the ``max_steps`` cap) and the mean attack seconds.
"""

from __future__ import annotations

import argparse

import pandas as pd

from poisonprobe.report.pick import attackers_pick
from poisonprobe.report.schema import flags, read_results
from poisonprobe.report.stats import mean_ci

KEY = ["setting", "attack", "regime", "eps"]


def _cell(values: pd.Series) -> str:
    mean, half = mean_ci(100 * values)
    return f"{mean:.1f} ± {half:.1f}"


def table(new: pd.DataFrame, old: pd.DataFrame | None) -> list[str]:
    new = new[(new["attack"] != "none") & (new["defense"] == "none")]
    cols = ["setting", "attack", "regime", "eps", "old drop", "new drop", "pick (seed)"]
    cols += ["seeds", "steps"]
    cols += ["converged", "attack s"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    order = list(dict.fromkeys(new["attack"]))
    new = new.assign(_order=new["attack"].map(order.index)).sort_values(
        ["setting", "_order", "regime", "eps"], kind="stable"
    )
    picks = attackers_pick(new)  # no columns at all when no cell has two seeds
    picks = picks.set_index(KEY) if len(picks) else None
    for key, rows in new.groupby(KEY, sort=False):
        pick = "–"
        if picks is not None and key in picks.index:
            hit = picks.loc[key]
            seed = int(hit["pick_seed"])
            pick = f"{100 * hit['pick']:.1f}" + (f" ({seed})" if seed >= 0 else "")
        before = "–"
        if old is not None:
            hit = old[(old[KEY] == pd.Series(key, index=KEY)).all(axis=1)]
            before = _cell(hit["drop"]) if len(hit) else "–"
        steps = rows["attack_steps"].dropna()
        conv = flags(rows["converged"])  # <NA> for the non-iterative attacks
        iterative = conv.notna()
        cells = [
            *[str(k) if not isinstance(k, float) else f"{k:g}" for k in key],
            before,
            _cell(rows["drop"]),
            pick,
            str(rows["seed"].nunique()),
            f"{steps.mean():.0f}" if len(steps) else "",
            f"{int(conv.fillna(False).sum())}/{iterative.sum()}" if iterative.any() else "",
            f"{rows['attack_seconds'].mean():.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="results.csv files of the new code")
    parser.add_argument("--old", help="results.csv of the old code's sweep")
    args = parser.parse_args()
    new = pd.concat([read_results(p) for p in args.results], ignore_index=True)
    dupes = new.duplicated(KEY + ["seed", "defense"])
    if dupes.any():
        raise SystemExit(f"{int(dupes.sum())} rows appear in more than one results file")
    # the old code's file predates columns read_results requires (extractor_seed, split_seed)
    old = pd.read_csv(args.old) if args.old else None
    if old is not None:
        old = old[(old["attack"] != "none") & (old["defense"] == "none")]
    print("\n".join(table(new, old)))


if __name__ == "__main__":
    main()
