"""The in-memory dataset every stage shares, and the registry of dataset loaders."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .._io import default_cache_dir
from ..domain import InputDomain
from ..errors import DataError

CHECK_CHUNK = 4096  # images per slice when validating pixels


_SHAPE = re.compile(r"^(\d+)x(\d+)x(\d+)$")
MAX_SIDE = 1024


def split_shape_suffix(spec: str) -> tuple[str, tuple[int, int, int] | None]:
    """``"digits@3x32x32"`` -> ``("digits", (3, 32, 32))``; no suffix -> ``(spec, None)``."""
    base, at, tail = spec.rpartition("@")
    if not at:
        return spec, None
    m = _SHAPE.match(tail)
    if m is None:
        raise DataError(
            f"dataset spec {spec!r}: shape suffix {tail!r} must read CxHxW, e.g. {base}@3x32x32"
        )
    c, h, w = (int(g) for g in m.groups())
    if c not in (1, 3) or not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
        raise DataError(
            f"dataset spec {spec!r}: shape {tail} needs 1 or 3 channels and sides in 1..{MAX_SIDE}"
        )
    return base, (c, h, w)


def check_images(domain: InputDomain, x: torch.Tensor, what: str) -> None:
    """``domain.check(x, what)``, slice by slice: same errors, bounded memory.

    ``torch.isfinite`` on a float tensor makes an ``abs`` copy and two boolean masks, so one
    call on 50k CIFAR images (586 MB) briefly needed another ~1 GB, the largest transient of a
    full-CIFAR run's loading.
    """
    shaped = x.ndim == 4 and tuple(x.shape[1:]) == domain.shape
    if not shaped or x.shape[0] <= CHECK_CHUNK:  # wrong shape: the message names x's shape
        domain.check(x, what)
        return
    for chunk in x.split(CHECK_CHUNK):
        domain.check(chunk, what)


def images_in_box(domain: InputDomain, x: torch.Tensor) -> torch.Tensor:
    """``domain.contains(x)`` slice by slice (same per-image answer, bounded temporaries)."""
    if x.shape[0] <= CHECK_CHUNK:
        return domain.contains(x)
    return torch.cat([domain.contains(chunk) for chunk in x.split(CHECK_CHUNK)])


@dataclass
class ImageDataset:
    """Images ``x`` (N, C, H, W) float32 in the domain's box, labels ``y`` (N,) int64."""

    x: torch.Tensor
    y: torch.Tensor
    classes: list[str]
    domain: InputDomain
    name: str
    _fingerprint: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.x.shape[0] == 0:
            raise DataError(f"dataset {self.name!r} is empty; check its path or split")
        if self.x.shape[0] != self.y.shape[0]:
            raise DataError(
                f"dataset {self.name!r} has {self.x.shape[0]} images but {self.y.shape[0]} labels"
            )
        check_images(self.domain, self.x, f"images of dataset {self.name!r}")
        if self.y.min() < 0 or self.y.max() >= len(self.classes):
            raise DataError(
                f"dataset {self.name!r} has labels outside 0..{len(self.classes) - 1}; "
                "relabel them to class indices"
            )

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def fingerprint(self) -> str:
        """Content hash of images and labels, used to key the feature cache."""
        if self._fingerprint is None:
            h = hashlib.sha256()  # hashes the buffers in place: tobytes() copied the images
            h.update(self.x.contiguous().numpy().data)
            h.update(self.y.contiguous().numpy().data)
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def subset(self, idx: torch.Tensor, name: str | None = None) -> ImageDataset:
        return ImageDataset(self.x[idx], self.y[idx], self.classes, self.domain, name or self.name)


@dataclass
class DatasetSplits:
    """Train and test split of one dataset (same classes and domain)."""

    train: ImageDataset
    test: ImageDataset

    @property
    def domain(self) -> InputDomain:
        return self.train.domain


Loader = Callable[..., DatasetSplits]
_REGISTRY: dict[str, tuple[Loader, str]] = {}
_RESPLITS: set[str] = set()


def register_dataset(
    name: str, description: str, resplits: bool = False
) -> Callable[[Loader], Loader]:
    """Register ``loader(arg: str | None, root: Path, seed: int, download: bool)``.

    ``seed`` is the split seed (config ``split_seeds``); ``resplits=True`` for loaders that
    draw their train/test split from it, the others keep one fixed split and ignore it.
    """

    def deco(fn: Loader) -> Loader:
        _REGISTRY[name] = (fn, description)
        if resplits:
            _RESPLITS.add(name)
        return fn

    return deco


def resplits(spec: str) -> bool:
    """Does this dataset spec draw its train/test split from the split seed?"""
    return split_shape_suffix(spec)[0].partition(":")[0] in _RESPLITS


def dataset_names() -> dict[str, str]:
    """Registered dataset names and their one-line descriptions."""
    return {name: desc for name, (_, desc) in sorted(_REGISTRY.items())}


def default_data_root() -> Path:
    """``$POISONPROBE_DATA``, else ``$XDG_CACHE_HOME/poisonprobe/data``."""
    return Path(os.environ.get("POISONPROBE_DATA") or default_cache_dir() / "data")


def get_loader(name: str, spec: str) -> Loader:
    """The loader registered as ``name`` (``spec``: the full spec, for the error message)."""
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise DataError(f"unknown dataset {spec!r}; choose one of: {known}")
    return _REGISTRY[name][0]


def class_names(names: object, n_classes: int, path: Path, max_classes: int) -> list[str]:
    """Class names of a labelled array file: its ``classes`` array (one name per label at
    least), else ``0..K-1`` (K = largest label + 1, refused above ``max_classes``: such labels
    are ids, not class indices)."""
    if names is not None:
        import numpy as np

        classes = [str(s) for s in np.asarray(names).reshape(-1).tolist()]
        if len(classes) < n_classes:
            raise DataError(
                f"{path}: labels go up to {n_classes - 1} but classes has {len(classes)} names; "
                "give one name per class"
            )
        return classes
    if n_classes > max_classes:
        raise DataError(
            f"{path}: labels go up to {n_classes - 1}; use class indices 0..K-1 "
            f"(at most {max_classes} classes without a classes array)"
        )
    return [str(i) for i in range(n_classes)]
