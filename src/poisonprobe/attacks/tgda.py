"""TGDA: total gradient descent ascent, the Stackelberg poisoning game (Lu et al. 2022).

Leader (attacker): poisoned images (or a small generator that makes them, or – in
``tgda-feature`` – poisoned features). Follower (victim): the linear head, minimising

    F(w) = (1/n) Σ_{D_f ∪ D_p} CE + (wd/2)||W||²,   D_f = clean follower data.

The leader maximises the follower's validation loss 𝓛(w) (CE by default) on a split of the
*clean training set* (attackers never see the test split) along the total gradient

    d𝓛/dθ = ∇_θ𝓛 − ∇²_{θw}F · (∇²_{ww}F)⁻¹ ∇_w𝓛.

Here ∇_θ𝓛 = 0 (validation points are clean) and, since only the poisons' closed-form head
gradients depend on θ, ∇²_{θw}F · v = ∇_θ ⟨(1/n) Σ_p ∇_w CE_p, v⟩: one backward pass through
the extractor per leader step. ``v = H⁻¹∇_w𝓛`` comes from conjugate gradient on closed-form
Hessian-vector products (Kronecker-factored preconditioner), or from an explicit (kd+k)²
Hessian + Cholesky when the head is small. With ``follower="exact"`` the head is solved to
convergence (warm-started Newton-CG), so the total gradient is the exact hypergradient
(implicit differentiation: F is strictly convex in W; the one flat direction, a common shift
of all biases, is handled explicitly).

Defaults that differ from the predecessor, on measurements (digits, SimCLR smallcnn):
``follower_data="all"`` + ``val_fraction=1.0``. A *held-out* split makes the follower train on
less clean data than the real victim, and poisons tuned to that weaker follower transfer
badly (e.g. tgda-feature at eps=0.03: drop 0.011 held-out 30% vs 0.067 with all data); the
victim trains on all of D_c, which the attacker knows, so the exact follower *is* the victim.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..head.config import VictimConfig
from ..head.curvature import HeadCurvature, exact_is_cheap
from ..head.objective import LinearHead, gradient_sums, row_chunks, with_bias_column
from ..head.solvers import newton_solve
from ..threads import single_thread_if_small
from ._feasible import check_defense_kind, defense_feasible_set
from ._optim import Adam, Plateau, StopRule, check_growth, stop_rule
from .base import AttackContext, PoisonKind, PoisonSet, register_attack
from .common import (
    PixelOptimizer,
    check_labels,
    check_optimizer,
    feature_loss_and_grad,
    init_poisons,
)

HESSIAN_MODES = ("auto", "exact", "cg")
FOLLOWER_MODES = ("exact", "steps")
# ‖∇F‖ to which the exact follower is re-solved at every leader step (both attacks): 3e-4
# skips the last Newton iteration of most solves. On the default, tgda ~125 → ~70 ms per
# leader step (unconstrained eps 0.03 cells) and tgda-feature −25 % seconds, with no loss of
# strength (18 tgda-feature cells, three seeds: mean objective 0.9887 → 0.9875, mean drop
# equal; BENCHMARKS.md). The reported objective is always re-solved to the victim's tol
# (``exact_objective``).
FOLLOWER_TOL = 3e-4
# leader steps each of several tgda starts climbs before the best runs on (``starts`` > 1).
# Replayed on the default's 12 unconstrained eps-0.03 / 0.1 cells (three seeds), three draws
# each run to its end (benchmarks/tgda_probe.py): a 500-step probe picks the draw that ends
# best in 11 of 12 (the twelfth ~0.01 lower in objective) for 1.63× / 2.14× one draw's leader
# steps; 60 steps (the first default): 5 of 12; every draw to its end: 2.83× / 3.04×
# (BENCHMARKS.md, "Several starts for tgda").
START_STEPS = 500

# ---------------------------------------------------------------------------------------------
# total gradient in feature space (shared by images, generator and features)
# ---------------------------------------------------------------------------------------------


@dataclass
class FollowerProblem:
    """The follower's clean data, the validation split and how to solve for ``v``."""

    z_fol: torch.Tensor
    y_fol: torch.Tensor
    z_val: torch.Tensor
    y_val: torch.Tensor
    n_classes: int
    victim: VictimConfig
    hessian: str = "auto"
    cg_iters: int = 16
    follower_tol: float = 1e-5  # ||∇F|| at which the exact follower stops
    leader_loss: str = "ce"
    cg_tol: float = 1e-4  # relative residual at which the hypergradient's CG stops
    cg_dtype: torch.dtype = torch.float32  # CG curvature precision (v only sets a direction)
    v_prev: torch.Tensor | None = None  # last H⁻¹g: warm start for the next leader step
    gram: torch.Tensor | None = None  # clean Σ z̃ z̃ᵀ (bias as a constant feature), float64
    _eig_key: torch.Tensor | None = None  # the poison features the cached eig belongs to
    _eig: tuple[torch.Tensor, torch.Tensor] | None = None
    _eig_gram: torch.Tensor | None = None  # the Gram matrix the cached eig decomposes

    def with_poisons(
        self, z_p: torch.Tensor, y_p: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The follower's training set: its clean data followed by the poisons."""
        z_all = torch.cat([self.z_fol, z_p.detach().to(self.z_fol.dtype)])
        return z_all, torch.cat([self.y_fol, y_p.to(self.y_fol.device)])

    def preconditioner_eig(self, z_p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eigen-decomposition of ``Z̃ᵀZ̃/n`` over clean ∪ poison features: the feature factor
        of the Kronecker preconditioner. The clean part is summed once, the poisons' part
        added per leader step: left out, the poisons (far outside the clean cloud when
        unconstrained) cost Newton and CG many more Hessian-vector products on the default
        (40 leader steps at eps 0.1: tgda 8,946 → 3,286, tgda-feature 8,824 → 4,356; rows
        weighted by their softmax curvature: 5,160 and 7,198; BENCHMARKS.md). Cached for the
        step's poison tensor (the follower solve and the hypergradient share it), and kept
        across leader steps while the Gram matrix moves less than ``STALE_GRAM`` (relative,
        Frobenius): a leader step barely changes it, and the (d+1)² eigh was ~10 % of a
        default tgda step (300 steps: 300 → 52 eighs, 65 → 57 ms per step, +2 % HVPs)."""
        if self._eig is not None and _same_tensor(self._eig_key, z_p):
            return self._eig
        if self.gram is None:  # float64 sums over row chunks: no float64 copy of z_fol
            d = self.z_fol.shape[1]
            self.gram = torch.zeros(d + 1, d + 1, dtype=torch.float64, device=self.z_fol.device)
            for rows in row_chunks(self.z_fol.shape[0], d):
                zc = with_bias_column(self.z_fol[rows].to(torch.float64))
                self.gram.addmm_(zc.T, zc)
        zp = with_bias_column(z_p.detach().to(self.gram.device, torch.float64))
        n = self.z_fol.shape[0] + zp.shape[0]
        gram = (self.gram + zp.T @ zp) / n
        held = self._eig_gram  # set together with _eig, always (d+1)²
        if held is None or float((gram - held).norm()) > STALE_GRAM * float(held.norm()):
            self._eig, self._eig_gram = torch.linalg.eigh(gram), gram
        self._eig_key = z_p
        return self._eig


STALE_GRAM = 0.02  # relative Gram change up to which the preconditioner's eigh is reused


def _same_tensor(held: torch.Tensor | None, z: torch.Tensor) -> bool:
    """``z`` is ``held`` or a view/detach of it, unchanged since (safe to compare pointers:
    ``held`` is kept alive, so its memory cannot be reused by another tensor)."""
    return (
        held is not None
        and held.data_ptr() == z.data_ptr()
        and held.shape == z.shape
        and held._version == z._version
    )


LEADER_LOSSES = ("ce", "prob", "margin")


def val_loss_and_grad(
    head: LinearHead, z_val: torch.Tensor, y_val: torch.Tensor, kind: str = "ce"
) -> tuple[float, torch.Tensor]:
    """The leader's validation loss and its flat gradient w.r.t. the head.

    ``ce``: mean cross-entropy (predecessor). ``prob``: mean ``1 − p_y`` – like CE on points
    still classified correctly, but no pull from points already lost, so ascent spends the
    budget on flipping more points rather than on making lost ones worse. ``margin``: mean
    ``min(max_{j≠y} s_j − s_y, 0)`` – a hinge that stops once a point is misclassified.
    """
    if kind not in LEADER_LOSSES:
        raise ConfigError(f"leader_loss={kind!r} is unknown; use one of {LEADER_LOSSES}")
    k, d = head.weight.shape
    n = int(z_val.shape[0])
    total, g = 0.0, torch.zeros_like(head.flat())
    # row chunks (one at k = 10): the autograd graph holds a few (chunk, k) arrays, not (N, k)
    for rows in row_chunks(n, k):
        y = y_val[rows].long()
        with torch.enable_grad():
            theta = head.flat().detach().clone().requires_grad_(True)
            logits = LinearHead.from_flat(theta, k, d).logits(z_val[rows].detach())
            if kind == "ce":
                loss = torch.nn.functional.cross_entropy(logits, y, reduction="sum")
            elif kind == "prob":
                loss = (1.0 - torch.softmax(logits, dim=1).gather(1, y[:, None])).sum()
            else:
                other = logits.scatter(1, y[:, None], -torch.inf).amax(dim=1)
                loss = (other - logits.gather(1, y[:, None])[:, 0]).clamp(max=0.0).sum()
            (gc,) = torch.autograd.grad(loss / n, theta)
        total += float(loss.detach()) / n
        g += gc
    return total, g


def solve_follower_system(
    curv: HeadCurvature,
    g: torch.Tensor,
    hessian: str,
    cg_iters: int,
    x0: torch.Tensor | None = None,
    tol: float = 1e-10,
) -> tuple[torch.Tensor, bool]:
    """``v = H⁻¹ g`` by the chosen method (CG warm-started at ``x0``); returns (v, used_exact)."""
    if hessian not in HESSIAN_MODES:
        raise ConfigError(f"hessian={hessian!r} is unknown; use one of {HESSIAN_MODES}")
    exact = hessian == "exact" or (hessian == "auto" and curv.auto_exact())
    with single_thread_if_small(curv.z.numel(), curv.z.device):
        if exact:
            return curv.solve_exact(g), True
        return curv.solve_cg(g, cg_iters, tol=tol, x0=x0), False


def total_gradient_surrogate(
    head: LinearHead,
    prob: FollowerProblem,
    z_p: torch.Tensor,
    y_p: torch.Tensor,
    stats: dict[str, float],
) -> torch.Tensor:
    """A scalar whose gradient w.r.t. ``z_p`` is the leader's total gradient d𝓛/dz_p.

    ``−(1/n)⟨Σ_p ∇_w CE(w; z_p, y_p), v⟩`` with ``v = H⁻¹∇_w𝓛`` held constant; ``head`` is
    the follower's current solution on ``D_f ∪ (z_p, y_p)``. Fills ``stats`` with the
    validation loss and solve time.
    """
    loss, g = val_loss_and_grad(head, prob.z_val, prob.y_val, prob.leader_loss)
    t0 = time.perf_counter()
    wd = prob.victim.weight_decay
    k, d = head.weight.shape
    n_all = prob.z_fol.shape[0] + z_p.shape[0]
    exact = prob.hessian == "exact" or (
        prob.hessian == "auto" and exact_is_cheap(n_all, k, d, prob.z_fol.device.type)
    )
    # float32 CG by default: v only sets the leader's direction (Adam steps are scale-free);
    # decided from the sizes, so the large case never makes a float64 copy of all features
    dtype = torch.float64 if exact else prob.cg_dtype
    z_all = torch.cat([prob.z_fol.to(dtype), z_p.detach().to(dtype)])
    curv = HeadCurvature(head, z_all, wd, prob.preconditioner_eig(z_p), dtype)
    v, exact = solve_follower_system(curv, g, prob.hessian, prob.cg_iters, prob.v_prev, prob.cg_tol)
    prob.v_prev = v
    # the follower solve's accuracy: relative residual of H v = g off the flat bias direction
    g_perp = g - (g @ curv.null) * curv.null
    res = float((curv.hvp(v) - g_perp).norm() / g_perp.norm().clamp_min(1e-300))
    stats["solve_residual"] = max(stats.get("solve_residual", 0.0), res)
    stats["solve_residual_last"] = res
    stats["solve_seconds"] = stats.get("solve_seconds", 0.0) + time.perf_counter() - t0
    stats["val_loss"] = loss
    stats["exact_hessian"] = float(exact)
    vw, vb = v[: k * d].reshape(k, d), v[k * d :]
    gw, gb = gradient_sums(head, z_p, y_p)
    return -((gw * vw).sum() + (gb * vb).sum()) / z_all.shape[0]


def follower_lipschitz(z: torch.Tensor, weight_decay: float) -> float:
    """Upper bound on ``F``'s curvature: ½·λmax(Z̃ᵀZ̃/n) + wd (softmax Hessian ≤ ½)."""
    zt = with_bias_column(z)
    lam = torch.linalg.eigvalsh(zt.T @ zt / z.shape[0])[-1]
    return 0.5 * float(lam) + weight_decay


def follower_update(
    head: LinearHead,
    prob: FollowerProblem,
    z_p: torch.Tensor,
    y_p: torch.Tensor,
    mode: str,
    steps: int,
) -> LinearHead:
    """Move the follower: exact Newton solve (warm start) or ``steps`` gradient steps."""
    z_all, y_all = prob.with_poisons(z_p, y_p)
    if mode == "exact":
        with single_thread_if_small(z_all.numel(), z_all.device):
            return newton_solve(
                head,
                z_all,
                y_all,
                prob.victim.weight_decay,
                tol=prob.follower_tol,
                eig=prob.preconditioner_eig(z_p),
            )
    zd = z_all.to(torch.float64)
    lr = 1.0 / follower_lipschitz(zd, prob.victim.weight_decay)
    theta = head.flat().detach().clone()
    k, d = head.weight.shape
    n = zd.shape[0]
    for _ in range(steps):
        h = LinearHead.from_flat(theta, k, d)
        gw, gb = gradient_sums(h, zd, y_all)
        grad = torch.cat([(gw / n + prob.victim.weight_decay * h.weight).reshape(-1), gb / n])
        theta = theta - lr * grad
    return LinearHead.from_flat(theta, k, d)


def exact_objective(
    head: LinearHead, prob: FollowerProblem, z_p: torch.Tensor, y_p: torch.Tensor
) -> float:
    """The attacker objective at poisons ``z_p`` with the follower solved to the victim's own
    tolerance (warm-started at ``head``): what the row reports as ``attack_objective``, so a
    loose ``follower_tol`` during the leader's steps never changes the published value."""
    z_all, y_all = prob.with_poisons(z_p, y_p)
    tol = min(prob.follower_tol, prob.victim.tol)
    with single_thread_if_small(z_all.numel(), z_all.device):
        solved = newton_solve(head, z_all, y_all, prob.victim.weight_decay, tol=tol)
    return val_loss_and_grad(solved, prob.z_val, prob.y_val, prob.leader_loss)[0]


def _polished(
    plateau: Plateau,
    head: LinearHead,
    prob: FollowerProblem,
    data: tuple[torch.Tensor, torch.Tensor] | None,
    follower: str,
) -> dict[str, float]:
    """``attack_objective`` / ``val_loss`` of the best iterate with the follower re-solved to
    the victim's tolerance (an exact follower only: ``steps`` reports what its heads saw), and
    the value the leader saw at ``follower_tol`` beside it."""
    seen = plateau.best
    if follower != "exact" or data is None:
        return {"attack_objective": seen, "val_loss": seen}
    exact = exact_objective(head, prob, *data)
    return {"attack_objective": exact, "val_loss": exact, "objective_at_follower_tol": seen}


def follower_problem(
    ctx: AttackContext,
    val_fraction: float,
    follower_data: str,
    hessian: str,
    cg_iters: int,
    leader_loss: str,
    follower_tol: float,
    salt: str,
) -> tuple[FollowerProblem, torch.Tensor]:
    """Split the clean training set into follower data and the leader's validation split."""
    check_follower_args(val_fraction, follower_data, hessian, cg_iters, leader_loss, follower_tol)
    n = ctx.n_clean
    perm = torch.randperm(n, generator=ctx.generator(salt + "/val"))
    n_val = max(1, min(n if follower_data == "all" else n - 1, int(round(val_fraction * n))))
    val_idx, rest_idx = perm[:n_val], perm[n_val:]
    fol_idx = rest_idx if follower_data == "rest" else torch.arange(n)
    z, y = ctx.z_train, ctx.train.y.to(ctx.z_train.device)
    vi, fi = val_idx.to(z.device), fol_idx.to(z.device)
    # all of D_c (the default): the features themselves, not (N, d) copies (the mean
    # validation loss does not depend on the order of its points)
    every = follower_data == "all"
    whole_val = n_val == n
    prob = FollowerProblem(
        z_fol=z if every else z[fi],
        y_fol=y if every else y[fi],
        z_val=z if whole_val else z[vi],
        y_val=y if whole_val else y[vi],
        n_classes=ctx.n_classes,
        victim=ctx.victim,
        hessian=hessian,
        cg_iters=cg_iters,
        leader_loss=leader_loss,
        follower_tol=follower_tol,
    )
    return prob, val_idx


def check_follower_args(
    val_fraction: float,
    follower_data: str,
    hessian: str,
    cg_iters: int,
    leader_loss: str,
    follower_tol: float,
) -> None:
    """The follower problem's values, refused in one line (at parse time too)."""
    if follower_data not in ("rest", "all"):
        raise ConfigError(f"follower_data={follower_data!r} is unknown; use 'rest' or 'all'")
    if not 0.0 < val_fraction <= 1.0 or (follower_data == "rest" and val_fraction == 1.0):
        raise ConfigError(
            f"val_fraction={val_fraction} must be in (0, 1] (< 1 with follower_data='rest')"
        )
    if hessian not in HESSIAN_MODES:
        raise ConfigError(f"hessian={hessian!r} is unknown; use one of {HESSIAN_MODES}")
    if cg_iters < 1:
        raise ConfigError(f"cg_iters={cg_iters} must be >= 1")
    if leader_loss not in LEADER_LOSSES:
        raise ConfigError(f"leader_loss={leader_loss!r} is unknown; use one of {LEADER_LOSSES}")
    if not follower_tol > 0:
        raise ConfigError(f"follower_tol={follower_tol} must be > 0, e.g. 1e-5")


def _validate_common(p: dict, who: str) -> None:
    """What tgda and tgda-feature share: follower, labels, defence (parse time; the stop
    rule is checked for every attack by ``AttackInfo.check_params``)."""
    _check_common(p["follower"], p["follower_steps"])
    check_follower_args(
        p["val_fraction"],
        p["follower_data"],
        p["hessian"],
        p["cg_iters"],
        p["leader_loss"],
        p["follower_tol"],
    )
    check_labels(p["labels"])
    check_defense_kind(p["defense"], p["defense_fraction"], who)


def _check_common(follower: str, follower_steps: int) -> None:
    if follower not in FOLLOWER_MODES:
        raise ConfigError(f"follower={follower!r} is unknown; use one of {FOLLOWER_MODES}")
    if follower_steps < 1:
        raise ConfigError("tgda follower_steps must be >= 1")


# ---------------------------------------------------------------------------------------------
# leader = images or generator
# ---------------------------------------------------------------------------------------------


class PoisonGenerator(nn.Module):
    """A small MLP that maps (base image, label one-hot) to a bounded image perturbation.

    The last layer starts at zero, so the generator starts from the clean base images.
    """

    def __init__(
        self, n_pixels: int, n_classes: int, hidden: int, amplitude: float, gen: torch.Generator
    ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(n_pixels + n_classes, hidden)
        self.fc2 = nn.Linear(hidden, n_pixels)
        with torch.no_grad():
            bound = 1.0 / math.sqrt(n_pixels + n_classes)
            self.fc1.weight.copy_(
                (torch.rand(self.fc1.weight.shape, generator=gen) * 2 - 1) * bound
            )
            self.fc1.bias.zero_()
            self.fc2.weight.zero_()
            self.fc2.bias.zero_()
        self.n_classes = n_classes
        self.amplitude = amplitude

    def forward(self, x0: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        flat = x0.reshape(x0.shape[0], -1)
        onehot = torch.nn.functional.one_hot(y.long(), self.n_classes).to(flat.dtype)
        h = torch.relu(self.fc1(torch.cat([flat, onehot], 1)))
        delta = self.amplitude * torch.tanh(self.fc2(h))
        return x0 + delta.reshape(x0.shape)


def _validate_images(p: dict) -> None:
    _validate_common(p, "tgda")
    check_growth(p["lr_growth"], "tgda")
    _check_leader(p["leader"])
    check_optimizer(p["optimizer"])
    if p["lr"] is not None and not p["lr"] > 0:
        raise ConfigError(f"tgda lr={p['lr']} must be > 0 (or null: the default)")


def _check_leader(leader: str) -> None:
    if leader not in ("images", "generator"):
        raise ConfigError(f"tgda leader={leader!r} is unknown; use 'images' or 'generator'")


class _ImageSurrogate:
    """𝓛(z_p) for the images' features: re-solve the follower on the poisons the defence
    keeps (all without ``keep``), then the total-gradient surrogate; poisons outside the
    kept set instead ascend −distance² back into it (image features cannot be projected)."""

    def __init__(
        self,
        ctx: AttackContext,
        prob: FollowerProblem,
        y_p: torch.Tensor,
        follower: str,
        follower_steps: int,
        keep: Any,
        stats: dict[str, float],
    ) -> None:
        self.prob, self.y_p, self.keep, self.stats = prob, y_p, keep, stats
        self.follower, self.follower_steps = follower, follower_steps
        self.head = ctx.clean_head.to(ctx.z_train.device, torch.float64)
        self.trained_on: tuple[torch.Tensor, torch.Tensor] | None = None  # last (z, y) used

    def __call__(self, z_p: torch.Tensor) -> torch.Tensor:
        y_p, keep, stats = self.y_p, self.keep, self.stats
        inside = torch.ones(len(y_p), dtype=torch.bool, device=z_p.device)
        if keep is not None:
            inside = keep.contains(z_p.detach().double(), y_p)
        stats["kept_share"] = float(inside.double().mean())
        z_in, y_in = (z_p, y_p) if bool(inside.all()) else (z_p[inside], y_p[inside])
        self.trained_on = (z_in.detach(), y_in)
        t0 = time.perf_counter()
        self.head = follower_update(
            self.head, self.prob, z_in, y_in, self.follower, self.follower_steps
        )
        stats["follower_seconds"] = stats.get("follower_seconds", 0.0) + time.perf_counter() - t0
        s = total_gradient_surrogate(self.head, self.prob, z_in, y_in, stats)
        if keep is not None and not bool(inside.all()):
            z_out = z_p[~inside]
            back = keep.project(z_out.detach().double(), y_p[~inside]).to(z_out.dtype)
            s = s - ((z_out - back) ** 2).sum()  # ascent on −distance²: back into the set
        return s


class _ImageLeader:
    """How tgda's leader moves: the images themselves (``PixelOptimizer``: restarts go back
    to the best images at half the step, ``lr_growth`` grows it after a window of new bests)
    or a generator's weights (the total gradient chained through it; restarts halve its
    step)."""

    def __init__(
        self,
        ctx: AttackContext,
        leader: str,
        x0: torch.Tensor,
        y_p: torch.Tensor,
        lr: float | None,
        lr_growth: float,
        optimizer: str,
        generator_hidden: int,
    ) -> None:
        self.ctx, self.x0, self.y_p, self.lr_growth = ctx, x0, y_p, lr_growth
        self.opt: PixelOptimizer | None = None
        if leader == "images":
            self.lr = lr if lr is not None else (0.3 if optimizer == "adam" else 0.02)
            self.opt = PixelOptimizer(ctx, x0, x0, optimizer, self.lr, None)
            self.x = self.opt.x
            return
        self.lr = lr if lr is not None else 1e-3
        dom = ctx.threat.domain
        self.net = PoisonGenerator(
            int(x0[0].numel()),
            ctx.n_classes,
            generator_hidden,
            dom.high - dom.low,
            ctx.generator("tgda/generator"),
        ).to(ctx.device)
        self.gopt = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        with torch.no_grad():
            self.x = ctx.threat.project(self.net(x0, y_p), x0)

    def step(self, gx: torch.Tensor, plateau: Plateau, best_x: torch.Tensor) -> torch.Tensor:
        """The next images, given ``gx`` = d𝓛/dx at the current ones (consumed)."""
        if self.opt is not None:
            if plateau.restart_due():  # overshooting: back to the best images, half the step
                self.opt.restart(best_x)
            else:
                if self.lr_growth > 1 and plateau.grow_due():  # rising at every step
                    self.opt.grow(self.lr_growth)
                self.opt.step(gx.neg_())  # descent on -d𝓛/dx; gx is not used again
            self.x = self.opt.x
            return self.x
        # the generator: dL/dφ = (dx/dφ)ᵀ dL/dx
        if plateau.restart_due():
            self.lr *= 0.5
        for group in self.gopt.param_groups:
            group["lr"] = self.lr
        self.gopt.zero_grad(set_to_none=True)
        self.ctx.threat.project(self.net(self.x0, self.y_p), self.x0).backward(-gx)
        self.gopt.step()
        with torch.no_grad():
            self.x = self.ctx.threat.project(self.net(self.x0, self.y_p), self.x0)
        return self.x


class _ImageClimb:
    """One start of tgda: its poisons, exactly re-solved follower, leader and stop rule,
    climbed in resumable bursts (``climb``), so several starts can be probed for a few steps
    each and the best one continued to convergence."""

    def __init__(self, ctx: AttackContext, rule: StopRule, salt: str, setup: dict) -> None:
        self.ctx = ctx
        self.prob, self.val_idx = follower_problem(ctx, *setup["follower"], "tgda")
        self.idx, x0, self.y_p = init_poisons(ctx, salt, setup["labels"])
        keep = None
        if setup["defense_aware"]:  # a 10 % margin inside: steered features hover at its edge
            keep = defense_feasible_set(ctx, *setup["defense"], self.y_p, "tgda").shrunk(0.9)
        self.stats: dict[str, float] = {}
        self.surrogate = _ImageSurrogate(
            ctx, self.prob, self.y_p, *setup["follower_moves"], keep, self.stats
        )
        self.plateau = Plateau(rule, maximize=True)
        self.moves = _ImageLeader(ctx, setup["leader"], x0, self.y_p, *setup["leader_args"])
        self.x = self.moves.x
        # every step makes a fresh x (PixelOptimizer.step, or the generator's forward pass)
        # and never writes into an old one: the best iterate is kept by reference
        self.best_x = self.x.detach()
        self.best_data: tuple[torch.Tensor, torch.Tensor] | None = None  # its kept features
        self.step_times: list[float] = []
        self.done = False

    def climb(self, steps: Any) -> bool:
        """Leader steps until the stop rule ends the run or ``steps`` (an iterable, e.g. a
        progress bar) runs out; True once the run has ended."""
        for _ in steps:
            t0 = time.perf_counter()
            _, gx, _ = feature_loss_and_grad(self.ctx, self.x, self.surrogate)  # d𝓛/dx
            if self.plateau.record(self.stats["val_loss"]):
                self.best_x, self.best_data = self.x.detach(), self.surrogate.trained_on
            self.step_times.append(time.perf_counter() - t0)
            if self.plateau.done():
                self.done = True
                return True
            self.x = self.moves.step(gx, self.plateau, self.best_x)
            del gx  # before the next leader step allocates its gradient
        return self.done


def _best_start(
    ctx: AttackContext, climbs: list[_ImageClimb], start_steps: int
) -> tuple[int, list[float]]:
    """Probe every start for ``start_steps`` leader steps: the index of the highest objective,
    and each start's best objective after its probe (a start that converges within its probe
    stops there: with ``start_steps`` >= ``max_steps`` every start runs to its end)."""
    if len(climbs) == 1:
        return 0, []
    for j, climb in enumerate(climbs):
        probe = min(start_steps, climb.plateau.rule.max_steps)
        climb.climb(ctx.iterate(probe, f"tgda start {j + 1}/{len(climbs)}"))
    probed = [climb.plateau.best for climb in climbs]
    return max(range(len(climbs)), key=probed.__getitem__), probed


def _climb_info(climbs: list[_ImageClimb], chosen: int, probed: list[float], setup: dict) -> dict:
    """The chosen start's row columns (and, with several starts, what each one reached)."""
    climb = climbs[chosen]
    stats, plateau, follower = climb.stats, climb.plateau, setup["follower_moves"][0]
    info = {
        **plateau.summary(),
        **_polished(plateau, climb.surrogate.head, climb.prob, climb.best_data, follower),
        "val_loss_init": plateau.trace[0],
        "follower": follower,
        "hessian_used": "exact" if stats.get("exact_hessian") else "cg",
        "solve_residual": stats.get("solve_residual", math.nan),
        "leader": setup["leader"],
        "n_val": int(climb.val_idx.numel()),
        "defense_aware": setup["defense"][0] if setup["defense_aware"] else "none",
    }
    if setup["defense_aware"]:
        info["kept_share_last"] = stats.get("kept_share", math.nan)
    if len(climbs) > 1:
        info["starts"] = len(climbs)
        info["start_chosen"] = chosen
        info["start_objectives"] = probed  # each start's best after its probe
        info["start_steps_total"] = sum(c.plateau.steps for c in climbs)
    return info


# long: 26 user-facing keyword parameters and their docstring are 50 of its ~100 lines
@register_attack("tgda", regimes=("unconstrained", "box"), validate=_validate_images)
def tgda(
    ctx: AttackContext,
    max_steps: int = 2000,
    tol: float = 5e-3,
    window: int = 15,
    patience: int = 4,
    lr: float | None = None,
    lr_growth: float = 1.0,
    optimizer: str = "adam",
    follower: str = "exact",
    follower_steps: int = 20,
    follower_tol: float = FOLLOWER_TOL,
    hessian: str = "auto",
    cg_iters: int = 16,
    labels: str = "confusable",
    val_fraction: float = 1.0,
    follower_data: str = "all",
    leader_loss: str = "ce",
    leader: str = "images",
    generator_hidden: int = 256,
    defense_aware: bool = False,
    defense: str = "sphere+slab",
    defense_fraction: float | None = None,
    starts: int = 1,
    start_steps: int = START_STEPS,
) -> PoisonSet:
    """Total gradient descent ascent: poisons (images or a generator) vs the linear head.

    ``follower``: ``exact`` (solve to convergence, warm-started → exact hypergradient) or
    ``steps`` (predecessor: ``follower_steps`` gradient steps per leader step). ``hessian``:
    ``exact`` (explicit + Cholesky), ``cg`` (``cg_iters`` CG iterations, warm-started) or
    ``auto`` (by size). ``lr`` (constant) defaults to 0.3 pixels (adam, images), 0.02 (sign)
    or 1e-3 (generator). Runs until the attacker objective (clean-train CE of the retrained
    head) has less than ``tol`` left to gain (``_optim.Plateau``, ``window``-step gains), at most
    ``max_steps``; after ``patience`` steps without a new best the images go back to the best
    ones with half the step size (the generator only halves its step).
    ``follower_tol``: ‖∇F‖ to which the follower is re-solved at every leader step
    (``FOLLOWER_TOL``); ``attack_objective`` is re-solved to the victim's ``tol`` at the best
    poisons (``objective_at_follower_tol`` keeps what the leader saw).
    ``defense_aware``: the follower trains only on the poisons whose features the ``defense``
    (sphere / slab / sphere+slab at ``defense_fraction``, default eps) would keep, and the
    others walk back into that set (gradient of their squared distance to it) before they
    attack again: image features cannot be projected, so they are steered.
    ``starts``: random draws of base images (and their labels), each climbed for
    ``start_steps`` leader steps (at most ``max_steps``); the one with the highest objective
    then runs on to convergence (its probe counts in its ``max_steps``). ``starts: 1``
    (default) is the single draw. ``start_steps`` as large as ``max_steps`` runs every draw
    to its end and keeps the best (N× the steps); ``START_STEPS`` explains the default.
    """
    _check_common(follower, follower_steps)
    rule = stop_rule("tgda", tol, window, max_steps, patience)
    check_growth(lr_growth, "tgda")
    _check_leader(leader)
    check_defense_kind(defense, defense_fraction, "tgda")
    _check_starts(starts, start_steps)
    t_all = time.perf_counter()
    setup = {
        "follower": (val_fraction, follower_data, hessian, cg_iters, leader_loss, follower_tol),
        "labels": labels,
        "defense_aware": defense_aware,
        "defense": (defense, defense_fraction),
        "follower_moves": (follower, follower_steps),
        "leader": leader,
        "leader_args": (lr, lr_growth, optimizer, generator_hidden),
    }
    # start 0 draws exactly what a single start draws: starts: 1 is the one-draw attack
    salts = ["tgda"] + [f"tgda/start{j}" for j in range(1, starts)]
    climbs = [_ImageClimb(ctx, rule, salt, setup) for salt in salts]
    best, probed = _best_start(ctx, climbs, start_steps)
    chosen = climbs[best]
    if not chosen.done:
        chosen.climb(ctx.iterate(rule.max_steps - chosen.plateau.steps, "tgda"))
    info = _climb_info(climbs, best, probed, setup)
    loop = sum(sum(c.step_times) for c in climbs)
    solve = sum(c.stats.get("solve_seconds", 0.0) for c in climbs)
    return PoisonSet(
        kind=PoisonKind.IMAGES,
        y=chosen.y_p.cpu(),
        x=chosen.best_x.detach().cpu(),
        base_idx=chosen.idx,
        info=info,
        stage_seconds={
            "total": time.perf_counter() - t_all,
            "per_leader_step": loop / sum(len(c.step_times) for c in climbs),
            "solve": solve,
            "solve_share": solve / max(loop, 1e-12),
            "follower": sum(c.stats.get("follower_seconds", 0.0) for c in climbs),
        },
    )


def _check_starts(starts: int, start_steps: int) -> None:
    """``starts`` >= 1 draws, each probed for ``start_steps`` >= 1 leader steps: for direct
    calls (a parsed config has these from ``AttackInfo.check_params``: int type, > 0)."""
    for key, value in (("starts", starts), ("start_steps", start_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"tgda {key}={value!r} must be an integer >= 1")


# ---------------------------------------------------------------------------------------------
# leader = features (no network in the loop)
# ---------------------------------------------------------------------------------------------


def feature_bounds(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-coordinate clean range: a feasible set ``f`` can plausibly reach (≥ 0 after ReLU)."""
    return z.min(dim=0).values, z.max(dim=0).values


def _validate_feature(p: dict) -> None:
    _validate_common(p, "tgda-feature")
    _check_invert(p["invert"])


def _check_invert(invert: str) -> None:
    if invert not in ("none", "feature-match"):
        raise ConfigError(
            f"tgda-feature invert={invert!r} is unknown; use 'none' or 'feature-match'"
        )


# the rest is one leader loop (projection, restarts, defence-aware steering) over shared state
# long: 23 user-facing keyword parameters and their docstring are 45 of its lines
@register_attack("tgda-feature", regimes=("feature",), validate=_validate_feature)
def tgda_feature(
    ctx: AttackContext,
    max_steps: int = 300,
    tol: float = 5e-3,
    window: int = 20,
    patience: int = 3,
    lr: float = 0.2,
    follower: str = "exact",
    follower_steps: int = 20,
    follower_tol: float = FOLLOWER_TOL,
    hessian: str = "auto",
    cg_iters: int = 16,
    labels: str = "confusable",
    val_fraction: float = 1.0,
    follower_data: str = "all",
    leader_loss: str = "ce",
    invert: str = "none",
    match_steps: int = 1000,
    defense_aware: bool = False,
    defense: str = "sphere+slab",
    defense_fraction: float | None = None,
) -> PoisonSet:
    """TGDA with the poisoned *features* as leader, clipped to the clean per-coordinate range.

    Cheap (no network in the loop): the feature-space upper bound of TGDA. The leader takes
    Adam ascent steps of ``lr`` relative to each coordinate's clean range, against the exactly
    re-solved (warm-started) follower, until the attacker objective (clean-train CE of the
    retrained head) plateaus (``tol`` over ``window`` steps, ``_optim.Plateau``); after
    ``patience`` steps without a new best it goes back to the best poisons at half the step.
    ``follower_tol`` as in ``tgda`` (the reported objective is re-solved exactly).
    ``defense_aware``: project every step onto what the ``defense`` (sphere / slab /
    sphere+slab, at ``defense_fraction``, default eps) would keep on the clean data.
    ``invert="feature-match"`` turns the features into images (``attacks/ft/invert.py``).
    """
    _check_common(follower, follower_steps)
    rule = stop_rule("tgda-feature", tol, window, max_steps, patience)
    _check_invert(invert)
    if not lr > 0:
        raise ConfigError(f"tgda-feature lr={lr} must be > 0")
    check_defense_kind(defense, defense_fraction, "tgda-feature")
    t_all = time.perf_counter()
    prob, val_idx = follower_problem(
        ctx,
        val_fraction,
        follower_data,
        hessian,
        cg_iters,
        leader_loss,
        follower_tol,
        "tgda-feature",
    )
    idx, _, y_p = init_poisons(ctx, "tgda-feature", labels)
    keep = (
        defense_feasible_set(ctx, defense, defense_fraction, y_p, "tgda-feature")
        if defense_aware
        else None
    )
    lo, hi = feature_bounds(ctx.z_train)
    scale = (hi - lo).clamp_min(1e-12)

    def project(z: torch.Tensor) -> torch.Tensor:
        z = torch.max(torch.min(z, hi), lo)
        return z if keep is None else keep.project(z, y_p)

    zp = project(ctx.z_train[idx.to(ctx.z_train.device)].clone())
    head = ctx.clean_head.to(ctx.z_train.device, torch.float64)
    stats: dict[str, float] = {}
    plateau = Plateau(rule, maximize=True)
    adam = Adam(zp, eps=1e-20, weights=(0.1, 0.001))  # ascent: its direction is added
    step = lr
    best_z, best_head = zp.clone(), head
    step_times: list[float] = []
    for _ in ctx.iterate(rule.max_steps, "tgda-feature"):
        t0 = time.perf_counter()
        head = follower_update(head, prob, zp, y_p, follower, follower_steps)
        stats["follower_seconds"] = stats.get("follower_seconds", 0.0) + time.perf_counter() - t0
        zz = zp.detach().requires_grad_(True)
        s = total_gradient_surrogate(head, prob, zz, y_p, stats)
        (g,) = torch.autograd.grad(s, zz)
        if plateau.record(stats["val_loss"]):
            best_z, best_head = zp, head
        step_times.append(time.perf_counter() - t0)
        if plateau.done():
            break
        if plateau.restart_due():  # overshooting: back to the best poisons, half the step
            zp, head, step = best_z, best_head, step * 0.5
            adam.reset()
            continue
        zp = project(zp + step * scale * adam.direction(g))
    info = {
        **plateau.summary(),
        **_polished(plateau, best_head, prob, (best_z, y_p), follower),
        "val_loss_init": plateau.trace[0],
        "follower": follower,
        "hessian_used": "exact" if stats.get("exact_hessian") else "cg",
        "solve_residual": stats.get("solve_residual", math.nan),
        "solve_residual_last": stats.get("solve_residual_last", math.nan),
        "final_lr": step,
        "n_val": int(val_idx.numel()),
        "defense_aware": defense if defense_aware else "none",
    }
    loop = sum(step_times)
    seconds = {
        "optimise": time.perf_counter() - t_all,
        "per_leader_step": loop / max(len(step_times), 1),
        "solve": stats.get("solve_seconds", 0.0),
        "solve_share": stats.get("solve_seconds", 0.0) / max(loop, 1e-12),
        "follower": stats.get("follower_seconds", 0.0),
    }
    x = None
    if invert == "feature-match":
        t0 = time.perf_counter()
        x, info["inversion_rel_error"] = _invert(ctx, best_z, idx, match_steps)
        seconds["inversion"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - t_all
    return PoisonSet(
        kind=PoisonKind.FEATURES if x is None else PoisonKind.IMAGES,
        y=y_p.cpu(),
        x=x,
        z=None if x is not None else best_z.float(),
        base_idx=idx,
        info=info,
        stage_seconds=seconds,
    )


def _invert(
    ctx: AttackContext, z_target: torch.Tensor, idx: torch.Tensor, steps: int
) -> tuple[torch.Tensor, float]:
    """Feature matching from the clean start images (``attacks/ft/invert.py``), in the box."""
    from .ft.invert import feature_match

    start = ctx.train.x[idx].to(ctx.device)
    res = feature_match(
        ctx.extractor,
        z_target.float(),
        start,
        ctx.threat.domain,
        linf=ctx.threat.linf,
        steps=steps,
        batch_size=ctx.batch_size,
    )
    return res.x.detach().cpu(), float(res.rel_error)
