"""Feature extractors: architectures, SSL pre-training, safe checkpoints, feature cache."""

from .archs import ARCHS, Extractor, build_extractor

__all__ = ["ARCHS", "Extractor", "build_extractor"]
