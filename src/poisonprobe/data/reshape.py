"""``SPEC@CxHxW``: render any dataset at another image shape, for cross-dataset transfer.

Transfer pairs such as CIFAR-10 -> SVHN or natural photos -> digits need the target images at
the extractor's input shape. The suffix resizes (bilinear, antialiased when shrinking) and
maps channels (grey -> RGB by replication, RGB -> grey by luminance); normalisation
statistics are re-measured on the new training split.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F

from ..domain import InputDomain
from ..errors import DataError
from .base import DatasetSplits, ImageDataset

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


def _convert(x: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    c, h, w = shape
    out = []
    for chunk in torch.split(x, 4096):
        if chunk.shape[2:] != (h, w):
            shrink = h < chunk.shape[2] or w < chunk.shape[3]
            chunk = F.interpolate(
                chunk, size=(h, w), mode="bilinear", align_corners=False, antialias=shrink
            ).clamp_(0.0, 1.0)
        if chunk.shape[1] != c:
            if c == 3:
                chunk = chunk.expand(-1, 3, -1, -1)
            else:
                lum = torch.tensor([0.299, 0.587, 0.114], dtype=chunk.dtype).view(1, 3, 1, 1)
                chunk = (chunk * lum).sum(1, keepdim=True)
        out.append(chunk.contiguous())
    return torch.cat(out)


def reshape_splits(data: DatasetSplits, shape: tuple[int, int, int]) -> DatasetSplits:
    """Both splits at ``shape``; the domain's mean/std are measured on the new train split."""
    from .folder import channel_stats

    if data.domain.shape == shape:
        return data
    x_train, x_test = _convert(data.train.x, shape), _convert(data.test.x, shape)
    mean, std = channel_stats(x_train)
    c, h, w = shape
    domain = InputDomain(channels=c, height=h, width=w, mean=mean, std=std)
    tag = f"@{c}x{h}x{w}"
    return DatasetSplits(
        train=ImageDataset(
            x_train, data.train.y, data.train.classes, domain, data.train.name + tag
        ),
        test=ImageDataset(x_test, data.test.y, data.test.classes, domain, data.test.name + tag),
    )
