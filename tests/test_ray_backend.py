"""The Ray backend writes the local backend's rows, resumes, and refuses bad backends."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
from conftest import HANG_GUARD_S

ray = pytest.importorskip("ray")

from poisonprobe.errors import ConfigError  # noqa: E402
from poisonprobe.experiment.results import KEY_COLUMNS  # noqa: E402
from poisonprobe.experiment.runner import run  # noqa: E402

TIMING = ["seconds", "attack_seconds", "stages"]


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance for the module; the backend reuses it and leaves it up."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture
def grid(tiny_config) -> dict:
    return dict(tiny_config, seeds=[0, 1])


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(KEY_COLUMNS).reset_index(drop=True)


def test_ray_rows_equal_local_rows_and_resume(tmp_path, grid, local_ray):
    local = _sorted(run(grid, out=tmp_path / "local", quiet=True))
    remote = _sorted(run(grid, out=tmp_path / "ray", quiet=True, backend="ray"))
    assert len(local) == len(remote) == 2 * 3  # seeds × (clean + 2 attacks)
    pd.testing.assert_frame_equal(local.drop(columns=TIMING), remote.drop(columns=TIMING))
    assert sorted((tmp_path / "ray" / "poisons").iterdir()) != []
    assert (tmp_path / "ray" / "report.md").is_file()

    # resume: a complete folder gets no new rows; a partial one gets exactly the missing ones
    csv = tmp_path / "ray" / "results.csv"
    again = _sorted(run(grid, out=tmp_path / "ray", quiet=True, backend="ray"))
    assert len(again) == len(remote) and not again.duplicated(KEY_COLUMNS).any()
    pd.read_csv(csv).iloc[:-2].to_csv(csv, index=False)
    resumed = _sorted(run(grid, out=tmp_path / "ray", quiet=True, backend="ray"))
    assert not resumed.duplicated(KEY_COLUMNS).any()
    pd.testing.assert_frame_equal(local.drop(columns=TIMING), resumed.drop(columns=TIMING))


def test_ray_missing_is_one_line(monkeypatch, tiny_config, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(ConfigError, match=r'pip install "poisonprobe\[ray\]"'):
        run(tiny_config, out=tmp_path, quiet=True, backend="ray")
    assert not (tmp_path / "results.csv").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--backend", "nonsense"], "backend 'nonsense' is unknown"),
        (["--ray-address", "127.0.0.1:6379"], "needs --backend ray"),
    ],
)
def test_cli_bad_backend_is_one_line(tmp_path, args, needle):
    proc = subprocess.run(
        [sys.executable, "-m", "poisonprobe.cli", "run", "--out", str(tmp_path), "-q", *args],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0]
    assert not (tmp_path / "results.csv").exists()
