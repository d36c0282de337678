"""Runs a config: settings × extractors × seeds × attacks × regimes × eps × defences.

Work that can be shared is shared: one pre-trained extractor per (setting, extractor),
features encoded once (feature cache), one clean head, one attack run per
(attack, regime, eps, seed) for all defences, and ``ctx.memo`` lets attacks share
stages across eps (e.g. the FT attack's decoder).
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import torch

from ..attacks import AttackContext, PoisonSet, get_attack
from ..bounds.loss_bound import clean_loss
from ..data import DatasetSplits, load_dataset
from ..data.base import check_images, images_in_box
from ..data.loaders.features import is_embedding_domain, is_features_spec
from ..defenses import DefenseInput, DefenseSpec, apply_defense, parse_defense
from ..errors import ConfigError, DataError, PoisonProbeError, check_device
from ..extractors import Extractor
from ..extractors.zoo import build_zoo_extractor, check_zoo_weights, passthrough_extractor
from ..head.config import VictimConfig
from ..head.objective import LinearHead
from ..head.train import resolve_victim, train_head
from ..progress import Reporter
from ..shared_work import SharedWork
from ..threads import single_thread_if_small
from .certify import BOUND, bound_rows, check_bounds_data, dpa_rows
from .config import AttackSpec, Config, ExtractorConfig, SettingConfig, load_config
from .plan import cell_id, check_same_experiment, config_id
from .results import ResultsStore, atomic_write_text, discard_if_failed

log = logging.getLogger("poisonprobe")


def resolve_device(name: str) -> torch.device:
    name = check_device(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PoisonProbeError(f"device {name!r} requested but CUDA is not available; use cpu/auto")
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        raise ConfigError(
            f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s); "
            "use cuda:0 or auto"
        )
    return torch.device(name)


def victim_config(cfg: Config) -> VictimConfig:
    """The victim recipe from the config's ``victim`` section (same field names)."""
    return VictimConfig(**cfg.victim.model_dump())


@dataclass
class Prepared:
    """One (setting, extractor): frozen extractor, cached features and the clean head."""

    setting: SettingConfig
    ext_cfg: ExtractorConfig
    extractor: Extractor
    target: DatasetSplits
    z_train: torch.Tensor
    z_test: torch.Tensor
    clean_head: LinearHead
    clean_acc: float
    checkpoint: str | None
    checkpoint_sha256: str | None
    seconds: dict[str, float] = field(default_factory=dict)
    clean_victim: VictimConfig | None = None  # the recipe as fitted on clean data (C picked)
    split_seed: int = 0

    def identity(self) -> dict[str, Any]:
        """What the cells of this (setting, split, extractor) depend on, for ``cell_id``."""
        extractor = self.checkpoint_sha256 or self.ext_cfg.model_dump(mode="json", exclude={"name"})
        return {
            "setting": {
                "name": self.setting.name,
                "source": self.setting.source,
                "target": self.setting.target,
                "data": [self.target.train.fingerprint(), self.target.test.fingerprint()],
                "split_seed": self.split_seed,
            },
            "extractor": extractor,
        }


