"""The victim: a multinomial linear head trained on frozen features.

The objective is ``mean_i CE(W z_i + b, y_i) + (weight_decay / 2) * ||W||^2``
(bias not decayed, like scikit-learn). It is strictly convex in ``W`` for
``weight_decay > 0``, so the exact L-BFGS solution is unique: gradient
canceling relies on exactly this objective (see ``attacks/gc_objective.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F

from .errors import ConfigError, DataError


@dataclass
class LinearHead:
    """``h(z) = z @ weight.T + bias`` with ``weight`` (k, d) and ``bias`` (k,)."""

    weight: torch.Tensor
    bias: torch.Tensor

    @property
    def n_classes(self) -> int:
        return int(self.weight.shape[0])

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        return z.to(self.weight.dtype) @ self.weight.T + self.bias

    def predict(self, z: torch.Tensor) -> torch.Tensor:
        return self.logits(z).argmax(dim=1)

    def accuracy(self, z: torch.Tensor, y: torch.Tensor) -> float:
        return float((self.predict(z) == y.to(z.device)).double().mean())

    def flat(self) -> torch.Tensor:
        """Parameters as one vector ``[vec(W), b]`` (row-major W)."""
        return torch.cat([self.weight.reshape(-1), self.bias])

    @classmethod
    def from_flat(cls, theta: torch.Tensor, n_classes: int, dim: int) -> LinearHead:
        w = theta[: n_classes * dim].reshape(n_classes, dim)
        return cls(w, theta[n_classes * dim :])

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        return LinearHead(self.weight.to(device, dtype), self.bias.to(device, dtype))

    def clone(self) -> LinearHead:
        return LinearHead(self.weight.detach().clone(), self.bias.detach().clone())


SOLVERS = ("lbfgs", "sgd", "lbfgs-cv")
DEFAULT_C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)


@dataclass(frozen=True)
class VictimConfig:
    """How the victim trains its head. ``lbfgs`` is exact; ``sgd`` is the usual probe recipe;
    ``lbfgs-cv`` picks ``C`` from ``C_grid`` on a stratified validation split, then refits.

    ``C`` is scikit-learn's: ``LogisticRegression(C)`` minimises ``C Σ_i CE_i + ½‖W‖²``
    (intercept not penalised), which is ``N·C`` times our ``mean CE + (wd/2)‖W‖²`` with
    ``wd = 1 / (N·C)``. So with ``C`` set, each fit on N points uses that ``weight_decay``
    (poisons added, defended sets shrunk: N is the set actually fitted) and the
    ``weight_decay`` field is overwritten by ``for_n``.
    """

    solver: Literal["lbfgs", "sgd", "lbfgs-cv"] = "lbfgs"
    weight_decay: float = 1e-3
    max_iter: int = 100  # L-BFGS iterations before the Newton polish
    tol: float = 1e-9  # gradient norm the exact solver reaches
    sgd_epochs: int = 100
    sgd_lr: float = 4.0
    sgd_batch_size: int = 256
    sgd_momentum: float = 0.9
    C: float | None = None  # scikit-learn's C; replaces weight_decay (wd = 1 / (N C))
    C_grid: tuple[float, ...] = DEFAULT_C_GRID  # lbfgs-cv's candidates
    val_fraction: float = 0.2  # lbfgs-cv's stratified validation share

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise ConfigError(
                f"victim.solver={self.solver!r} is unknown; use one of {', '.join(SOLVERS)}"
            )
        if not self.weight_decay > 0:
            raise ConfigError(
                "victim.weight_decay must be > 0 (the head's minimiser must be unique); "
                "use a small value such as 1e-3"
            )
        if self.C is not None and not (self.C > 0 and math.isfinite(self.C)):
            raise ConfigError(f"victim.C={self.C} must be a positive number, e.g. 1.0")
        grid = tuple(float(c) for c in self.C_grid)
        if not grid or not all(c > 0 and math.isfinite(c) for c in grid):
            raise ConfigError(f"victim.C_grid={list(grid)} must list positive numbers")
        object.__setattr__(self, "C_grid", grid)

    def for_n(self, n: int) -> VictimConfig:
        """This recipe for a fit on ``n`` points: ``weight_decay = 1 / (n C)`` when C is set."""
        if self.C is None:
            return self
        return replace(self, weight_decay=1.0 / (n * self.C))

    @property
    def label(self) -> str:
        """What results record in the ``victim`` column, e.g. ``lbfgs C=0.1``."""
        if self.C is not None:
            return f"{self.solver} C={self.C:g}"
        return f"{self.solver} wd={self.weight_decay:g}"


def row_softmax(logits: torch.Tensor, log: bool = False) -> torch.Tensor:
    """(Log-)softmax over the classes of (n, k) logits, run along contiguous memory on the CPU:
    PyTorch's CPU kernel over a short last dimension (k = 10) is 4-8x slower than over the
    first dimension of the transposed copy. Same values; returns a transposed view."""
    fn = torch.log_softmax if log else torch.softmax
    if logits.device.type != "cpu" or logits.ndim != 2:
        return fn(logits, dim=1)
    return fn(logits.T.contiguous(), dim=0).T


def label_targets(y: torch.Tensor, n_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """Integer labels -> one-hot; soft labels (n, k) pass through."""
    if y.dtype.is_floating_point and y.ndim == 2:
        return y.to(dtype)
    return F.one_hot(y.long(), n_classes).to(dtype)


def gradient_sums(
    head: LinearHead, z: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form ``sum_i grad CE_i`` w.r.t. (W, b): ``(P - Y)^T Z`` and ``sum (P - Y)``.

    Differentiable w.r.t. ``z`` (input-space and feature-space GC backpropagate
    through it once; no double backprop is needed).
    """
    z = z.to(head.weight.dtype)
    resid = row_softmax(head.logits(z)) - label_targets(y, head.n_classes, z.dtype)
    return resid.T @ z, resid.sum(dim=0)


