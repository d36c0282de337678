"""GradPC, the ascent that makes target heads ŵ (the search among them is ``targets.py``).

GradPC (gradient-based parameter corruption): start at the clean head θ₀ = (W₀, b₀), take
normalised ascent steps on the clean training loss, ``a ← a + lr·g/‖g‖`` (L2) or
``a ← a + lr·sign(g)`` (L∞), and project ``a`` onto the ball of radius r; ŵ = θ₀ + a. Bigger r,
lower accuracy, more poison needed. Gradients are closed form (``head.objective.gradient_sums``).
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError
from ..head.objective import LinearHead, gradient_sums
from ._optim import Plateau, StopRule

NORMS = ("l2", "linf")


def clean_loss(head: LinearHead, z: torch.Tensor, y: torch.Tensor) -> float:
    """Mean cross-entropy of ``head`` on (z, y): the damage the target search maximises."""
    logits = head.logits(z)
    return float(torch.nn.functional.cross_entropy(logits, y.to(logits.device).long()))


def clean_loss_gradient(head: LinearHead, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Flat gradient ``[vec(W), b]`` of the mean clean cross-entropy (closed form)."""
    gw, gb = gradient_sums(head, z, y.to(z.device))
    return torch.cat([gw.reshape(-1), gb]) / z.shape[0]


def radius_scale(head: LinearHead, norm: str) -> float:
    """The unit that relative radii multiply: ‖θ₀‖₂ (L2) or its RMS entry (L∞)."""
    theta = head.flat()
    total = float(theta.norm())
    return total if norm == "l2" else total / math.sqrt(theta.numel())


def gradpc(
    clean_head: LinearHead,
    z: torch.Tensor,
    y: torch.Tensor,
    radius: float,
    norm: str = "l2",
    steps: int = 50,
    lr: float | None = None,
    tol: float = 1e-4,
    window: int = 5,
    patience: int = 2,
) -> LinearHead:
    """Normalised gradient ascent on the clean loss from ``clean_head``, projected to a ball.

    ``radius`` is absolute (parameter units); ``lr`` defaults to ``radius / 5`` and is halved
    (back at the best iterate) after ``patience`` steps without a new best clean loss, so the
    iterate settles on the ball instead of oscillating; stops when the clean loss has less
    than ``tol`` left to gain (``_optim.Plateau``), at most ``steps``.
    """
    if norm not in NORMS:
        raise ConfigError(f"GradPC norm={norm!r} is unknown; use one of {NORMS}")
    if not radius > 0:
        raise ConfigError(f"GradPC radius={radius} must be > 0")
    if steps < 1:
        raise ConfigError(f"GradPC steps={steps} must be ≥ 1")
    k, d = clean_head.weight.shape
    theta0 = clean_head.flat().to(z.device, torch.float64)
    step = radius / 5.0 if lr is None else lr
    a = torch.zeros_like(theta0)
    # only the gradient's direction (L2) or sign (L∞) is used: float32 passes over z, a
    # third of float64's cost, change it by ~1e-7
    z32 = z.detach().to(torch.float32)
    plateau = Plateau(StopRule(tol, window, steps, patience), maximize=True)
    best_a = a
    for _ in range(steps):
        head32 = LinearHead.from_flat(theta0 + a, k, d).to(dtype=torch.float32)
        loss, g = clean_loss_and_gradient(head32, z32, y)
        if plateau.record(loss):
            best_a = a
        if plateau.done():
            break
        if plateau.restart_due():  # oscillating on the ball: back to the best, half the step
            a, step = best_a, step * 0.5
            continue
        g = g.to(torch.float64)
        if norm == "l2":
            a = a + step * g / g.norm().clamp_min(1e-30)
            a = a * min(1.0, radius / max(float(a.norm()), 1e-30))
        else:
            a = (a + step * g.sign()).clamp(-radius, radius)
    if not plateau.converged:  # the last step was not scored: keep it only if better
        head32 = LinearHead.from_flat(theta0 + a, k, d).to(dtype=torch.float32)
        if clean_loss_and_gradient(head32, z32, y)[0] > plateau.best:
            best_a = a
    return LinearHead.from_flat(theta0 + best_a, k, d)


def clean_loss_and_gradient(
    head: LinearHead, z: torch.Tensor, y: torch.Tensor
) -> tuple[float, torch.Tensor]:
    """Mean clean cross-entropy (what the plateau rule watches) and its flat gradient."""
    return clean_loss(head, z, y), clean_loss_gradient(head, z, y)
