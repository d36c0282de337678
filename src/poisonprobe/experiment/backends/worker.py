"""What every multi-process backend shares: the worker body and the driver's bookkeeping.

A worker prepares its (setting, extractor, split) unit again (cache hits: the driver prepared
it first, so pre-training and features are on disk once) and runs one seed's cells; only the
driver touches ``results.csv``. The Ray backend returns a worker's rows when its unit ends;
the processes backend forwards each row as its cell finishes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...defenses import parse_defense
from ...extractors.cache import FeatureCache
from ...progress import Reporter
from ..cell import RunScope, unit_cells
from ..config import load_config
from ..prepare import prepare, resolve_device, victim_config


class RowCollector:
    """A row sink for a worker: skips the cells the driver already has, keeps the rest
    (and hands each new row to ``forward`` when given: the processes backend's queue)."""

    def __init__(
        self, done: set[str], forward: Callable[[dict[str, Any]], None] | None = None
    ) -> None:
        self.done = set(done)
        self.rows: list[dict[str, Any]] = []
        self.forward = forward

    def has(self, cell: str) -> bool:
        return cell in self.done

    def append(self, row: dict[str, Any]) -> None:
        if row["cell_id"] not in self.done:
            self.done.add(row["cell_id"])
            self.rows.append(row)
            if self.forward is not None:
                self.forward(row)


@dataclass(frozen=True)
class UnitJob:
    """One (setting, extractor, split seed, seed) unit with cells left: what a worker needs."""

    setting_index: int
    ext_index: int
    split_seed: int
    seed: int
    done: frozenset[str]
    n_cells: int


def run_unit(
    cfg_data: dict[str, Any],
    job: UnitJob,
    out_dir: str,
    cwd: str,
    threads: int,
    run_id: str,
    forward: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Worker body: prepare (cache hits) and run one seed's cells; return the new rows."""
    if os.path.isdir(cwd):
        os.chdir(cwd)  # relative data, checkpoint and output paths mean what they mean locally
    torch.set_num_threads(threads)
    cfg = load_config(cfg_data)
    setting, ext_cfg = cfg.settings[job.setting_index], cfg.extractors[job.ext_index]
    device = resolve_device(cfg.device)
    reporter = Reporter(quiet=True)
    torch.manual_seed(0)
    prep = prepare(setting, ext_cfg, cfg, device, reporter, FeatureCache(), job.split_seed)
    sink = RowCollector(set(job.done), forward)
    defenses = [parse_defense(d) for d in cfg.defenses]
    vcfg = victim_config(cfg)
    scope = RunScope(cfg, defenses, vcfg, sink, reporter, device, Path(out_dir), run_id)
    scope.run_unit(prep, job.seed)
    return sink.rows


def pending_units(scope: RunScope, preps: list) -> list[UnitJob]:
    """The units with cells left to compute, each with the cells already done and its cell
    count; finished units only advance the progress."""
    cfg, units = scope.cfg, []
    for prep in preps:
        si, ei = cfg.settings.index(prep.setting), cfg.extractors.index(prep.ext_cfg)
        for seed in cfg.seeds:
            planned = unit_cells(prep, cfg, seed, scope.defenses, scope.device)
            cells = [c["cell_id"] for c in planned]
            done = frozenset(c for c in cells if scope.store.has(c))
            if len(done) == len(cells):
                scope.reporter.advance(len(cells))  # resume: nothing left in this unit
            else:
                units.append(UnitJob(si, ei, prep.split_seed, seed, done, len(cells)))
    return units
