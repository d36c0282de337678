"""Prepare one (setting, split, extractor): load the data, obtain the frozen extractor
(checkpoint, shipped weights, SSL pre-training or a library model), encode the features once
and fit the clean head."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from ..data import DatasetSplits, load_dataset
from ..data.loaders.features import is_features_spec
from ..errors import ConfigError, DataError, PoisonProbeError, check_device
from ..extractors import Extractor
from ..extractors.archs import build_extractor, check_image_size
from ..extractors.checkpoints import checkpoint_sha256, load_extractor
from ..extractors.pretrain import get_or_pretrain
from ..extractors.zoo import build_zoo_extractor, check_zoo_weights, passthrough_extractor
from ..head.config import VictimConfig
from ..head.objective import LinearHead
from ..head.train import resolve_victim, train_head
from ..progress import Reporter
from .certify import check_bounds_data
from .config import Config, ExtractorConfig, SettingConfig
from .resources import check_memory

log = logging.getLogger("poisonprobe")


def resolve_device(name: str) -> torch.device:
    name = check_device(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PoisonProbeError(f"device {name!r} requested but CUDA is not available; use cpu/auto")
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        raise ConfigError(
            f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s); "
            "use cuda:0 or auto"
        )
    return torch.device(name)


def victim_config(cfg: Config) -> VictimConfig:
    """The victim recipe from the config's ``victim`` section (same field names)."""
    return VictimConfig(**cfg.victim.model_dump())


@dataclass
class Prepared:
    """One (setting, extractor): frozen extractor, cached features and the clean head."""

    setting: SettingConfig
    ext_cfg: ExtractorConfig
    extractor: Extractor
    target: DatasetSplits
    z_train: torch.Tensor
    z_test: torch.Tensor
    clean_head: LinearHead
    clean_acc: float
    checkpoint: str | None
    checkpoint_sha256: str | None
    seconds: dict[str, float] = field(default_factory=dict)
    clean_victim: VictimConfig | None = None  # the recipe as fitted on clean data (C picked)
    split_seed: int = 0

    def identity(self) -> dict[str, Any]:
        """What the cells of this (setting, split, extractor) depend on, for ``cell_id``."""
        extractor = self.checkpoint_sha256 or self.ext_cfg.model_dump(mode="json", exclude={"name"})
        return {
            "setting": {
                "name": self.setting.name,
                "source": self.setting.source,
                "target": self.setting.target,
                "data": [self.target.train.fingerprint(), self.target.test.fingerprint()],
                "split_seed": self.split_seed,
            },
            "extractor": extractor,
        }


def obtain_extractor(
    ext_cfg: ExtractorConfig,
    source: DatasetSplits,
    device: torch.device,
    reporter: Reporter,
) -> tuple[Extractor, str | None, str | None, dict[str, float]]:
    """Load the configured checkpoint, the shipped extractor for this recipe (unless
    ``pretrain: true``), or pre-train with SSL on the source (cached)."""
    if ext_cfg.is_zoo:
        return zoo_extractor(ext_cfg, source, device, reporter)
    t0 = time.perf_counter()
    if ext_cfg.checkpoint:
        ext = load_extractor(ext_cfg.checkpoint, ext_cfg.arch, source.domain)
        check_image_size(ext)
        path = ext_cfg.checkpoint
        hit = True
    else:
        check_image_size(build_extractor(ext_cfg.arch, source.domain))  # before pre-training
        ext, path, hit = get_or_pretrain(
            source.train,
            **ext_cfg.pretrain_args(),
            device=device,
            progress=reporter.track,
            shipped=not ext_cfg.pretrain,
        )
    seconds = {"pretrain": time.perf_counter() - t0}
    reporter.log(
        f"extractor {ext_cfg.label}: {'loaded' if hit else 'pre-trained'} "
        f"({seconds['pretrain']:.1f}s) {path or ''}"
    )
    ext = ext.to(device).eval()
    for p in ext.parameters():
        p.requires_grad_(False)
    sha = checkpoint_sha256(path) if path else None
    return ext, (str(path) if path else None), sha, seconds


def zoo_extractor(
    ext_cfg: ExtractorConfig, source: DatasetSplits, device: torch.device, reporter: Reporter
) -> tuple[Extractor, None, None, dict[str, float]]:
    """A library model (torchvision / timm / open_clip / HF), frozen as given: no pre-training."""
    t0 = time.perf_counter()
    ext = build_zoo_extractor(
        ext_cfg.arch, source.domain, ext_cfg.weights, ext_cfg.image_size, ext_cfg.seed
    ).to(device)
    seconds = {"pretrain": time.perf_counter() - t0}
    reporter.log(
        f"extractor {ext_cfg.label}: {ext.feature_dim} features, input {ext.size} "
        f"({seconds['pretrain']:.1f}s)"
    )
    return ext, None, None, seconds


