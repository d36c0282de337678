"""Feature-extractor architectures. Normalisation lives inside the model, so every
attack works in raw pixel space ``[low, high]`` of the dataset's domain."""

from __future__ import annotations

import torch
from torch import nn

from ..domain import InputDomain
from ..errors import ConfigError


class Normalize(nn.Module):
    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], channels: int) -> None:
        super().__init__()
        m = torch.tensor(mean, dtype=torch.float32).expand(channels).clone()
        s = torch.tensor(std, dtype=torch.float32).expand(channels).clone()
        self.register_buffer("mean", m.view(1, channels, 1, 1))
        self.register_buffer("std", s.view(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class SmallCNN(nn.Module):
    """A small conv net for 8x8..32x32 inputs; ReLU + average pooling -> non-negative features.

    Kept small on purpose: the default run pre-trains it on 2 CPU cores in well under a
    minute, and every input-space attack backpropagates through it many times. ``grid`` > 1
    average-pools onto a ``grid x grid`` map instead of one global mean, which keeps the
    coarse *where* of a stroke (what tells a 6 from a 9 on 8x8 digits) and lifts the linear
    probe by ~1 point; ``feature_dim`` is then ``channels * grid**2``. Defaults (width 16,
    2x2 grid, 256 features) won a sweep of width, grid and feature_dim against
    probe accuracy and CPU seconds.
    """

    def __init__(
        self,
        in_channels: int = 1,
        width: int = 16,
        feature_dim: int = 256,
        grid: int = 2,
    ) -> None:
        super().__init__()
        if feature_dim % (grid * grid):
            raise ConfigError(f"smallcnn: feature_dim={feature_dim} is not a multiple of grid^2")
        out = feature_dim // (grid * grid)

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        self.body = nn.Sequential(
            *block(in_channels, width),
            *block(width, width),
            nn.MaxPool2d(2),
            *block(width, 2 * width),
            *block(2 * width, out),
            nn.AdaptiveAvgPool2d(grid),
            nn.Flatten(),
        )
        self.feature_dim = feature_dim
        self.config = {
            "in_channels": in_channels,
            "width": width,
            "feature_dim": feature_dim,
            "grid": grid,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Extractor(nn.Module):
    """``normalize -> backbone``; ``feature_dim`` tells the head's input size."""

    def __init__(self, backbone: nn.Module, domain: InputDomain, arch: str, feature_dim: int):
        super().__init__()
        self.normalize = Normalize(domain.mean, domain.std, domain.channels)
        self.backbone = backbone
        self.arch = arch
        self.feature_dim = feature_dim
        self.domain = domain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalize(x))


def build_backbone(arch: str, in_channels: int, **arch_kwargs) -> tuple[nn.Module, int]:
    """Backbone and its feature dimension for an architecture name.

    ``arch_kwargs`` (e.g. ``width`` for ``smallcnn``) are recorded in our checkpoints so a
    tuned architecture reloads exactly; the ResNets take none.
    """
    if arch == "smallcnn":
        net = SmallCNN(in_channels, **arch_kwargs)
        return net, net.feature_dim
    if arch in ("resnet18", "resnet50"):
        from .resnets import cifar_resnet

        if arch_kwargs:
            raise ConfigError(f"{arch} takes no options, got {sorted(arch_kwargs)}; drop them")
        return cifar_resnet(arch, in_channels)
    raise ConfigError(f"unknown extractor arch {arch!r}; choose one of: {', '.join(ARCHS)}")


ARCHS = ("smallcnn", "resnet18", "resnet50")


def arch_config(backbone: nn.Module) -> dict:
    """The constructor options of a backbone (what a checkpoint needs to rebuild it)."""
    cfg = dict(getattr(backbone, "config", {}))
    cfg.pop("in_channels", None)
    return cfg


def build_extractor(arch: str, domain: InputDomain, seed: int = 0, **arch_kwargs) -> Extractor:
    """A randomly initialised extractor (deterministic for a seed).

    Seeds a forked RNG, so building an extractor never changes the caller's random stream.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone, dim = build_backbone(arch, domain.channels, **arch_kwargs)
    return Extractor(backbone, domain, arch, dim)


def check_image_size(extractor: Extractor) -> None:
    """Refuse images the network shrinks to nothing, before any pre-training or encoding (a
    traceback from a pooling layer minutes later would not say what to change)."""
    domain = extractor.domain
    device = next(extractor.parameters()).device
    probe = torch.full((2, domain.channels, domain.height, domain.width), domain.low)
    probe = probe.to(device)
    was_training = extractor.training
    extractor.eval()
    try:
        with torch.no_grad():
            extractor(probe)
    except RuntimeError as err:
        raise ConfigError(
            f"extractor {extractor.arch!r} cannot take {domain.height}×{domain.width} images "
            f"({str(err).splitlines()[0][:120]}); use larger images, e.g. render the dataset "
            "with SPEC@CxHxW (digits@1x32x32)"
        ) from None
    finally:
        extractor.train(was_training)
