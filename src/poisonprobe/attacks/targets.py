"""Target heads ŵ: the type, where candidates come from, and how they are ranked.

Gradient canceling and the attacks built on it (gc-input, the FT attacks, kkt) first choose
a target head, then look for poisons that make it the victim's solution. A ``Target`` is one
candidate with its clean-train accuracy and loss and its ``eps_needed`` (the necessary
reachability condition of ``poisonability.py``). Providers: GradPC heads (``gradpc.py``: the
ascent itself) over a grid of radii, heads induced by other attacks (``induced_head``: the
victim retrained on clean ∪ the attack's poisons, reachable by construction), and their
extensions (``search_targets``: along each induced head's ray, then constrained ascent);
``target_head`` and ``induced_target`` are gc-input's and kkt's single-target providers.

The search maximises damage subject to the *necessary* condition ``eps_needed(ŵ) ≤ n_p / N``;
since it is only necessary, the caller (FT stage 2) verifies the best candidates and keeps
the one that actually attains the lowest accuracy. Everything is batched on one device.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from ..errors import ConfigError
from ..head.config import VictimConfig
from ..head.objective import LinearHead
from ..head.solvers import newton_solve
from ..head.train import train_head
from ..shared_work import shared
from .base import AttackContext, PoisonKind, PoisonSet, get_attack
from .gc.objective import clean_gradient
from .gradpc import clean_loss, clean_loss_gradient, gradpc, radius_scale
from .poisonability import FeatureBox, poisonability
from .tgda import tgda_feature


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


def exact_lbfgs_recipe(
    ctx: AttackContext, max_iter: int | None = None, tol: float | None = None
) -> VictimConfig:
    """The victim's objective solved by L-BFGS (targets need the true optimum; the
    verification retrains only need its accuracy, so they pass a looser tolerance)."""
    return VictimConfig(
        solver="lbfgs",
        weight_decay=ctx.victim.weight_decay,
        max_iter=max_iter or ctx.victim.max_iter,
        tol=tol or ctx.victim.tol,
    )


def induced_head(ctx: AttackContext, name: str) -> InducedHead:
    """Run another injection attack and train the victim on clean ∪ its poisons."""
    info = get_attack(name)
    regime = "box" if "box" in info.regimes else info.regimes[0]
    sub = replace(ctx, threat=replace(ctx.threat, regime=regime))
    poison = info.fn(sub)
    if poison.kind is PoisonKind.REPLACEMENTS:
        raise ConfigError(
            f"FT seed attack {name!r} perturbs training points instead of injecting; "
            "use an injection attack such as 'label-flip'"
        )
    if poison.kind is PoisonKind.FEATURES:
        assert poison.z is not None
        z_p = poison.z.to(ctx.z_train)
    elif (
        poison.base_idx is not None
        and poison.x is not None
        and torch.equal(poison.x, ctx.train.x[poison.base_idx])
    ):
        z_p = ctx.z_train[poison.base_idx.to(ctx.z_train.device)]  # clean copies: cached
    else:
        z_p = ctx.encode(poison.x).to(ctx.z_train)
    y_p = poison.y.to(ctx.z_train.device).long()
    head = train_head(
        torch.cat([ctx.z_train, z_p]),
        torch.cat([ctx.train.y.to(y_p.device), y_p]),
        ctx.n_classes,
        exact_lbfgs_recipe(ctx),
        init=ctx.clean_head,
    )
    return InducedHead(
        name,
        head,
        init_idx=poison.base_idx,
        init_y=y_p,
        init_z=z_p,
        init_x=poison.x if poison.base_idx is None else None,
    )


def _reach_ratio(
    target: LinearHead, z: torch.Tensor, y: torch.Tensor, wd: float, n_p: int
) -> float:
    """A necessary poisonability check: ``||R_clean + wd·n_p·W|| / (n_p · max per-point ||∇||)``.

    ``n_p`` poisons can cancel at most ``n_p · √2 · max‖[z, 1]‖`` of gradient, assuming their
    features stay within the clean norm range; a ratio > 1 means the target is out of reach.
    """
    cg = clean_gradient(target, z, y, wd)
    need = torch.sqrt(((cg.weight + wd * n_p * target.weight) ** 2).sum() + (cg.bias**2).sum())
    zmax = float(torch.sqrt((z.double() ** 2).sum(1).max() + 1.0))
    return float(need) / (n_p * math.sqrt(2.0) * zmax)


def target_head(
    ctx: AttackContext, radius: float = 0.05, steps: int = 100
) -> tuple[LinearHead, dict[str, float]]:
    """Target head ŵ for GC: GradPC with an L2 radius relative to ``||w0||`` (memoised);
    the reachability ratio (see ``_reach_ratio``) is reported, not enforced."""
    if not radius > 0:
        raise ConfigError(f"gc-input radius={radius} must be > 0 (relative to ||w0||, e.g. 0.05)")
    key = ("gc-input/target", radius, steps)

    def compute() -> LinearHead:
        z = ctx.z_train
        y = ctx.train.y.to(z.device)
        head = ctx.clean_head.to(z.device, torch.float64)
        return gradpc(head, z, y, radius * float(head.flat().norm()), "l2", steps)

    target = shared(ctx.memo, key, compute)
    z, y = ctx.z_train, ctx.train.y.to(ctx.z_train.device)
    meta = {
        "target_radius": radius,
        "target_head_acc": target.accuracy(z, y),  # on the clean *training* set (no test split)
        "target_reach_ratio": _reach_ratio(target, z, y, ctx.victim.weight_decay, ctx.n_poison),
    }
    return target, meta


def induced_target(ctx: AttackContext) -> tuple[LinearHead, dict[str, float], PoisonSet]:
    """The victim head induced by ``tgda-feature`` poisons: reachable by construction (with
    features in the clean range), so GC through ``f`` only has to realise it in images.

    Returns the head and the feature poisons (their labels and base points seed the images).
    """
    key = ("gc-input/tgda-feature-target", ctx.threat.eps, ctx.threat.regime)

    def compute() -> tuple[LinearHead, PoisonSet]:
        ps = tgda_feature(ctx)
        assert ps.z is not None
        z = torch.cat([ctx.z_train, ps.z.to(ctx.z_train)])
        y = torch.cat([ctx.train.y, ps.y]).to(z.device)
        return newton_solve(ctx.clean_head, z, y, ctx.victim.weight_decay, tol=1e-9), ps

    head, ps = shared(ctx.memo, key, compute)
    z, y = ctx.z_train, ctx.train.y.to(ctx.z_train.device)
    meta = {
        "target_head_acc": head.accuracy(z, y),
        "target_reach_ratio": _reach_ratio(head, z, y, ctx.victim.weight_decay, ctx.n_poison),
    }
    return head, meta, ps
