"""FT stage 3: invert poisoned features ζ into valid images x̃ (the attack's bottleneck).

- **Decoder inversion**: train g: z ↦ x on clean data with the extractor frozen
  (``min Σ‖g(f(x)) − x‖²``), then x̃ = clip(g(ζ)). One forward pass per poison, but g has only
  seen the clean feature manifold, so f(g(ζ)) may be far from ζ.
- **Feature matching**: ``min_{x̃ ∈ box (∩ L∞ ball)} ‖f(x̃) − ζ‖²`` by projected Adam or signed
  steps from a clean start (or the decoder's output). Every iterate is projected, so the result
  is always a valid image; the best iterate per poison is kept.

Both run batched on the device of their inputs and never touch the extractor's parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ...domain import InputDomain
from ...errors import ConfigError
from .._optim import Plateau, StopRule
from ..base import clip_linf_

MATCH_METHODS = ("adam", "signed")


class Decoder(nn.Module):
    """Features -> images in the domain's box (sigmoid output scaled to [low, high]).

    Inputs are standardised with the clean features' statistics (stored as buffers), so one
    learning rate serves extractors of any feature scale. Small images (< 16 px) use an MLP,
    larger ones a transposed-conv stack from a (H/4, W/4) seed.
    """

    def __init__(
        self,
        feature_dim: int,
        domain: InputDomain,
        hidden: int = 512,
        z_mean: torch.Tensor | None = None,
        z_std: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.domain = domain
        c, h, w = domain.shape
        mean = torch.zeros(feature_dim) if z_mean is None else z_mean.detach().float().cpu()
        std = torch.ones(feature_dim) if z_std is None else z_std.detach().float().cpu()
        self.register_buffer("z_mean", mean.clone())
        self.register_buffer("z_std", std.clamp_min(1e-6).clone())
        self.conv = min(h, w) >= 16 and h % 4 == 0 and w % 4 == 0
        if self.conv:
            self.seed_shape = (128, h // 4, w // 4)
            self.net = nn.Sequential(
                nn.Linear(feature_dim, hidden),
                nn.ReLU(),
                nn.Linear(hidden, 128 * (h // 4) * (w // 4)),
                nn.ReLU(),
                nn.Unflatten(1, self.seed_shape),
                nn.ConvTranspose2d(128, 64, 4, stride=2, padding=1),
                nn.ReLU(),
                nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1),
                nn.ReLU(),
                nn.Conv2d(32, c, 3, padding=1),
            )
        else:
            self.net = nn.Sequential(
                nn.Linear(feature_dim, hidden),
                nn.ReLU(),
                nn.Linear(hidden, hidden),
                nn.ReLU(),
                nn.Linear(hidden, c * h * w),
                nn.Unflatten(1, (c, h, w)),
            )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        u = (z.float() - self.z_mean) / self.z_std
        lo, hi = self.domain.low, self.domain.high
        return lo + (hi - lo) * torch.sigmoid(self.net(u))


@torch.no_grad()
def encode_images(
    extractor: nn.Module, images: torch.Tensor, batch_size: int = 512
) -> torch.Tensor:
    """Features of ``images`` in batches on the extractor's device (no autograd)."""
    device = next(extractor.parameters()).device
    outs = [
        extractor(images[i : i + batch_size].to(device)) for i in range(0, len(images), batch_size)
    ]
    return torch.cat(outs)


