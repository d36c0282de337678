"""Small test sets: each accuracy carries its Wilson 95% interval, and the report says what one
test image is worth and flags drops of one or two images."""

from __future__ import annotations

import pandas as pd
import pytest
from scipy.stats import binomtest

from poisonprobe.experiment.results import COLUMNS, ResultsStore, wilson_interval
from poisonprobe.report.markdown import noise_level_cells, write_report
from poisonprobe.report.schema import read_results


@pytest.mark.parametrize(("k", "n"), [(0, 40), (1, 40), (20, 40), (39, 40), (40, 40), (437, 450)])
def test_wilson_matches_scipy(k, n):
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    lo, hi = wilson_interval(k / n, n)
    assert lo == pytest.approx(ci.low, abs=1e-9) and hi == pytest.approx(ci.high, abs=1e-9)


def test_interval_columns_sit_before_info():
    i = COLUMNS.index("info")
    lo = COLUMNS.index("poisoned_acc_lo")
    assert COLUMNS[lo : lo + 2] == ["poisoned_acc_lo", "poisoned_acc_hi"] and lo + 1 < i
    assert COLUMNS.index("clean_acc_hi") == COLUMNS.index("clean_acc_lo") + 1
    assert {"n_test", "clean_acc_lo", "clean_acc_hi"} <= set(COLUMNS[:i])


def _row(attack: str, acc: float, n_test: int = 40, clean: float = 0.9) -> dict:
    return {
        "setting": "faces",
        "source": "imagefolder:faces",
        "target": "imagefolder:faces",
        "extractor": "e",
        "attack": attack,
        "regime": "box" if attack != "none" else "-",
        "eps": 0.1,
        "defense": "none",
        "seed": 0,
        "n_clean": 160,
        "n_test": n_test,
        "n_poison": 16,
        "clean_acc": clean,
        "poisoned_acc": acc,
        "drop": clean - acc,
        "seconds": 1.0,
        "cell_id": f"{attack}-{n_test}",
        "config_id": "cfg",
    }


def _run(tmp_path, rows) -> pd.DataFrame:
    store = ResultsStore(tmp_path / "results.csv")
    for r in rows:
        store.append(r)
    return read_results(tmp_path / "results.csv")


def test_results_rows_carry_intervals(tmp_path):
    df = _run(tmp_path, [_row("none", 0.9), _row("tgda", 0.875)])
    lo, hi = wilson_interval(0.875, 40)
    row = df[df["attack"] == "tgda"].iloc[0]
    assert row["poisoned_acc_lo"] == pytest.approx(lo, abs=1e-6)
    assert row["poisoned_acc_hi"] == pytest.approx(hi, abs=1e-6)
    assert row["clean_acc_lo"] < 0.9 < row["clean_acc_hi"]


def test_report_flags_drops_within_two_images(tmp_path):
    rows = [
        _row("none", 0.9),
        _row("one-image", 0.875),  # 1 image on 40: 2.5 pt
        _row("two-images", 0.85),
        _row("real", 0.7),  # 8 images
    ]
    df = _run(tmp_path, rows)
    flagged = noise_level_cells(df)
    assert sorted(flagged["attack"]) == ["one-image", "two-images"]
    assert flagged.set_index("attack")["images"].to_dict() == {"one-image": 1, "two-images": 2}
    text = write_report(tmp_path).read_text()
    assert "40 test images: 1 image = 2.5 pt" in text
    assert "**Warning:** 2 attacked cell(s)" in text
    warning = next(line for line in text.splitlines() if "**Warning:**" in line)
    assert "one-image" in warning and "two-images" in warning and "real" not in warning
    lo, hi = wilson_interval(0.7, 40)
    assert f"70.0 [{lo * 100:.1f}, {hi * 100:.1f}]" in text  # accuracy table cell


def test_no_warning_on_a_large_test_set(tmp_path):
    df = _run(tmp_path, [_row("none", 0.9, 4500), _row("tgda", 0.85, 4500)])
    assert noise_level_cells(df).empty
    assert "Warning" not in write_report(tmp_path).read_text()
