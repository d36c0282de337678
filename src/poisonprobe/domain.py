"""The input domain of a dataset: shape, valid pixel box and normalisation.

It travels with the data so that every attack can respect the countermeasure
"poisons must be valid inputs" without knowing where the data came from.
"""

from __future__ import annotations

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
