"""``report.md``: the results as readable tables (mean ± 95% CI over seeds), each accuracy
with its binomial (Wilson) 95% interval over the test images, and a warning for drops of
only one or two test images (on a 40-image test set one image is 2.5 pt)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ..experiment.results import atomic_write_text, wilson_interval
from .pick import attackers_pick, pick_headline
from .schema import covered_by_bound, flags, info_flag, read_results
from .stats import mean_ci, table_keys

NOISE_IMAGES = 2  # drops of at most this many test images are flagged as noise-level


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


def n_test_of(df: pd.DataFrame) -> int | None:
    """The test-set size of these rows (None for old results without ``n_test`` or mixed)."""
    if "n_test" not in df or df["n_test"].isna().all():
        return None
    sizes = df["n_test"].dropna().astype(int).unique()
    return int(sizes[0]) if len(sizes) == 1 and sizes[0] > 0 else None


def one_image_pt(df: pd.DataFrame) -> float | None:
    """Percentage points that one test image is worth in these rows (None if unknown)."""
    n = n_test_of(df)
    return 100.0 / n if n else None


def fmt_interval(acc: float, n: int | None) -> str:
    """`` [lo, hi]`` in percent: the Wilson 95% interval of ``acc`` on ``n`` images."""
    if not n or math.isnan(acc):
        return ""
    lo, hi = wilson_interval(acc, n)
    return f" [{lo * 100:.1f}, {hi * 100:.1f}]"


def drop_table(df: pd.DataFrame, value: str = "drop") -> pd.DataFrame:
    """Rows (setting, extractor, attack, regime, defense) × columns eps, cells mean ± CI.

    Accuracy cells (``value="poisoned_acc"``) also carry the Wilson 95% interval over the
    test images, ``[lo, hi]``.
    """
    keys = table_keys(df)
    df = df[df["attack"] != "bound"]  # certified-bound rows have no accuracy (bound_table)
    eps_values = sorted(df["eps"].unique())
    out = []
    for key, group in df.groupby(keys, sort=False):
        row = dict(zip(keys, key, strict=True))
        n = n_test_of(group) if value.endswith("acc") else None
        for eps in eps_values:
            mean, half = mean_ci(group.loc[group["eps"] == eps, value])
            row[f"eps={eps:g}"] = fmt_cell(mean, half) + fmt_interval(mean, n)
        out.append(row)
    return pd.DataFrame(out)


def noise_level_cells(df: pd.DataFrame, images: int = NOISE_IMAGES) -> pd.DataFrame:
    """Attacked cells whose mean drop is within ``images`` test images of zero."""
    rows = []
    keys = ["setting", "extractor", "attack", "regime", "defense", "eps"]
    attacked = df[~df["attack"].isin(["none", "bound"])]
    for key, group in attacked.groupby(keys, sort=False):
        n = n_test_of(group)
        drop = float(group["drop"].mean())
        if n and not math.isnan(drop) and abs(drop) * n <= images + 1e-9:
            rows.append({**dict(zip(keys, key, strict=True)), "images": round(drop * n, 2)})
    return pd.DataFrame(rows)


def noise_warning(df: pd.DataFrame) -> list[str]:
    """Report lines warning about drops of only one or two test images (empty if none)."""
    cells = noise_level_cells(df)
    if cells.empty:
        return []
    listed = "; ".join(
        f"{r.setting} {r.attack} [{r.regime}] eps={r.eps:g}"
        + (f" {r.defense}" if r.defense != "none" else "")
        + f" ({r.images:+g})"
        for r in cells.itertuples()
    )
    return [
        f"> **Warning:** {len(cells)} attacked cell(s) moved the test accuracy by at most "
        f"{NOISE_IMAGES} test images (drop in images in brackets); read them as no effect: "
        f"{listed}",
        "",
    ]


def bound_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per (setting, extractor, defence, eps): the certified loss bound beside the strongest
    attack it covers (the highest clean-train loss of any of its rows, i.e. any seed; covered
    = every poison's features in the clean-feature box, ``info["in_feature_box"]`` = 1) and,
    as ``outside the box``, the strongest attack it does not cover. Files without that
    measurement (older runs) compare every attack, as before."""
    if "bound_loss" not in df or not (df["attack"] == "bound").any():
        return pd.DataFrame()
    out = []
    keys = ["setting", "extractor", "defense", "eps"]
    for key, g in df.groupby(keys, sort=False):
        b = g[g["attack"] == "bound"]
        if b.empty:
            continue
        att = g[~g["attack"].isin(["bound", "none"])].dropna(subset=["train_loss"])
        coverage = covered_by_bound(att)
        measured = coverage.notna().any()  # else an older file: every attack, as before
        best, its_loss = _strongest(att[coverage.fillna(False)] if measured else att)
        row = {
            **dict(zip(keys, key, strict=True)),
            "clean loss": f"{b['train_loss'].mean():.3f}",  # bound rows: the unpoisoned head
            "best attack": best,
            "its loss": its_loss,
            "bound_loss": f"{b['bound_loss'].mean():.3f}",
            "bound_error": f"{b['bound_error'].mean() * 100:.1f}%",
        }
        if measured:  # rows without the measurement (older, in a resumed folder): neither
            name, loss = _strongest(att[~coverage.fillna(True)])
            row["outside the box"] = f"{name} {loss}" if loss != "–" else "–"
        out.append(row)
    return pd.DataFrame(out)