def obtain_extractor(
    ext_cfg: ExtractorConfig,
    source: DatasetSplits,
    device: torch.device,
    reporter: Reporter,
) -> tuple[Extractor, str | None, str | None, dict[str, float]]:
    """Load the configured checkpoint, the shipped extractor for this recipe (unless
    ``pretrain: true``), or pre-train with SSL on the source (cached)."""
    from ..extractors.archs import build_extractor, check_image_size
    from ..extractors.checkpoints import checkpoint_sha256, load_extractor
    from ..extractors.pretrain import get_or_pretrain

    if ext_cfg.is_zoo:
        return zoo_extractor(ext_cfg, source, device, reporter)
    t0 = time.perf_counter()
    if ext_cfg.checkpoint:
        ext = load_extractor(ext_cfg.checkpoint, ext_cfg.arch, source.domain)
        check_image_size(ext)
        path = ext_cfg.checkpoint
        hit = True
    else:
        check_image_size(build_extractor(ext_cfg.arch, source.domain))  # before pre-training
        ext, path, hit = get_or_pretrain(
            source.train,
            arch=ext_cfg.arch,
            method=ext_cfg.method,
            epochs=ext_cfg.epochs,
            seed=ext_cfg.seed,
            batch_size=ext_cfg.batch_size,
            lr=ext_cfg.lr,
            device=device,
            progress=reporter.track,
            amp=ext_cfg.amp,
            shipped=not ext_cfg.pretrain,
        )
    seconds = {"pretrain": time.perf_counter() - t0}
    reporter.log(
        f"extractor {ext_cfg.label}: {'loaded' if hit else 'pre-trained'} "
        f"({seconds['pretrain']:.1f}s) {path or ''}"
    )
    ext = ext.to(device).eval()
    for p in ext.parameters():
        p.requires_grad_(False)
    sha = checkpoint_sha256(path) if path else None
    return ext, (str(path) if path else None), sha, seconds


def zoo_extractor(
    ext_cfg: ExtractorConfig, source: DatasetSplits, device: torch.device, reporter: Reporter
) -> tuple[Extractor, None, None, dict[str, float]]:
    """A library model (torchvision / timm / open_clip / HF), frozen as given: no pre-training."""
    t0 = time.perf_counter()
    ext = build_zoo_extractor(
        ext_cfg.arch, source.domain, ext_cfg.weights, ext_cfg.image_size, ext_cfg.seed
    ).to(device)
    seconds = {"pretrain": time.perf_counter() - t0}
    reporter.log(
        f"extractor {ext_cfg.label}: {ext.feature_dim} features, input {ext.size} "
        f"({seconds['pretrain']:.1f}s)"
    )
    return ext, None, None, seconds


