"""The head's solvers: exact L-BFGS + Newton (float64), the preconditioned float32 L-BFGS
for large cold starts, and the minibatch SGD probe recipe.

Newton reaches the unique minimiser to ~1e-10 in a few steps, where L-BFGS stalls around 1e-6
on ill-conditioned SSL features. Gradient canceling and TGDA's implicit hypergradient both
assume ``∇F = 0``.

Cold-start head fits at scale (``lbfgs_float32``): at CIFAR scale (N = 50,000, d = 512) one
pass over the features is the unit of cost, and a plain float64 L-BFGS needs ~100 of them on
ill-conditioned SSL features (κ ~ 1e4). Two changes make the fit ~10x cheaper without changing
its answer:

- a change of variables ``W̃ = Qa (V ⊙ S) Qcᵀ`` with ``S = (λa λcᵀ + wd)^{-1/2}``, the inverse
  square root of the Kronecker approximation ``Ā ⊗ C + wd·I`` of the Hessian (``C = Z̃ᵀZ̃/n``
  with the bias as a constant feature, ``Ā`` the softmax curvature at the uniform start), so
  L-BFGS sees a well-conditioned problem and converges in ~35 passes;
- float32 passes over features stored transposed ``(d, N)``: the logits are a (k × N) product
  and the softmax runs along contiguous memory, 3x faster than the row layout at k = 10.

Float32 stops at its round-off (``||∇F|| ~ 1e-6``); ``train_large_cold`` then polishes in
float64 with damped Newton when the configured ``tol`` is tighter.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .config import VictimConfig
from .curvature import HeadCurvature, feature_eig, kronecker_eig
from .objective import LinearHead, flat_objective, gradient_norm, label_targets

SMALL_FLOAT64_ELEMENTS = 2**22  # features up to which Newton keeps one float64 copy (32 MiB)


def newton_solve(
    head: LinearHead,
    z: torch.Tensor,
    y: torch.Tensor,
    wd: float,
    tol: float = 1e-9,
    max_steps: int = 30,
    cg_iters: int = 100,
    eig: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> LinearHead:
    """Minimise F exactly: warm-started Newton with preconditioned-CG steps + backtracking.

    ``train_lbfgs``'s torch L-BFGS stalls near ``||∇F|| ~ 1e-6`` on SSL features (κ ~ 1e4)
    after hundreds of iterations; Newton reaches ``tol`` in a handful of steps, which the
    implicit-function hypergradient needs (it assumes ``∇F = 0``). ``eig``: a
    ``feature_eig``-like decomposition to reuse for the preconditioner.
    """
    k, d = head.weight.shape
    # large features as given (float32 stays float32: flat_objective sums in float64 chunk by
    # chunk, the inner CG runs on float32 anyway): no float64 copy of an (N, d) matrix
    zd = z.detach().to(head.weight.device)
    if not zd.dtype.is_floating_point or zd.numel() <= SMALL_FLOAT64_ELEMENTS:
        zd = zd.to(torch.float64)  # small: one float64 copy, not one per evaluation
    yoh = y.long().to(zd.device)  # labels: no (N, k) one-hot
    theta = head.flat().detach().clone()
    loss, g = flat_objective(theta, zd, yoh, wd, k)
    z_as = {zd.dtype: zd}
    for _ in range(max_steps):
        gnorm = float(g.norm())
        if gnorm <= tol:
            break
        eig = feature_eig(zd) if eig is None else eig
        now = LinearHead.from_flat(theta, k, d)
        found = None
        # gradient and line search in float64; the inner CG on float32 curvature first
        # (inexact Newton needs the step only to the CG tolerance, ≥ 1e-5 relative), float64
        # when that step fails (a softmax saturated in float32 at a tiny weight decay)
        for dtype in (torch.float32, torch.float64):
            if dtype not in z_as:  # converted once per solve, not once per Newton step
                z_as[dtype] = zd.to(dtype)
            curv = HeadCurvature(now, z_as[dtype], wd, eig, dtype)
            step = curv.solve_cg(g, iters=cg_iters, tol=forcing_term(gnorm, tol))
            found = _backtrack(
                theta, step, g, loss, lambda th, grad: flat_objective(th, zd, yoh, wd, k, grad)
            )
            if found is not None:
                break
        if found is None:  # no descent direction even in float64: as exact as it gets
            break
        t, loss, g_new = found
        theta = theta - t * step
        g = g_new if g_new is not None else flat_objective(theta, zd, yoh, wd, k)[1]
    return LinearHead.from_flat(theta, k, d)


def forcing_term(gnorm: float, tol: float) -> float:
    """The relative CG tolerance of a Newton step at gradient norm ``gnorm``: ``√||g||``
    (superlinear convergence), but never tighter than the step needs to bring ``||g||``
    under ``tol`` (half of it, for the model error): on the default tgda follower the last
    Newton step of each solve otherwise over-solves."""
    return min(0.5, max(math.sqrt(gnorm), 0.5 * tol / gnorm))


def _backtrack(
    theta: torch.Tensor,
    step: torch.Tensor,
    g: torch.Tensor,
    loss: float,
    objective: Callable[[torch.Tensor, bool], tuple[float, torch.Tensor | None]],
) -> tuple[float, float, torch.Tensor | None] | None:
    """Armijo step length along ``-step`` (halving from 1) with the objective there and, for
    the full step (the usual case near the optimum), its gradient, computed in the same pass;
    None if there is no such step."""
    if not bool(torch.isfinite(step).all()):
        return None
    slope = float(g @ step)
    t = 1.0
    while t > 1e-10:
        value, grad = objective(theta - t * step, t == 1.0)
        if value <= loss - 1e-4 * t * slope:
            return t, value, grad
        t *= 0.5
    return None


HISTORY = 20  # L-BFGS curvature pairs
MAX_HALVINGS = 8
STALL_ITERS = 20  # iterations without halving ||∇F||: float32 round-off reached


def kronecker_basis(
    eig: tuple[torch.Tensor, torch.Tensor], n_classes: int, wd: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(Qa, Qcᵀ, S)`` of the change of variables (see the module docstring)."""
    k = n_classes
    eye = torch.eye(k, dtype=torch.float64, device=eig[1].device)
    uniform = (eye - 1.0 / k) / k  # the softmax curvature Ā at uniform p (θ = 0)
    qa, qc, eigvals = kronecker_eig(uniform, eig, wd)
    return qa.float(), qc.T.float().contiguous(), eigvals.rsqrt().float()