def _strongest(rows: pd.DataFrame) -> tuple[str, str]:
    """``("attack [regime]", "0.123")`` of the row with the highest clean-train loss;
    ``("–", "–")`` for no rows."""
    if rows.empty:
        return "–", "–"
    top = rows.loc[rows["train_loss"].idxmax()]
    return f"{top['attack']} [{top['regime']}]", f"{top['train_loss']:.3f}"


def summary_text(df: pd.DataFrame) -> str:
    parts = []
    for (setting, extractor), g in df.groupby(["setting", "extractor"], sort=False):
        clean = g["clean_acc"].iloc[0]
        n = n_test_of(g)
        images = f", {n} test images: 1 image = {100 / n:.2g} pt" if n else ""
        parts.append(
            f"- **{setting}** ({g['source'].iloc[0]} → {g['target'].iloc[0]}, {extractor}): "
            f"clean test accuracy {clean * 100:.1f}%{fmt_interval(clean, n)}{images}, "
            f"seeds {sorted(g['seed'].unique().tolist())}"
        )
    return "\n".join(parts)


def understated_note(df: pd.DataFrame) -> str | None:
    """One line for the console when some rows are lower bounds: capped, still rising, or
    never better than their start (that clause only when there are such rows)."""
    if "attack_steps" not in df:
        return None
    iterative = df[df["attack_steps"].notna()]
    capped = int((~flags(iterative["converged"]).fillna(True).astype(bool)).sum())
    rising = int(info_flag(iterative, "still_rising").sum())
    stalled = int(info_flag(iterative, "never_improved").sum())
    if not capped and not rising and not stalled:
        return None
    never = f", {stalled} never improved on their start (never_improved)" if stalled else ""
    return (
        f"note: of {len(iterative)} iterative rows, {capped} hit their max_steps cap"
        f"{',' if stalled else ' and'} {rising} stopped still climbing (still_rising){never}: "
        "their drops are lower bounds "
        "(report.md, Convergence; a smaller tol or larger max_steps goes further)"
    )


def convergence_section(df: pd.DataFrame) -> list[str]:
    """Steps each attack ran and whether it stopped on its plateau (not on the step cap).

    Also says what ``eps_needed`` means, wherever the report could show it.
    """
    if "attack_steps" not in df or df["attack_steps"].isna().all():
        return []
    g = df[df["attack_steps"].notna() & (df["defense"] == "none")].copy()
    if g.empty:
        return []
    g["converged"] = flags(g["converged"]).fillna(False).astype(bool)
    g["still_rising"] = info_flag(g, "still_rising")
    g["never_improved"] = info_flag(g, "never_improved")
    columns = {
        "attack_steps": ("attack_steps", "max"),
        "converged": ("converged", "all"),
        "still_rising": ("still_rising", "any"),
        "never_improved": ("never_improved", "any"),
        "attack_objective": ("attack_objective", "mean"),
    }
    if not g["never_improved"].any():  # the column only where it flags something
        del columns["never_improved"]
    table = g.groupby(["setting", "attack", "regime", "eps"], sort=False).agg(**columns)
    table = table.reset_index()
    table["attack_objective"] = table["attack_objective"].map(lambda v: f"{v:.4g}")
    lines = [
        "## Convergence (attack objective, steps, stopped on a plateau)",
        "",
        "Every iterative attack stops when the gain its own objective still promises falls "
        "below `tol` (relative): the last `window` steps' gain times a geometric "
        "extrapolation of the recent gains (1 to 20 windows' worth); `converged = False` "
        "means the `max_steps` cap stopped it and the drop may understate the attack. "
        "`still_rising = True`: its gains shrink by less than a quarter per window (a slow "
        "climb, not an optimum approached): more steps or a smaller `tol` would go on, so "
        "read that drop as a lower bound too. `never_improved = True` (shown only where "
        "it occurs): no step beat the attack's start, so the row reports the start, not the "
        "attack (another seed, `starts` or a smaller `lr` may do better). "
        "The objective-vs-step figures "
        "below show the traces. `eps_needed` (FT rows) is a *necessary* condition for a "
        "GradPC-style target to be reachable, not a bound on the damage poisons can do: "
        "bilevel attacks exceed what every reachable GradPC target predicts.",
        "",
        markdown_table(table),
        "",
    ]
    return lines