def prepare(
    setting: SettingConfig,
    ext_cfg: ExtractorConfig,
    cfg: Config,
    device: torch.device,
    reporter: Reporter,
    feature_cache,
    split_seed: int = 0,
) -> Prepared:
    if ext_cfg.is_zoo:
        check_zoo_weights(ext_cfg.arch, ext_cfg.weights)  # offline: fail before loading data
    if is_features_spec(setting.target):
        target, ext, path, sha, seconds = load_embeddings(setting, cfg, reporter)
        check_bounds_data(cfg, len(target.train))
        feature_cache = EmbeddingCache()
    else:
        source = load_dataset(setting.source, cfg.data_root, split_seed, download=cfg.download)
        target = load_dataset(setting.target, cfg.data_root, split_seed, download=cfg.download)
        if source.domain.shape != target.domain.shape:
            raise DataError(
                f"setting {setting.name!r}: source {setting.source} has input shape "
                f"{source.domain.shape} but target {setting.target} has {target.domain.shape}; "
                "choose datasets of one shape (or resize one of them)"
            )
        check_bounds_data(cfg, len(target.train))  # before pre-training
        ext, path, sha, seconds = obtain_extractor(ext_cfg, source, device, reporter)
        if ext.domain != target.domain:
            # the extractor normalises with the source statistics: what a transfer user gets
            log.info("transfer: extractor normalises with %s statistics", setting.source)
    from .resources import check_memory

    check_memory(
        len(target.train),
        len(target.test),
        ext.feature_dim,
        max(cfg.eps),
        f"setting {setting.name!r}",
    )
    t0 = time.perf_counter()
    z_train = feature_cache.encode(ext, target.train, progress=reporter.track).to(device)
    z_test = feature_cache.encode(ext, target.test, progress=reporter.track).to(device)
    seconds["encode"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    y_train, k = target.train.y.to(device), target.train.n_classes
    vcfg = resolve_victim(z_train, y_train, k, victim_config(cfg), VICTIM_SEED)
    head = train_head(z_train, y_train, k, vcfg, seed=VICTIM_SEED)
    clean_acc = head.accuracy(z_test, target.test.y.to(device))
    seconds["clean_head"] = time.perf_counter() - t0
    reporter.log(
        f"{setting.name}/{ext_cfg.label}: clean test accuracy {clean_acc:.4f} ({vcfg.label})"
    )
    return Prepared(
        setting,
        ext_cfg,
        ext,
        target,
        z_train,
        z_test,
        head,
        clean_acc,
        path,
        sha,
        seconds,
        clean_victim=vcfg,
        split_seed=split_seed,
    )


def load_embeddings(
    setting: SettingConfig, cfg: Config, reporter: Reporter
) -> tuple[DatasetSplits, Extractor, None, None, dict[str, float]]:
    """A ``features:PATH`` target and its pass-through extractor (nothing to pre-train)."""
    t0 = time.perf_counter()
    target = load_dataset(setting.target, cfg.data_root, download=cfg.download)
    reporter.log(
        f"{setting.name}: {len(target.train)}+{len(target.test)} precomputed embeddings of "
        f"dimension {target.domain.channels} from {setting.target}"
    )
    return (
        target,
        passthrough_extractor(target.domain),
        None,
        None,
        {"load": time.perf_counter() - t0},
    )


class EmbeddingCache:
    """``FeatureCache.encode`` for precomputed embeddings: they are the features (a view)."""

    def encode(self, extractor: Extractor, data, progress=None) -> torch.Tensor:
        return data.x.reshape(len(data), -1)


@dataclass
class TrainingSet:
    """The victim's training set after injection, with the (hidden) poison flags."""

    z: torch.Tensor
    y: torch.Tensor
    in_box: torch.Tensor
    is_poison: torch.Tensor


def encode_poisons(prep: Prepared, poison: PoisonSet, batch_size: int) -> torch.Tensor:
    if poison.z is not None:
        return poison.z.detach().to(prep.z_train.device, torch.float32)
    from ..extractors.cache import encode_batched

    check_images(prep.target.domain, poison.x, "poison images")
    return encode_batched(prep.extractor, poison.x, batch_size).to(prep.z_train.device)


def build_training_set(prep: Prepared, poison: PoisonSet | None, batch_size: int) -> TrainingSet:
    z, y = prep.z_train, prep.target.train.y.to(prep.z_train.device)
    n = z.shape[0]
    in_box = torch.ones(n, dtype=torch.bool, device=z.device)
    is_poison = torch.zeros(n, dtype=torch.bool, device=z.device)
    if poison is None:
        return TrainingSet(z, y, in_box, is_poison)
    zp = encode_poisons(prep, poison, batch_size)
    yp = poison.y.to(z.device).long()
    boxp = (
        images_in_box(prep.target.domain, poison.x).to(z.device)
        if poison.x is not None
        else torch.ones(len(poison), dtype=torch.bool, device=z.device)
    )
    if poison.replace_idx is not None:
        idx = poison.replace_idx.to(z.device).long()
        z, y, in_box, is_poison = z.clone(), y.clone(), in_box.clone(), is_poison.clone()
        z[idx], y[idx], in_box[idx], is_poison[idx] = zp, yp, boxp, True
        return TrainingSet(z, y, in_box, is_poison)
    return TrainingSet(
        torch.cat([z, zp]),
        torch.cat([y, yp]),
        torch.cat([in_box, boxp]),
        torch.cat([is_poison, torch.ones(len(poison), dtype=torch.bool, device=z.device)]),
    )


def evaluate(
    prep: Prepared, ts: TrainingSet, spec: DefenseSpec, eps: float, vcfg: VictimConfig, seed: int
) -> dict[str, Any]:
    """Defend (without seeing poison flags), retrain the victim, measure test accuracy."""
    inp = DefenseInput(ts.z, ts.y, ts.in_box, prep.target.train.n_classes, vcfg, seed)
    keep = apply_defense(spec, inp, default_fraction=eps).to(ts.z.device)
    k = prep.target.train.n_classes
    # lbfgs-cv: C picked on this (poisoned, defended) set, with the clean fit's split seed
    vcfg = resolve_victim(ts.z[keep], ts.y[keep], k, vcfg, VICTIM_SEED)
    start = victim_start(vcfg, prep.clean_head)
    head = train_head(ts.z[keep], ts.y[keep], k, vcfg, **start)
    acc = head.accuracy(prep.z_test, prep.target.test.y.to(prep.z_test.device))
    y_train = prep.target.train.y.to(prep.z_train.device)
    n_poison = int(ts.is_poison.sum())
    n_clean = int((~ts.is_poison).sum())
    return {
        "poisoned_acc": acc,
        "drop": prep.clean_acc - acc,
        "poison_removed": (int((ts.is_poison & ~keep).sum()) / n_poison)
        if n_poison
        else float("nan"),
        "clean_removed": int((~ts.is_poison & ~keep).sum()) / max(n_clean, 1),
        "victim": vcfg.label,
        "train_loss": clean_loss(head, prep.z_train, y_train),  # what the loss bound bounds
    }


def attack_regimes(spec: AttackSpec, cfg: Config) -> list[str]:
    """The regimes this attack runs in: the config's, restricted to those it supports.

    Never one the config did not ask for: the config refuses an attack none of whose regimes
    it lists (feature-injection attacks have the one regime ``feature``)."""
    supported = get_attack(spec.name).regimes
    if supported == ("feature",):
        return ["feature"]
    return [r for r in cfg.regimes if r in supported]


VICTIM_SEED = 0
"""The SGD victim's data-order seed, the same for the clean and every poisoned head."""


def victim_start(vcfg: VictimConfig, clean_head: LinearHead) -> dict[str, Any]:
    """How every retrain starts: the exact solver warm-starts from the clean head (its optimum
    does not depend on the start); SGD starts where the clean head started (zeros, the same
    data order), so an unpoisoned retrain reproduces the clean head and its drop is exactly 0."""
    if vcfg.solver != "sgd":  # lbfgs, lbfgs-cv: exact
        return {"init": clean_head}
    return {"init": None, "seed": VICTIM_SEED}


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
) -> pd.DataFrame:
    """Run an experiment and return its results (also written to ``out/results.csv``).

    ``out`` defaults to ``runs/<config stem>``. A folder made by a config that differs in
    anything that changes results is refused (one line naming the keys) unless ``add``, which
    adds this config's cells beside the old ones, each row keyed by its own ``cell_id``.
    ``backend="ray"`` runs each (setting, extractor, seed) as a Ray task (a local Ray
    instance, or the cluster at ``ray_address``); the rows are the same as ``"local"``.
    The console shows the config as one line (``verbose``: the full YAML, which is always
    in ``out/config.yaml``). A run that fails before writing a result leaves no new folder.
    """
    cfg = load_config(config)
    out_dir = Path(out) if out is not None else default_out(config)
    with discard_if_failed(out_dir):
        return _run(cfg, out_dir, quiet, backend, ray_address, add, verbose)


