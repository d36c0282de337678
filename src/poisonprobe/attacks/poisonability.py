r"""Poisonability: a *necessary* budget ``eps_needed(ŵ)`` for a target head to be reachable.

Setting. The victim minimises ``mean CE + (wd/2)||W||²`` over ``D_c ∪ D_p``; ŵ = (Ŵ, b̂) is its
(unique) solution iff the residual vanishes (``gc/objective.py``):

    R_c + Σ_{j≤n_p} [ g(z_j, y_j) + wd·[Ŵ, 0] ] = 0,
    g(z, y) = ((p − e_y) zᵀ, p − e_y),  p = softmax(Ŵz + b̂),
    R_c = Σ_{D_c} g + wd·N·[Ŵ, 0]                      (``clean_gradient``).

Hence −R_c ∈ n_p · conv(G) with G = {g(z, y) + wd[Ŵ, 0] : z ∈ Z, y}, Z the features a poison can
have. For any direction v, ⟨−R_c, v⟩ ≥ n_p · min_{z∈Z, y} ⟨g(z, y) + wd[Ŵ, 0], v⟩; the smallest
n_p satisfying this is a lower bound on the poison count. We use the directions for which the
minimum has a tractable, *exact* value:

**Direction v = (Ŵ, b̂ + c)** (the target itself, plus a free per-class shift c of the bias
part). With logits s = Ŵz + b̂ and gaps D_k = s_y − s_k (D_y = 0), one poison contributes

    ⟨g(z, y), v⟩ = Σ_k (p_k − δ_ky)(s_k + c_k) = −Σ_k q_k a_k,
    q = softmax(−D),  a_k = D_k − e_k,  e_k = c_k − c_y,

which depends on z only through the gaps. Over Z = a box [lo, hi] (per-dimension), each gap
ranges over an interval [D_k^min, D_k^max] (closed form: a linear function over a box); we
relax Z to the product of these intervals, which can only *enlarge* the set, so the bound stays
necessary. Write φ(D) = Σ_k q_k a_k (to maximise). Its partial derivatives are
∂φ/∂D_k = q_k (1 − a_k + φ), so at any KKT point of the box-constrained maximum
D_k = clip(1 + φ + e_k, D_k^min, D_k^max): every maximiser lies on the one-parameter curve
D(t) = clip(t + e, D^min, D^max) at t* = 1 + φ*, and since every D(t) is feasible,
φ* = max_t φ(D(t)) — a 1-D problem. It is unimodal with a root we can bracket exactly: along
the curve the free coordinates (not clipped) have a_k = t, so dφ/dt = Q(t)·h(t) with
Q = Σ_free q_k ≥ 0 and h(t) = 1 + φ(t) − t; at any zero of h, h' = Q·h − 1 = −1, so h crosses
zero once, downwards. φ therefore rises while h ≥ 0 and falls after: t* is the unique root of
h, found by multisection on its sign (each round shrinks the bracket 16×, to rounding in a
dozen rounds), and φ* = t* − 1. t* lies in [1 + φ(D(1)), 1 + log k + max(0, max_k −e_k)]
because φ* ≥ φ(D(1)) and φ ≤ H(q) + log q_y − Σ q_k e_k ≤ log k + max(−e).

With φ* = max_y φ*_y the best cancellation per poison, and
A(c) = ⟨R_c, v⟩ = ⟨R_c, θ̂⟩ + ⟨R_b, c⟩ (the wd term is orthogonal to the bias shift), the
condition reads A(c) ≤ n_p (φ*(c) − wd||Ŵ||²):

    eps_needed ≥ A(c) / (N · (φ*(c) − wd||Ŵ||²))          (A > 0; ∞ if the denominator ≤ 0).

For A < 0 the other side gives −A ≤ n_p (wd||Ŵ||² − φ_min). φ rises then falls along each
coordinate (∂φ/∂D_k changes sign once), so φ_min is attained at a vertex of the interval box:
exact enumeration for k ≤ 13, else the crude φ_min ≥ min(0, min_k D_k^min − e_k).

**Binary check.** k = 2, c = 0, unbounded Z: D(t) = t, φ(t) = t e^{−t}/(1 + e^{−t}), whose
maximum is W(1/e) ≈ 0.2785 (at t = 1 + W(1/e)); with ḡ_c the mean clean CE gradient,
A/N = ⟨ḡ_c, θ̂⟩ + wd||Ŵ||², so eps ≥ (⟨ḡ_c, θ̂⟩ + wd||Ŵ||²)/(W(1/e) − wd||Ŵ||²), which is the
published ⟨ḡ_c, ŵ⟩/W(1/e) when the regulariser is folded into ḡ_c and wd||Ŵ||² ≪ W(1/e)
(exactly it at wd = 0). The bias is included in θ̂ and does not change the constant.

**Bias direction.** The bias part alone: R_b + Σ_j (p_j − e_{y_j}) = 0 with
||p − e_y||_1 = 2(1 − p_y) < 2, so n_p ≥ ||R_b||_1 / 2 — independent of Z.

``eps_needed`` is the maximum over these bounds (c = 0, a few shifts c along R_b, and the bias
bound). It is necessary for *every* injection attack whose poison features lie in Z — which is
why the head any such attack induces is itself a reachable target. Not sufficient: a target that
passes may still be unreachable, which stage 2 finds out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..head.objective import LinearHead
from .gc.objective import CleanGradient, clean_gradient

_SECTION_POINTS = 15  # interior points per multisection round
_SECTION_ROUNDS = 14  # 16^14 ≈ 7e16: the bracket shrinks to rounding
_MAX_VERTEX_CLASSES = 13
_SHIFTS = (0.0, -4.0, -1.0, 1.0, 4.0)


@dataclass(frozen=True)
class FeatureBox:
    """Per-dimension bounds ``low ≤ z ≤ high`` of the features a poison may take (±inf allowed).

    ``from_features`` uses the clean range: the extractor provably produced those values
    (and non-negativity of ReLU features follows, since clean features are ≥ 0).
    """

    low: torch.Tensor
    high: torch.Tensor

    @classmethod
    def from_features(cls, z: torch.Tensor, slack: float = 0.0) -> FeatureBox:
        low, high = z.min(dim=0).values, z.max(dim=0).values
        pad = slack * (high - low)
        low = low - pad
        if bool((z >= 0).all()):
            low = low.clamp_min(0.0)  # a ReLU extractor never produces negative features
        return cls(low, high + pad)

    @classmethod
    def unbounded(cls, dim: int, device: torch.device | str | None = None) -> FeatureBox:
        inf = torch.full((dim,), math.inf, dtype=torch.float64, device=device)
        return cls(-inf, inf)

    def project(self, z: torch.Tensor) -> torch.Tensor:
        low = self.low.to(z.device, z.dtype)
        high = self.high.to(z.device, z.dtype)
        return torch.clamp(z, low, high)


@dataclass(frozen=True)
class Poisonability:
    """Lower bounds on the budget a target needs (fractions of N; ``inf`` = unreachable)."""

    eps_needed: float  # the maximum of the bounds below
    eps_direction: float  # along v = θ̂ (c = 0): the multiclass analogue of the binary condition
    eps_shifted: float  # best over bias shifts c
    eps_bias: float  # ||R_b||_1 / (2N)
    phi_max: float  # best cancellation per poison along θ̂ (W(1/e) for binary, unbounded Z)
    alignment: float  # ⟨R_c, θ̂⟩ / N


def gap_intervals(head: LinearHead, box: FeatureBox) -> tuple[torch.Tensor, torch.Tensor]:
    """Range of the logit gaps ``D[y, k] = s_y − s_k`` over the box: (k, k) lower and upper."""
    w, b = head.weight, head.bias
    dw = w[:, None, :] - w[None, :, :]  # (k, k, d): row y minus row k
    db = b[:, None] - b[None, :]
    low = box.low.to(w.device, w.dtype)
    high = box.high.to(w.device, w.dtype)
    # min over the box of a linear function: pick the bound by the sign of each coefficient;
    # zero coefficients contribute nothing even when the bound is infinite.
    pos, neg = dw.clamp_min(0.0), dw.clamp_max(0.0)
    lo = _safe_mul(pos, low).sum(-1) + _safe_mul(neg, high).sum(-1) + db
    hi = _safe_mul(pos, high).sum(-1) + _safe_mul(neg, low).sum(-1) + db
    eye = torch.eye(w.shape[0], dtype=torch.bool, device=w.device)
    return lo.masked_fill(eye, 0.0), hi.masked_fill(eye, 0.0)


def _safe_mul(coef: torch.Tensor, bound: torch.Tensor) -> torch.Tensor:
    out = coef * bound
    return torch.where(coef == 0, torch.zeros_like(out), out)


def _phi(t: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """φ(D(t)) for labels y (rows) and scalars t (..., k_y, G) -> (..., k_y, G); ``e`` is
    (..., k, k) with the same leading (batch-of-shifts) dimensions as ``t``."""
    e = e[..., :, None, :]
    d = torch.minimum(torch.maximum(t[..., None] + e, lo[:, None, :]), hi[:, None, :])
    eye = torch.eye(lo.shape[0], dtype=torch.bool, device=lo.device)[:, None, :]
    d = d.masked_fill(eye, 0.0)  # D_y = 0
    a = (d - e).masked_fill(eye, 0.0)
    q = torch.softmax(-d, dim=-1)
    return (q * a).sum(-1)


def max_cancellation(lo: torch.Tensor, hi: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``max_{D ∈ [lo, hi]} Σ_k softmax(−D)_k (D_k − e_k)`` per label y (the 1-D KKT search).

    ``lo, hi``: (k, k) gap intervals; ``shift``: (..., k) bias shifts c (e[y, k] = c_k − c_y),
    several at once along the leading dimensions (one vectorised search). Returns (..., k):
    φ at the ends of the final bracket around the root t* of h(t) = 1 + φ(t) − t (attained
    values, so never above the true maximum; below it by rounding only).
    """
    k = lo.shape[0]
    e = shift[..., None, :] - shift[..., :, None]
    ones = torch.ones(*shift.shape, 1, dtype=lo.dtype, device=lo.device)
    a = 1.0 + _phi(ones, lo, hi, e)[..., 0]  # h(a) ≥ 0: t* ≥ 1 + φ(D(1))
    b = 1.0 + math.log(k) + (-e).clamp_min(0.0).max(dim=-1).values  # h(b) ≤ 0
    b = torch.maximum(b, a)
    frac = torch.arange(1, _SECTION_POINTS + 1, dtype=lo.dtype, device=lo.device)
    frac = frac / (_SECTION_POINTS + 1)
    for _ in range(_SECTION_ROUNDS):
        t = a[..., None] + (b - a)[..., None] * frac
        rising = 1.0 + _phi(t, lo, hi, e) >= t  # h ≥ 0: a prefix of the points
        m = rising.sum(dim=-1, keepdim=True)  # the root lies between points m−1 and m
        a = torch.where(m > 0, t.gather(-1, (m - 1).clamp_min(0)), a[..., None])[..., 0]
        b = torch.where(
            m < _SECTION_POINTS, t.gather(-1, m.clamp_max(_SECTION_POINTS - 1)), b[..., None]
        )[..., 0]
    ends = _phi(torch.stack([a, b], dim=-1), lo, hi, e)
    return ends.max(dim=-1).values


