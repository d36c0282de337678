"""Exports read back as datasets, record which points are poisons, and never pick a cell
silently."""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import pytest
import torch

from poisonprobe.data import load_dataset
from poisonprobe.data.base import ImageDataset
from poisonprobe.data.digits import DIGITS_DOMAIN
from poisonprobe.errors import ConfigError
from poisonprobe.experiment.export import (
    poisoned_training_set,
    select_cell,
    write_imagefolder,
    write_npz,
)

CLASSES = ["zero", "one", "two"]


def _clean(n: int = 30, seed: int = 0) -> ImageDataset:
    g = torch.Generator().manual_seed(seed)
    x = (torch.randint(0, 17, (n, 1, 8, 8), generator=g) / 16).float()
    y = torch.arange(n) % 3
    return ImageDataset(x, y, CLASSES, DIGITS_DOMAIN, "toy")


def _poisoned(low: float = 0.0):
    train, test = _clean(), _clean(12, seed=1)
    px = torch.full((4, 1, 8, 8), 0.5)
    px[0, 0, 0, 0] = low
    poisons = {"x": px, "y": torch.tensor([2, 2, 1, 0])}
    x, y, flag = poisoned_training_set(train.x, train.y, poisons)
    return train, test, x, y, flag


def test_npz_export_reads_back_as_npz_dataset(tmp_path):
    train, test, x, y, flag = _poisoned()
    path = write_npz(tmp_path / "cell.npz", x, y, flag, CLASSES, test)
    back = load_dataset(f"npz:{path}")
    assert len(back.train) == 34 and len(back.test) == 12
    assert torch.allclose(back.train.x, x) and torch.equal(back.train.y, y)
    assert torch.equal(back.test.x, test.x) and torch.equal(back.test.y, test.y)
    assert back.train.classes == CLASSES
    assert back.train.domain.mean == DIGITS_DOMAIN.mean  # the clean data's statistics
    with np.load(path) as z:
        assert z["is_poison"].tolist() == [False] * 30 + [True] * 4
        assert "x_train_raw" not in z.files


def test_npz_export_clips_out_of_box_poisons_and_keeps_raw(tmp_path):
    train, test, x, y, flag = _poisoned(low=-0.73)
    path = write_npz(tmp_path / "cell.npz", x, y, flag, CLASSES, test)
    back = load_dataset(f"npz:{path}")  # readable although a poison left the box
    assert float(back.train.x.min()) == 0.0
    with np.load(path) as z:
        assert float(z["x_train_raw"].min()) == pytest.approx(-0.73)


def test_imagefolder_export_writes_manifest(tmp_path):
    train, test, x, y, flag = _poisoned()
    dest = write_imagefolder(tmp_path / "cell", x, y, flag, CLASSES, test)
    with open(dest / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    train_rows = [r for r in rows if r["split"] == "train"]
    assert len(train_rows) == 34 and sum(r["split"] == "test" for r in rows) == 12
    assert [int(r["is_poison"]) for r in train_rows] == flag.int().tolist()
    assert [int(r["label"]) for r in train_rows] == y.tolist()
    assert all(CLASSES[int(r["label"])] == r["class"] for r in rows)
    for r in rows:
        assert (dest / r["file"]).is_file()
        assert r["file"].endswith("_poison.png") == (r["is_poison"] == "1")
    back = load_dataset(f"imagefolder:{dest}")
    assert len(back.train) == 34 and len(back.test) == 12


def _results() -> pd.DataFrame:
    rows = []
    for regime in ("unconstrained", "box"):
        for seed in (0, 1):
            rows.append(
                {
                    "setting": "finetune",
                    "extractor": "smallcnn-simclr",
                    "attack": "tgda",
                    "regime": regime,
                    "eps": 0.1,
                    "seed": seed,
                    "defense": "none",
                }
            )
    return pd.DataFrame(rows)


def test_ambiguous_cell_lists_the_choices(tmp_path):
    with pytest.raises(ConfigError) as err:
        select_cell(_results(), "tgda", 0.1, tmp_path)
    msg = str(err.value)
    assert "--regime (box, unconstrained)" in msg and "--seed (0, 1)" in msg
    assert "--setting" not in msg and "\n" not in msg
    with pytest.raises(ConfigError, match="--seed"):
        select_cell(_results(), "tgda", 0.1, tmp_path, regime="box")
    row = select_cell(_results(), "tgda", 0.1, tmp_path, regime="box", seed=1)
    assert (row["regime"], row["seed"]) == ("box", 1)