def _run(
    config: Config,
    out: Path,
    quiet: bool,
    backend: str,
    ray_address: str | None,
    add: bool,
    verbose: bool,
) -> pd.DataFrame:
    cfg = load_config(config)
    if backend not in BACKENDS:
        raise ConfigError(f"backend {backend!r} is unknown; use one of: {', '.join(BACKENDS)}")
    if ray_address is not None and backend != "ray":
        raise ConfigError("--ray-address needs --backend ray; add it or drop the address")
    if backend == "ray":
        from .backends import import_ray

        import_ray()  # fail in one line before any work when ray is missing
    reporter = Reporter(quiet=quiet)
    device = resolve_device(cfg.device)
    out_dir = Path(out) if out is not None else default_out(config)
    config_path = out_dir / "config.yaml"
    old_config = config_path.read_text() if config_path.is_file() else None
    check_same_experiment(old_config, cfg, add)
    store = ResultsStore(out_dir / "results.csv", on_append=reporter.cell_done)
    run_id = config_id(cfg)
    if old_config is None:
        atomic_write_text(config_path, cfg.to_yaml())
    elif add:
        atomic_write_text(out_dir / f"config-{run_id}.yaml", cfg.to_yaml())
    if not quiet:
        reporter.console.print(
            f"[bold]poisonprobe run[/] → {out_dir}  (device {device}, backend {backend})"
        )
        summary = cfg.to_yaml().rstrip() if verbose else cfg.summary()
        reporter.console.print(summary, markup=False, highlight=False, soft_wrap=not verbose)
    log.info("config:\n%s", cfg.to_yaml())
    torch.manual_seed(0)

    from ..extractors.cache import FeatureCache

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

    units = [
        (setting, ext_cfg, split_seed)
        for setting in cfg.settings
        for split_seed in cfg.split_seeds
        for ext_cfg in cfg.extractors
    ]
    with reporter.session(total=cells, description="poisonprobe"):
        if backend == "ray":
            from .backends import run_ray

            # the driver prepares each (setting, split, extractor) first: pre-training and
            # features land in the shared cache once, and workers only load them
            preps = [prepared(*unit) for unit in units]
            run_ray(cfg, preps, defenses, store, reporter, out_dir, device, run_id, ray_address)
        else:
            for unit in units:
                prep = prepared(*unit)
                for seed in cfg.seeds:
                    _run_seed(
                        prep, cfg, seed, defenses, vcfg, store, reporter, device, out_dir, run_id
                    )
    finish_report(out_dir)
    return store.frame()


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
    from ..report.markdown import write_report
    from ..report.plots import (
        plot_accuracy_vs_eps,
        plot_bound_vs_attacks,
        plot_certified,
        plot_objective_traces,
    )
    from .results import read_results

    df = read_results(out_dir / "results.csv")
    plot_accuracy_vs_eps(df, out_dir)
    plot_objective_traces(df, out_dir)
    plot_bound_vs_attacks(df, out_dir)
    if (out_dir / "certified.csv").exists():
        plot_certified(pd.read_csv(out_dir / "certified.csv"), df, out_dir)
    return write_report(out_dir)