def per_point_gradients(
    head: LinearHead, z: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-point CE gradients: ``(p_i - y_i) z_i^T`` (n, k, d) and ``p_i - y_i`` (n, k)."""
    z = z.to(head.weight.dtype)
    resid = row_softmax(head.logits(z)) - label_targets(y, head.n_classes, z.dtype)
    return resid[:, :, None] * z[:, None, :], resid


def victim_objective(head: LinearHead, z: torch.Tensor, y: torch.Tensor, weight_decay: float):
    """The exact objective the victim minimises (mean CE + L2 on W)."""
    logits = head.logits(z)
    if y.dtype.is_floating_point and y.ndim == 2:
        ce = -(y.to(logits.dtype) * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()
    else:
        ce = F.cross_entropy(logits, y.long())
    return ce + 0.5 * weight_decay * (head.weight**2).sum()


def all_finite(x: torch.Tensor) -> bool:
    """Whether every element is finite, usually in one summing pass without temporaries.

    A finite sum proves every element finite (an inf or NaN makes the sum inf or NaN), and
    costs ~4 ms on 50k×512 float32 features where ``isfinite(x).all()`` (an ``abs`` copy and
    two masks) costs ~130 ms — 8% of a cold CIFAR-scale head fit. Only a non-finite sum (a bad
    value, or finite values so large that their sum overflows) pays for the exact check.
    """
    if not x.dtype.is_floating_point:
        return True
    return bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all())


def check_features(z: torch.Tensor, y: torch.Tensor, what: str = "features") -> None:
    """Refuse NaN/inf features or mismatched labels with a one-line error."""
    if z.ndim != 2 or z.shape[0] != y.shape[0]:
        raise DataError(f"{what}: expected (N, d) features and N labels, got {tuple(z.shape)}")
    if not all_finite(z):
        raise DataError(f"{what} contain NaN or inf; check the extractor and the input images")


def train_head(
    z: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    config: VictimConfig | None = None,
    init: LinearHead | None = None,
    seed: int = 0,
) -> LinearHead:
    """Fit the victim's head on features ``z`` (n, d) with labels ``y`` (n,).

    ``lbfgs`` (exact): L-BFGS from zero, then Newton-CG to ``||∇F|| <= tol``; a warm start
    (``init``) goes straight to damped Newton and falls back to L-BFGS if that stalls. Large
    cold fits run a preconditioned float32 L-BFGS first (``head_lbfgs``), ~10x cheaper.
    """
    from .threads import single_thread_if_small

    check_features(z, y)
    config = resolve_victim(z, y, n_classes, config or VictimConfig(), seed)
    # SGD's minibatch ops are small whatever N is: always one thread on the CPU
    work = z.numel() if config.solver != "sgd" else 0
    with single_thread_if_small(work, z.device):
        if config.solver != "sgd":
            return _train_lbfgs(z, y, n_classes, config, init)
        return _train_sgd(z, y, n_classes, config, init, seed)


def resolve_victim(
    z: torch.Tensor, y: torch.Tensor, n_classes: int, config: VictimConfig, seed: int = 0
) -> VictimConfig:
    """The concrete recipe for fitting on ``(z, y)``: ``lbfgs-cv`` gets the
    ``C`` it picks on a validation split (seeded by ``seed``), and ``C`` becomes the weight
    decay for ``len(z)`` points. A config without ``C`` comes back unchanged."""
    if config.solver == "lbfgs-cv" and config.C is None:  # C set: already picked, keep it
        from .head.cv import select_c

        exact = replace(config, solver="lbfgs", C=None)

        def fit(zt: torch.Tensor, yt: torch.Tensor, c: float):
            cfg = replace(exact, weight_decay=1.0 / (len(zt) * c))
            return _train_lbfgs(zt, yt, n_classes, cfg, None).predict

        c, _ = select_c(z, y, config.C_grid, config.val_fraction, seed, fit)
        config = replace(config, C=c)
    return config.for_n(int(z.shape[0]))


LARGE_COLD_START = 4_000_000  # feature elements above which cold fits use head_lbfgs
# ||∇F|| at which a large cold fit hands over from float32 L-BFGS to float64 Newton when tol is
# tighter: below ~1e-5 float32 L-BFGS crawls toward its round-off (CIFAR N=50k: 2.8 s to 1e-5,
# 8.4 s to its ~5e-7 stall), while Newton from 1e-5 needs one or two more CG solves
HANDOFF_TOL = 1e-5


def _train_lbfgs(z, y, n_classes, config: VictimConfig, init: LinearHead | None) -> LinearHead:
    from .head_solver import flat_objective, newton_solve

    if init is None and not y.dtype.is_floating_point and z.numel() > LARGE_COLD_START:
        return _train_large_cold(z, y, n_classes, config)
    zd = z.detach().to(torch.float64)
    if init is not None and not y.dtype.is_floating_point:
        # warm start (a retrain after poisoning or defending): damped Newton converges from
        # here in a few steps; L-BFGS first would cost 2-3x more (FT verification retrains)
        head = newton_solve(
            init.to(zd.device, torch.float64), zd, y, config.weight_decay, tol=config.tol
        )
        if _gradient_norm(head, zd, y, config.weight_decay) <= config.tol:
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


def _train_large_cold(z, y, n_classes: int, config: VictimConfig) -> LinearHead:
    """Preconditioned float32 L-BFGS (``head_lbfgs``) to ``tol`` or ``HANDOFF_TOL``, then
    float64 Newton when ``tol`` is tighter than that."""
    from .head_lbfgs import lbfgs_float32
    from .head_solver import feature_eig, newton_solve

    eig = feature_eig(z)
    wd, tol = config.weight_decay, config.tol
    head, grad_norm = lbfgs_float32(z, y, n_classes, wd, eig, tol=max(0.5 * tol, HANDOFF_TOL))
    if grad_norm <= 0.5 * tol:  # half: float32's norm is good to ~1e-8 absolute
        return head
    # the features as they are: Newton sums in float64 chunk by chunk (no float64 copy)
    return newton_solve(head, z, y, wd, tol=tol, eig=eig)


def _gradient_norm(head: LinearHead, z: torch.Tensor, y: torch.Tensor, wd: float) -> float:
    """||∇F|| of the victim objective at ``head`` (mean CE + wd/2 ||W||²)."""
    gw, gb = gradient_sums(head, z, y)
    n = z.shape[0]
    return float(torch.cat([(gw / n + wd * head.weight).reshape(-1), gb / n]).norm())


def _train_sgd(z, y, n_classes, config: VictimConfig, init, seed: int) -> LinearHead:
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
