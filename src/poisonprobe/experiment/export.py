"""Save each attack's poisons with the run, and export a poisoned training set.

Poisons are stored as plain tensor dicts (``torch.save``; read back with
``weights_only=True``) so any training code can rebuild ``D_c ∪ D_p``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .._io import atomic_save, atomic_write_bytes_via
from ..attacks import PoisonSet
from ..data.base import ImageDataset
from ..errors import ConfigError, ResourceError, error_gist
from .results import atomic_write_text, replicate


def poison_file(out_dir: Path, row: Mapping[str, Any]) -> Path:
    """Where the poisons of a results row's attack run live (one file serves every defence).

    Replicate axes appear in the name when not 0; each config keeps its poisons in its own
    ``poisons/<config_id>/`` folder (a folder may hold several configs' rows, see ``--add``).
    """
    name = (
        f"{row['setting']}__{row['extractor']}__{row['attack']}__{row['regime']}"
        f"__eps{float(row['eps']):g}__seed{int(row['seed'])}"
    )
    for column, tag in (("extractor_seed", "xs"), ("split_seed", "ss")):
        value = replicate(row.get(column))
        if value:
            name += f"__{tag}{value}"
    config = row.get("config_id")
    folder = Path(out_dir) / "poisons" / (config if isinstance(config, str) else "")
    return folder / f"{name}.pt"


def save_poisons(path: Path, poison: PoisonSet) -> None:
    """Write the PoisonSet's tensors atomically."""
    payload = {"y": poison.y.cpu()}
    for key in ("x", "z", "replace_idx", "base_idx"):
        value = getattr(poison, key)
        if value is not None:
            payload[key] = value.detach().cpu()
    try:
        atomic_save(payload, path)
    except OSError as err:
        raise ResourceError(f"cannot save poisons to {path}: {err.strerror}") from None


def load_poisons(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ConfigError(
            f"no saved poisons at {path}; check --setting/--attack/--regime/--eps/--seed against "
            "results.csv (runs with save_poisons: false keep none)"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any damage (truncated, foreign, refused pickle): one line
        raise ConfigError(
            f"saved poisons {path} are unreadable ({error_gist(err)}); delete the file and rerun "
            "`poisonprobe run` to recreate them"
        ) from None
    if not isinstance(payload, dict) or not torch.is_tensor(payload.get("y")):
        raise ConfigError(f"saved poisons {path} hold no labels 'y'; delete the file and rerun")
    return payload


def poisoned_training_set(
    clean_x: torch.Tensor, clean_y: torch.Tensor, poisons: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x, y, is_poison)`` of the victim's training set: injected or replaced poisons."""
    if "x" not in poisons:
        raise ConfigError(
            "these poisons are features only (a feature-space upper bound such as ft-ideal); "
            "export an attack that produces images, e.g. ft-match or gc-input"
        )
    px, py = poisons["x"], poisons["y"].long()
    if "replace_idx" in poisons:
        idx = poisons["replace_idx"].long()
        x, y = clean_x.clone(), clean_y.clone()
        x[idx], y[idx] = px, py
        flag = torch.zeros(len(y), dtype=torch.bool)
        flag[idx] = True
        return x, y, flag
    flag = torch.cat(
        [torch.zeros(len(clean_y), dtype=torch.bool), torch.ones(len(py), dtype=torch.bool)]
    )
    return torch.cat([clean_x, px]), torch.cat([clean_y, py]), flag


CELL_KEYS = ("config_id", "setting", "extractor", "regime", "seed", "extractor_seed", "split_seed")
"""What tells the saved poisons of one (attack, eps) apart (defences share the poisons)."""


def select_cell(df: pd.DataFrame, attack: str, eps: float, out: Path, **chosen: Any) -> pd.Series:
    """The one results row naming the cell to export; ``chosen`` fixes ``CELL_KEYS``.

    Several matching cells is a one-line error listing the choices: picking the first would
    silently export, say, ``unconstrained`` poisons whose pixels leave the image box.
    """
    rows = df[(df["attack"] == attack) & ((df["eps"] - eps).abs() < 1e-9)]
    for key, value in chosen.items():
        if value is not None and key in rows:
            column = rows[key]
            if key in ("extractor_seed", "split_seed"):
                column = column.map(replicate)  # older files: empty means 0
            rows = rows[column == value]
    if rows.empty:
        raise ConfigError(
            f"no results for attack={attack} eps={eps:g}"
            + "".join(f" {k}={v}" for k, v in chosen.items() if v is not None)
            + f" in {out}; attacks there: {', '.join(sorted(map(str, df['attack'].unique())))}"
        )
    options = []
    for key in CELL_KEYS:
        if key not in rows:
            continue
        values = sorted(map(str, rows[key].unique()))
        if len(values) > 1:
            options.append(f"--{key.replace('_', '-')} ({', '.join(values)})")
    if options:
        raise ConfigError(
            f"attack={attack} eps={eps:g} matches several cells in {out}; choose with "
            + " and ".join(options)
        )
    return rows.iloc[0]


def out_of_box(x: torch.Tensor, low: float = 0.0, high: float = 1.0) -> int:
    """How many images have a pixel outside ``[low, high]``."""
    if x.numel() == 0:
        return 0
    flat = x.reshape(len(x), -1)
    return int(((flat < low) | (flat > high)).any(1).sum())


def write_npz(
    dest: Path,
    x: torch.Tensor,
    y: torch.Tensor,
    is_poison: torch.Tensor,
    classes: list[str],
    test: ImageDataset | None = None,
) -> Path:
    """An ``.npz`` that reads back as an ``npz:`` dataset: ``x_train`` (clean + poisons,
    pixels clipped to [0, 1] as any image file would), ``y_train``, ``is_poison`` (the mask),
    ``x_test``/``y_test`` (the clean test split), ``classes``, the clean data's ``mean``/
    ``std``; ``x_train_raw`` keeps unclipped pixels when some poisons leave the box."""
    arrays: dict[str, np.ndarray] = {
        "x_train": x.clamp(0, 1).numpy().astype(np.float32),
        "y_train": y.numpy(),
        "is_poison": is_poison.numpy(),
        "classes": np.array(classes),
    }
    if out_of_box(x):
        arrays["x_train_raw"] = x.numpy().astype(np.float32)
    if test is not None:
        arrays["x_test"] = test.x.numpy().astype(np.float32)
        arrays["y_test"] = test.y.numpy()
        arrays["mean"] = np.array(test.domain.mean, dtype=np.float64)
        arrays["std"] = np.array(test.domain.std, dtype=np.float64)
    try:
        atomic_write_bytes_via(dest, lambda fh: np.savez_compressed(fh, **arrays))
    except OSError as err:
        raise ResourceError(f"cannot write {dest}: {err.strerror}") from None
    return dest


MANIFEST_COLUMNS = ("file", "split", "index", "label", "class", "is_poison")


def write_imagefolder(
    dest: Path,
    x: torch.Tensor,
    y: torch.Tensor,
    is_poison: torch.Tensor,
    classes: list[str],
    test: ImageDataset | None = None,
) -> Path:
    """PNGs ``dest/train/<class>/<index>[_poison].png`` (and ``dest/test/...``; pixels
    clipped to [0, 1], 8-bit), readable as ``imagefolder:dest``, plus ``dest/manifest.csv``:
    one row per file with its split, index, label, class name and poison flag."""
    import csv
    import io

    manifest = io.StringIO()
    writer = csv.writer(manifest)
    writer.writerow(MANIFEST_COLUMNS)
    splits = [("train", x, y, is_poison)]
    if test is not None:
        splits.append(("test", test.x, test.y, torch.zeros(len(test.y), dtype=torch.bool)))
    for split, xs, ys, flags in splits:
        for i, rel in enumerate(_write_pngs(dest / split, xs, ys, flags, classes)):
            k = int(ys[i])
            writer.writerow((f"{split}/{rel}", split, i, k, classes[k], int(bool(flags[i]))))
    atomic_write_text(dest / "manifest.csv", manifest.getvalue())
    return dest


def _write_pngs(
    root: Path, x: torch.Tensor, y: torch.Tensor, is_poison: torch.Tensor, classes: list[str]
) -> list[str]:
    from PIL import Image

    imgs = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    written = []
    for i in range(len(y)):
        folder = root / classes[int(y[i])]
        folder.mkdir(parents=True, exist_ok=True)
        arr = imgs[i].numpy()
        img = (
            Image.fromarray(arr[0])
            if arr.shape[0] == 1
            else Image.fromarray(arr.transpose(1, 2, 0))
        )
        name = f"{i:06d}{'_poison' if is_poison[i] else ''}.png"
        img.save(folder / name)
        written.append(f"{classes[int(y[i])]}/{name}")
    return written
