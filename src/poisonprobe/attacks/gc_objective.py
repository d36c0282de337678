"""The gradient-canceling (GC) objective, shared by feature-space and input-space GC.

The victim minimises ``mean CE + (wd/2)||W||^2`` over ``D_c ∪ D_p`` (``victim.py``).
Multiplying its gradient by ``N_t = N_c + n_p`` gives the residual

    R(ŵ) = Σ_{D_c} ∇CE + Σ_{D_p} ∇CE + wd · N_t · [W, 0]

which is zero iff ŵ is the victim's (unique) solution. GC drives ``||R||²`` to 0
by moving the poisons; we report it relative to the clean part's norm.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..victim import LinearHead, gradient_sums


@dataclass(frozen=True)
class CleanGradient:
    """The clean part of the residual at a target head: ``Σ_c ∇CE + wd·N_c·W`` and bias part."""

    weight: torch.Tensor
    bias: torch.Tensor
    n_clean: int

    def norm(self) -> float:
        return float(torch.sqrt((self.weight**2).sum() + (self.bias**2).sum()))


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
