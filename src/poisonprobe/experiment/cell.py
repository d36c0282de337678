"""The cells of one (setting, split, extractor, seed) unit: the clean rows, then for each
attack cell the attack once, the injected training set, every defence and the victim's
retrain, and the figures. Every backend (local, processes, Ray) calls ``RunScope.run_unit``."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from ..attacks import AttackContext, AttackInfo, PoisonKind, PoisonSet, get_attack
from ..bounds.feasible import FeasibleSet
from ..bounds.loss_bound import clean_loss
from ..data.base import check_images, images_in_box
from ..data.loaders.features import is_embedding_domain
from ..defenses import DefenseInput, DefenseSpec, apply_defense
from ..extractors.cache import encode_batched
from ..head.config import VictimConfig
from ..head.objective import LinearHead
from ..head.train import resolve_victim, train_head
from ..progress import Reporter
from ..report.plots import (
    save_feature_projection,
    save_poison_grid,
)
from ..shared_work import SharedWork, offer, shared
from ..threads import single_thread_if_small
from .certify import BOUND, bound_rows
from .config import AttackSpec, Config
from .export import poison_file, save_poisons
from .plan import cell_id
from .prepare import VICTIM_SEED, Prepared

log = logging.getLogger("poisonprobe")


@dataclass
class TrainingSet:
    """The victim's training set after injection, with the (hidden) poison flags."""

    z: torch.Tensor
    y: torch.Tensor
    in_box: torch.Tensor
    is_poison: torch.Tensor


def encode_poisons(prep: Prepared, poison: PoisonSet, batch_size: int) -> torch.Tensor:
    """The poisons' features: injected as given, or the extractor's on their images."""
    if poison.kind is PoisonKind.FEATURES:
        assert poison.z is not None
        return poison.z.detach().to(prep.z_train.device, torch.float32)
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
    if poison.kind is PoisonKind.REPLACEMENTS:
        assert poison.replace_idx is not None
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


def victim_start(vcfg: VictimConfig, clean_head: LinearHead) -> dict[str, Any]:
    """How every retrain starts: the exact solver warm-starts from the clean head (its optimum
    does not depend on the start); SGD starts where the clean head started (zeros, the same
    data order), so an unpoisoned retrain reproduces the clean head and its drop is exactly 0."""
    if vcfg.solver != "sgd":  # lbfgs, lbfgs-cv: exact
        return {"init": clean_head}
    return {"init": None, "seed": VICTIM_SEED}


class RowSink(Protocol):
    """Where ``RunScope.run_unit`` puts rows: the ResultsStore, or a worker's collector."""

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
    """The rows one (setting, split, extractor, seed) unit writes, in ``run_unit``'s order."""
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


@dataclass(frozen=True)
class RunScope:
    """What every unit's cells share in one run: the config, the defences, the victim's recipe,
    where rows go, progress, device, output folder and run id. Each backend makes one (the Ray
    worker with its row collector) and calls ``run_unit`` for each (unit, seed)."""

    cfg: Config
    defenses: list[DefenseSpec]
    vcfg: VictimConfig
    store: RowSink
    reporter: Reporter
    device: torch.device
    out_dir: Path
    run_id: str = ""

    def run_unit(self, prep: Prepared, seed: int) -> None:
        """Every cell of one seed; cells whose ``cell_id`` ``store`` already has are skipped."""
        unit = UnitRun(prep, seed, self)
        unit.clean_rows()
        self.reporter.advance(
            bound_rows(prep, self.cfg, self.defenses, self.store, unit.memo, unit.identity)
        )
        for spec in self.cfg.attacks:
            info = get_attack(spec.name)
            for regime in attack_regimes(spec, self.cfg):
                for eps in self.cfg.eps:
                    unit.attack_cell(spec, info, regime, eps)
        unit.save_projection()


