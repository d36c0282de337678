"""Datasets by name; each carries its input domain (box, normalisation, shape)."""

from . import digits, folder, syndigits, torchvision_sets  # noqa: F401  (registration)
from .base import DatasetSplits, ImageDataset, dataset_names, default_data_root, register_dataset
from .load import load_dataset
from .loaders import features  # noqa: F401  (registration)

__all__ = [
    "DatasetSplits",
    "ImageDataset",
    "dataset_names",
    "default_data_root",
    "load_dataset",
    "register_dataset",
]
