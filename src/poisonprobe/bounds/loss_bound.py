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
from ..head.objective import LinearHead, row_chunks
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
    """Mean CE of ``head`` on ``(z, y)`` (float64, in row chunks)."""
    h = head.to(z.device, torch.float64)
    yl = y.long().to(z.device)
    total = 0.0
    for rows in row_chunks(z.shape[0], h.n_classes):
        total += float(F.cross_entropy(h.logits(z[rows]), yl[rows], reduction="sum"))
    return total / max(z.shape[0], 1)


def relaxed_loss(m: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``log(1 + (K−1) e^m)`` ≥ CE whenever m ≥ every wrong-class margin."""
    return torch.logaddexp(torch.zeros_like(m), m + math.log(max(n_classes - 1, 1)))


# (pairs × d) elements per max_linear call, and of worst points kept: the (y, j) pairs number
# L·(K−1), ~1e6 at K = 1000, whose (pairs, d) float64 arrays (16 GB at d = 2048) are never
# held at once; at K = 10 every pair fits one chunk and is kept (the unchunked arithmetic)
PAIR_CHUNK_ELEMENTS = 2**23
KEEP_ELEMENTS = 2**23


def pair_maxima(
    weight: torch.Tensor, bias: torch.Tensor, fs: FeasibleSet, keep: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """For every feasible label y and class j ≠ y: an upper bound on ``max_{z∈F_y}
    (w_j − w_y)·z + b_j − b_y`` and a feasible point attaining (nearly) it.

    Returns flat (ys, js, values) over the L·(K−1) pairs, and (kept, points): the indices
    of the ``keep`` pairs of largest value (default ``KEEP_ELEMENTS // d``; every pair, in
    order, when they are no more) and their points. Runs over label chunks, so memory is
    O(chunk·d + keep·d) whatever K."""
    k, d = fs.n_classes, weight.shape[1]
    keep = max(1, KEEP_ELEMENTS // max(d, 1)) if keep is None else keep
    labels = torch.tensor(fs.labels, dtype=torch.long, device=weight.device)
    ys = labels.repeat_interleave(k - 1)
    others = torch.arange(k - 1, device=weight.device)
    js = (others[None, :] + (others[None, :] >= labels[:, None]).long()).reshape(-1)
    n_pairs = int(ys.numel())
    step = max(k - 1, (PAIR_CHUNK_ELEMENTS // max(d, 1)) // (k - 1) * (k - 1))
    vals: list[torch.Tensor] = []
    kept = torch.zeros(0, dtype=torch.long, device=weight.device)
    kept_val = torch.zeros(0, dtype=torch.float64, device=weight.device)
    points = torch.zeros(0, d, dtype=torch.float64, device=weight.device)
    for start in range(0, n_pairs, step):
        cy, cj = ys[start : start + step], js[start : start + step]
        val, x = max_linear(fs, cy, weight[cj] - weight[cy], bias[cj] - bias[cy])
        vals.append(val)
        idx = torch.arange(start, start + val.numel(), device=weight.device)
        # merge with the best so far and keep the largest
        kept, kept_val = torch.cat([kept, idx]), torch.cat([kept_val, val])
        points = torch.cat([points, x.to(points.dtype)])
        if kept.numel() > keep:
            top = kept_val.topk(keep).indices
            kept, kept_val, points = kept[top], kept_val[top], points[top]
    if kept.numel() == n_pairs:  # everything kept: pair order
        order = kept.argsort()
        kept, points = kept[order], points[order]
    return ys, js, torch.cat(vals), kept, points


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

    zd = z.detach()  # its own dtype: row chunks are summed in float64 (no float64 copy)
    yl = y.long().to(zd.device)
    head0 = init.to(zd.device, torch.float64)
    base = clean_loss(head0, zd, yl)
    empty = torch.zeros(0, zd.shape[1], dtype=torch.float64, device=zd.device)
    if n_poison == 0 or not fs.labels:  # nothing survives: the victim retrains on C exactly
        return MinimaxResult(base, min(1.0, base / LOG2), base, None, empty, yl[:0], [base])
    with single_thread_if_small(zd.numel(), zd.device):
        return _loop(zd, yl, n_classes, weight_decay, n_poison, fs, head0, steps, lr, tau0, base)


def _clean_ce(
    zd: torch.Tensor, yl: torch.Tensor, w: torch.Tensor, b: torch.Tensor, k: int
) -> torch.Tensor:
    """Mean clean CE in row chunks (one at K = 10): no (N, K) logits at K = 1000."""
    n = zd.shape[0]
    total = torch.zeros((), dtype=torch.float64, device=zd.device)
    for rows in row_chunks(n, k):
        logits = zd[rows].double() @ w.T + b
        total = total + F.cross_entropy(logits, yl[rows], reduction="sum")
    return total / n


def _loop(zd, yl, k, wd, n_poison, fs, head0, steps, lr, tau0, base) -> MinimaxResult:
    n = zd.shape[0]
    share = n_poison / n
    reg = (n + n_poison) / n * wd / 2

    def value(w: torch.Tensor, b: torch.Tensor):
        ys, js, margins, kept, points = pair_maxima(w, b, fs)
        worst = int(margins.argmax())  # relaxed_loss is increasing: the worst pair
        lc = clean_ce(w, b)
        u = float(lc) + share * float(relaxed_loss(margins[worst], k))
        # the pairs whose points the smoothed maximum's gradient uses (the largest margins;
        # the rest weigh < e^-40 at the end of the schedule, and U is exact regardless)
        return u + reg * float((w**2).sum()), ys[kept], js[kept], margins[kept], points

    def clean_ce(w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return _clean_ce(zd, yl, w, b, k)

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
        worst = int(margins.argmax())  # among the kept pairs: the overall worst is kept
        values.append(u)
        xs.append(points[worst])
        ys.append(py[worst])
        if u < best_u:
            best_u, best_head = u, LinearHead(w.detach().clone(), b.detach().clone())
        lc = clean_ce(w, b)
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
