"""One draw against the best of several: a markdown table from a tgda ``starts`` run.

    poisonprobe run configs/tgda-best-of-3.yaml --out runs/tgda-best-of-3 --workers 2
    python tools/draws_table.py runs/tgda-best-of-3/results.csv --single docs/sweep/results.csv

For each (setting, regime, eps) cell of the ``starts`` run: the single draw's drop per seed
(the ``--single`` run's tgda rows: the sweep, whose draw is the starts run's draw 0), the kept
draw's drop per seed, each as mean ± the half-width of a 95 % Student-t interval over the seeds
(``report.stats.mean_ci``: it varies the attack's random draws, not the extractor or the
split), every draw's objective after its probe (its end when ``start_steps`` >= ``max_steps``)
and which was kept, the steps of all draws and the attack seconds (one draw → several).
"""

from __future__ import annotations

import argparse
import json

import pandas as pd

from poisonprobe.report.schema import read_results
from poisonprobe.report.stats import mean_ci

KEY = ["setting", "regime", "eps"]


def _drops(values: pd.Series) -> str:
    """``mean ± half (seed values)`` in points."""
    pts = 100 * values
    mean, half = mean_ci(pts)
    return f"{mean:.1f} ± {half:.1f} ({' / '.join(f'{v:.1f}' for v in pts)})"


def table(starts: pd.DataFrame, single: pd.DataFrame) -> list[str]:
    """The rows of the comparison, one per cell of ``starts``."""
    cols = ["setting", "regime", "eps", "one draw: drop pt", "best draw: drop pt"]
    cols += [
        "each draw's objective after its probe (kept in bold), per seed",
        "steps, all draws",
        "attack s",
    ]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for key, rows in starts.groupby(KEY, sort=True):
        rows = rows.sort_values("seed")
        hit = single.merge(rows[[*KEY, "seed"]], on=[*KEY, "seed"])
        if len(hit) != len(rows):
            raise SystemExit(f"--single lacks some seeds of cell {key}")
        objectives, steps = [], 0
        for info in rows["info"].map(json.loads):
            values = [f"{v:.3f}" for v in info["start_objectives"]]
            values[info["start_chosen"]] = f"**{values[info['start_chosen']]}**"
            objectives.append(" / ".join(values))
            steps += info["start_steps_total"]
        cells = [str(key[0]), str(key[1]), f"{key[2]:g}", _drops(hit["drop"])]
        cells += [_drops(rows["drop"]), "; ".join(objectives), str(steps)]
        cells.append(f"{hit['attack_seconds'].sum():.0f} → {rows['attack_seconds'].sum():.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="results.csv of a tgda run with starts > 1")
    parser.add_argument("--single", required=True, help="results.csv with the one-draw rows")
    args = parser.parse_args()
    pick = ["attack", "defense"]
    starts = read_results(args.results)
    starts = starts[(starts[pick] == ["tgda", "none"]).all(axis=1)]
    single = read_results(args.single)
    single = single[(single[pick] == ["tgda", "none"]).all(axis=1)]
    print("\n".join(table(starts, single)))


if __name__ == "__main__":
    main()
