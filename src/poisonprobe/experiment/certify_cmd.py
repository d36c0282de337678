"""``poisonprobe certify CONFIG --out DIR``: the configured certified bounds, no attacks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import load_config, parse_config
from .runner import run


def certify_only(config: Any, out: str | Path | None = None, quiet: bool = False) -> Path:
    """Run ``config`` without its attacks and with its bounds (both when it lists none):
    the unpoisoned rows, the bound rows, ``certified.csv`` and the report. Returns the folder."""
    data = load_config(config).model_dump(mode="json")
    data["attacks"] = []
    data["bounds"] = data["bounds"] or ["loss", "dpa"]
    cfg = parse_config(data)  # the bound checks, on what will actually run
    out_dir = Path(out) if out is not None else Path("runs") / "certify"
    run(cfg, out=out_dir, quiet=quiet)
    return out_dir