def min_cancellation(lo: torch.Tensor, hi: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``min_{D ∈ [lo, hi]} φ(D)`` per label y: exact by vertex enumeration for k ≤ 13.

    Along each coordinate φ rises then falls (∂φ/∂D_k = q_k(1 − a_k + φ) changes sign once,
    from + to −), so the minimum sits at a vertex of the box. For more classes we fall back to
    the valid but crude ``φ ≥ min(0, min_k D_k^min − e_k)`` (a convex combination, a_y = 0).
    """
    k = lo.shape[0]
    e = shift[None, :] - shift[:, None]
    crude = (lo - e).min(dim=1).values  # the diagonal (k = y) supplies the 0
    if k > _MAX_VERTEX_CLASSES:
        return crude
    big = 1e6  # stands in for infinite gaps (φ → −∞ there anyway)
    lo_c, hi_c = lo.clamp(-big, big), hi.clamp(-big, big)
    bits = (torch.arange(2**k, device=lo.device)[:, None] >> torch.arange(k, device=lo.device)) & 1
    out = torch.empty(k, dtype=lo.dtype, device=lo.device)
    for y in range(k):
        sel = bits[bits[:, y] == 0].bool()  # the y coordinate is fixed at 0 anyway
        d = torch.where(sel, hi_c[y], lo_c[y])
        d[:, y] = 0.0
        a = d - e[y]
        out[y] = (torch.softmax(-d, dim=1) * a).sum(1).min()
    return out


def poisonability(
    head: LinearHead,
    z_clean: torch.Tensor,
    y_clean: torch.Tensor,
    weight_decay: float,
    box: FeatureBox | None = None,
    clean: CleanGradient | None = None,
    shifts: tuple[float, ...] = _SHIFTS,
) -> Poisonability:
    """Necessary budget for ``head`` to be the victim's solution with poisons in ``box``.

    ``box=None`` means unbounded features (valid for any attack, but weaker).
    """
    head = head.to(z_clean.device, torch.float64)
    if clean is None:
        clean = clean_gradient(head, z_clean, y_clean, weight_decay)
    n = int(z_clean.shape[0])
    if box is None:
        box = FeatureBox.unbounded(z_clean.shape[1], z_clean.device)
    lo, hi = gap_intervals(head, box)
    reg = weight_decay * float((head.weight**2).sum())
    align = float((clean.weight * head.weight).sum() + (clean.bias * head.bias).sum())
    r_b = clean.bias.to(torch.float64)
    eps_bias = float(r_b.abs().sum()) / (2.0 * n)

    scale = float(r_b.abs().max())
    unit = r_b / scale if scale > 0 else torch.zeros_like(r_b)
    bounds: list[float] = []
    phi0 = math.nan
    lams = [lam for lam in shifts if lam == 0.0 or scale > 0]
    cs = torch.stack([lam * unit for lam in lams]) if lams else unit[:0]
    phis = max_cancellation(lo, hi, cs).max(dim=-1).values.tolist()  # every shift at once
    for lam, c, phi in zip(lams, cs, phis, strict=True):
        a_c = align + float((r_b * c).sum())
        if lam == 0.0:
            phi0 = phi
        bounds.append(_side_bound(a_c, phi, reg, (lo, hi), c, n))
    eps_dir = bounds[0] if shifts and shifts[0] == 0.0 else math.nan
    eps_shift = max(bounds) if bounds else 0.0
    return Poisonability(
        eps_needed=max(eps_shift, eps_bias),
        eps_direction=eps_dir,
        eps_shifted=eps_shift,
        eps_bias=eps_bias,
        phi_max=phi0,
        alignment=align / n,
    )


def _side_bound(
    a: float,
    phi: float,
    reg: float,
    gaps: tuple[torch.Tensor, torch.Tensor],
    c: torch.Tensor,
    n: int,
) -> float:
    """Budget from ⟨R_c, v⟩ = a against n_p·[min, max] of one poison's contribution."""
    if a > 0:
        denom = phi - reg
        return math.inf if denom <= 0 else a / (n * denom)
    if a < 0:
        denom = reg - float(min_cancellation(*gaps, c).min())
        return math.inf if denom <= 0 else -a / (n * denom)
    return 0.0


def eps_needed(
    head: LinearHead,
    z_clean: torch.Tensor,
    y_clean: torch.Tensor,
    weight_decay: float,
    box: FeatureBox | None = None,
) -> float:
    """Shorthand for ``poisonability(...).eps_needed``."""
    return poisonability(head, z_clean, y_clean, weight_decay, box).eps_needed
