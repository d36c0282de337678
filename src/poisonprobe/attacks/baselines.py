"""Baselines: label flipping and random noise (what any real attack must beat)."""

from __future__ import annotations

import torch

from ..errors import ConfigError
from .base import AttackContext, PoisonKind, PoisonSet, register_attack


def most_confusable_labels(ctx: AttackContext, idx: torch.Tensor) -> torch.Tensor:
    """For each chosen clean point, the wrong class the clean head scores highest."""
    logits = ctx.clean_head.logits(ctx.z_train[idx]).clone()
    logits[torch.arange(len(idx)), ctx.train.y[idx].to(logits.device)] = -torch.inf
    return logits.argmax(dim=1).cpu()


def _check_mode(p: dict) -> None:
    if p["mode"] not in ("confusable", "random"):
        raise ConfigError(f"label-flip mode={p['mode']!r} is unknown; use 'confusable' or 'random'")


@register_attack("label-flip", regimes=("box",), on_embeddings=True, validate=_check_mode)
def label_flip(ctx: AttackContext, mode: str = "confusable") -> PoisonSet:
    """Inject copies of clean points with wrong labels (most-confusable class, or random)."""
    _check_mode({"mode": mode})
    gen = ctx.generator("label-flip")
    idx = torch.randperm(ctx.n_clean, generator=gen)[: ctx.n_poison]
    if ctx.n_poison > ctx.n_clean:  # eps = 1 with rounding: sample with replacement
        idx = torch.randint(ctx.n_clean, (ctx.n_poison,), generator=gen)
    y_true = ctx.train.y[idx]
    if mode == "confusable":
        y = most_confusable_labels(ctx, idx)
    else:
        shift = torch.randint(1, ctx.n_classes, (len(idx),), generator=gen)
        y = (y_true + shift) % ctx.n_classes
    x = ctx.train.x[idx]  # indexing by a tensor copies
    return PoisonSet(y=y, x=x, base_idx=idx, kind=PoisonKind.IMAGES)


@register_attack("random-noise", regimes=("box",))
def random_noise(ctx: AttackContext) -> PoisonSet:
    """Inject uniform-noise images in the pixel box with random labels."""
    gen = ctx.generator("random-noise")
    dom = ctx.threat.domain
    shape = (ctx.n_poison, *dom.shape)
    # in place: the same values as ``low + (high - low) * rand`` without two more poison-set
    # sized temporaries
    x = torch.rand(shape, generator=gen).mul_(dom.high - dom.low).add_(dom.low)
    y = torch.randint(ctx.n_classes, (ctx.n_poison,), generator=gen)
    return PoisonSet(y=y, x=x, kind=PoisonKind.IMAGES)