def _figure_name(*parts: str) -> str:
    return "_".join("".join(c if c.isalnum() or c in "-." else "-" for c in p) for p in parts)


class RowSink(Protocol):
    """Where ``_run_seed`` puts rows: the ResultsStore locally, a collector in a Ray worker."""

    def has(self, cell: str) -> bool: ...

    def append(self, row: dict[str, Any]) -> None: ...


def row_identity(
    prep: Prepared,
    cfg: Config,
    device: torch.device,
    seed: int,
    attack: AttackSpec | None,
    regime: str,
    eps: float,
    defense: DefenseSpec,
) -> dict[str, Any]:
    """A row's key fields and its ``cell_id`` (``attack=None``: the unpoisoned row)."""
    name = attack.column if attack is not None else "none"
    ident = prep.identity()
    cell = cell_id(
        setting=ident["setting"],
        extractor=ident["extractor"],
        victim=cfg.victim.model_dump(mode="json"),
        attack=attack.name if attack is not None else "none",
        params=attack.params if attack is not None else {},
        regime=regime,
        linf=cfg.linf if attack is not None else None,
        eps=eps,
        defense=defense.label,
        seed=seed,
        device=device.type,
        batch_size=cfg.batch_size,
    )
    return {
        "setting": prep.setting.name,
        "extractor": prep.ext_cfg.label,
        "attack": name,
        "regime": regime,
        "eps": eps,
        "defense": defense.label,
        "seed": seed,
        "extractor_seed": prep.ext_cfg.seed,
        "split_seed": prep.split_seed,
        "cell_id": cell,
    }


