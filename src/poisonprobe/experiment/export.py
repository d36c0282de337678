"""Save each attack's poisons with the run, and export a poisoned training set.

Poisons are stored as plain tensor dicts (``torch.save``; read back with
``weights_only=True``) so any training code can rebuild ``D_c ∪ D_p``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..attacks import PoisonSet
from ..errors import ConfigError, ResourceError, error_gist
from .results import replicate


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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
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


def write_npz(
    dest: Path, x: torch.Tensor, y: torch.Tensor, is_poison: torch.Tensor, classes: list[str]
) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        dest,
        x_train=x.numpy(),
        y_train=y.numpy(),
        is_poison=is_poison.numpy(),
        classes=np.array(classes),
    )
    return dest


def write_imagefolder(
    dest: Path, x: torch.Tensor, y: torch.Tensor, is_poison: torch.Tensor, classes: list[str]
) -> Path:
    """PNG files ``dest/<class>/<index>[_poison].png`` (pixels clipped to [0, 1], 8-bit)."""
    from PIL import Image

    imgs = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    for i in range(len(y)):
        folder = dest / classes[int(y[i])]
        folder.mkdir(parents=True, exist_ok=True)
        arr = imgs[i].numpy()
        img = (
            Image.fromarray(arr[0])
            if arr.shape[0] == 1
            else Image.fromarray(arr.transpose(1, 2, 0))
        )
        img.save(folder / f"{i:06d}{'_poison' if is_poison[i] else ''}.png")
    return dest
