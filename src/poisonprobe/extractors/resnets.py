"""torchvision ResNets with the CIFAR stem (3x3 stride-1 conv, no max-pool).

Built from ``torchvision.models`` so that a plain torchvision state dict of a CIFAR-stem
ResNet (the usual SSL checkpoint for 32x32 data) loads key for key; ``fc`` is removed, so
the backbone ends in ReLU + global average pooling and its features are non-negative.
"""

from __future__ import annotations

from torch import nn

from ..errors import ConfigError

FEATURE_DIMS = {"resnet18": 512, "resnet50": 2048}


def cifar_resnet(arch: str, in_channels: int = 3) -> tuple[nn.Module, int]:
    """A randomly initialised CIFAR-stem ResNet backbone and its feature dimension."""
    from torchvision import models

    if arch not in FEATURE_DIMS:
        raise ConfigError(f"unknown ResNet {arch!r}; choose one of: {', '.join(FEATURE_DIMS)}")
    net = getattr(models, arch)(weights=None)
    net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net, FEATURE_DIMS[arch]
