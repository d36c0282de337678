"""Crash safety: a run killed with SIGKILL and resumed yields exactly the uninterrupted rows."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml
from conftest import HANG_GUARD_S

KEY = ["setting", "attack", "regime", "eps", "defense", "seed"]


def _rows(path) -> int:
    try:
        with open(path, newline="") as fh:
            return max(0, sum(1 for _ in csv.reader(fh)) - 1)
    except FileNotFoundError:
        return 0


def _start(cfg_path, out):
    return subprocess.Popen(
        [sys.executable, "-m", "poisonprobe.cli", "run", str(cfg_path), "--out", str(out), "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=dict(os.environ),
    )


@pytest.fixture
def sweep_config(tmp_path, tiny_config):
    cfg = dict(tiny_config, eps=[0.03, 0.1, 0.3], seeds=[0, 1])
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_sigkill_then_resume_matches_uninterrupted(tmp_path, sweep_config):
    reference = tmp_path / "ref"
    proc = _start(sweep_config, reference)
    assert proc.wait(timeout=HANG_GUARD_S) == 0, proc.stderr.read()
    ref = pd.read_csv(reference / "results.csv")
    total = len(ref)
    assert total == 2 * 3 * 3  # seeds × eps × (clean + 2 attacks)

    for kill_at in (1, total // 2, total - 2):
        out = tmp_path / f"killed{kill_at}"
        proc = _start(sweep_config, out)
        deadline = time.time() + HANG_GUARD_S
        while _rows(out / "results.csv") < kill_at and proc.poll() is None:
            assert time.time() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        partial = pd.read_csv(out / "results.csv")  # never half-written: parses cleanly
        assert len(partial) >= kill_at and not partial.duplicated(KEY).any()
        proc = _start(sweep_config, out)
        assert proc.wait(timeout=HANG_GUARD_S) == 0, proc.stderr.read()
        resumed = pd.read_csv(out / "results.csv")
        assert len(resumed) == total and not resumed.duplicated(KEY).any()
        a = ref.sort_values(KEY).reset_index(drop=True)
        b = resumed.sort_values(KEY).reset_index(drop=True)
        pd.testing.assert_frame_equal(
            a[KEY + ["n_poison", "poisoned_acc"]], b[KEY + ["n_poison", "poisoned_acc"]]
        )
