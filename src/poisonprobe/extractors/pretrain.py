"""Self-supervised pre-training (SimCLR, MoCo, BYOL) with lightly's losses and heads, and a
disk cache so that the default run pre-trains once and then starts in seconds.

The loop is deliberately plain (no Lightning): tensors stay on one device, augmentations are
batched tensor ops (``augment.py``), and every random draw comes from seeded generators, so
the same seed gives the same weights on CPU.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._io import atomic_save, default_cache_dir
from ..data.base import ImageDataset
from ..errors import CheckpointError, ConfigError, PoisonProbeError
from .archs import Extractor, build_extractor, check_image_size
from .augment import Augment, AugmentConfig
from .shipped import find_shipped, load_shipped

log = logging.getLogger(__name__)

METHODS = ("simclr", "moco", "byol")
# bump when the training recipe changes in a way that should invalidate cached extractors
RECIPE_VERSION = 1

Progress = Callable[..., Iterable]


def no_progress(items: Iterable, description: str = "", total: int | None = None) -> Iterator:
    """The default progress callback: iterate silently (the runner passes a Rich one)."""
    yield from items


@dataclass(frozen=True)
class PretrainConfig:
    """Every knob of one pre-training run; all of it goes into the cache key.

    Defaults are tuned for ``smallcnn`` on 8x8 digits under a one-minute CPU budget;
    ``lr=None`` picks the method's default.
    """

    method: str = "simclr"
    epochs: int = 30
    batch_size: int = 256
    lr: float | None = None
    weight_decay: float = 1e-5
    warmup_epochs: int = 2
    temperature: float = 0.2  # SimCLR / MoCo
    proj_hidden: int = 512
    proj_dim: int = 128
    ema_momentum: float = 0.99  # MoCo / BYOL, cosine-ramped to 1
    memory_bank: int = 1024  # MoCo negatives
    # "bf16": autocast on CUDA (the SSL loss is tolerant; attacks always run in float32)
    precision: str = "fp32"
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    augment: dict[str, Any] = field(default_factory=dict)  # AugmentConfig overrides

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(
                f"unknown SSL method {self.method!r}; choose one of: {', '.join(METHODS)}"
            )
        if self.epochs < 0 or self.batch_size < 2:
            raise ConfigError("pre-training needs epochs >= 0 and batch_size >= 2")
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"unknown precision {self.precision!r}; use fp32 or bf16")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.method]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lr"] = self.learning_rate
        return d


DEFAULT_LR = {"simclr": 2e-3, "moco": 2e-3, "byol": 1e-3}


class _SSL(nn.Module):
    """Backbone + lightly heads for one method; ``loss(v0, v1)`` is the method's objective."""

    def __init__(self, extractor: Extractor, cfg: PretrainConfig, n_train: int) -> None:
        super().__init__()
        from lightly.loss import NegativeCosineSimilarity, NTXentLoss
        from lightly.models import modules
        from lightly.models.utils import deactivate_requires_grad

        self.cfg = cfg
        self.extractor = extractor
        d = extractor.feature_dim
        self.momentum_modules: list[tuple[nn.Module, nn.Module]] = []
        if cfg.method == "simclr":
            self.head = modules.SimCLRProjectionHead(d, cfg.proj_hidden, cfg.proj_dim)
            self.criterion = NTXentLoss(temperature=cfg.temperature)
        elif cfg.method == "moco":
            self.head = modules.MoCoProjectionHead(d, cfg.proj_hidden, cfg.proj_dim)
            # a bank larger than the data set would hold stale copies of the same images
            bank = max(cfg.batch_size, min(cfg.memory_bank, n_train))
            self.criterion = NTXentLoss(
                temperature=cfg.temperature, memory_bank_size=(bank, cfg.proj_dim)
            )
        else:
            self.head = modules.BYOLProjectionHead(d, cfg.proj_hidden, cfg.proj_dim)
            self.predictor = modules.BYOLPredictionHead(cfg.proj_dim, cfg.proj_hidden, cfg.proj_dim)
            self.criterion = NegativeCosineSimilarity()
        if cfg.method in ("moco", "byol"):
            self.extractor_m = copy.deepcopy(extractor)
            self.head_m = copy.deepcopy(self.head)
            deactivate_requires_grad(self.extractor_m)
            deactivate_requires_grad(self.head_m)
            self.momentum_modules = [(extractor, self.extractor_m), (self.head, self.head_m)]

    def loss(self, v0: torch.Tensor, v1: torch.Tensor) -> torch.Tensor:
        n = v0.shape[0]
        if self.cfg.method == "simclr":
            # one forward over both views: fewer, larger matmuls are faster on CPU
            z = self.head(self.extractor(torch.cat([v0, v1])))
            return self.criterion(z[:n], z[n:])
        if self.cfg.method == "moco":
            q = self.head(self.extractor(v0))
            with torch.no_grad():
                k = self.head_m(self.extractor_m(v1))
            return self.criterion(q, k)
        p = self.predictor(self.head(self.extractor(torch.cat([v0, v1]))))
        with torch.no_grad():
            t = self.head_m(self.extractor_m(torch.cat([v1, v0])))
        return 0.5 * (self.criterion(p[:n], t[:n]) + self.criterion(p[n:], t[n:]))

    def after_step(self, frac: float) -> None:
        """EMA update of the momentum encoder (MoCo/BYOL), momentum cosine-ramped to 1."""
        if not self.momentum_modules:
            return
        from lightly.models.utils import update_momentum
        from lightly.utils.scheduler import cosine_schedule

        m = cosine_schedule(int(frac * 1000), 1000, self.cfg.ema_momentum, 1.0)
        for online, target in self.momentum_modules:
            update_momentum(online, target, m=m)


