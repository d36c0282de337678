"""Runs a config: settings × extractors × seeds × attacks × regimes × eps × defences.

Work that can be shared is shared: one pre-trained extractor per (setting, extractor),
features encoded once (feature cache), one clean head, one attack run per
(attack, regime, eps, seed) for all defences, and ``ctx.memo`` lets attacks share
stages across eps (e.g. the FT attack's decoder).
"""

from __future__ import annotations

import json
import logging
import platform
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from .._version import __version__
from ..defenses import parse_defense
from ..errors import ConfigError
from ..extractors.cache import FeatureCache
from ..progress import Reporter
from ..report.markdown import write_report
from ..report.plots import (
    plot_accuracy_vs_eps,
    plot_bound_vs_attacks,
    plot_certified,
    plot_objective_traces,
)
from ..report.schema import read_results
from .backends.local import run_local
from .backends.processes import check_workers, resolve_workers, run_processes
from .backends.ray import import_ray, run_ray
from .cell import RunScope, attack_regimes, unit_cells
from .certify import dpa_rows
from .config import Config, ExtractorConfig, SettingConfig, load_config
from .plan import check_same_experiment, config_id
from .prepare import Prepared, prepare, resolve_device, victim_config
from .results import COLUMNS, ResultsStore, atomic_write_text, discard_if_failed

log = logging.getLogger("poisonprobe")


BACKENDS = ("local", "ray")


def default_out(config: str | Path | dict | Config | None) -> Path:
    """``runs/<config file stem>``; ``runs/default`` for the embedded default or a mapping."""
    if isinstance(config, str | Path):
        return Path("runs") / Path(config).stem
    return Path("runs") / "default"


def run(
    config: str | Path | dict | Config | None = None,
    out: str | Path | None = None,
    quiet: bool = False,
    backend: str = "local",
    ray_address: str | None = None,
    add: bool = False,
    verbose: bool = False,
    workers: int | str = "auto",
) -> pd.DataFrame:
    """Run an experiment and return its results (also written to ``out/results.csv``).

    ``out`` defaults to ``runs/<config stem>``. A folder made by a config that differs in
    anything that changes results is refused (one line naming the keys) unless ``add``, which
    adds this config's cells beside the old ones, each row keyed by its own ``cell_id``.
    ``backend="ray"`` runs each (setting, extractor, seed) as a Ray task (a local Ray
    instance, or the cluster at ``ray_address``); the rows are the same as ``"local"``.
    ``workers`` (local backend): worker processes for the (setting, extractor, seed) units;
    ``auto`` = one per unit up to the CPU count on the CPU for units of >= 16 rows, else 1
    (this process; always on a GPU).
    The console shows the config as one line (``verbose``: the full YAML, which is always
    in ``out/config.yaml``). A run that fails before writing a result leaves no new folder.
    """
    cfg = load_config(config)
    out_dir = Path(out) if out is not None else default_out(config)
    with discard_if_failed(out_dir):
        return _run(cfg, out_dir, quiet, backend, ray_address, add, verbose, workers)


def _run(
    config: Config,
    out: Path,
    quiet: bool,
    backend: str,
    ray_address: str | None,
    add: bool,
    verbose: bool,
    workers: int | str = "auto",
) -> pd.DataFrame:
    cfg = load_config(config)
    _check_backend(backend, ray_address, workers)
    reporter = Reporter(quiet=quiet)
    device = resolve_device(cfg.device)
    out_dir = Path(out) if out is not None else default_out(config)
    store, run_id = _open_folder(cfg, out_dir, add, reporter)
    if not quiet:
        _announce(reporter, cfg, f"{out_dir}  (device {device}, backend {backend})", verbose)
    log.info("config:\n%s", cfg.to_yaml())
    torch.manual_seed(0)

    feature_cache = FeatureCache()
    vcfg = victim_config(cfg)
    defenses = [parse_defense(d) for d in cfg.defenses]
    cells = _count_cells(cfg, defenses)
    manifest = _manifest(cfg, out_dir)

    def prepared(setting: SettingConfig, ext_cfg: ExtractorConfig, split_seed: int) -> Prepared:
        reporter.describe(f"{setting.name}/{ext_cfg.label}: preparing")
        prep = prepare(setting, ext_cfg, cfg, device, reporter, feature_cache, split_seed)
        for seed in cfg.seeds:
            check_no_conflicts(store, unit_cells(prep, cfg, seed, defenses, device), add)
        dpa_rows(prep, cfg, out_dir)
        manifest["settings"].append(_setting_record(prep))
        atomic_write_text(out_dir / "manifest.json", json.dumps(manifest, indent=2))
        return prep

    units = _units(cfg)
    n_workers = resolve_workers(workers, len(units) * len(cfg.seeds), cells, device)
    manifest["workers"] = n_workers if backend == "local" else backend
    scope = RunScope(cfg, defenses, vcfg, store, reporter, device, out_dir, run_id)
    with reporter.session(total=cells, description="poisonprobe"):
        if backend == "ray" or n_workers > 1:
            # the driver prepares each (setting, split, extractor) first: pre-training and
            # features land in the shared cache once, and workers only load them
            preps = [prepared(*unit) for unit in units]
            if backend == "ray":
                run_ray(scope, preps, ray_address)
            else:
                run_processes(scope, preps, n_workers)
        else:
            run_local(scope, units, prepared)
    finish_report(out_dir)
    return read_results(store.path) if store.rows else pd.DataFrame(columns=COLUMNS)


