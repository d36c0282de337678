"""Input-space gradient canceling (``gc-input``): move poisoned *images* through the frozen
extractor until their head gradients cancel the clean gradient at a target head ŵ.

The objective is the shared ``gc/objective.gc_loss`` (closed-form head gradients), so each
step costs one forward and one backward pass through ``f`` for the poisons only. The helpers
every input-space attack shares live in ``attacks/common.py``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch

from ...errors import ConfigError
from ...head.config import VictimConfig
from ...head.objective import LinearHead
from ...head.solvers import newton_solve
from ...shared_work import shared
from .._optim import Plateau, stop_rule
from ..base import AttackContext, PoisonKind, PoisonSet, register_attack
from ..common import (
    PixelOptimizer,
    check_labels,
    check_optimizer,
    feature_loss_and_grad,
    init_poisons,
)
from ..ft.attack import ft_feasible_target
from ..gradpc import gradpc
from ..tgda import tgda_feature
from .objective import clean_gradient, gc_loss

# ---------------------------------------------------------------------------------------------
# stage-1 target head: GradPC (attacks/gradpc.py), the one implementation FT uses too
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# the attack
# ---------------------------------------------------------------------------------------------


def _check(patience: int, goal: float, labels: str, target: str) -> None:
    """Refuse bad gc-input parameters before any work."""
    if patience < 1:
        raise ConfigError(f"gc-input patience={patience!r} must be an integer >= 1")
    if not goal >= 0:
        raise ConfigError(f"gc-input goal={goal} must be >= 0 (a relative GC objective)")
    check_labels(labels)
    if target not in ("ft", "gradpc", "tgda-feature"):
        raise ConfigError(
            f"gc-input target={target!r} is unknown; use 'ft', 'gradpc' or 'tgda-feature'"
        )


def _start(
    ctx: AttackContext, target: str, labels: str, radius: float, target_steps: int
) -> tuple[LinearHead, dict[str, float], torch.Tensor, torch.Tensor, torch.Tensor]:
    """The target head, its report, and the poisons' start: (head, meta, idx, x0, y)."""
    if target == "gradpc":
        head, meta = target_head(ctx, radius=radius, steps=target_steps)
        idx, x0, y = init_poisons(ctx, "gc-input", labels)
        return head, meta, idx, x0, y
    if target == "ft":
        head, y, x0, idx, meta = ft_feasible_target(ctx)
        # read-only: the optimiser copies it
        return head, meta, idx, x0.to(ctx.device), y.to(ctx.device)
    head, meta, seed = induced_target(ctx)
    assert seed.base_idx is not None
    idx, y = seed.base_idx, seed.y.to(ctx.device)
    return head, meta, idx, ctx.train.x[idx].to(ctx.device), y  # indexing copies


def _cancel(
    ctx: AttackContext,
    opt: PixelOptimizer,
    plateau: Plateau,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    goal: float,
) -> tuple[torch.Tensor, int]:
    """Descend the GC objective until ``plateau`` stops it: (best images, steps taken)."""
    # opt.step never mutates an x it returned: keeping a reference is keeping a copy
    best_x, done = opt.x, 0
    for _ in ctx.iterate(plateau.rule.max_steps, "gc-input"):
        loss, gx, _ = feature_loss_and_grad(ctx, opt.x, loss_fn)
        if plateau.record(loss):
            best_x = opt.x
        if loss < goal:
            plateau.reach("goal")
        if plateau.done():
            break
        if plateau.restart_due():  # the steps overshoot (e.g. lr too big for large images)
            opt.restart(best_x)  # back to the best images, half the step; the next pass
            continue  # recomputes the gradient there
        opt.step(gx)
        del gx  # before the next gradient is allocated
        done += 1
    return best_x, done


def gc_objective_fn(
    target: LinearHead,
    z_clean: torch.Tensor,
    y_clean: torch.Tensor,
    y_poison: torch.Tensor,
    victim: VictimConfig,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``z_p -> gc_loss`` at ``target`` (clean part precomputed once)."""
    clean = clean_gradient(target, z_clean, y_clean, victim.weight_decay)
    return lambda zp: gc_loss(target, clean, zp, y_poison, victim.weight_decay)


def _validate(p: dict) -> None:
    """Every gc-input value at parse time, through the checks the attack itself runs."""
    _check(p["patience"], p["goal"], p["labels"], p["target"])
    check_optimizer(p["optimizer"])
    if p["lr"] is not None and not p["lr"] > 0:
        raise ConfigError(f"gc-input lr={p['lr']} must be > 0 (or null: the default)")


@register_attack("gc-input", regimes=("unconstrained", "box"), validate=_validate)
def gc_input(
    ctx: AttackContext,
    max_steps: int = 200,
    tol: float = 5e-3,
    window: int = 10,
    patience: int = 2,
    lr: float | None = None,
    optimizer: str = "adam",
    labels: str = "clean",
    radius: float = 0.05,
    target_steps: int = 100,
    goal: float = 1e-3,
    target: str = "ft",
) -> PoisonSet:
    """Gradient canceling on images through the frozen extractor, at a target head.

    ``target="ft"`` (default) aims at the FT attack's stage-1 target (reachable at the budget
    by construction) and starts from its feasible poisons' clean images and labels;
    ``target="gradpc"`` at a plain GradPC head of L2 radius ``radius``.

    ``lr`` defaults to 0.1 (adam) / 0.02 (sign) in pixel units, constant; ``radius`` is
    the GradPC target's L2 radius relative to ||w0||; ``labels`` ``clean`` (predecessor
    default) or ``confusable``. Stops when the relative GC objective falls below ``goal``
    (converged) or improves by less than ``tol`` over ``window`` steps (``_optim.Plateau``),
    at most ``max_steps``.
    ``patience``: after this many passes in a row without a new best objective, the images go
    back to the best iterate with half the step size and Adam restarts (on 3×32×32 CIFAR
    images lr 0.1 overshoots at every step; on the 8×8 digits it rarely stalls: 2 of the 36
    gc-input cells of the three-seed sweep restarted, both ending at a lower objective).
    ``target="tgda-feature"`` aims at the head that feature-space TGDA poisons induce instead
    (and starts from those poisons' base images and labels; ``labels`` is then ignored).
    """
    rule = stop_rule("gc-input", tol, window, max_steps, patience)
    _check(patience, goal, labels, target)
    lr = lr if lr is not None else (0.1 if optimizer == "adam" else 0.02)
    t_all = time.perf_counter()
    head, meta, idx, x0, y = _start(ctx, target, labels, radius, target_steps)
    t_target = time.perf_counter() - t_all
    t0 = time.perf_counter()
    z_clean = ctx.z_train
    loss_fn = gc_objective_fn(head, z_clean, ctx.train.y.to(z_clean.device), y, ctx.victim)
    opt = PixelOptimizer(ctx, x0, x0, optimizer, lr, None)
    plateau = Plateau(rule, maximize=False, relative_to_start=True)
    best_x, done = _cancel(ctx, opt, plateau, loss_fn, goal)
    seconds = time.perf_counter() - t0
    info = {**meta, "target": target, "gc_objective": plateau.best}
    info.update(gc_objective_init=plateau.trace[0], **plateau.summary(), steps_run=done)
    return PoisonSet(
        kind=PoisonKind.IMAGES,
        y=y.cpu(),
        x=best_x.detach().cpu(),
        base_idx=idx,
        info=info,
        stage_seconds={
            "target": t_target,
            "optimise": seconds,
            "per_step": seconds / max(done, 1),
            "total": time.perf_counter() - t_all,
        },
    )