def _lr_at(step: int, total: int, warmup: int, base: float) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * t))


def pretrain(
    train: ImageDataset,
    arch: str = "smallcnn",
    method: str = "simclr",
    epochs: int = 30,
    batch_size: int = 256,
    lr: float | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    **hparams: Any,
) -> Extractor:
    """Pre-train an extractor on ``train``'s images (labels unused) and return it frozen-ready
    (eval mode). ``hparams`` are further :class:`PretrainConfig` fields."""
    cfg = PretrainConfig(
        method=method, epochs=epochs, batch_size=batch_size, lr=lr, **_check_hparams(hparams)
    )
    return _pretrain(train, arch, cfg, seed, torch.device(device), progress or no_progress)


def _check_hparams(hparams: dict[str, Any]) -> dict[str, Any]:
    known = set(PretrainConfig.__dataclass_fields__) - {"method", "epochs", "batch_size", "lr"}
    unknown = sorted(set(hparams) - known)
    if unknown:
        raise ConfigError(
            f"unknown pre-training option(s) {unknown}; known: {', '.join(sorted(known))}"
        )
    return hparams


def _pretrain(
    train: ImageDataset,
    arch: str,
    cfg: PretrainConfig,
    seed: int,
    device: torch.device,
    progress: Progress,
) -> Extractor:
    ext = build_extractor(arch, train.domain, seed, **cfg.arch_kwargs)
    check_image_size(ext)
    if cfg.epochs == 0:
        return ext.eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)  # the heads' (and MoCo's memory bank's) initialisation
        model = _SSL(ext, cfg, len(train)).to(device)
    # channels-last convolutions are ~20% faster on CPU for these tiny images
    model = model.to(memory_format=torch.channels_last)
    augment = Augment(train.domain, AugmentConfig.for_domain(train.domain, **cfg.augment))
    aug_gen = torch.Generator(device=device).manual_seed(seed)
    order_gen = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    x = train.x.to(device).contiguous(memory_format=torch.channels_last)
    n = len(train)
    n_batches = max(1, round(n / cfg.batch_size))  # near-equal batches, none tiny (BatchNorm)
    total = cfg.epochs * n_batches
    warmup = min(cfg.warmup_epochs * n_batches, total // 2)
    step = 0
    amp = cfg.precision == "bf16" and device.type == "cuda"
    model.train()
    t0 = time.perf_counter()
    desc = f"pre-train {arch} ({cfg.method}, {train.name})"
    for epoch in progress(range(cfg.epochs), description=desc, total=cfg.epochs):
        running = 0.0
        for idx in torch.tensor_split(torch.randperm(n, generator=order_gen), n_batches):
            xb = x[idx.to(device)]
            v0, v1 = augment(xb, aug_gen), augment(xb, aug_gen)
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, total, warmup, cfg.learning_rate)
            with torch.autocast(device.type, torch.bfloat16, enabled=amp):
                loss = model.loss(v0, v1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            model.after_step(step / total)
            running += float(loss.detach())
        mean_loss = running / n_batches
        if not math.isfinite(mean_loss):
            raise PoisonProbeError(
                f"SSL pre-training diverged (loss {mean_loss}) at epoch {epoch + 1}; "
                "lower the learning rate (extractor.lr)"
            )
        log.info(
            "pretrain %s/%s epoch %d/%d loss %.4f (%.1fs)",
            arch, cfg.method, epoch + 1, cfg.epochs, mean_loss, time.perf_counter() - t0,
        )  # fmt: skip
    ext = model.extractor.to(memory_format=torch.contiguous_format).eval()
    return ext.requires_grad_(False)  # frozen


# --------------------------------------------------------------------------- cache


def pretrain_spec(train: ImageDataset, arch: str, cfg: PretrainConfig, seed: int) -> dict:
    """Everything of a pre-training run that changes the weights (but the package version):
    data, arch, recipe, augmentations, seed. Shipped extractors are matched on it."""
    return {
        "data": train.fingerprint(),
        "domain": train.domain.to_dict(),
        "arch": arch,
        "seed": seed,
        "recipe": cfg.to_dict(),
        "augment": AugmentConfig.for_domain(train.domain, **cfg.augment).to_dict(),
        "recipe_version": RECIPE_VERSION,
    }


def pretrain_key(train: ImageDataset, arch: str, cfg: PretrainConfig, seed: int) -> str:
    """The cache file name: :func:`pretrain_spec` plus the package version."""
    from .._version import __version__

    spec = {**pretrain_spec(train, arch, cfg, seed), "version": __version__}
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]
    return f"{arch}-{cfg.method}-e{cfg.epochs}-s{seed}-{digest}"


