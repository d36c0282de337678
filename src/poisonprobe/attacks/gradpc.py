"""FT stage 1: the target head ŵ — GradPC and a reachability-constrained target search.

GradPC (gradient-based parameter corruption): start at the clean head θ₀ = (W₀, b₀), take
normalised ascent steps on the clean training loss, ``a ← a + lr·g/‖g‖`` (L2) or
``a ← a + lr·sign(g)`` (L∞), and project ``a`` onto the ball of radius r; ŵ = θ₀ + a. Bigger r,
lower accuracy, more poison needed.

The target search maximises damage subject to the *necessary* reachability condition
``eps_needed(ŵ) ≤ n_p / N`` (``poisonability.py``). Candidates: GradPC heads over a grid of radii,
plus heads induced by other attacks (e.g. the victim trained on clean ∪ label-flip poisons,
which is reachable by construction), each extended along its ray from θ₀ and by constrained
ascent steps that stay reachable. Since the condition is only necessary, the caller verifies
the best candidates with stage 2 and keeps the one that actually attains the lowest accuracy.
Gradients are closed form (``victim.gradient_sums``); everything is batched on one device.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..errors import ConfigError
from ..head.objective import LinearHead, gradient_sums
from ._optim import Plateau, StopRule
from .poisonability import FeatureBox, poisonability

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
    iterate settles on the ball instead of oscillating; stops when the clean loss improves by
    less than ``tol`` over ``window`` steps (``_optim.Plateau``), at most ``steps``.
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


@dataclass(eq=False)
class InducedHead:
    """A head some attack induced, with the poisons that induced it (stage 2 starts there)."""

    name: str
    head: LinearHead
    init_idx: torch.Tensor | None = None  # clean indices whose features the poisons used
    init_y: torch.Tensor | None = None  # the poisons' labels
    init_z: torch.Tensor | None = None  # the poisons' features
    init_x: torch.Tensor | None = None  # the poisons' images when they are not clean copies


@dataclass(eq=False)
class Target:
    """One candidate target head with its stage-1 diagnostics."""

    head: LinearHead
    source: str  # e.g. "gradpc-l2", "label-flip", "label-flip×1.5", "label-flip+ascent"
    radius: float | None  # relative GradPC radius (None for attack-induced heads)
    train_acc: float
    train_loss: float
    eps_needed: float
    induced: InducedHead | None = None  # stage 2 starts from the inducing poisons when set
    extras: dict[str, float] = field(default_factory=dict)

    def reachable(self, n_poison: int, n_clean: int) -> bool:
        return self.eps_needed * n_clean <= n_poison * (1 + 1e-9)


def evaluate_target(
    head: LinearHead,
    z: torch.Tensor,
    y: torch.Tensor,
    weight_decay: float,
    box: FeatureBox | None,
    source: str,
    radius: float | None = None,
    induced: InducedHead | None = None,
) -> Target:
    """Accuracy, loss and poisonability of one candidate on the clean training features."""
    p = poisonability(head, z, y, weight_decay, box)
    return Target(
        head=head,
        source=source,
        radius=radius,
        train_acc=head.accuracy(z, y),
        train_loss=clean_loss(head, z, y),
        eps_needed=p.eps_needed,
        induced=induced,
        extras={"eps_direction": p.eps_direction, "eps_bias": p.eps_bias},
    )


def _along_ray(
    at: Callable[[float], Target], n_poison: int, n: int, ray_max: float, iters: int
) -> list[Target]:
    """The largest reachable amplification t* ≤ ``ray_max`` of a seed head (bisection) and
    the midpoint (1 + t*)/2, or nothing when no amplification is reachable."""
    lo, hi = 1.0, ray_max
    best: Target | None = at(hi)
    if not best.reachable(n_poison, n):
        best = None
        for _ in range(iters):  # the largest reachable amplification
            mid = 0.5 * (lo + hi)
            cand = at(mid)
            if cand.reachable(n_poison, n):
                lo, best = mid, cand
            else:
                hi = mid
    if best is None:
        return []
    return [best, at(0.5 * (1.0 + lo))]


def search_targets(
    clean_head: LinearHead,
    z: torch.Tensor,
    y: torch.Tensor,
    weight_decay: float,
    n_poison: int,
    box: FeatureBox | None,
    radii: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0),
    norm: str = "l2",
    steps: int = 50,
    induced: tuple[InducedHead, ...] = (),
    ray_max: float = 4.0,
    ray_iters: int = 5,
    ascent_steps: int = 6,
) -> list[Target]:
    """All candidates (GradPC radii, seeds, their extensions), best first.

    Order: reachable before unreachable, then lowest clean-train accuracy, then highest loss.
    Radii are relative to ``radius_scale(clean_head, norm)``. Each seed head θ_s is pushed along
    its ray θ₀ + t(θ_s − θ₀): bisection finds the largest reachable t ≤ ``ray_max`` (the
    attack's own direction, amplified as far as the budget allows), and t* and (1 + t*)/2 become
    candidates; then constrained ascent steps from θ_s add one more.
    """
    z = z.to(torch.float64)
    y = y.to(z.device)
    head0 = clean_head.to(z.device, torch.float64)
    n = int(z.shape[0])
    unit = radius_scale(head0, norm)
    out: list[Target] = []
    for rel in radii:
        head = gradpc(head0, z, y, rel * unit, norm=norm, steps=steps)
        out.append(evaluate_target(head, z, y, weight_decay, box, f"gradpc-{norm}", rel))
    theta0 = head0.flat()
    k, d = head0.weight.shape
    for seed in induced:
        base = evaluate_target(
            seed.head.to(z.device, torch.float64), z, y, weight_decay, box, seed.name, induced=seed
        )
        out.append(base)
        delta = base.head.flat() - theta0

        def at(t: float, seed: InducedHead = seed, delta: torch.Tensor = delta) -> Target:
            head = LinearHead.from_flat(theta0 + t * delta, k, d)
            return evaluate_target(
                head, z, y, weight_decay, box, f"{seed.name}×{t:.3g}", induced=seed
            )

        if base.reachable(n_poison, n) and ray_iters > 0:
            out.extend(_along_ray(at, n_poison, n, ray_max, ray_iters))
        if ascent_steps > 0 and base.reachable(n_poison, n):
            out.append(
                _constrained_ascent(base, z, y, weight_decay, box, n_poison, ascent_steps, delta)
            )
    out.sort(key=lambda t: (not t.reachable(n_poison, n), t.train_acc, -t.train_loss))
    return out


def _constrained_ascent(
    start: Target,
    z: torch.Tensor,
    y: torch.Tensor,
    weight_decay: float,
    box: FeatureBox | None,
    n_poison: int,
    steps: int,
    delta: torch.Tensor,
) -> Target:
    """Normalised ascent on the clean loss that only accepts steps keeping eps_needed ≤ budget."""
    n = int(z.shape[0])
    k, d = start.head.weight.shape
    theta = start.head.flat()
    step = 0.25 * max(float(delta.norm()), 1e-12)
    best = start
    for _ in range(steps):
        g = clean_loss_gradient(LinearHead.from_flat(theta, k, d), z, y)
        cand_theta = theta + step * g / g.norm().clamp_min(1e-30)
        head = LinearHead.from_flat(cand_theta, k, d)
        cand = evaluate_target(
            head, z, y, weight_decay, box, f"{start.source}+ascent", induced=start.induced
        )
        if cand.reachable(n_poison, n):
            theta, best = cand_theta, cand
        else:
            step /= 2.0
    return best
