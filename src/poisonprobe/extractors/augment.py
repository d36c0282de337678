"""Batched SSL augmentations as tensor ops, so tiny images (8x8 digits) never round-trip
through PIL and the whole batch is augmented on the training device in one go.

Every random draw comes from an explicit ``torch.Generator``: the same seed gives the same
views on CPU, which is what makes pre-training reproducible.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from ..domain import InputDomain


@dataclass(frozen=True)
class AugmentConfig:
    """Strength of each augmentation; ``hflip`` is decided by the data (never for digits)."""

    crop_scale: tuple[float, float] = (0.5, 1.0)  # area fraction kept by the random crop
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # aspect ratio range of the crop
    rotation_deg: float = 10.0
    brightness: float = 0.4  # multiply by U(1 - b, 1 + b)
    contrast: float = 0.4  # scale deviations from the image mean by U(1 - c, 1 + c)
    noise_std: float = 0.05  # additive gaussian noise, in pixel units
    hflip: bool = False

    @classmethod
    def for_domain(cls, domain: InputDomain, **overrides) -> AugmentConfig:
        """Defaults for a domain: flips only for colour (natural) images, since a mirrored
        digit is a different (or no) digit."""
        overrides.setdefault("hflip", domain.channels == 3)
        return cls(**overrides)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _uniform(n: int, low: float, high: float, gen: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=device) * (high - low) + low


def random_affine(
    x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator, padding_mode: str
) -> torch.Tensor:
    """Random resized crop + small rotation (+ optional flip) as one ``grid_sample`` call."""
    n, device = x.shape[0], x.device
    area = _uniform(n, cfg.crop_scale[0], cfg.crop_scale[1], gen, device)
    log_r = _uniform(n, math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]), gen, device)
    ratio = torch.exp(log_r)
    # crop side lengths as fractions of the image side (<= 1 so the crop stays inside)
    sx = torch.sqrt(area * ratio).clamp(max=1.0)
    sy = torch.sqrt(area / ratio).clamp(max=1.0)
    tx = (2 * torch.rand(n, generator=gen, device=device) - 1) * (1 - sx)
    ty = (2 * torch.rand(n, generator=gen, device=device) - 1) * (1 - sy)
    angle = (2 * torch.rand(n, generator=gen, device=device) - 1) * math.radians(cfg.rotation_deg)
    cos, sin = torch.cos(angle), torch.sin(angle)
    flip = torch.ones(n, device=device)
    if cfg.hflip:
        flip = torch.where(torch.rand(n, generator=gen, device=device) < 0.5, -flip, flip)
    theta = torch.stack(
        [
            torch.stack([sx * cos * flip, -sy * sin, tx], dim=1),
            torch.stack([sx * sin * flip, sy * cos, ty], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


def color_jitter(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Brightness and contrast jitter per image (grey and RGB alike)."""
    n, device = x.shape[0], x.device
    if cfg.brightness > 0:
        b = _uniform(n, 1 - cfg.brightness, 1 + cfg.brightness, gen, device)
        x = x * b.view(n, 1, 1, 1)
    if cfg.contrast > 0:
        c = _uniform(n, 1 - cfg.contrast, 1 + cfg.contrast, gen, device)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * c.view(n, 1, 1, 1) + mean
    return x


class Augment:
    """``augment(x) -> view``: one random view per image, clipped back into the pixel box."""

    def __init__(self, domain: InputDomain, cfg: AugmentConfig | None = None) -> None:
        self.domain = domain
        self.cfg = cfg or AugmentConfig.for_domain(domain)
        # digits have a black background, so zeros are the honest fill; natural images reflect
        self.padding_mode = "zeros" if domain.channels == 1 else "reflection"

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        x = random_affine(x, self.cfg, gen, self.padding_mode)
        x = color_jitter(x, self.cfg, gen)
        if self.cfg.noise_std > 0:
            noise = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
            x = x + self.cfg.noise_std * (self.domain.high - self.domain.low) * noise
        return x.clamp(self.domain.low, self.domain.high)
