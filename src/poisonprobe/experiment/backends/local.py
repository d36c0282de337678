"""The local backend: every (setting, split, extractor) unit in this process, in order."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ...defenses import DefenseSpec
from ...head.config import VictimConfig
from ...progress import Reporter
from ..cell import RowSink, run_unit_cells
from ..config import Config, ExtractorConfig, SettingConfig
from ..prepare import Prepared

Unit = tuple[SettingConfig, ExtractorConfig, int]


def run_local(
    cfg: Config,
    units: list[Unit],
    prepared: Callable[[SettingConfig, ExtractorConfig, int], Prepared],
    defenses: list[DefenseSpec],
    vcfg: VictimConfig,
    store: RowSink,
    reporter: Reporter,
    device: torch.device,
    out_dir: Path,
    run_id: str,
) -> None:
    """Prepare each unit when its turn comes (``prepared``), then run every seed's cells."""
    for unit in units:
        prep = prepared(*unit)
        for seed in cfg.seeds:
            run_unit_cells(
                prep, cfg, seed, defenses, vcfg, store, reporter, device, out_dir, run_id
            )