def prepare(
    setting: SettingConfig,
    ext_cfg: ExtractorConfig,
    cfg: Config,
    device: torch.device,
    reporter: Reporter,
    feature_cache,
    split_seed: int = 0,
) -> Prepared:
    """Data, frozen extractor, features and the clean head of one (setting, split, extractor)."""
    if ext_cfg.is_zoo:
        check_zoo_weights(ext_cfg.arch, ext_cfg.weights)  # offline: fail before loading data
    if is_features_spec(setting.target):
        target, ext, path, sha, seconds = load_embeddings(setting, cfg, reporter)
        check_bounds_data(cfg, len(target.train))
        feature_cache = EmbeddingCache()
    else:
        target, ext, path, sha, seconds = load_images(
            setting, ext_cfg, cfg, device, reporter, split_seed
        )
    check_memory(
        len(target.train),
        len(target.test),
        ext.feature_dim,
        max(cfg.eps),
        f"setting {setting.name!r}",
    )
    t0 = time.perf_counter()
    z_train = feature_cache.encode(ext, target.train, progress=reporter.track).to(device)
    z_test = feature_cache.encode(ext, target.test, progress=reporter.track).to(device)
    seconds["encode"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    y_train, k = target.train.y.to(device), target.train.n_classes
    vcfg = resolve_victim(z_train, y_train, k, victim_config(cfg), VICTIM_SEED)
    head = train_head(z_train, y_train, k, vcfg, seed=VICTIM_SEED)
    clean_acc = head.accuracy(z_test, target.test.y.to(device))
    seconds["clean_head"] = time.perf_counter() - t0
    reporter.log(
        f"{setting.name}/{ext_cfg.label}: clean test accuracy {clean_acc:.4f} ({vcfg.label})"
    )
    return Prepared(
        setting,
        ext_cfg,
        ext,
        target,
        z_train,
        z_test,
        head,
        clean_acc,
        path,
        sha,
        seconds,
        clean_victim=vcfg,
        split_seed=split_seed,
    )


def load_images(
    setting: SettingConfig,
    ext_cfg: ExtractorConfig,
    cfg: Config,
    device: torch.device,
    reporter: Reporter,
    split_seed: int,
) -> tuple[DatasetSplits, Extractor, str | None, str | None, dict[str, float]]:
    """An image target and the extractor for it (loaded, shipped or pre-trained on the source)."""
    source = load_dataset(setting.source, cfg.data_root, split_seed, download=cfg.download)
    target = load_dataset(setting.target, cfg.data_root, split_seed, download=cfg.download)
    if source.domain.shape != target.domain.shape:
        raise DataError(
            f"setting {setting.name!r}: source {setting.source} has input shape "
            f"{source.domain.shape} but target {setting.target} has {target.domain.shape}; "
            "choose datasets of one shape (or resize one of them)"
        )
    check_bounds_data(cfg, len(target.train))  # before pre-training
    ext, path, sha, seconds = obtain_extractor(ext_cfg, source, device, reporter)
    if ext.domain != target.domain:
        # the extractor normalises with the source statistics: what a transfer user gets
        log.info("transfer: extractor normalises with %s statistics", setting.source)
    return target, ext, path, sha, seconds


def load_embeddings(
    setting: SettingConfig, cfg: Config, reporter: Reporter
) -> tuple[DatasetSplits, Extractor, None, None, dict[str, float]]:
    """A ``features:PATH`` target and its pass-through extractor (nothing to pre-train)."""
    t0 = time.perf_counter()
    target = load_dataset(setting.target, cfg.data_root, download=cfg.download)
    reporter.log(
        f"{setting.name}: {len(target.train)}+{len(target.test)} precomputed embeddings of "
        f"dimension {target.domain.channels} from {setting.target}"
    )
    return (
        target,
        passthrough_extractor(target.domain),
        None,
        None,
        {"load": time.perf_counter() - t0},
    )


class EmbeddingCache:
    """``FeatureCache.encode`` for precomputed embeddings: they are the features (a view)."""

    def encode(self, extractor: Extractor, data, progress=None) -> torch.Tensor:
        return data.x.reshape(len(data), -1)


VICTIM_SEED = 0
"""The SGD victim's data-order seed, the same for the clean and every poisoned head."""
