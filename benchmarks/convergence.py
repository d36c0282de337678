"""Old vs new drops of every attack on the default run, with steps and convergence.

    python benchmarks/convergence.py RESULTS.csv [--old-readme README-OLD.md] [--double OUT]

``RESULTS.csv`` is a default run's (``poisonprobe run --out DIR``). ``--old-readme`` reads the
drops of the README's default table (the code before the plateau rule, same seed and threads).
``--double OUT`` reruns every cell that did not converge with twice its ``max_steps`` into
``OUT`` and adds the drop it reaches (a converged cell cannot change: same seed, same steps).
Prints a markdown table. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pandas as pd


def default_cap(attack: str) -> int:
    """The attack's own ``max_steps`` default, from the registry (what --double doubles)."""
    from poisonprobe.attacks import get_attack

    return int(get_attack(attack).params()["max_steps"].default)


def old_drops(readme: Path) -> dict[tuple, float]:
    """(setting, attack, regime, eps) -> drop in points, from the README's default table."""
    out: dict[tuple, float] = {}
    head = None
    for line in readme.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[:3] == ["setting", "extractor", "attack"]:
            head = cells
            continue
        if head is None or len(cells) != len(head) or set(line) <= set("|-: "):
            if head is not None and not line.startswith("|"):
                head = None
            continue
        row = dict(zip(head, cells, strict=True))
        for key, value in row.items():
            m = re.fullmatch(r"eps=([0-9.]+)", key)
            if m and row.get("defense", "none") == "none":
                out[(row["setting"], row["attack"], row["regime"], float(m.group(1)))] = float(
                    value
                )
    return out


def table(df: pd.DataFrame, old: dict[tuple, float], doubled: pd.DataFrame | None) -> str:
    df = df[(df["attack"] != "none") & (df["defense"] == "none")]
    df = df.sort_values("setting", kind="stable")  # worker processes interleave the settings
    cols = ["setting", "attack", "regime", "eps", "old drop", "new drop", "steps", "converged"]
    cols += ["attack s"] + (["2× cap drop"] if doubled is not None else [])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        key = (r["setting"], r["attack"], r["regime"], float(r["eps"]))
        prev = old.get(key)
        cells = [
            r["setting"],
            r["attack"],
            r["regime"],
            f"{r['eps']:g}",
            "–" if prev is None else f"{prev:.1f}",
            f"{100 * r['drop']:.1f}",
            "" if pd.isna(r["attack_steps"]) else str(int(r["attack_steps"])),
            str(r["converged"]),
            f"{r['attack_seconds']:.1f}",
        ]
        if doubled is not None:
            hit = doubled[
                (doubled["setting"] == r["setting"])
                & (doubled["attack"] == r["attack"])
                & (doubled["regime"] == r["regime"])
                & (doubled["eps"] == r["eps"])
            ]
            cells.append(f"{100 * hit['drop'].iloc[0]:.1f}" if len(hit) else "= (converged)")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rerun_doubled(df: pd.DataFrame, out: Path) -> pd.DataFrame:
    """Rerun the non-converged cells of ``df`` with twice their attack's ``max_steps``."""
    import poisonprobe

    todo = df[(df["attack"] != "none") & (df["converged"].astype(str) == "False")]
    frames = []
    for (setting, attack), g in todo.groupby(["setting", "attack"]):
        source, target = g["source"].iloc[0], g["target"].iloc[0]
        cfg = {
            "settings": [{"name": setting, "source": source, "target": target}],
            "attacks": [{"name": attack, "max_steps": 2 * default_cap(attack)}],
            "eps": sorted(g["eps"].unique().tolist()),
            "regimes": sorted({r for r in g["regime"] if r != "feature"}) or ["box"],
            "save_poisons": False,
        }
        res = poisonprobe.run(cfg, out=out / f"{setting}-{attack}", quiet=True)
        frames.append(res[res["attack"] != "none"])
    return pd.concat(frames) if frames else df.iloc[:0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--old-readme", type=Path, default=None)
    ap.add_argument("--double", type=Path, default=None)
    args = ap.parse_args()
    df = pd.read_csv(args.results)
    old = old_drops(args.old_readme) if args.old_readme else {}
    doubled = rerun_doubled(df, args.double) if args.double else None
    print(table(df, old, doubled))
    conv = df[df["attack"] != "none"]
    print(
        f"\n{int(conv['attack_steps'].fillna(0).sum())} attack steps in all; "
        f"{json.dumps(conv.groupby('attack')['attack_seconds'].sum().round(1).to_dict())}"
    )


if __name__ == "__main__":
    main()
