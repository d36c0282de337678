"""KKT attack (Koh, Steinhardt, Liang 2022): gradient canceling with a few repeated points
that the sanitiser keeps.

A defence that drops outliers per class cannot tell apart copies of one point that sits
inside its class's sphere and slab. So: pick a reachable target head ŵ (FT stage 1's, or
the head tgda-feature's poisons induce), then optimise ``m`` distinct features ζ_j with
labels ỹ_j, each repeated c_j times (Σ c_j = n_p), so that

    R_c(ŵ) + Σ_j c_j ∇CE(ŵ; ζ_j, ỹ_j) + wd·n_p·[Ŵ, 0] = 0

(the victim's KKT condition at ŵ: ŵ becomes its optimum), with every ζ_j projected after
each step onto what the configured ``defense`` keeps (``_feasible``: clean centroids and
quantile radii, ∩ the feature box). Labels and counts come from the target's own poisons:
one point per label they use, c_j = how many of them carry it (split into up to
``points_per_label`` points, started at k-means-like chunks of those poisons' features).
"""

from __future__ import annotations

import time

import torch

from ..errors import ConfigError
from ..head.objective import label_targets
from ._feasible import check_defense_kind, defense_feasible_set
from ._optim import Adam, Plateau, stop_rule
from .base import AttackContext, PoisonKind, PoisonSet, register_attack
from .ft.attack import ft_feasible_target
from .gc.objective import GCLossAndGrad, clean_gradient
from .targets import induced_target

TARGETS = ("ft", "tgda-feature")


def _validate(p: dict) -> None:
    check_defense_kind(p["defense"], p["defense_fraction"], "kkt")
    if p["target"] not in TARGETS:
        raise ConfigError(f"kkt target={p['target']!r} is unknown; use one of {TARGETS}")
    if p["points_per_label"] < 1 or not p["lr"] > 0:
        raise ConfigError("kkt points_per_label must be >= 1 and lr > 0")


# long: one Adam loop on a few repeated points inside the defence's set; its state moves together
@register_attack("kkt", regimes=("feature",), validate=_validate)
def kkt(
    ctx: AttackContext,
    target: str = "ft",
    defense: str = "sphere+slab",
    defense_fraction: float | None = None,
    points_per_label: int = 1,
    max_steps: int = 500,
    tol: float = 1e-3,
    window: int = 20,
    patience: int = 5,
    lr: float = 0.05,
) -> PoisonSet:
    """Few distinct feature points, repeated, inside the sphere/slab the defence keeps, whose
    gradients cancel the clean gradient at a reachable target head (GC on a defended set).

    ``lr`` is relative to the clean features' std (Adam, constant, halved on stalls); stops on
    the plateau of the relative GC objective (``tol`` over ``window`` steps).
    """
    _validate(
        dict(
            defense=defense,
            defense_fraction=defense_fraction,
            target=target,
            points_per_label=points_per_label,
            lr=lr,
        )
    )
    rule = stop_rule("kkt", tol, window, max_steps, patience)
    t_all = time.perf_counter()
    head, y_seed, z_seed, target_info = _target(ctx, target)
    t_target = time.perf_counter() - t_all
    dtype = torch.float64
    zc = ctx.z_train.to(dtype)
    wd = ctx.victim.weight_decay
    head = head.to(zc.device, dtype)
    clean = clean_gradient(head, zc, ctx.train.y.to(zc.device), wd)

    # one point (or a few) per label the target's poisons use; counts from those poisons
    labels, counts, starts = [], [], []
    for c in torch.unique(y_seed).tolist():
        rows = z_seed[y_seed == c].to(dtype)
        for chunk in torch.tensor_split(rows, min(points_per_label, len(rows))):
            labels.append(c)
            counts.append(len(chunk))
            starts.append(chunk.mean(0))
    y_pts = torch.tensor(labels, device=zc.device)
    count = torch.tensor(counts, device=zc.device)
    feasible = defense_feasible_set(ctx, defense, defense_fraction, y_seed, "kkt")
    zeta = feasible.project(torch.stack(starts), y_pts)
    rows = torch.repeat_interleave(torch.arange(len(counts), device=zc.device), count)
    y_rows = y_pts[rows]
    loss_and_grad = GCLossAndGrad(head, clean, int(rows.numel()), wd)
    targets = label_targets(y_rows, ctx.n_classes, dtype)
    scale = float(ctx.z_train.std()) or 1.0
    step = lr * scale
    plateau = Plateau(rule, maximize=False, relative_to_start=True)
    best = zeta
    adam = Adam(zeta, eps=1e-12, weights=(0.1, 0.001))
    for _ in ctx.iterate(rule.max_steps, "kkt"):
        value, g_rows = loss_and_grad(zeta[rows], targets)
        if plateau.record(value):
            best = zeta
        if plateau.done():
            break
        if plateau.restart_due():  # overshooting: back to the best points, half the step
            zeta, step = best, step * 0.5
            adam.reset()
            continue
        g = torch.zeros_like(zeta).index_add_(0, rows, g_rows)  # the copies' gradients add up
        zeta = feasible.project(zeta - step * adam.direction(g), y_pts)
    z_out = best[rows].to(ctx.z_train.dtype)
    nearest = torch.cdist(z_out.float(), ctx.z_train.float()).argmin(1).cpu()
    info = {
        **plateau.summary(),
        **target_info,
        "gc_objective": plateau.best,
        "n_distinct": len(counts),
        "defense_aware": defense,
        "in_feasible_set": float(feasible.contains(best, y_pts).double().mean()),
    }
    return PoisonSet(
        kind=PoisonKind.FEATURES,
        y=y_rows.cpu(),
        z=z_out,
        base_idx=nearest,
        info=info,
        stage_seconds={
            "target": t_target,
            "optimise": time.perf_counter() - t_all - t_target,
            "total": time.perf_counter() - t_all,
        },
    )


def _target(ctx: AttackContext, target: str):
    """(head ŵ, seed labels, seed features, info) for a reachable target head."""
    if target == "ft":
        head, y, _, idx, info = ft_feasible_target(ctx)
        z = ctx.z_train[idx.to(ctx.z_train.device)] if idx is not None else None
        if z is None or len(z) != len(y):
            raise ConfigError("kkt target='ft' needs the FT target's start points")
        return head, y.to(ctx.z_train.device).long(), z, info
    head, info, seed = induced_target(ctx)
    assert seed.z is not None
    return head, seed.y.to(ctx.z_train.device).long(), seed.z.to(ctx.z_train), info
