"""The runner contract: results columns, resume without duplicates, determinism, CLI errors."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
import yaml

from poisonprobe.experiment.results import COLUMNS
from poisonprobe.experiment.runner import run

CONTRACT = [
    "setting",
    "source",
    "target",
    "extractor",
    "attack",
    "eps",
    "defense",
    "seed",
    "n_clean",
    "n_poison",
    "clean_acc",
    "poisoned_acc",
    "drop",
    "seconds",
]


def test_contract_columns_and_rows(tmp_path, tiny_config):
    df = run(tiny_config, out=tmp_path, quiet=True)
    assert set(CONTRACT) <= set(df.columns)
    assert list(pd.read_csv(tmp_path / "results.csv").columns) == COLUMNS
    # one clean row + two attacks, one eps, one defence, one seed
    assert sorted(df["attack"]) == ["label-flip", "none", "random-noise"]
    assert (df["n_clean"] == 1347).all()
    lf = df[df["attack"] == "label-flip"].iloc[0]
    assert lf["n_poison"] == round(0.1 * 1347)
    assert lf["drop"] == pytest.approx(lf["clean_acc"] - lf["poisoned_acc"], abs=1e-6)
    report = (tmp_path / "report.md").read_text()
    assert "label-flip" in report and "Accuracy drop" in report
    assert (tmp_path / "config.yaml").is_file() and (tmp_path / "manifest.json").is_file()


def test_rerun_resumes_without_duplicates(tmp_path, tiny_config):
    first = run(tiny_config, out=tmp_path, quiet=True)
    csv = tmp_path / "results.csv"
    full = pd.read_csv(csv)
    # simulate an interrupted run: drop the last row, then rerun the same command
    full.iloc[:-1].to_csv(csv, index=False)
    second = run(tiny_config, out=tmp_path, quiet=True)
    assert len(second) == len(first)
    key = ["setting", "attack", "regime", "eps", "defense", "seed"]
    assert not second.duplicated(key).any()
    merged = first.merge(second, on=key, suffixes=("_a", "_b"))
    assert (merged["poisoned_acc_a"] == merged["poisoned_acc_b"]).all()


def test_same_seed_same_results(tmp_path, tiny_config):
    a = run(tiny_config, out=tmp_path / "a", quiet=True)
    b = run(tiny_config, out=tmp_path / "b", quiet=True)
    cols = ["attack", "poisoned_acc", "n_poison"]
    pd.testing.assert_frame_equal(a[cols], b[cols])


def _cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "poisonprobe.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("eps: [2.0]", "outside (0, 1]"),
        ("attacks: [nope]", "unknown attack"),
        ("foo: 1", "unknown key"),
        ("eps: [0.1", "not valid YAML"),
        ("settings: [{name: a, source: nowhere, target: digits}]", "unknown dataset"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, content, needle):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(content)
    proc = _cli("run", str(cfg), "--out", str(tmp_path / "o"), "-q")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0]


def test_cli_lists_registries():
    for cmd, needle in [
        ("datasets", "syndigits"),
        ("attacks", "label-flip"),
        ("defenses", "sphere"),
    ]:
        proc = _cli(cmd)
        assert proc.returncode == 0 and needle in proc.stdout


def test_export_npz(tmp_path, tiny_config):
    run(tiny_config, out=tmp_path, quiet=True)
    proc = _cli("export", str(tmp_path), "--attack", "label-flip", "--eps", "0.1")
    assert proc.returncode == 0, proc.stderr
    import numpy as np

    files = list((tmp_path / "export").glob("*.npz"))
    data = np.load(files[0])
    assert data["x_train"].shape == (1347 + 135, 1, 8, 8)
    assert int(data["is_poison"].sum()) == 135
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["eps"] == [0.1]
