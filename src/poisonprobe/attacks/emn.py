"""Unlearnable examples (``emn``): error-minimising noise (Huang et al., ICLR 2021).

Min-min with the frozen extractor and a linear head as surrogate:

    min_δ min_w Σ_i CE(h_w(f(x_i + δ_i)), y_i),   ||δ_i||_∞ ≤ linf,

alternating exact head fits (the head is convex and cheap: warm-started Newton on cached
features) with PGD on δ (sign steps, projected onto the L∞ ball every step), until the
surrogate's error on the perturbed points falls below ``stop_error``. Unlike the injection
attacks it *replaces* existing training points (``PoisonSet.replace_idx``) and keeps their
true labels. The budget is the attack's definition, so even the ``unconstrained`` regime keeps
the L∞ ball; only ``box`` also clips to the pixel box.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..head.solvers import newton_solve
from ._optim import Plateau, stop_rule
from .base import AttackContext, PoisonKind, PoisonSet, clip_linf_, register_attack
from .common import feature_loss_and_grad


def emn_project_(
    ctx: AttackContext, x: torch.Tensor, x0: torch.Tensor, linf: float
) -> torch.Tensor:
    """L∞ ball of radius ``linf`` around ``x0`` always; plus the regime's box (and its L∞).

    Written into ``x``: at CIFAR scale the perturbed set is ~180 MB, and the out-of-place
    ``max(min(x, x0 + linf), x0 - linf)`` made five such temporaries per PGD step.
    """
    return ctx.threat.project_(clip_linf_(x, x0, linf), x0)


def _check(fraction: str, linf: float, step_size: float, max_rounds: int) -> None:
    """emn's own values, refused in one line (at parse time through ``_validate``)."""
    if fraction not in ("eps", "all"):
        raise ConfigError(f"emn fraction={fraction!r} is unknown; use 'eps' or 'all'")
    if not linf > 0 or not step_size > 0:
        raise ConfigError(f"emn linf={linf} and step_size={step_size} must be > 0")
    if max_rounds < 1:
        raise ConfigError(f"emn max_rounds={max_rounds} must be >= 1")


def _validate(p: dict) -> None:
    _check(p["fraction"], p["linf"], p["step_size"], p["max_rounds"])


# long: rounds alternate a surrogate refit and min-noise PGD over one shared state and totals
@register_attack("emn", regimes=("unconstrained", "box"), validate=_validate)
def emn(
    ctx: AttackContext,
    linf: float = 8 / 255,
    step_size: float = 0.8 / 255,
    max_steps: int = 100,
    tol: float = 5e-3,
    window: int = 10,
    patience: int = 3,
    max_rounds: int = 2,
    stop_error: float = 0.01,
    fraction: str = "eps",
) -> PoisonSet:
    """Error-minimising noise on an ``eps`` fraction of the training set (or ``fraction="all"``).

    Each round: fit the surrogate head on the current (partly perturbed) features, then sign
    steps of ``step_size`` that *lower* the CE of the perturbed points until that CE has less
    than ``tol`` left to gain (``_optim.Plateau``; at most ``max_steps`` per round; after
    ``patience`` steps without a new best, back to the best noise at half the step); stop
    when their surrogate error is below ``stop_error`` or after ``max_rounds``.
    """
    _check(fraction, linf, step_size, max_rounds)
    rule = stop_rule("emn", tol, window, max_steps, patience)
    t_all = time.perf_counter()
    n = ctx.n_clean if fraction == "all" else min(ctx.n_poison, ctx.n_clean)
    if fraction == "all":
        idx = torch.arange(n)
    else:
        idx = torch.randperm(ctx.n_clean, generator=ctx.generator("emn"))[:n]
    dev = ctx.z_train.device
    x0 = ctx.train.x[idx].to(ctx.device)
    y = ctx.train.y[idx].to(dev)
    z_all = ctx.z_train.clone()
    y_all = ctx.train.y.to(dev)
    idx_d = idx.to(dev)
    head = ctx.clean_head.to(dev, torch.float64)
    x = x0.clone()

    def loss_fn(z: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(head.logits(z), y.long(), reduction="sum")

    t_head = t_pgd = 0.0
    error = float("nan")
    rounds = steps_run = 0
    converged, last_best = False, math.nan
    trace: list[float] = []
    for _ in ctx.iterate(max_rounds, "emn"):
        rounds += 1
        t0 = time.perf_counter()
        head = newton_solve(head, z_all, y_all, ctx.victim.weight_decay, tol=1e-6)
        t_head += time.perf_counter() - t0
        t0 = time.perf_counter()
        plateau = Plateau(rule, maximize=False)
        step = step_size
        best_x = x.clone()
        for _ in range(rule.max_steps):
            loss, gx, _ = feature_loss_and_grad(ctx, x, loss_fn)
            if plateau.record(loss):
                best_x.copy_(x)
            if plateau.done():
                break
            if plateau.restart_due():  # sign steps overshoot: back to the best, half the step
                x.copy_(best_x)
                step *= 0.5
                continue
            # x - step * sign(gx), projected; in place (x is this loop's own copy)
            x = emn_project_(ctx, x.sub_(gx.sign_().mul_(step)), x0, linf)
            del gx
        x = best_x
        steps_run += plateau.steps
        converged, last_best = plateau.converged, plateau.best
        trace += plateau.trace
        z_p = ctx.encode(x)
        z_all[idx_d] = z_p.to(z_all.dtype)
        error = 1.0 - head.accuracy(z_p, y)
        t_pgd += time.perf_counter() - t0
        if error < stop_error:
            converged = True
            break
    noise = (x - x0).abs_().amax().item() if n else 0.0
    stride = max(1, -(-len(trace) // 200))
    info = {
        "train_error": error,
        "rounds": rounds,
        "n_perturbed": n,
        "max_noise": noise,
        "attack_objective": last_best,  # surrogate CE (sum), minimised
        "attack_steps": steps_run,
        "converged": converged,
        "objective_trace": [round(v, 8) for v in trace[::stride]],
        "objective_trace_stride": stride,
    }
    return PoisonSet(
        kind=PoisonKind.REPLACEMENTS,
        y=y.cpu(),
        x=x.detach().cpu(),
        replace_idx=idx,
        base_idx=idx,
        info=info,
        stage_seconds={"head": t_head, "pgd": t_pgd, "total": time.perf_counter() - t_all},
    )
