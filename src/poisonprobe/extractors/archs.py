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
    """A small conv net for 8x8..32x32 inputs; ReLU + average pooling -> non-negative features."""

    def __init__(self, in_channels: int = 1, width: int = 64, feature_dim: int = 256) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        self.body = nn.Sequential(
            *block(in_channels, width),
            *block(width, width),
            nn.MaxPool2d(2),
            *block(width, 2 * width),
            *block(2 * width, feature_dim),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.feature_dim = feature_dim

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


def build_backbone(arch: str, in_channels: int) -> tuple[nn.Module, int]:
    """Backbone and its feature dimension for an architecture name."""
    if arch == "smallcnn":
        net = SmallCNN(in_channels)
        return net, net.feature_dim
    if arch in ("resnet18", "resnet50"):
        from .resnets import cifar_resnet

        return cifar_resnet(arch, in_channels)
    raise ConfigError(f"unknown extractor arch {arch!r}; choose one of: {', '.join(ARCHS)}")


ARCHS = ("smallcnn", "resnet18", "resnet50")


def build_extractor(arch: str, domain: InputDomain, seed: int = 0) -> Extractor:
    """A randomly initialised extractor (deterministic for a seed)."""
    torch.manual_seed(seed)
    backbone, dim = build_backbone(arch, domain.channels)
    return Extractor(backbone, domain, arch, dim)