def unit_cells(
    prep: Prepared, cfg: Config, seed: int, defenses: list[DefenseSpec], device: torch.device
) -> list[dict[str, Any]]:
    """The rows one (setting, split, extractor, seed) unit writes, in ``_run_seed``'s order."""
    cells: list[tuple[AttackSpec | None, str, float]] = [(None, "-", eps) for eps in cfg.eps]
    if "loss" in cfg.bounds:
        cells += [(BOUND, "feature", eps) for eps in cfg.eps]
    for spec in cfg.attacks:
        for regime in attack_regimes(spec, cfg):
            cells += [(spec, regime, eps) for eps in cfg.eps]
    return [
        row_identity(prep, cfg, device, seed, spec, regime, eps, d)
        for spec, regime, eps in cells
        for d in defenses
    ]


def _run_seed(
    prep: Prepared,
    cfg: Config,
    seed: int,
    defenses: list[DefenseSpec],
    vcfg: VictimConfig,
    store: RowSink,
    reporter: Reporter,
    device: torch.device,
    out_dir: Path,
    run_id: str = "",
) -> None:
    """Every cell of one seed; cells whose ``cell_id`` ``store`` already has are skipped."""
    memo = SharedWork()  # FT stages, decoder, targets, minimax: computed once, billed visibly
    figures = seed == cfg.seeds[0] and prep.split_seed == cfg.split_seeds[0]
    projected: dict[str, torch.Tensor] = {}
    base = {
        "source": prep.setting.source,
        "target": prep.setting.target,
        "n_clean": len(prep.target.train),
        "n_test": len(prep.target.test),
        "clean_acc": prep.clean_acc,
        "config_id": run_id,
    }

    def identity(spec: AttackSpec | None, regime: str, eps: float, d: DefenseSpec) -> dict:
        return {**base, **row_identity(prep, cfg, device, seed, spec, regime, eps, d)}

    clean_ts = build_training_set(prep, None, cfg.batch_size)
    for eps in cfg.eps:
        for d in defenses:
            row = identity(None, "-", eps, d)
            if store.has(row["cell_id"]):
                reporter.advance()
                continue
            t0 = time.perf_counter()
            row.update(evaluate(prep, clean_ts, d, eps, vcfg, seed), n_poison=0)
            row["seconds"] = time.perf_counter() - t0
            store.append(row)
            reporter.advance()
    reporter.advance(bound_rows(prep, cfg, defenses, store, memo, identity))
    for spec in cfg.attacks:
        info = get_attack(spec.name)
        for regime in attack_regimes(spec, cfg):
            for eps in cfg.eps:
                keys = {d.label: identity(spec, regime, eps, d) for d in defenses}
                todo = [d for d in defenses if not store.has(keys[d.label]["cell_id"])]
                if not todo:
                    reporter.advance(len(defenses))
                    continue
                reporter.describe(f"{prep.setting.name} {spec.column} {regime} eps={eps}")
                ctx = AttackContext.build(
                    prep.extractor,
                    prep.target.train,
                    eps,
                    regime=regime,
                    linf=cfg.linf,
                    victim=prep.clean_victim,
                    seed=seed,
                    device=device,
                    z_train=prep.z_train,
                    clean_head=prep.clean_head,
                    memo=memo,
                    progress=reporter.track,
                    batch_size=cfg.batch_size,
                )
                torch.manual_seed(seed)
                memo.take_used()  # bill this attack only for the shared work it uses
                t0 = time.perf_counter()
                threads = (  # feature attacks do head-sized ops only: one thread is faster
                    single_thread_if_small(prep.z_train.numel(), prep.z_train.device)
                    if info.regimes == ("feature",)
                    else nullcontext()
                )
                with threads:
                    poison = info.fn(ctx, **spec.params)
                attack_seconds = time.perf_counter() - t0
                shared_seconds = memo.take_used()
                ts = build_training_set(prep, poison, cfg.batch_size)
                if cfg.save_poisons:
                    from .export import poison_file, save_poisons

                    save_poisons(poison_file(out_dir, keys[todo[0].label]), poison)
                if figures and eps == max(cfg.eps):
                    _record_figures(prep, spec.column, regime, eps, poison, ts, out_dir, projected)
                for d in todo:
                    t1 = time.perf_counter()
                    row = dict(keys[d.label])
                    row.update(evaluate(prep, ts, d, eps, vcfg, seed))
                    row.update(
                        n_poison=len(poison),
                        attack_seconds=attack_seconds,
                        shared_seconds=shared_seconds,
                        seconds=attack_seconds + time.perf_counter() - t1,
                        target_acc=poison.info.get("target_acc"),
                        gc_objective=poison.info.get("gc_objective"),
                        eps_needed=poison.info.get("eps_needed"),
                        attack_objective=poison.info.get("attack_objective"),
                        attack_steps=poison.info.get("attack_steps"),
                        converged=poison.info.get("converged"),
                        stages=json.dumps(
                            {k: round(v, 4) for k, v in poison.stage_seconds.items()}
                        ),
                        info=json.dumps(_jsonable(poison.info)),
                    )
                    store.append(row)
                    reporter.advance()
                reporter.advance(len(defenses) - len(todo))
                # free this cell's poisons (15k CIFAR images: ~180 MB) before the next attack
                # allocates its own, instead of when the names are rebound
                del poison, ts
    if projected:
        from ..report.plots import save_feature_projection

        save_feature_projection(
            prep.z_train,
            prep.target.train.y,
            projected,
            out_dir / (_figure_name("features", prep.setting.name, prep.ext_cfg.label) + ".png"),
            f"{prep.setting.name}: clean features (PCA) and poisons at eps={max(cfg.eps)}",
            classes=prep.target.train.classes,
        )


