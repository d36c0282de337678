"""What the input-space attacks (gc-input, tgda, emn) share: the feature-space VJP through
the extractor, poison initialisation and label modes, and the pixel optimiser (Adam or sign
steps, cosine lr, the regime's projection after every step)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..errors import ConfigError
from ._optim import Adam
from .base import AttackContext
from .baselines import most_confusable_labels


def feature_loss_and_grad(
    ctx: AttackContext, x: torch.Tensor, loss_fn: Callable[[torch.Tensor], torch.Tensor]
) -> tuple[float, torch.Tensor, torch.Tensor]:
    """``loss_fn(f(x))``, its gradient w.r.t. the images ``x`` and the features ``f(x)``.

    ``loss_fn`` may couple all poisons (the GC residual sums over them), so for large poison
    sets we first encode without a graph, take the gradient w.r.t. the features in closed
    form, then backpropagate it batch by batch: memory stays one batch deep at CIFAR scale.
    """
    n = int(x.shape[0])
    if n <= ctx.batch_size:
        xx = x.detach().to(ctx.device).requires_grad_(True)
        z = ctx.extractor(xx)
        loss = loss_fn(z)
        (gx,) = torch.autograd.grad(loss, xx)
        return float(loss.detach()), gx, z.detach()
    z = ctx.encode(x.detach())
    zz = z.detach().requires_grad_(True)
    loss = loss_fn(zz)
    (gz,) = torch.autograd.grad(loss, zz)
    gx = torch.empty_like(x, device=ctx.device)
    for start in range(0, n, ctx.batch_size):
        sl = slice(start, start + ctx.batch_size)
        xb = x[sl].detach().to(ctx.device).requires_grad_(True)
        zb = ctx.extractor(xb)
        (gx[sl],) = torch.autograd.grad(zb, xb, grad_outputs=gz[sl].to(zb.dtype))
    return float(loss.detach()), gx, z


LABEL_MODES = ("clean", "confusable", "random")


def check_labels(labels: str) -> None:
    """Refuse an unknown poison-label mode before any work is done."""
    if labels not in LABEL_MODES:
        raise ConfigError(f"labels={labels!r} is unknown; use 'clean', 'confusable' or 'random'")


PIXEL_OPTIMIZERS = ("adam", "sign")


def check_optimizer(method: str) -> None:
    """Refuse an unknown pixel optimiser before any work is done."""
    if method not in PIXEL_OPTIMIZERS:
        raise ConfigError(f"optimizer={method!r} is unknown; use 'adam' or 'sign'")


def init_poisons(
    ctx: AttackContext, salt: str, labels: str = "clean", n: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pick ``n`` (default ``n_p``) clean start points: (indices, images, labels).

    ``labels``: ``clean`` keeps the true labels (predecessor default for GC), ``confusable``
    uses the clean head's highest-scoring wrong class, ``random`` a uniformly wrong class.
    """
    check_labels(labels)
    n = ctx.n_poison if n is None else n
    gen = ctx.generator(salt)
    if n <= ctx.n_clean:
        idx = torch.randperm(ctx.n_clean, generator=gen)[:n]
    else:  # eps close to 1 with rounding: sample with replacement
        idx = torch.randint(ctx.n_clean, (n,), generator=gen)
    y = ctx.train.y[idx].clone()
    if labels == "confusable":
        y = most_confusable_labels(ctx, idx)
    elif labels == "random":
        shift = torch.randint(1, ctx.n_classes, (n,), generator=gen)
        y = (y + shift) % ctx.n_classes
    return idx, ctx.train.x[idx].to(ctx.device), y.to(ctx.device)  # indexing copies


def cosine_lr(lr: float, step: int, total: int, floor: float = 0.01) -> float:
    """Cosine decay from ``lr`` to ``floor * lr`` over ``total`` steps."""
    frac = step / max(total - 1, 1)
    return lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * frac)))


class PixelOptimizer:
    """Descent on images with Adam or sign steps, then the regime's projection.

    Keeping this in one place guarantees every attack projects after *every* step, which is
    what the ``box`` countermeasure means. ``step`` never writes into an ``x`` it returned
    before (each step's images are a fresh tensor), so callers may keep a returned ``x`` as
    their best iterate without cloning it; its update is computed in place in one buffer, so
    a step costs two poison-set sized temporaries (the out-of-place formula cost six).
    """

    def __init__(
        self,
        ctx: AttackContext,
        x: torch.Tensor,
        start: torch.Tensor,
        method: str,
        lr: float,
        steps: int | None,
    ) -> None:
        """``steps``: the cosine schedule's length, or None for a constant step size (the
        plateau-stopped attacks: ``restart`` halves it when steps overshoot)."""
        check_optimizer(method)
        if not lr > 0:
            raise ConfigError(f"lr={lr} must be > 0")
        self.ctx, self.start, self.method, self.lr, self.steps = ctx, start, method, lr, steps
        self.x = ctx.threat.project_(x.detach().clone(), start)
        self.t = 0  # position in the cosine schedule
        self.scale = 1.0  # step-size multiplier (restarts halve it)
        self.adam = Adam(self.x, eps=1e-12)

    def step(self, grad: torch.Tensor) -> torch.Tensor:
        """One descent step along ``grad`` (pass ``-grad`` to ascend)."""
        base = self.lr if self.steps is None else cosine_lr(self.lr, self.t, self.steps)
        lr = self.scale * base
        self.t += 1
        upd = grad.sign() if self.method == "sign" else self.adam.direction(grad)
        x = torch.sub(self.x, upd.mul_(lr), out=upd)  # x - lr * upd, into a fresh tensor
        self.x = self.ctx.threat.project_(x, self.start)
        return self.x

    def grow(self, factor: float) -> None:
        """Step size times ``factor`` (> 1) and the Adam moments kept: the objective has been
        rising at every step, so the current direction is trusted and only the step was small."""
        self.scale *= factor

    def restart(self, x: torch.Tensor, factor: float = 0.5) -> None:
        """Go back to images ``x`` (an iterate this optimiser returned) with the step size
        times ``factor`` and fresh Adam moments: the remedy when steps keep overshooting."""
        self.x = x
        self.scale *= factor
        self.adam.reset()
