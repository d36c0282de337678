r"""Certified upper bound on the clean training loss any feasible poison set can cause
(Steinhardt, Koh, Liang, *Certified Defenses for Data Poisoning Attacks*, NeurIPS 2017),
for poisonprobe's exact victim, and the minimax loop that computes it.

Derivation (the victim's own normalisation, ``head/objective.py``). Clean set C with N points,
poison set P with n_p points, each in the feasible set F. The victim returns the unique

    θ̂ = argmin_θ  F(θ) = 1/(N + n_p) · [Σ_C ℓ(θ; z, y) + Σ_P ℓ(θ; z, y)] + wd/2 ‖W‖²

(mean CE over clean ∪ poison; the bias is not decayed). Write L_c(θ) = (1/N) Σ_C ℓ. For any
θ, F(θ̂) ≤ F(θ); multiply both sides by (N + n_p)/N:

    L_c(θ̂) + (1/N) Σ_P ℓ(θ̂) + ((N+n_p)/N) wd/2 ‖Ŵ‖²
        ≤  L_c(θ) + (1/N) Σ_P ℓ(θ) + ((N+n_p)/N) wd/2 ‖W‖².

On the left, ℓ ≥ 0 and ‖Ŵ‖² ≥ 0, so drop them; on the right, Σ_P ℓ(θ) ≤ n_p · max_F ℓ(θ):

    L_c(θ̂) ≤ U(θ) := L_c(θ) + (n_p/N) · max_{(z,y) ∈ F} ℓ(θ; z, y) + ((N+n_p)/N) · wd/2 ‖W‖²

for EVERY θ and every feasible P with |P| = n_p (fewer surviving poisons only lower the
bound: ℓ ≥ 0). ``bound_loss = min_θ U(θ)`` over the heads the loop visits; the 0-1 error of θ̂
on C is at most ``bound_loss / log 2`` (a misclassified point has p_y ≤ 1/2, so CE ≥ log 2),
reported capped at 1 as ``bound_error``. With a defence the model is the oracle one of the
paper: poisons outside F are removed, clean points kept (``feasible.oracle_feasible_set``);
the real filters also drop clean points and estimate centroids from contaminated data, which
this bound does not cover. It also assumes the exact victim (``victim.solver = lbfgs``).

The inner maximum of multiclass CE over a convex set is not concave in z; it is relaxed
soundly: ℓ = log(1 + Σ_{j≠y} e^{s_j − s_y}) ≤ log(1 + (K−1) e^{m}), m = max_{j≠y} (w_j − w_y)·z
+ b_j − b_y, monotone in m, and max_{z∈F_y} m is a maximum of linear functions over a convex
set: solved per (y, j) by ``feasible.max_linear`` (exact over the box, box ∩ sphere and
box ∩ slab; sound for box ∩ sphere ∩ slab). U is convex in θ (a sum of convex terms), so the
loop is subgradient descent on U: at each decoy head θ_t find, per label, the worst feasible
point, step on clean loss + reg + (n_p/N) · relaxed worst loss, and keep the smallest U(θ_t).
The worst points found along the way are the ``min-max`` attack (``attacks/min_max.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..defenses.base import DefenseSpec
from ..head.objective import LinearHead
from ..shared_work import shared
from .feasible import FeasibleSet, max_linear, oracle_feasible_set

LOG2 = math.log(2.0)


@dataclass
class MinimaxResult:
    """The loop's outcome: the certified bound and the attack it found on the way."""

    bound_loss: float  # min over visited θ of U(θ): ≥ L_c(θ̂) for every feasible poison set
    bound_error: float  # min(1, bound_loss / log 2)
    clean_loss: float  # L_c of the clean head (what no poison at all gives)
    head: LinearHead | None  # the θ attaining bound_loss (None when no poison survives)
    worst_z: torch.Tensor  # (steps, d) the worst feasible point at each decoy head
    worst_y: torch.Tensor  # (steps,)
    values: list[float] = field(default_factory=list)  # U(θ_t) per step

    @property
    def steps(self) -> int:
        return len(self.values)


def clean_loss(head: LinearHead, z: torch.Tensor, y: torch.Tensor) -> float:
    """Mean CE of ``head`` on ``(z, y)`` (float64)."""
    logits = head.to(z.device, torch.float64).logits(z.double())
    return float(F.cross_entropy(logits, y.long().to(z.device)))


