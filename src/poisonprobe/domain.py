"""The input domain of a dataset: shape, valid pixel box and normalisation.

It travels with the data so that every attack can respect the countermeasure
"poisons must be valid inputs" without knowing where the data came from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .errors import DataError


@dataclass(frozen=True)
class InputDomain:
    """Images live in ``[low, high]`` with shape ``(channels, height, width)``.

    ``mean``/``std`` is the per-channel normalisation the extractor applies
    *inside* its forward pass, so attacks always work in raw pixel space.
    """

    channels: int
    height: int
    width: int
    low: float = 0.0
    high: float = 1.0
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Clip images into the valid pixel box."""
        return x.clamp(self.low, self.high)

    def contains(self, x: torch.Tensor, tol: float = 1e-6) -> torch.Tensor:
        """Per-image boolean: is every pixel inside the box (and finite)?"""
        flat = x.reshape(x.shape[0], -1)
        finite = torch.isfinite(flat).all(dim=1)
        inside = ((flat >= self.low - tol) & (flat <= self.high + tol)).all(dim=1)
        return finite & inside

    def check(self, x: torch.Tensor, what: str = "images") -> None:
        """Raise a one-line DataError if ``x`` does not fit this domain."""
        if x.ndim != 4 or tuple(x.shape[1:]) != self.shape:
            raise DataError(
                f"{what} have shape {tuple(x.shape)}, expected (N, {self.channels}, "
                f"{self.height}, {self.width}); resize/convert them to the dataset's domain"
            )
        if not torch.isfinite(x).all():
            raise DataError(f"{what} contain NaN or inf pixels; clean or drop those images")

    def to_dict(self) -> dict:
        return {
            "channels": self.channels,
            "height": self.height,
            "width": self.width,
            "low": self.low,
            "high": self.high,
            "mean": list(self.mean),
            "std": list(self.std),
        }


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std in [0, 1] units of (N, C, H, W) images, rounded to 4 places.

    uint8 images (read as /255) go through exact 256-bin histograms, fast and without a
    float64 copy of the dataset; float images accumulate in float64 chunk by chunk. The
    std has a floor so that constant images cannot make normalisation divide by zero.
    """
    means, stds = [], []
    for c in range(x.shape[1]):
        plane = x[:, c].reshape(-1)
        if x.dtype == torch.uint8:
            hist = torch.bincount(plane, minlength=256).double()
            levels = torch.arange(256, dtype=torch.float64) / 255.0
            n = hist.sum()
            mean = (hist * levels).sum() / n
            var = (hist * (levels - mean) ** 2).sum() / n
        else:
            total = torch.zeros((), dtype=torch.float64)
            total_sq = torch.zeros((), dtype=torch.float64)
            for chunk in torch.split(plane, 1 << 22):
                d = chunk.double()
                total += d.sum()
                total_sq += (d * d).sum()
            mean = total / plane.numel()
            var = (total_sq / plane.numel() - mean**2).clamp_min(0)
        means.append(round(float(mean), 4))
        stds.append(round(max(math.sqrt(float(var)), 1e-3), 4))
    return tuple(means), tuple(stds)
