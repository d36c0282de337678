"""scikit-learn's bundled handwritten digits: the offline default target domain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..domain import InputDomain
from .base import DatasetSplits, ImageDataset, register_dataset

DIGITS_DOMAIN = InputDomain(channels=1, height=8, width=8, mean=(0.3,), std=(0.4,))
DIGIT_CLASSES = [str(i) for i in range(10)]
TEST_FRACTION = 0.25


def stratified_split(
    y: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified train/test indices (one split per split seed, whatever the
    attack seed, so accuracies compare across attack seeds)."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    train, test = train_test_split(idx, test_size=test_fraction, stratify=y, random_state=seed)
    return np.sort(train), np.sort(test)


@register_dataset(
    "digits", "scikit-learn handwritten digits, 8x8 grey, 1797 images (offline)", resplits=True
)
def load_digits_splits(arg: str | None, root: Path, seed: int, download: bool) -> DatasetSplits:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(bunch.target, dtype=torch.int64)
    train, test = stratified_split(bunch.target, TEST_FRACTION, seed)
    tr, te = torch.from_numpy(train), torch.from_numpy(test)
    return DatasetSplits(
        train=ImageDataset(x[tr], y[tr], DIGIT_CLASSES, DIGITS_DOMAIN, "digits"),
        test=ImageDataset(x[te], y[te], DIGIT_CLASSES, DIGITS_DOMAIN, "digits"),
    )
