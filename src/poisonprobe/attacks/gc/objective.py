"""The gradient-canceling (GC) objective, shared by feature-space and input-space GC.

The victim minimises ``mean CE + (wd/2)||W||^2`` over ``D_c ∪ D_p`` (``head/objective.py``).
Multiplying its gradient by ``N_t = N_c + n_p`` gives the residual

    R(ŵ) = Σ_{D_c} ∇CE + Σ_{D_p} ∇CE + wd · N_t · [W, 0]

which is zero iff ŵ is the victim's (unique) solution. GC drives ``||R||²`` to 0
by moving the poisons; we report it relative to the clean part's norm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch

from ...head.objective import LinearHead, gradient_sums, label_targets, row_softmax


@dataclass(frozen=True)
class CleanGradient:
    """The clean part of the residual at a target head: ``Σ_c ∇CE + wd·N_c·W`` and bias part."""

    weight: torch.Tensor
    bias: torch.Tensor
    n_clean: int

    def norm(self) -> float:
        return math.sqrt(self.squared_norm)

    @cached_property
    def squared_norm(self) -> float:
        """``‖R_clean‖²``, computed once: feature GC divides by it at every step."""
        return float((self.weight**2).sum() + (self.bias**2).sum())


def clean_gradient(
    head: LinearHead, z_clean: torch.Tensor, y_clean: torch.Tensor, weight_decay: float
) -> CleanGradient:
    gw, gb = gradient_sums(head, z_clean.detach(), y_clean)
    n = int(z_clean.shape[0])
    return CleanGradient(gw + weight_decay * n * head.weight, gb, n)


def gc_residual(
    head: LinearHead,
    clean: CleanGradient,
    z_poison: torch.Tensor,
    y_poison: torch.Tensor,
    weight_decay: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``R`` as (weight part (k, d), bias part (k,)); differentiable in ``z_poison``."""
    gw, gb = gradient_sums(head, z_poison, y_poison)
    n_p = int(z_poison.shape[0])
    return clean.weight + gw + weight_decay * n_p * head.weight, clean.bias + gb


def gc_loss(
    head: LinearHead,
    clean: CleanGradient,
    z_poison: torch.Tensor,
    y_poison: torch.Tensor,
    weight_decay: float,
) -> torch.Tensor:
    """``||R||² / ||R_clean||²``: 1 means nothing cancelled, 0 means ŵ is the victim's optimum."""
    rw, rb = gc_residual(head, clean, z_poison, y_poison, weight_decay)
    denom = (clean.weight**2).sum() + (clean.bias**2).sum()
    return ((rw**2).sum() + (rb**2).sum()) / denom.clamp_min(1e-30)


def gc_loss_and_grad(
    head: LinearHead,
    clean: CleanGradient,
    z_poison: torch.Tensor,
    y_poison: torch.Tensor,
    weight_decay: float,
) -> tuple[float, torch.Tensor]:
    """``gc_loss`` and its gradient w.r.t. the poisons' features, in closed form (see
    :class:`GCLossAndGrad`, which a loop builds once and calls at every step)."""
    grad_fn = GCLossAndGrad(head, clean, int(z_poison.shape[0]), weight_decay)
    return grad_fn(z_poison, label_targets(y_poison, head.n_classes, head.weight.dtype))


class GCLossAndGrad:
    """``gc_loss`` and its gradient for a fixed head, clean part and poison count.

    With ``s_j = p_j − e_{y_j}``, ``u_j = R_W ζ_j + R_b`` and the softmax Jacobian
    ``A_j = diag(p_j) − p_j p_jᵀ``: ``∂‖R‖²/∂ζ_j = 2 (R_Wᵀ s_j + Wᵀ A_j u_j)``. Two small
    matrix products per step instead of an autograd graph (feature GC runs thousands); the
    constant part of R_W (clean part + weight decay of n_p poisons) is added once here, and
    each call fuses its products and sums (``addmm``), which on poison sets of a few hundred
    points is most of a step's cost.
    """

    def __init__(
        self, head: LinearHead, clean: CleanGradient, n_poison: int, weight_decay: float
    ) -> None:
        self.weight, self.bias = head.weight, head.bias
        self.clean_bias = clean.bias
        self.rw_const = clean.weight + weight_decay * n_poison * head.weight
        self.denom = max(clean.squared_norm, 1e-30)
        self.n_poison = n_poison

    def __call__(self, z: torch.Tensor, targets: torch.Tensor) -> tuple[float, torch.Tensor]:
        """``(loss, d loss / d z)`` at poisons ``z`` (n_p, d) with one-hot ``targets``."""
        if z.shape[0] != self.n_poison:
            raise ValueError(f"built for {self.n_poison} poisons, got {z.shape[0]}")
        w = self.weight
        z = z.to(w.dtype)
        p = row_softmax(torch.addmm(self.bias, z, w.T))
        s = p - targets
        rw = torch.addmm(self.rw_const, s.T, z)
        rb = self.clean_bias + s.sum(0)
        pu = p * torch.addmm(rb, z, rw.T)
        a_u = pu.addcmul_(p, pu.sum(1, keepdim=True), value=-1.0)  # A_j u_j, in place
        c = 2.0 / self.denom
        grad = torch.addmm(s @ rw, a_u, w, beta=c, alpha=c)
        loss = float(torch.dot(rw.reshape(-1), rw.reshape(-1)) + torch.dot(rb, rb)) / self.denom
        return loss, grad
