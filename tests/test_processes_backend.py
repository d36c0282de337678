"""The processes backend (``workers``): the same rows as one process, resumable, one-line
errors, and ``auto`` choosing processes only where they pay."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pandas as pd
import pytest
from conftest import HANG_GUARD_S

from poisonprobe.errors import ConfigError, ResourceError
from poisonprobe.experiment.backends.processes import (
    MIN_CELLS_PER_UNIT,
    check_workers,
    resolve_workers,
    run_jobs,
)
from poisonprobe.experiment.backends.worker import UnitJob
from poisonprobe.experiment.config import load_config
from poisonprobe.experiment.results import KEY_COLUMNS, ResultsStore
from poisonprobe.experiment.runner import run
from poisonprobe.progress import Reporter

TIMING = ["seconds", "attack_seconds", "stages", "shared_seconds"]


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(KEY_COLUMNS).reset_index(drop=True)


@pytest.fixture
def grid(tiny_config) -> dict:
    """Two units (seeds 0 and 1), each with an iterative attack (gc-input) and a defence."""
    return dict(
        tiny_config,
        seeds=[0, 1],
        attacks=["label-flip", {"name": "gc-input", "max_steps": 5}],
        defenses=["none", "sphere"],
    )


def test_worker_processes_write_the_rows_of_one_process_and_resume(tmp_path, grid):
    one = _sorted(run(grid, out=tmp_path / "one", quiet=True, workers=1))
    two = _sorted(run(grid, out=tmp_path / "two", quiet=True, workers=2))
    assert len(one) == len(two) == 2 * 2 * (1 + 1 + 2)  # seeds × defences × rows per eps
    pd.testing.assert_frame_equal(one.drop(columns=TIMING), two.drop(columns=TIMING))
    manifest = (tmp_path / "two" / "manifest.json").read_text()
    assert '"workers": 2' in manifest and (tmp_path / "two" / "report.md").is_file()

    # resume: a partial folder gets exactly the missing rows, none twice
    csv = tmp_path / "two" / "results.csv"
    pd.read_csv(csv).iloc[:-3].to_csv(csv, index=False)
    resumed = _sorted(run(grid, out=tmp_path / "two", quiet=True, workers=2))
    assert not resumed.duplicated(KEY_COLUMNS).any()
    pd.testing.assert_frame_equal(one.drop(columns=TIMING), resumed.drop(columns=TIMING))


def test_a_worker_error_ends_the_run_with_that_error(tmp_path, tiny_config):
    """A unit no worker can run (a setting index the config does not have) raises in the
    worker; the driver re-raises that error and writes no row."""
    bad = UnitJob(setting_index=7, ext_index=0, split_seed=0, seed=0, done=frozenset(), n_cells=3)
    cfg = load_config(tiny_config).model_dump(mode="json")
    store = ResultsStore(tmp_path / "results.csv")
    where = (str(tmp_path), str(tmp_path), 1, "run")
    with pytest.raises(IndexError):
        run_jobs(cfg, [bad], where, 1, store, Reporter(quiet=True))
    assert not (tmp_path / "results.csv").exists()


def _die(*_: object) -> int:
    """A worker that dies the way the OOM killer ends one: no exception, no cleanup."""
    os._exit(9)


def test_a_killed_worker_ends_the_run_with_one_line_not_a_hang(tmp_path, tiny_config):
    """multiprocessing.Pool replaced a dead worker and waited for its unit forever; the run
    must stop with a one-line error that says how to resume."""
    cfg = load_config(tiny_config).model_dump(mode="json")
    job = UnitJob(setting_index=0, ext_index=0, split_seed=0, seed=0, done=frozenset(), n_cells=3)
    where = (str(tmp_path), str(tmp_path), 1, "run")
    store = ResultsStore(tmp_path / "results.csv")
    with pytest.raises(ResourceError) as info:
        run_jobs(cfg, [job, job], where, 2, store, Reporter(quiet=True), work=_die)
    assert "worker process died" in str(info.value) and "\n" not in str(info.value)
    assert "resume" in str(info.value)


@pytest.mark.parametrize("value", [0, -2, "many", 1.5, True])
def test_bad_worker_counts_are_one_line(value):
    with pytest.raises(ConfigError) as info:
        check_workers(value)
    assert "workers=" in str(info.value) and "\n" not in str(info.value)


def test_auto_uses_processes_only_for_several_large_units_on_the_cpu():
    big = MIN_CELLS_PER_UNIT * 2
    assert resolve_workers("auto", 2, big, "cpu") >= 1
    assert resolve_workers("auto", 1, big, "cpu") == 1  # one unit
    assert resolve_workers("auto", 2, big - 1, "cpu") == 1  # small units: not worth a spawn
    assert resolve_workers("auto", 2, big, "cuda") == 1  # the units would share one card
    assert resolve_workers(3, 1, 1, "cpu") == 3  # an explicit count is obeyed


def test_cli_workers_with_ray_is_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "poisonprobe.cli", "run", "--out", str(tmp_path), "-q"]
        + ["--backend", "ray", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "--workers is for the local backend" in lines[0]


def _gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie nobody reaps counts as exited)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return any(line.split()[1:2] == ["Z"] for line in f if line.startswith("State:"))
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_worker_exits_when_its_driver_is_gone():
    """A driver killed without stopping its pool (SIGKILL, OOM) must not leave workers
    computing rows nobody will write: each watches its parent and exits with it."""
    child = (
        "import os; from poisonprobe.experiment.backends.processes import _exit_with_parent; "
        "p = os.getppid(); print('ready', flush=True); _exit_with_parent(p)"
    )
    parent = (
        "import subprocess, sys; "
        f"c = subprocess.Popen([sys.executable, '-c', {child!r}], "
        "stdout=subprocess.PIPE, text=True); "
        "assert c.stdout.readline().strip() == 'ready'; import time; time.sleep(1.5); "
        "assert c.poll() is None; print(c.pid, flush=True)"  # alive with its parent; exits
    )
    out = subprocess.run(
        [sys.executable, "-c", parent], capture_output=True, text=True, timeout=HANG_GUARD_S
    )
    assert out.returncode == 0, out.stderr  # the watcher kept the worker alive while needed
    pid = int(out.stdout.strip())
    for _ in range(int(HANG_GUARD_S / 0.1)):  # a hang guard, not a speed check
        if _gone(pid):
            break
        time.sleep(0.1)
    assert _gone(pid)
