"""What a run prints: the config in one line, one line per finished cell when the output is
not a terminal, tables that fit 80 columns, and `poisonprobe attacks` without clipped values."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
from rich.console import Console

from poisonprobe.attacks.base import attack_names, get_attack
from poisonprobe.cli import drop_tables
from poisonprobe.experiment.config import load_config
from poisonprobe.experiment.runner import run
from poisonprobe.progress import Reporter

TINY = {
    "settings": [{"name": "s", "source": "digits", "target": "digits"}],
    "extractor": {"epochs": 0},
    "attacks": ["label-flip"],
    "regimes": ["box"],
    "eps": [0.05, 0.1],
}


def _reporter(terminal: bool) -> tuple[Reporter, io.StringIO]:
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=terminal, width=100, color_system=None)
    return Reporter(console=console), buf


def _row(i: int) -> dict:
    return {
        "setting": "s",
        "extractor": "e",
        "attack": f"a{i}",
        "regime": "box",
        "eps": 0.1,
        "defense": "none",
        "poisoned_acc": 0.9,
        "drop": 0.05,
    }


def test_plain_lines_when_not_a_terminal():
    rep, buf = _reporter(terminal=False)
    with rep.session(total=3):
        assert list(rep.track(range(4), "stage")) == [0, 1, 2, 3]  # no bar, same items
        for i in range(3):
            rep.cell_done(_row(i))
            rep.advance()
    lines = buf.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("[1/3] s e a0 box eps=0.1 defense=none: acc 90.0% drop +5.0 pt")
    assert lines[2].startswith("[3/3] s e a2")


def test_no_cell_lines_on_a_terminal_or_when_quiet():
    rep, buf = _reporter(terminal=True)
    assert not rep.lines
    rep.cell_done(_row(0))
    quiet = Reporter(quiet=True, console=Console(file=io.StringIO(), force_terminal=False))
    assert not quiet.lines
    assert "a0" not in buf.getvalue()


def test_summary_is_one_line():
    cfg = load_config(None)
    line = cfg.summary()
    assert "\n" not in line
    for part in ("finetune (digits→digits)", "10 attacks", "eps 0.03, 0.1, 0.3", "seeds 0"):
        assert part in line


def test_run_prints_summary_and_a_line_per_cell(tmp_path, capsys):
    run(TINY, out=tmp_path / "a")
    err = capsys.readouterr().err
    assert "config: s (digits→digits)" in err
    assert "weight_decay:" not in err  # no YAML dump without --verbose
    cell_lines = [ln for ln in err.splitlines() if ln.startswith("[")]
    cell_lines = [ln for ln in cell_lines if "/4]" in ln]
    assert len(cell_lines) == 4  # 2 eps x (clean + label-flip)
    assert "weight_decay:" in (tmp_path / "a" / "config.yaml").read_text()
    run(TINY, out=tmp_path / "b", verbose=True)
    assert "weight_decay: 0.001" in capsys.readouterr().err


def _results(n_attacks: int = 14) -> pd.DataFrame:
    rows = []
    for setting in ("finetune", "transfer"):
        for a in range(n_attacks):
            for eps in (0.03, 0.1, 0.3):
                rows.append(
                    {
                        "setting": setting,
                        "extractor": "smallcnn-simclr",
                        "attack": f"attack-number-{a}[steps=100,radius=0.25]",
                        "regime": "unconstrained",
                        "defense": "none",
                        "eps": eps,
                        "drop": 0.123456 + a / 100,
                        "n_test": 450,
                    }
                )
    return pd.DataFrame(rows)


def test_drop_tables_fit_80_columns_without_clipping():
    df = _results()
    tables = drop_tables(df)
    assert len(tables) == 2  # one per setting
    buf = io.StringIO()
    console = Console(file=buf, width=80, color_system=None)
    for title, table in tables:
        console.print(title)
        console.print(table)
    text = buf.getvalue()
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "1 test image = 0.22 pt" in " ".join(text.split())  # the title may wrap
    for a in range(14):
        assert f"{(0.123456 + a / 100) * 100:.1f}" in text


def test_attacks_command_shows_every_default_in_full():
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1", "PYTHONPATH": src}
    proc = subprocess.run(
        [sys.executable, "-m", "poisonprobe.cli", "attacks"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert "…" not in proc.stdout
    # the parameters column, its folded pieces joined back together
    cells = [line.split("│")[3].strip() for line in proc.stdout.splitlines() if "│" in line]
    joined = "".join(cells)
    for name in attack_names():
        for key, param in get_attack(name).params().items():
            assert f"{key}={param.default!r}" in joined, (name, key)
