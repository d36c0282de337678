"""Input-space gradient canceling (``gc-input``): move poisoned *images* through the frozen
extractor until their head gradients cancel the clean gradient at a target head ŵ.

The objective is the shared ``gc/objective.gc_loss`` (closed-form head gradients), so each
step costs one forward and one backward pass through ``f`` for the poisons only. The helpers
every input-space attack shares live in ``attacks/common.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from ...errors import ConfigError
from ...head.config import VictimConfig
from ...head.objective import LinearHead
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
from ..targets import induced_target, target_head
from .objective import clean_gradient, gc_loss

# ---------------------------------------------------------------------------------------------
# the attack (its target head comes from attacks/targets.py, as FT's and kkt's do)
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
    (converged) or has less than ``tol`` left to gain (``_optim.Plateau``, ``window``-step gains),
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