GRID_COLUMNS = 8  # poisons shown in each image grid


def _record_figures(prep, attack, regime, eps, poison, ts, out_dir, projected) -> None:
    """Image grid of clean starts vs poisons, and poison features for the projection plot."""
    from ..report.plots import save_poison_grid

    projected[f"{attack} [{regime}]"] = ts.z[ts.is_poison]
    images = not is_embedding_domain(prep.target.domain)
    if images and poison.x is not None and poison.base_idx is not None:
        name = _figure_name("grid", prep.setting.name, prep.ext_cfg.label, attack, regime)
        shown = poison.base_idx[:GRID_COLUMNS].cpu()  # not a copy of every start image
        save_poison_grid(
            prep.target.train.x[shown],
            poison.x[:GRID_COLUMNS],
            poison.y[:GRID_COLUMNS],
            out_dir / f"{name}.png",
            f"{prep.setting.name} · {attack} [{regime}] · eps={eps}",
            n=GRID_COLUMNS,
            start_labels=prep.target.train.y[shown],
            classes=prep.target.train.classes,
        )


def _jsonable(info: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in info.items():
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = v.item()
        if isinstance(v, (int, float, str, bool)) or v is None:
            out[k] = v
        elif isinstance(v, list) and all(isinstance(e, (int, float)) for e in v):
            out[k] = v  # e.g. the objective trace the report plots
    return out


def _count_cells(cfg: Config, defenses: list) -> int:
    """Rows the whole grid writes (one unit's rows, times the units)."""
    per_eps = 1 + ("loss" in cfg.bounds) + sum(len(attack_regimes(s, cfg)) for s in cfg.attacks)
    units = len(cfg.seeds) * len(cfg.settings) * len(cfg.extractors) * len(cfg.split_seeds)
    return per_eps * len(cfg.eps) * len(defenses) * units


def _manifest(cfg: Config, out_dir: Path) -> dict[str, Any]:
    import platform

    import torchvision

    from .. import __version__

    return {
        "poisonprobe": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
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
