"""Feature extractors: architectures, SSL pre-training, safe checkpoints, feature cache."""

from .archs import ARCHS, Extractor, SmallCNN, build_extractor
from .augment import Augment, AugmentConfig
from .cache import FeatureCache, encode_batched, extractor_digest
from .checkpoints import checkpoint_sha256, load_extractor, read_checkpoint, save_extractor
from .pretrain import (
    METHODS,
    PretrainConfig,
    default_cache_dir,
    get_or_pretrain,
    pretrain,
)
from .resnets import cifar_resnet

__all__ = [
    "ARCHS",
    "METHODS",
    "Augment",
    "AugmentConfig",
    "Extractor",
    "FeatureCache",
    "PretrainConfig",
    "SmallCNN",
    "build_extractor",
    "checkpoint_sha256",
    "cifar_resnet",
    "default_cache_dir",
    "encode_batched",
    "extractor_digest",
    "get_or_pretrain",
    "load_extractor",
    "pretrain",
    "read_checkpoint",
    "save_extractor",
]
