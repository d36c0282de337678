"""End-to-end: the README's default run (`poisonprobe run`) on the embedded default."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
from conftest import HANG_GUARD_S


def test_default_run_end_to_end(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "poisonprobe.cli", "run", "--out", str(tmp_path), "-q"],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    df = pd.read_csv(tmp_path / "results.csv")
    # 2 settings × 3 eps × (clean + 4 single-regime attacks + 3 two-regime attacks × 2 + 3 feature)
    assert len(df) == 2 * 3 * 14
    clean = df.groupby("setting")["clean_acc"].first()
    assert clean["finetune"] >= 0.97 and clean["transfer"] >= 0.95
    assert (df["n_poison"][df["attack"] != "none"] > 0).all()
    # the strongest attack at the largest budget hurts more than flipping labels does
    top = df[df["eps"] == df["eps"].max()].groupby(["setting", "attack"])["drop"].max()
    for setting in ("finetune", "transfer"):
        others = top[setting].drop(["none", "label-flip"])
        assert others.max() > top[setting]["label-flip"], top[setting].to_dict()
    report = (tmp_path / "report.md").read_text()
    assert "ft-match" in report and ".png" in report