def relaxed_loss(m: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``log(1 + (K−1) e^m)`` ≥ CE whenever m ≥ every wrong-class margin."""
    return torch.logaddexp(torch.zeros_like(m), m + math.log(max(n_classes - 1, 1)))


def pair_maxima(
    weight: torch.Tensor, bias: torch.Tensor, fs: FeasibleSet
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """For every feasible label y and class j ≠ y: an upper bound on ``max_{z∈F_y}
    (w_j − w_y)·z + b_j − b_y`` and a feasible point attaining (nearly) it.
    Returns flat (ys, js, values, points) over the L·(K−1) pairs."""
    k = fs.n_classes
    labels = torch.tensor(fs.labels, dtype=torch.long, device=weight.device)
    ys = labels.repeat_interleave(k - 1)
    js = torch.stack(
        [torch.tensor([j for j in range(k) if j != y], device=weight.device) for y in fs.labels]
    ).reshape(-1)
    val, x = max_linear(fs, ys, weight[js] - weight[ys], bias[js] - bias[ys])
    return ys, js, val, x


def minimax(
    z: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    weight_decay: float,
    n_poison: int,
    fs: FeasibleSet,
    init: LinearHead,
    steps: int = 300,
    lr: float = 0.2,
    tau0: float = 1.0,
) -> MinimaxResult:
    """Minimise U(θ) (module docstring): first along the ray α·init (α ∈ [0, 1]; α = 0 gives
    U = (1 + n_p/N) log K), then Adam-scaled subgradient steps from the best of those with a
    cosine-decayed rate ``lr`` relative to that head's RMS weight; keep the smallest U."""
    from ..threads import single_thread_if_small

    zd = z.detach().double()
    yl = y.long().to(zd.device)
    head0 = init.to(zd.device, torch.float64)
    base = clean_loss(head0, zd, yl)
    empty = torch.zeros(0, zd.shape[1], dtype=torch.float64, device=zd.device)
    if n_poison == 0 or not fs.labels:  # nothing survives: the victim retrains on C exactly
        return MinimaxResult(base, min(1.0, base / LOG2), base, None, empty, yl[:0], [base])
    with single_thread_if_small(zd.numel(), zd.device):
        return _loop(zd, yl, n_classes, weight_decay, n_poison, fs, head0, steps, lr, tau0, base)


def _loop(zd, yl, k, wd, n_poison, fs, head0, steps, lr, tau0, base) -> MinimaxResult:
    n = zd.shape[0]
    share = n_poison / n
    reg = (n + n_poison) / n * wd / 2

    def value(w: torch.Tensor, b: torch.Tensor):
        ys, js, margins, points = pair_maxima(w, b, fs)
        worst = int(margins.argmax())  # relaxed_loss is increasing: the worst pair
        lc = F.cross_entropy(zd @ w.T + b, yl)
        u = float(lc) + share * float(relaxed_loss(margins[worst], k))
        return u + reg * float((w**2).sum()), ys, js, margins, points

    best_u, best_head, best_alpha = math.inf, None, 1.0
    with torch.no_grad():
        for alpha in torch.linspace(0, 1, 21).tolist():
            u = value(alpha * head0.weight, alpha * head0.bias)[0]
            if u < best_u:
                best_u, best_alpha = u, alpha
                best_head = LinearHead(alpha * head0.weight, alpha * head0.bias)
    w = (best_alpha * head0.weight).clone().requires_grad_(True)
    b = (best_alpha * head0.bias).clone().requires_grad_(True)
    scale = float(head0.weight.pow(2).mean().sqrt()) or 1.0
    opt = torch.optim.Adam([w, b], lr=lr * scale)
    xs, ys, values = [], [], []
    for t in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * scale * 0.5 * (1 + math.cos(math.pi * t / steps))
        with torch.no_grad():
            u, py, pj, margins, points = value(w, b)
        worst = int(margins.argmax())
        values.append(u)
        xs.append(points[worst])
        ys.append(py[worst])
        if u < best_u:
            best_u, best_head = u, LinearHead(w.detach().clone(), b.detach().clone())
        lc = F.cross_entropy(zd @ w.T + b, yl)
        # a smoothed max over the (y, j) pairs, each at its worst point (Danskin): its gradient
        # approaches a subgradient of U as tau shrinks; U itself is evaluated exactly above
        m = ((w[pj] - w[py]) * points).sum(1) + b[pj] - b[py]
        tau = tau0 * (1 - t / steps) + 1e-3
        soft = tau * torch.logsumexp(m / tau, 0)
        u_grad = lc + share * relaxed_loss(soft, k) + reg * (w**2).sum()
        opt.zero_grad(set_to_none=True)
        u_grad.backward()
        opt.step()
    return MinimaxResult(
        best_u,
        min(1.0, best_u / LOG2),
        base,
        best_head,
        torch.stack(xs),
        torch.stack(ys),
        values=values,
    )


def shared_minimax(
    memo: dict,
    z: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    weight_decay: float,
    n_poison: int,
    spec: DefenseSpec,
    eps: float,
    init: LinearHead,
    steps: int = 300,
    lr: float = 0.2,
) -> MinimaxResult:
    """``minimax`` over the oracle feasible set of ``spec``, run once per (defence, eps, n_p,
    steps, lr) and shared through ``memo``: the bound rows and the ``min-max`` attack of one
    (setting, extractor, seed) read the same loop."""
    key = ("minimax", spec.label, round(eps, 10), n_poison, steps, lr)

    def compute() -> MinimaxResult:
        fs = oracle_feasible_set(z, y, n_classes, spec, eps)
        return minimax(z, y, n_classes, weight_decay, n_poison, fs, init, steps, lr)

    return shared(memo, key, compute)
