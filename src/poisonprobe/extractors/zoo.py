"""Extractors we did not train: precomputed embeddings (pass-through) and, in ``ZOO``,
standard backbones from torchvision, timm, open_clip and Hugging Face transformers."""

from __future__ import annotations

from torch import nn

from ..domain import InputDomain
from .archs import Extractor

PASSTHROUGH_ARCH = "features"


def passthrough_extractor(domain: InputDomain) -> Extractor:
    """The "extractor" of precomputed embeddings stored as (N, d, 1, 1): it flattens them.

    The domain's normalisation is the identity (mean 0, std 1), so features are the file's.
    """
    return Extractor(nn.Flatten(), domain, PASSTHROUGH_ARCH, domain.channels).eval()