def train_decoder(
    extractor: nn.Module,
    images: torch.Tensor,
    features: torch.Tensor | None = None,
    domain: InputDomain | None = None,
    steps: int = 300,
    lr: float = 2e-3,
    batch_size: int = 128,
    hidden: int = 512,
    seed: int = 0,
    tol: float = 1e-3,
    window: int = 50,
    patience: int = 20,
) -> Decoder:
    """Fit a decoder z ↦ x by MSE on clean (f(x), x) pairs; the extractor stays frozen.

    Runs until the minibatch loss has less than ``tol`` left to gain (``_optim.Plateau``; at
    most ``steps``), halving Adam's step after ``patience`` steps without a new best;
    ``decoder.summary`` records the steps and whether it converged.

    ``features`` (the cached f(images)) skips re-encoding; ``domain`` defaults to the
    extractor's. Deterministic for a seed (own generator; global RNG untouched).
    """
    if steps < 1 or not lr > 0 or batch_size < 1:
        raise ConfigError(f"decoder needs steps ≥ 1, lr > 0, batch_size ≥ 1 (got {steps}, {lr})")
    domain = domain or getattr(extractor, "domain", None)
    if domain is None:
        raise ConfigError("train_decoder needs the input domain; pass domain=dataset.domain")
    if features is None:
        features = encode_images(extractor, images)
    device = features.device
    z = features.detach().float()
    x = images.to(device).float()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        dec = Decoder(z.shape[1], domain, hidden, z.mean(0), z.std(0)).to(device)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(dec.parameters(), lr=lr)
    # minibatch losses are noisy: the plateau rule watches their running mean (β = 0.9)
    plateau = Plateau(StopRule(tol, window, steps, patience), maximize=False)
    n = z.shape[0]
    ema = math.nan
    for _ in range(steps):
        idx = torch.randint(n, (min(batch_size, n),), generator=gen).to(device)
        loss = ((dec(z[idx]) - x[idx]) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = float(loss.detach())
        ema = value if math.isnan(ema) else 0.9 * ema + 0.1 * value
        plateau.record(ema)
        if plateau.done():
            break
        if plateau.restart_due():  # the running loss stalls: half the step size
            for group in opt.param_groups:
                group["lr"] *= 0.5
    dec.summary = plateau.summary()
    dec.eval()
    dec.requires_grad_(False)
    return dec


@torch.no_grad()
def decode(decoder: Decoder, z: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """x̃ = clip(g(ζ)) into the decoder's input box.

    Batches are written into one preallocated tensor and clipped in place: a list + ``cat``
    + ``clamp`` held three copies of the images (~180 MB each for 15k CIFAR poisons).
    """
    device = decoder.z_mean.device
    if len(z) == 0:
        return decoder.domain.project(z.new_zeros((0, *decoder.domain.shape)))
    x = torch.empty((len(z), *decoder.domain.shape), dtype=decoder.z_mean.dtype, device=device)
    for i in range(0, len(z), batch_size):
        x[i : i + batch_size] = decoder(z[i : i + batch_size].to(device))
    return x.clamp_(decoder.domain.low, decoder.domain.high)


@dataclass
class MatchResult:
    """Feature-matched images and how close their features got (‖f(x̃) − ζ‖² / ‖ζ‖², mean)."""

    x: torch.Tensor
    rel_error: float
    init_rel_error: float
    summary: dict = field(default_factory=dict)  # _optim.Plateau.summary (steps, converged)


def _project(
    x: torch.Tensor, center: torch.Tensor | None, domain: InputDomain, linf: float | None
) -> torch.Tensor:
    if linf is not None and center is not None:
        x = torch.max(torch.min(x, center + linf), center - linf)
    return domain.project(x)


def _project_(
    x: torch.Tensor, center: torch.Tensor | None, domain: InputDomain, linf: float | None
) -> torch.Tensor:
    """``_project`` written into ``x`` (same values, no image-set sized copies but one)."""
    if linf is not None and center is not None:
        clip_linf_(x, center, linf)
    return x.clamp_(domain.low, domain.high)


# long: one projected-descent loop with batched encoding; its state changes together
def feature_match(
    extractor: nn.Module,
    zeta: torch.Tensor,
    start: torch.Tensor,
    domain: InputDomain,
    linf: float | None = None,
    steps: int = 30,
    lr: float = 0.02,
    method: str = "adam",
    center: torch.Tensor | None = None,
    batch_size: int = 512,
    tol: float = 1e-3,
    window: int = 10,
    patience: int = 3,
) -> MatchResult:
    """Projected steps on ``Σ_j ‖f(x̃_j) − ζ_j‖²`` inside the box (and the L∞ ball).

    ``lr`` is a fraction of the box width. The L∞ ball is centred on ``center`` (default:
    ``start``) — pass the clean base image when starting from a decoder output. Returns the best
    iterate per poison (never outside the constraints).

    Memory: besides the Adam state, one gradient buffer, the iterate and the best iterate;
    projections run in place (15k CIFAR poisons are ~180 MB per copy).
    """
    if method not in MATCH_METHODS:
        raise ConfigError(f"feature-match method={method!r} is unknown; use one of {MATCH_METHODS}")
    if steps < 0 or not lr > 0:
        raise ConfigError(f"feature matching needs steps ≥ 0 and lr > 0 (got {steps}, {lr})")
    if linf is not None and not linf > 0:
        raise ConfigError(f"linf={linf} must be > 0 (or null for no L∞ ball)")
    device = zeta.device
    target = zeta.detach().float()
    center = (start if center is None else center).detach().to(device).float()
    x = _project_(start.detach().to(device).float().clone(), center, domain, linf)
    step = lr * (domain.high - domain.low)
    norm2 = (target**2).sum(1).clamp_min(1e-12)

    def errors_and_grad(xc: torch.Tensor, need_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
        errs = []
        grad = torch.empty_like(xc) if need_grad else torch.empty(0, device=device)
        for i in range(0, xc.shape[0], batch_size):
            chunk = xc[i : i + batch_size].detach().requires_grad_(need_grad)
            with torch.set_grad_enabled(need_grad):
                err = ((extractor(chunk) - target[i : i + batch_size]) ** 2).sum(1)
            if need_grad:
                (grad[i : i + batch_size],) = torch.autograd.grad(err.sum(), chunk)
            errs.append(err.detach())
        return torch.cat(errs), grad

    def keep_better(err: torch.Tensor, best_err: torch.Tensor) -> torch.Tensor:
        """Copy improved rows into ``best_x`` batch by batch (no poison-set sized gather)."""
        better = err < best_err
        for i in range(0, len(better), batch_size):
            rows = better[i : i + batch_size]
            best_x[i : i + batch_size][rows] = param.detach()[i : i + batch_size][rows]
        return torch.where(better, err, best_err)

    best_x = x.clone()
    best_err = errors_and_grad(x, False)[0]
    init_err = float((best_err / norm2).mean())
    param = x.requires_grad_(True)  # x is this function's own copy: no second one
    del x
    opt = torch.optim.Adam([param], lr=step) if method == "adam" else None
    # the loop's range is the cap (steps + 1 records with the start): the rule only plateaus
    plateau = Plateau(StopRule(tol, window, steps + 2, patience), maximize=False)
    plateau.record(float(best_err.sum()))
    stopped = False  # True when the loop ended on a scored iterate
    for _ in range(steps):
        err, grad = errors_and_grad(param.detach(), True)
        best_err = keep_better(err, best_err)
        plateau.record(float(err.sum()))
        if plateau.done():
            stopped = True
            break
        if plateau.restart_due():  # overshooting: back to the best images, half the step
            step *= 0.5
            with torch.no_grad():
                param.copy_(best_x)
            if opt is not None:
                opt = torch.optim.Adam([param], lr=step)
            continue
        with torch.no_grad():
            if opt is not None:
                param.grad = grad
                opt.step()
                param.grad = None  # freed before the next gradient is allocated
            else:
                param -= step * grad.sign_()
            del grad
            _project_(param, center, domain, linf)
    if steps > 0 and not stopped:  # the cap stopped it: score the last step too
        err = errors_and_grad(param.detach(), False)[0]
        best_err = keep_better(err, best_err)
        plateau.record(float(err.sum()))
        plateau.reason = "max_steps"
    return MatchResult(best_x, float((best_err / norm2).mean()), init_err, plateau.summary())
