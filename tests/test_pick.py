"""``report/pick.py``: the attacker's pick over seeds. The pick goes by the clean-train loss
of the retrained victim (what an attacker can compute), never by the test drop; it exists
only where the seeds are draws against one victim; the report and the console show it only
for multi-seed runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import results_row

from poisonprobe.report.markdown import write_report
from poisonprobe.report.pick import attackers_pick, pick_note
from poisonprobe.report.schema import read_results

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _rows(drops, losses, attack="tgda", n_test=100, extractor_seeds=None) -> list[dict]:
    """One cell's rows, seed ``i`` with drop ``drops[i]`` and train loss ``losses[i]``."""
    extractor_seeds = extractor_seeds or [0] * len(drops)
    return [
        results_row(
            attack=attack,
            seed=seed,
            extractor_seed=extractor_seeds[seed],
            n_test=n_test,
            poisoned_acc=0.9 - drop,
            drop=drop,
            train_loss=loss,
            seconds=1.0,
        )
        for seed, (drop, loss) in enumerate(zip(drops, losses, strict=True))
    ]


def test_the_pick_is_the_seed_with_the_highest_train_loss_not_the_largest_drop():
    # seed 2 has the largest drop, seed 1 the highest train loss: an attacker sees only the
    # latter, so the pick is seed 1
    df = pd.DataFrame(_rows([0.10, 0.25, 0.40], [0.5, 0.9, 0.7]))
    picks = attackers_pick(df)
    assert len(picks) == 1
    row = picks.iloc[0]
    assert row["pick_seed"] == 1
    assert row["pick"] == pytest.approx(0.25)
    assert row["mean"] == pytest.approx(0.25)
    assert row["gain"] == pytest.approx(0.0, abs=1e-12)
    assert row["seeds"] == 3


def test_the_gain_is_counted_in_test_images_and_ties_go_to_the_lowest_seed():
    df = pd.DataFrame(_rows([0.30, 0.10, 0.30], [0.8, 0.2, 0.8], n_test=50))
    row = attackers_pick(df).iloc[0]
    assert row["pick_seed"] == 0  # seeds 0 and 2 tie on train loss
    assert row["gain"] == pytest.approx(0.30 - 0.70 / 3)
    assert row["gain_images"] == pytest.approx((0.30 - 0.70 / 3) * 50)
    # rows in another order (workers finish in any order): the same pick
    assert attackers_pick(df.iloc[::-1]).iloc[0]["pick_seed"] == 0


def test_no_pick_for_one_seed_other_victims_unattacked_rows_or_missing_losses():
    one_seed = pd.DataFrame(_rows([0.2], [0.5]))
    assert attackers_pick(one_seed).empty
    # seeds that also vary the extractor are not draws against one victim
    mixed = pd.DataFrame(_rows([0.1, 0.3], [0.5, 0.9], extractor_seeds=[0, 1]))
    assert attackers_pick(mixed).empty
    clean = pd.DataFrame(_rows([0.0, 0.0], [0.1, 0.1], attack="none"))
    assert attackers_pick(clean).empty
    lost = pd.DataFrame(_rows([0.1, 0.3], [0.5, float("nan")]))
    assert attackers_pick(lost).empty  # one seed left with a loss
    assert attackers_pick(lost.drop(columns="train_loss")).empty


def test_seeds_that_also_vary_the_split_are_picked_per_victim_and_averaged():
    # split 0: seed 1 has the higher train loss (drop 0.3); split 1: seed 0 (drop 0.2)
    values = [(0, 0, 0.1, 0.5), (0, 1, 0.3, 0.9), (1, 0, 0.2, 0.8), (1, 1, 0.0, 0.2)]
    df = pd.DataFrame(
        [
            results_row(split_seed=split, seed=seed, drop=drop, train_loss=loss, n_test=100)
            for split, seed, drop, loss in values
        ]
    )
    row = attackers_pick(df).iloc[0]
    assert (row["victims"], row["seeds"], row["pick_seed"]) == (2, 2, -1)
    assert row["pick"] == pytest.approx(0.25)
    assert row["mean"] == pytest.approx(0.15)  # the drop table's pooled mean
    assert row["gain_images"] == pytest.approx(10.0)
    # one seed per split: no draws to pick from
    assert attackers_pick(df[df["seed"] == 0]).empty


def test_the_console_note_appears_only_where_the_pick_gains_a_test_image():
    assert pick_note(pd.DataFrame(_rows([0.2], [0.5]))) is None
    # gain 0.1 - 0.0967 = 0.0033 = a third of an image on 100 test images: no note
    small = pd.DataFrame(_rows([0.09, 0.10, 0.10], [0.1, 0.3, 0.2]))
    assert pick_note(small) is None
    big = pd.DataFrame(
        _rows([0.10, 0.40, 0.10], [0.1, 0.9, 0.2]) + _rows([0.1, 0.1], [0.2, 0.1], attack="emn")
    )
    note = pick_note(big)
    assert note is not None
    assert "in 1 of 2 cells" in note
    assert "by up to 20.0 pt (s tgda [box] eps=0.1)" in note


def test_the_report_has_the_section_for_several_seeds_only(tmp_path):
    many, one = tmp_path / "many", tmp_path / "one"
    for folder, rows in (
        (many, _rows([0.1, 0.4, 0.1], [0.1, 0.9, 0.2])),
        (one, _rows([0.1], [0.1])),
    ):
        folder.mkdir()
        pd.DataFrame(rows).to_csv(folder / "results.csv", index=False)
    text = write_report(many).read_text()
    assert "## Attacker's pick over seeds" in text
    assert "| 40.0 (seed 1, +20.0) |" in text
    assert "Attacker's pick" not in write_report(one).read_text()


def test_the_published_sweep_picks_the_draw_the_attacker_would_keep():
    """On the checked-in three-seed sweep: the finetune unconstrained tgda cell at eps 0.03
    picks seed 1 (train loss 1.113, drop 36.7 pt) over the mean 31.0 pt; every pick's train
    loss is its cell's highest."""
    df = read_results(DOCS / "sweep" / "results.csv")
    picks = attackers_pick(df)
    assert len(picks) == 78  # 13 attacks' cells (regimes × eps) per setting, none skipped
    cell = picks[
        (picks["setting"] == "finetune")
        & (picks["attack"] == "tgda")
        & (picks["regime"] == "unconstrained")
        & (picks["eps"] == 0.03)
    ].iloc[0]
    assert cell["pick_seed"] == 1
    assert cell["pick"] * 450 == pytest.approx(165)  # 165 of 450 test images
    assert cell["mean"] == pytest.approx(0.3096, abs=1e-4)
    for row in picks.itertuples():
        group = df[
            (df["setting"] == row.setting)
            & (df["attack"] == row.attack)
            & (df["regime"] == row.regime)
            & (df["eps"] == row.eps)
        ]
        assert group.loc[group["seed"] == row.pick_seed, "train_loss"].iloc[0] == (
            group["train_loss"].max()
        )


def test_the_report_command_prints_the_note(tmp_path):
    """``poisonprobe report DIR`` rewrites report.md and prints the closing notes."""
    pd.DataFrame(_rows([0.1, 0.4, 0.1], [0.1, 0.9, 0.2])).to_csv(
        tmp_path / "results.csv", index=False
    )
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "COLUMNS": "400", "NO_COLOR": "1", "PYTHONPATH": src}
    proc = subprocess.run(
        [sys.executable, "-m", "poisonprobe.cli", "report", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert "beats the mean drop by at least one test image in 1 of 1 cells" in proc.stdout
    assert "## Attacker's pick" in (tmp_path / "report.md").read_text()