def pick_section(df: pd.DataFrame) -> list[str]:
    """The attacker's pick per cell, laid out like the drop table (``report.pick``); empty
    for single-seed runs."""
    picks = attackers_pick(df)
    if picks.empty:
        return []
    headline = pick_headline(picks)
    picks["cell"] = [
        f"{p * 100:.1f} ({f'seed {s}' if s >= 0 else f'{v} victims'}, "
        f"{round(g * 100, 1) + 0.0:+.1f})"  # + 0.0: no "-0.0"
        for p, s, v, g in zip(
            picks["pick"], picks["pick_seed"], picks["victims"], picks["gain"], strict=True
        )
    ]
    keys = [c for c in picks.columns[: list(picks.columns).index("seeds")] if c != "eps"]
    table = picks.pivot_table(index=keys, columns="eps", values="cell", aggfunc="first", sort=False)
    table.columns = [f"eps={e:g}" for e in table.columns]
    return [
        "## Attacker's pick over seeds (drop, pt)",
        "",
        f"The seeds of a cell ({int(picks['seeds'].max())} here) that share the extractor and "
        "the split are independent draws of one attack against the same victim. An attacker who "
        "runs them all keeps the draw whose retrained victim has the highest clean-train loss "
        "(`train_loss`: training data and the victim's recipe, no test data). Each cell: that "
        "draw's drop (its seed, its gain over the mean drop above; where the seeds also vary "
        "the extractor or the split, the mean of each victim's pick). Where the gains are large, "
        "the mean understates such an attacker (`starts` in tgda buys the same in one run); "
        "a negative gain: the highest train loss was not the largest test drop.",
        "",
        f"The pick beats the mean by at least one test image {headline}."
        if headline
        else "The pick beats the mean by less than one test image in every cell.",
        "",
        markdown_table(table.fillna("–").reset_index()),
        "",
    ]


# long: the report's sections in reading order; each is a few lines of markdown
def write_report(out_dir: str | Path) -> Path:
    """Write ``out_dir/report.md`` from ``out_dir/results.csv``; returns its path."""
    out_dir = Path(out_dir)
    df = read_results(out_dir / "results.csv")
    lines = ["# poisonprobe report", "", summary_text(df), ""]
    lines += [
        "Accuracies carry their binomial 95% interval over the test images (Wilson) in "
        "brackets: a drop smaller than that interval's width can be test-set noise.",
        "",
        *noise_warning(df),
    ]
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
        *pick_section(df),
        "## Poisoned test accuracy (%, [Wilson 95% interval])",
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
            "Steinhardt et al. 2017); `bound_error` = min(1, bound_loss / log 2). `best "
            "attack`: the highest clean-train loss any row (any seed) of an attack reached "
            "among those whose poisons all lie in the clean-feature box (what the bound "
            "covers); `outside the box`: the strongest attack with poisons outside it, which "
            "the bound does not cover (its loss may exceed `bound_loss`).",
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
    lines += convergence_section(df)
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
    if {"poisoned_acc_lo", "poisoned_acc_hi"} <= set(df.columns):
        full.insert(
            cols.index("poisoned_acc") + 1,
            "95% interval",
            [
                f"[{lo:.4f}, {hi:.4f}]" if not (math.isnan(lo) or math.isnan(hi)) else "–"
                for lo, hi in zip(df["poisoned_acc_lo"], df["poisoned_acc_hi"], strict=True)
            ],
        )
    full["seconds"] = full["seconds"].map(lambda v: f"{v:.2f}")
    lines += ["## All rows", "", markdown_table(full), ""]
    path = out_dir / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
