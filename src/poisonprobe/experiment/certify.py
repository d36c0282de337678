"""The runner's certified-bound steps (``bounds: [loss, dpa]``) and ``poisonprobe certify``.

Kept out of ``runner.py``: the runner calls ``check_bounds_data`` once the target set is
loaded, ``bound_rows`` after the no-attack rows of a seed, and ``dpa_rows`` once per
(setting, extractor).
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..attacks import ThreatModel
from ..bounds.dpa import certified_accuracy, certify, check_k, partition, votes
from ..bounds.loss_bound import shared_minimax
from ..defenses import DefenseSpec
from ..head.config import VictimConfig
from .config import AttackSpec, Config
from .results import atomic_write_text

CERTIFIED_COLUMNS = ["setting", "extractor", "k", "radius", "certified_acc"]


def check_bounds_data(cfg: Config, n_train: int) -> None:
    """``dpa_k`` against the target's N, before pre-training (one-line ConfigError)."""
    if "dpa" in cfg.bounds:
        for k in cfg.dpa_k:
            check_k(k, n_train)


BOUND = AttackSpec(name="bound", params={"method": "minimax", "steps": 300, "lr": 0.2})
"""How bound rows are identified (``cell_id``): the loop and its budget, like an attack's."""


def bound_rows(
    prep,
    cfg: Config,
    defenses: list[DefenseSpec],
    store,
    memo: dict,
    identity: Callable[[AttackSpec, str, float, DefenseSpec], dict[str, Any]],
) -> int:
    """One ``attack = bound`` row per (eps, defence): the certified loss bound. ``identity``
    gives a row's key fields and ``cell_id`` (the runner's). Returns the number of cells
    (written or already present)."""
    if "loss" not in cfg.bounds:
        return 0
    y = prep.target.train.y.to(prep.z_train.device)
    for eps in cfg.eps:
        for d in defenses:
            row = identity(BOUND, "feature", eps, d)
            if store.has(row["cell_id"]):
                continue
            t0 = time.perf_counter()
            n_p = ThreatModel(eps=eps, domain=prep.target.domain).n_poison(len(y))
            res = shared_minimax(
                memo,
                prep.z_train,
                y,
                prep.target.train.n_classes,
                cfg.victim.weight_decay,
                n_p,
                d,
                eps,
                prep.clean_head,
                steps=BOUND.params["steps"],
                lr=BOUND.params["lr"],
            )
            row.update(
                n_poison=n_p,
                bound_loss=res.bound_loss,
                bound_error=res.bound_error,
                train_loss=res.clean_loss,  # the floor: the unpoisoned head's clean-train loss
                seconds=time.perf_counter() - t0,
            )
            store.append(row)
    return len(cfg.eps) * len(defenses)


def dpa_rows(prep, cfg: Config, out_dir: Path) -> None:
    """DPA certified accuracy per radius for each ``dpa_k``, into ``OUT/certified.csv``."""
    if "dpa" not in cfg.bounds or prep.split_seed != cfg.split_seeds[0]:
        return  # one certificate per (setting, extractor): on the first data split
    train = prep.target.train
    n = len(train)
    y_test = prep.target.test.y
    rows = []
    for k in cfg.dpa_k:
        check_k(k, n)
        parts = partition(train.x, train.y, k)
        counts = votes(
            prep.z_train,
            train.y.to(prep.z_train.device),
            parts,
            k,
            train.n_classes,
            VictimConfig(**cfg.victim.model_dump()),
            prep.z_test,
        )
        pred, radius = certify(counts)
        radii = list(range(0, k // 2 + 2))
        for r, acc in zip(radii, certified_accuracy(pred, radius, y_test, radii), strict=True):
            rows.append(
                {
                    "setting": prep.setting.name,
                    "extractor": prep.ext_cfg.label,
                    "k": k,
                    "radius": r,
                    "certified_acc": acc,
                }
            )
    write_certified(out_dir / "certified.csv", rows)


def write_certified(path: Path, rows: list[dict[str, Any]]) -> None:
    """Merge ``rows`` into ``path`` (rows of the same setting/extractor/k are replaced)."""
    done = {(r["setting"], r["extractor"], str(r["k"])) for r in rows}
    old: list[dict[str, Any]] = []
    if path.exists():
        with path.open(newline="") as fh:
            old = [
                r
                for r in csv.DictReader(fh)
                if (r["setting"], r["extractor"], str(r["k"])) not in done
            ]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CERTIFIED_COLUMNS)
    writer.writeheader()
    for r in [*old, *rows]:
        writer.writerow({c: r[c] for c in CERTIFIED_COLUMNS})
    atomic_write_text(path, buf.getvalue())
