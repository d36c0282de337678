"""``load_dataset``: a registered loader by name, rendered at a ``@CxHxW`` shape if asked."""

from __future__ import annotations

from pathlib import Path

from .base import DatasetSplits, default_data_root, get_loader, split_shape_suffix
from .reshape import reshape_splits


def load_dataset(
    spec: str, root: str | Path | None = None, seed: int = 0, download: bool = True
) -> DatasetSplits:
    """Load a dataset by spec: ``digits``, ``cifar10``, ``imagefolder:PATH``, ``npz:PATH``.

    A trailing ``@CxHxW`` renders the dataset at that image shape (see ``reshape.py``).
    """
    spec, shape = split_shape_suffix(spec)
    if shape is not None:
        return reshape_splits(load_dataset(spec, root, seed, download), shape)
    name, _, arg = spec.partition(":")
    loader = get_loader(name, spec)
    root_path = Path(root) if root is not None else default_data_root()
    return loader(arg or None, root=root_path, seed=seed, download=download)