def get_or_pretrain(
    train: ImageDataset,
    arch: str = "smallcnn",
    method: str = "simclr",
    epochs: int = 30,
    seed: int = 0,
    batch_size: int = 256,
    lr: float | None = None,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    cache_dir: str | Path | None = None,
    amp: bool = False,
    shipped: bool = True,
    **hparams: Any,
) -> tuple[Extractor, Path | None, bool]:
    """The shipped extractor for this exact spec, else a cached one, else pre-train and cache.

    Returns ``(extractor, checkpoint_path, hit)``. ``checkpoint_path`` is None only when
    the cache directory is not writable (the run goes on, uncached). ``amp`` trains in bf16
    autocast when the device is CUDA (a different recipe, so a different cache key); it only
    applies when pre-training happens here, so a CUDA machine loads the shipped fp32
    extractors too. ``shipped=False`` ignores the shipped extractors (pre-train or cache).
    """
    from .checkpoints import load_extractor, save_extractor

    cfg = PretrainConfig(
        method=method, epochs=epochs, batch_size=batch_size, lr=lr, **_check_hparams(hparams)
    )
    if shipped:
        entry = find_shipped(pretrain_spec(train, arch, cfg, seed))
        if entry is not None:
            return load_shipped(entry, arch, train.domain), entry.path, True
    if amp and torch.device(device).type == "cuda":
        cfg = dataclasses.replace(cfg, precision="bf16")
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = root / "extractors" / f"{pretrain_key(train, arch, cfg, seed)}.pt"
    if path.is_file():
        try:
            ext = load_extractor(path, arch, train.domain)
            log.info("pre-trained extractor cache hit: %s", path)
            return ext.eval(), path, True
        except CheckpointError as err:  # e.g. a file from an incompatible version
            log.warning("ignoring unreadable cached extractor (%s); pre-training again", err)
    ext = _pretrain(train, arch, cfg, seed, torch.device(device), progress or no_progress)
    meta = {
        "arch": arch,
        "dataset": train.name,
        "data_fingerprint": train.fingerprint(),
        "seed": seed,
        **cfg.to_dict(),
    }
    try:
        save_extractor(ext, path, meta)
    except OSError as err:
        log.warning("cannot cache the pre-trained extractor at %s (%s); continuing", path, err)
        return ext, None, False
    return ext, path, False


__all__ = [
    "METHODS",
    "PretrainConfig",
    "atomic_save",
    "default_cache_dir",
    "get_or_pretrain",
    "no_progress",
    "pretrain",
    "pretrain_key",
]
