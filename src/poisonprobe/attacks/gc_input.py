"""Input-space gradient canceling (``gc-input``): move poisoned *images* through the frozen
extractor until their head gradients cancel the clean gradient at a target head ŵ.

The objective is the shared ``gc_objective.gc_loss`` (closed-form head gradients), so each
step costs one forward and one backward pass through ``f`` for the poisons only. This module
also holds the small helpers every input-space attack here shares (feature-space VJP through
the extractor, poison initialisation, optimiser with cosine lr and projection).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch

from ..errors import ConfigError
from ..head.config import VictimConfig
from ..head.objective import LinearHead
from ..shared_work import shared
from ._optim import Plateau, stop_rule
from .base import AttackContext, PoisonSet, register_attack
from .baselines import most_confusable_labels
from .gc_objective import clean_gradient, gc_loss
from .gradpc import gradpc

# ---------------------------------------------------------------------------------------------
# shared helpers (also used by tgda.py and emn.py)
# ---------------------------------------------------------------------------------------------


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
        if method not in ("adam", "sign"):
            raise ConfigError(f"optimizer={method!r} is unknown; use 'adam' or 'sign'")
        if not lr > 0:
            raise ConfigError(f"lr={lr} must be > 0")
        self.ctx, self.start, self.method, self.lr, self.steps = ctx, start, method, lr, steps
        self.x = ctx.threat.project_(x.detach().clone(), start)
        self.t = 0  # position in the cosine schedule
        self.adam_t = 0  # Adam's bias-correction count (restarts reset it)
        self.scale = 1.0  # step-size multiplier (restarts halve it)
        self.m = torch.zeros_like(self.x)
        self.v = torch.zeros_like(self.x)

    def step(self, grad: torch.Tensor) -> torch.Tensor:
        """One descent step along ``grad`` (pass ``-grad`` to ascend)."""
        base = self.lr if self.steps is None else cosine_lr(self.lr, self.t, self.steps)
        lr = self.scale * base
        self.t += 1
        self.adam_t += 1
        if self.method == "sign":
            upd = grad.sign()
        else:  # upd = mhat / (sqrt(vhat) + 1e-12), the same operations in two buffers
            b1, b2, t = 0.9, 0.999, self.adam_t
            self.m.mul_(b1).add_(grad, alpha=1 - b1)
            self.v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
            denom = torch.div(self.v, 1 - b2**t).sqrt_().add_(1e-12)
            upd = torch.div(self.m, 1 - b1**t).div_(denom)
            del denom
        x = torch.sub(self.x, upd.mul_(lr), out=upd)  # x - lr * upd, into a fresh tensor
        self.x = self.ctx.threat.project_(x, self.start)
        return self.x

    def restart(self, x: torch.Tensor, factor: float = 0.5) -> None:
        """Go back to images ``x`` (an iterate this optimiser returned) with the step size
        times ``factor`` and fresh Adam moments: the remedy when steps keep overshooting."""
        self.x = x
        self.scale *= factor
        self.adam_t = 0
        self.m.zero_()
        self.v.zero_()


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
        "target_acc": target.accuracy(z, y),  # on the clean *training* set (no test split)
        "target_reach_ratio": _reach_ratio(target, z, y, ctx.victim.weight_decay, ctx.n_poison),
    }
    return target, meta


def induced_target(ctx: AttackContext) -> tuple[LinearHead, dict[str, float], PoisonSet]:
    """The victim head induced by ``tgda-feature`` poisons: reachable by construction (with
    features in the clean range), so GC through ``f`` only has to realise it in images.

    Returns the head and the feature poisons (their labels and base points seed the images).
    """
    from ..head.solvers import newton_solve
    from .tgda import tgda_feature

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
        "target_acc": head.accuracy(z, y),
        "target_reach_ratio": _reach_ratio(head, z, y, ctx.victim.weight_decay, ctx.n_poison),
    }
    return head, meta, ps


# ---------------------------------------------------------------------------------------------
# the attack
# ---------------------------------------------------------------------------------------------


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


@register_attack("gc-input", regimes=("unconstrained", "box"))
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
    if patience < 1:
        raise ConfigError(f"gc-input patience={patience!r} must be an integer >= 1")
    if not goal >= 0:
        raise ConfigError(f"gc-input goal={goal} must be >= 0 (a relative GC objective)")
    lr = lr if lr is not None else (0.1 if optimizer == "adam" else 0.02)
    check_labels(labels)
    if target not in ("ft", "gradpc", "tgda-feature"):
        raise ConfigError(
            f"gc-input target={target!r} is unknown; use 'ft', 'gradpc' or 'tgda-feature'"
        )
    t_all = time.perf_counter()
    if target == "gradpc":
        head, meta = target_head(ctx, radius=radius, steps=target_steps)
        t_target = time.perf_counter() - t_all
        t0 = time.perf_counter()
        idx, x0, y = init_poisons(ctx, "gc-input", labels)
    elif target == "ft":
        from .feature_targeted import ft_feasible_target

        head, y, x0, idx, meta = ft_feasible_target(ctx)
        t_target = time.perf_counter() - t_all
        t0 = time.perf_counter()
        y, x0 = y.to(ctx.device), x0.to(ctx.device)  # read-only: the optimiser copies it
    else:
        head, meta, seed = induced_target(ctx)
        t_target = time.perf_counter() - t_all
        t0 = time.perf_counter()
        assert seed.base_idx is not None
        idx, y = seed.base_idx, seed.y.to(ctx.device)
        x0 = ctx.train.x[idx].to(ctx.device)  # indexing copies
    z_clean = ctx.z_train
    loss_fn = gc_objective_fn(head, z_clean, ctx.train.y.to(z_clean.device), y, ctx.victim)
    opt = PixelOptimizer(ctx, x0, x0, optimizer, lr, None)
    plateau = Plateau(rule, maximize=False, relative_to_start=True)
    # opt.step never mutates an x it returned: keeping a reference is keeping a copy
    best_x, done = opt.x, 0
    for _ in ctx.iterate(rule.max_steps, "gc-input"):
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
    best, first = plateau.best, plateau.trace[0]
    seconds = time.perf_counter() - t0
    info = {
        **meta,
        "target": target,
        "gc_objective": best,
        "gc_objective_init": first,
        **plateau.summary(),
        "steps_run": done,
    }
    return PoisonSet(
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