# long: one L-BFGS loop whose state (iterate, history, norms) moves together; #20 edits it
def lbfgs_float32(
    z: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    wd: float,
    eig: tuple[torch.Tensor, torch.Tensor],
    tol: float = 0.0,
    max_iter: int = 300,
) -> tuple[LinearHead, float]:
    """Minimise mean CE + wd/2·||W||² from zero to float32 round-off (hard labels);
    ``eig`` from ``curvature.feature_eig``; stops at ``||∇F|| <= tol`` or when float32 stops
    making progress. Returns the head and its ``||∇F||`` (computed in float32: it agrees
    with float64 to ~1e-8 at N=50k, d=512)."""
    n, d = z.shape
    k = n_classes
    qa, qct, scale = kronecker_basis(eig, k, wd)
    zt = z.detach().to(torch.float32).T.contiguous()  # (d, n): see the module docstring
    yoh = torch.nn.functional.one_hot(y.long().to(z.device), k).T.to(torch.float32)

    def head_of(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        full = qa @ (v * scale) @ qct
        return full[:, :d], full[:, d]

    def evaluate(v: torch.Tensor) -> tuple[float, torch.Tensor, float]:
        """Loss, gradient in V and ``||∇F||`` in the original parameters (one pass)."""
        w, b = head_of(v)
        logp = torch.log_softmax(torch.addmm(b[:, None], w, zt), dim=0)
        # summed in float64: the line search compares losses that differ by < 1e-7
        loss = -(logp * yoh).double().sum() / n + 0.5 * wd * (w.double() ** 2).sum()
        resid = logp.exp_().sub_(yoh).div_(n)
        grad = torch.cat([resid @ zt.T + wd * w, resid.sum(1, keepdim=True)], 1)
        # chain rule through the change of variables; Qa, Qc orthogonal keep the norm
        return float(loss), (qa.T @ grad @ qct.T) * scale, float(grad.norm())

    v = torch.zeros(k, d + 1, device=z.device)
    loss, g, norm = evaluate(v)
    history: list[tuple[torch.Tensor, torch.Tensor, float]] = []
    best, since = norm, 0
    for _ in range(max_iter):
        if norm <= tol or since >= STALL_ITERS:  # converged, or float32 round-off reached
            break
        direction = -_two_loop(g, history)
        slope = float((g * direction).sum())
        step, accepted = 1.0, False
        for _ in range(MAX_HALVINGS):  # Armijo backtracking; the unit step is the rule
            trial = v + step * direction
            new_loss, new_g, new_norm = evaluate(trial)
            # near the optimum the loss change drowns in float32 noise (~1e-7 relative): a
            # smaller gradient at a loss equal within that noise is then the evidence
            within_noise = new_loss <= loss + 1e-6 * abs(loss)
            if new_loss <= loss + 1e-4 * step * slope or (new_norm < norm and within_noise):
                accepted = True
                break
            step *= 0.5
        if not accepted:  # no direction makes progress in float32
            break
        s_vec, y_vec = trial - v, new_g - g
        sy = float((s_vec * y_vec).sum())
        if sy > 1e-12 * float(y_vec.norm()) * float(s_vec.norm()):
            history = [*history[-(HISTORY - 1) :], (s_vec, y_vec, 1.0 / sy)]
        v, loss, g, norm = trial, new_loss, new_g, new_norm
        best, since = (norm, 0) if norm < 0.5 * best else (best, since + 1)
    w, b = head_of(v)
    return LinearHead(w.double(), b.double()), norm


def _two_loop(
    g: torch.Tensor, history: list[tuple[torch.Tensor, torch.Tensor, float]]
) -> torch.Tensor:
    """L-BFGS's inverse-Hessian product ``H⁻¹g`` from the stored curvature pairs."""
    q = g.clone()
    alphas = []
    for s_vec, y_vec, rho in reversed(history):
        alpha = rho * float((s_vec * q).sum())
        q -= alpha * y_vec
        alphas.append(alpha)
    if history:
        s_vec, y_vec, rho = history[-1]
        q *= 1.0 / (rho * float((y_vec * y_vec).sum()))
    for (s_vec, y_vec, rho), alpha in zip(history, reversed(alphas), strict=True):
        beta = rho * float((y_vec * q).sum())
        q += (alpha - beta) * s_vec
    return q


LARGE_COLD_START = 4_000_000  # feature elements above which cold fits use lbfgs_float32
# ||∇F|| at which a large cold fit hands over from float32 L-BFGS to float64 Newton when tol is
# tighter: below ~1e-5 float32 L-BFGS crawls toward its round-off (CIFAR N=50k: 2.8 s to 1e-5,
# 8.4 s to its ~5e-7 stall), while Newton from 1e-5 needs one or two more CG solves
HANDOFF_TOL = 1e-5


def train_lbfgs(z, y, n_classes, config: VictimConfig, init: LinearHead | None) -> LinearHead:
    """The exact fit: torch L-BFGS (or damped Newton from a warm ``init``), then Newton-CG."""
    if init is None and not y.dtype.is_floating_point and z.numel() > LARGE_COLD_START:
        return train_large_cold(z, y, n_classes, config)
    zd = z.detach().to(torch.float64)
    if init is not None and not y.dtype.is_floating_point:
        # warm start (a retrain after poisoning or defending): damped Newton converges from
        # here in a few steps; L-BFGS first would cost 2-3x more (FT verification retrains)
        head = newton_solve(
            init.to(zd.device, torch.float64), zd, y, config.weight_decay, tol=config.tol
        )
        if gradient_norm(head, zd, y, config.weight_decay) <= config.tol:
            return head
    yoh = label_targets(y, n_classes, torch.float64)
    d = zd.shape[1]
    theta = torch.zeros(n_classes * d + n_classes, dtype=torch.float64, device=zd.device)
    if init is not None:
        theta = init.to(zd.device, torch.float64).flat().detach().clone()
    theta.requires_grad_(True)
    opt = torch.optim.LBFGS(
        [theta],
        lr=1.0,
        max_iter=config.max_iter,
        tolerance_grad=1e-6,
        tolerance_change=1e-14,
        history_size=20,
        line_search_fn="strong_wolfe",
    )
    wd = config.weight_decay

    def closure() -> torch.Tensor:  # F and its closed-form gradient, as Newton uses them
        loss, theta.grad = flat_objective(theta.detach(), zd, yoh, wd, n_classes)
        return torch.tensor(loss, dtype=torch.float64)

    opt.step(closure)
    head = LinearHead.from_flat(theta.detach(), n_classes, d)
    # L-BFGS stalls near ||∇F|| ~ 1e-6 on ill-conditioned SSL features; a few Newton-CG
    # steps reach the unique minimiser, which gradient canceling's guarantee relies on.
    if y.dtype.is_floating_point:  # soft labels: L-BFGS's answer is the best we offer
        return head
    return newton_solve(head, zd, y, config.weight_decay, tol=config.tol)


def train_large_cold(z, y, n_classes: int, config: VictimConfig) -> LinearHead:
    """Preconditioned float32 L-BFGS (``lbfgs_float32``) to ``tol`` or ``HANDOFF_TOL``, then
    float64 Newton when ``tol`` is tighter than that."""

    eig = feature_eig(z)
    wd, tol = config.weight_decay, config.tol
    head, grad_norm = lbfgs_float32(z, y, n_classes, wd, eig, tol=max(0.5 * tol, HANDOFF_TOL))
    if grad_norm <= 0.5 * tol:  # half: float32's norm is good to ~1e-8 absolute
        return head
    # the features as they are: Newton sums in float64 chunk by chunk (no float64 copy)
    return newton_solve(head, z, y, wd, tol=tol, eig=eig)


def train_sgd(z, y, n_classes, config: VictimConfig, init, seed: int) -> LinearHead:
    """Minibatch SGD with momentum and a cosine schedule (the linear-probe recipe).

    The step is divided by the mean squared feature norm so that one learning
    rate serves extractors whose features have very different scales.
    """
    zd = z.detach().to(torch.float32)
    yl = y.long()
    n, d = zd.shape
    gen = torch.Generator().manual_seed(seed)
    weight = torch.zeros(n_classes, d, device=zd.device)
    bias = torch.zeros(n_classes, device=zd.device)
    if init is not None:
        weight = init.weight.detach().to(zd.device, torch.float32).clone()
        bias = init.bias.detach().to(zd.device, torch.float32).clone()
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    scale = float((zd**2).sum(1).mean().clamp_min(1.0))
    lr = config.sgd_lr / scale
    opt = torch.optim.SGD([weight, bias], lr=lr, momentum=config.sgd_momentum)
    steps_per_epoch = math.ceil(n / config.sgd_batch_size)
    total = config.sgd_epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    for _ in range(config.sgd_epochs):
        order = torch.randperm(n, generator=gen).to(zd.device)
        for start in range(0, n, config.sgd_batch_size):
            idx = order[start : start + config.sgd_batch_size]
            logits = zd[idx] @ weight.T + bias
            loss = F.cross_entropy(logits, yl[idx]) + 0.5 * config.weight_decay * (weight**2).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return LinearHead(weight.detach().double(), bias.detach().double())