@dataclass
class UnitRun:
    """One (setting, split, extractor, seed) unit while its cells run: what they share."""

    prep: Prepared
    seed: int
    run: RunScope
    # FT stages, decoder, targets, minimax: computed once, billed visibly
    memo: SharedWork = field(default_factory=SharedWork)
    projected: dict[str, torch.Tensor] = field(default_factory=dict)  # poison features

    @property
    def figures(self) -> bool:
        """Figures come from the first seed of the first split only."""
        return (
            self.seed == self.run.cfg.seeds[0]
            and self.prep.split_seed == self.run.cfg.split_seeds[0]
        )

    def identity(self, spec: AttackSpec | None, regime: str, eps: float, d: DefenseSpec) -> dict:
        """A row's fixed columns and its key fields (``spec=None``: the unpoisoned row)."""
        prep = self.prep
        base = {
            "source": prep.setting.source,
            "target": prep.setting.target,
            "n_clean": len(prep.target.train),
            "n_test": len(prep.target.test),
            "clean_acc": prep.clean_acc,
            "config_id": self.run.run_id,
        }
        return {
            **base,
            **row_identity(prep, self.run.cfg, self.run.device, self.seed, spec, regime, eps, d),
        }

    def clean_rows(self) -> None:
        """The unpoisoned victim under every defence, one row per (eps, defence)."""
        clean_ts = build_training_set(self.prep, None, self.run.cfg.batch_size)
        for eps in self.run.cfg.eps:
            for d in self.run.defenses:
                row = self.identity(None, "-", eps, d)
                if self.run.store.has(row["cell_id"]):
                    self.run.reporter.advance()
                    continue
                t0 = time.perf_counter()
                row.update(
                    evaluate(self.prep, clean_ts, d, eps, self.run.vcfg, self.seed), n_poison=0
                )
                row["seconds"] = time.perf_counter() - t0
                self.run.store.append(row)
                self.run.reporter.advance()

    def attack_cell(self, spec: AttackSpec, info: AttackInfo, regime: str, eps: float) -> None:
        """One attack cell: the attack once, then a row per defence not yet in the store."""
        keys = {d.label: self.identity(spec, regime, eps, d) for d in self.run.defenses}
        todo = [d for d in self.run.defenses if not self.run.store.has(keys[d.label]["cell_id"])]
        if not todo:
            self.run.reporter.advance(len(self.run.defenses))
            return
        prep, cfg = self.prep, self.run.cfg
        self.run.reporter.describe(f"{prep.setting.name} {spec.column} {regime} eps={eps}")
        poison, attack_seconds, shared_seconds = self.run_attack(spec, info, regime, eps)
        ts = build_training_set(prep, poison, cfg.batch_size)
        if cfg.save_poisons:
            save_poisons(poison_file(self.run.out_dir, keys[todo[0].label]), poison)
        if self.figures and eps == max(cfg.eps):
            _record_figures(
                prep, spec.column, regime, eps, poison, ts, self.run.out_dir, self.projected
            )
        in_box = {"in_feature_box": in_feature_box_share(prep, ts)}
        for d in todo:
            t1 = time.perf_counter()
            row = dict(keys[d.label])
            row.update(evaluate(prep, ts, d, eps, self.run.vcfg, self.seed))
            row.update(
                n_poison=len(poison),
                attack_seconds=attack_seconds,
                shared_seconds=shared_seconds,
                seconds=attack_seconds + time.perf_counter() - t1,
                **_attack_columns(poison, in_box),
            )
            self.run.store.append(row)
            self.run.reporter.advance()
        self.run.reporter.advance(len(self.run.defenses) - len(todo))

    def run_attack(
        self, spec: AttackSpec, info: AttackInfo, regime: str, eps: float
    ) -> tuple[PoisonSet, float, float]:
        """The attack's poisons, its own seconds and the seconds of shared work it used."""
        prep = self.prep
        ctx = AttackContext.build(
            prep.extractor,
            prep.target.train,
            eps,
            regime=regime,
            linf=self.run.cfg.linf,
            victim=prep.clean_victim,
            seed=self.seed,
            device=self.run.device,
            z_train=prep.z_train,
            clean_head=prep.clean_head,
            memo=self.memo,
            progress=self.run.reporter.track,
            batch_size=self.run.cfg.batch_size,
        )
        torch.manual_seed(self.seed)
        self.memo.take_used()  # bill this attack only for the shared work it uses
        t0 = time.perf_counter()
        # small problems run on one thread: feature attacks do head-sized ops only, and
        # input attacks on small images (digits) pass a few hundred 8x8 images through
        # a small net per step, where a second thread costs more in barriers than it
        # gives (tgda on digits: 0.11 s per leader step on one thread, 0.45 s on two
        # next to one busy process)
        work = prep.z_train.numel()
        if info.regimes != ("feature",):
            work = max(work, prep.target.train.x.numel())
        key = ctx.result_key(spec.name, spec.params)
        with single_thread_if_small(work, prep.z_train.device):
            if key in self.memo:  # FT computed these poisons as its inversion source
                poison = shared(self.memo, key, lambda: info.fn(ctx, **spec.params))
            else:
                poison = info.fn(ctx, **spec.params)
                if poison.kind is PoisonKind.FEATURES:  # small: kept for FT's sources
                    offer(self.memo, key, poison, time.perf_counter() - t0)
        return poison, time.perf_counter() - t0, self.memo.take_used()

    def save_projection(self) -> None:
        """The PCA figure of clean features and every attack's poisons (first seed only)."""
        if not self.projected:
            return
        prep = self.prep
        name = _figure_name("features", prep.setting.name, prep.ext_cfg.label)
        save_feature_projection(
            prep.z_train,
            prep.target.train.y,
            self.projected,
            self.run.out_dir / f"{name}.png",
            f"{prep.setting.name}: clean features (PCA) and poisons at eps={max(self.run.cfg.eps)}",
            classes=prep.target.train.classes,
        )


def in_feature_box_share(prep: Prepared, ts: TrainingSet) -> float:
    """The share of the poisons whose features lie in the clean-feature box: the certified
    loss bound's feasible set without a defence (``bounds.feasible``), so the report compares
    the bound only with attacks it covers (share 1)."""
    z_p = ts.z[ts.is_poison]
    if not len(z_p):
        return float("nan")
    box = FeasibleSet.box(prep.z_train, prep.target.train.y, prep.target.train.n_classes)
    return float(box.contains(z_p.double(), ts.y[ts.is_poison]).double().mean())


def _attack_columns(poison: PoisonSet, cell_info: dict[str, Any]) -> dict[str, Any]:
    """The result columns an attack reports through ``PoisonSet.info`` and its stage times;
    ``cell_info``: what the cell measured of the poisons, added to the row's ``info``."""
    return {
        "target_head_acc": poison.info.get("target_head_acc"),
        "gc_objective": poison.info.get("gc_objective"),
        "eps_needed": poison.info.get("eps_needed"),
        "attack_objective": poison.info.get("attack_objective"),
        "attack_steps": poison.info.get("attack_steps"),
        "converged": poison.info.get("converged"),
        "stages": json.dumps({k: round(v, 4) for k, v in poison.stage_seconds.items()}),
        "info": json.dumps(_jsonable({**poison.info, **cell_info})),
    }


GRID_COLUMNS = 8  # poisons shown in each image grid


def _record_figures(prep, attack, regime, eps, poison, ts, out_dir, projected) -> None:
    """Image grid of clean starts vs poisons, and poison features for the projection plot."""
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


def _figure_name(*parts: str) -> str:
    return "_".join("".join(c if c.isalnum() or c in "-." else "-" for c in p) for p in parts)


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
