"""``SPEC@CxHxW``: render any dataset at another image shape, for cross-dataset transfer.

Transfer pairs such as CIFAR-10 -> SVHN or natural photos -> digits need the target images at
the extractor's input shape. The suffix resizes (bilinear, antialiased when shrinking) and
maps channels (grey -> RGB by replication, RGB -> grey by luminance); normalisation
statistics are re-measured on the new training split.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..domain import InputDomain, channel_stats
from .base import DatasetSplits, ImageDataset


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