def _open_folder(
    cfg: Config, out_dir: Path, add: bool, reporter: Reporter
) -> tuple[ResultsStore, str]:
    """The results store of ``out_dir``, after refusing another experiment's folder (unless
    ``add``) and writing this config beside the results."""
    config_path = out_dir / "config.yaml"
    old_config = config_path.read_text() if config_path.is_file() else None
    check_same_experiment(old_config, cfg, add)
    store = ResultsStore(out_dir / "results.csv", on_append=reporter.cell_done)
    run_id = config_id(cfg)
    if old_config is None:
        atomic_write_text(config_path, cfg.to_yaml())
    elif add:
        atomic_write_text(out_dir / f"config-{run_id}.yaml", cfg.to_yaml())
    return store, run_id


def _units(cfg: Config) -> list[tuple[SettingConfig, ExtractorConfig, int]]:
    """The (setting, extractor, split seed) units, in the order they run."""
    return [
        (setting, ext_cfg, split_seed)
        for setting in cfg.settings
        for split_seed in cfg.split_seeds
        for ext_cfg in cfg.extractors
    ]


def _check_backend(backend: str, ray_address: str | None, workers: int | str = "auto") -> None:
    """Refuse an unknown backend, Ray options without Ray or a bad worker count, before any
    work."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend {backend!r} is unknown; use one of: {', '.join(BACKENDS)}")
    if ray_address is not None and backend != "ray":
        raise ConfigError("--ray-address needs --backend ray; add it or drop the address")
    check_workers(workers)
    if backend == "ray" and workers != "auto":
        raise ConfigError("--workers is for the local backend (Ray sizes its tasks); drop it")
    if backend == "ray":
        import_ray()  # fail in one line before any work when ray is missing


def _announce(reporter: Reporter, cfg: Config, where: str, verbose: bool) -> None:
    """The run's first console lines: where it writes, and the config (one line or YAML)."""
    reporter.console.print(f"[bold]poisonprobe run[/] → {where}")
    summary = cfg.to_yaml().rstrip() if verbose else cfg.summary()
    reporter.console.print(summary, markup=False, highlight=False, soft_wrap=not verbose)


def check_no_conflicts(store: ResultsStore, planned: list[dict[str, Any]], add: bool) -> None:
    """Refuse when the folder holds a row about a planned cell that was computed differently
    (other data, extractor weights, victim, attack parameters or code version)."""
    if add:
        return
    for row in planned:
        if store.conflicts(row):
            what = "/".join(
                str(row[k]) for k in ("setting", "extractor", "attack", "regime", "eps", "seed")
            )
            raise ConfigError(
                f"{store.path} holds a row for {what} computed with another setup (data, "
                "extractor weights, victim, parameters or code version); choose another --out "
                "or pass --add to keep both"
            )


def finish_report(out_dir: Path) -> Path:
    """Plots from results.csv, then report.md linking every figure in the folder."""
    df = read_results(out_dir / "results.csv")
    plot_accuracy_vs_eps(df, out_dir)
    plot_objective_traces(df, out_dir)
    plot_bound_vs_attacks(df, out_dir)
    if (out_dir / "certified.csv").exists():
        plot_certified(pd.read_csv(out_dir / "certified.csv"), df, out_dir)
    return write_report(out_dir)


def _count_cells(cfg: Config, defenses: list) -> int:
    """Rows the whole grid writes (one unit's rows, times the units)."""
    per_eps = 1 + ("loss" in cfg.bounds) + sum(len(attack_regimes(s, cfg)) for s in cfg.attacks)
    units = len(cfg.seeds) * len(cfg.settings) * len(cfg.extractors) * len(cfg.split_seeds)
    return per_eps * len(cfg.eps) * len(defenses) * units


def _installed(package: str) -> str:
    """A package's installed version without importing it (torchvision's import alone cost
    1.6 s of every run that never touches it)."""
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _manifest(cfg: Config, out_dir: Path) -> dict[str, Any]:

    return {
        "poisonprobe": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _installed("torchvision"),
        "platform": platform.platform(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "seeds": list(cfg.seeds),
        "settings": [],
    }


def _setting_record(prep: Prepared) -> dict[str, Any]:
    return {
        "setting": prep.setting.name,
        "split_seed": prep.split_seed,
        "extractor_seed": prep.ext_cfg.seed,
        "source": prep.setting.source,
        "target": prep.setting.target,
        "extractor": prep.ext_cfg.label,
        "checkpoint": prep.checkpoint,
        "checkpoint_sha256": prep.checkpoint_sha256,
        "target_fingerprint": prep.target.train.fingerprint(),
        "clean_acc": prep.clean_acc,
        "seconds": {k: round(v, 3) for k, v in prep.seconds.items()},
    }
