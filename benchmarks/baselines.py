"""Naive baselines the benchmarks compare poisonprobe against, written the way the predecessor
recipes describe them (not as poisonprobe does it), so that the ratios mean something.

- ``double_backprop_gc``: gradient canceling by autograd double backprop — the victim's
  parameter gradient from ``torch.autograd.grad(create_graph=True)`` through softmax-CE, then
  backprop of ``||grad_clean + grad_poison||²`` to the poison features; full-batch gradient
  descent with a cosine-decayed step.
- ``ReencodingFeatures``: no feature cache — every run encodes the training set again.

The SGD probe recipe and plain CG already live in ``poisonprobe`` (``VictimConfig(solver=
"sgd")``, ``HeadCurvature.solve_cg``); the cases call those directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from poisonprobe.extractors.cache import encode_batched
from poisonprobe.head.objective import LinearHead


@dataclass
class GCRun:
    """Where a GC optimisation stopped."""

    steps: int
    objective: float  # relative objective ||R||² / ||R_clean||² at the last iterate seen
    reached: bool
    z: torch.Tensor


def double_backprop_gc(
    head: LinearHead,
    z_clean: torch.Tensor,
    y_clean: torch.Tensor,
    z_init: torch.Tensor,
    y_init: torch.Tensor,
    weight_decay: float,
    lr: float,
    max_steps: int,
    threshold: float,
    dtype: torch.dtype = torch.float32,
) -> GCRun:
    """Predecessor-style GC on poison features until the relative objective < ``threshold``.

    The objective is the one poisonprobe minimises (``gc/objective.gc_loss``): the victim's
    summed gradient ``Σ_c ∇CE + Σ_p ∇CE + wd·N_t·W`` relative to its clean part. The clean
    part does not depend on the poisons, so it is computed once (this only helps the baseline);
    the poison part is differentiated twice on every step. The cosine schedule spans
    ``max_steps``. float32 by default, as the predecessor code ran.
    """
    w = head.weight.detach().to(dtype).clone().requires_grad_(True)
    b = head.bias.detach().to(dtype).clone().requires_grad_(True)
    zc = z_clean.detach().to(dtype)
    n_c, n_p = int(zc.shape[0]), int(z_init.shape[0])
    clean_loss = F.cross_entropy(zc @ w.T + b, y_clean.long(), reduction="sum")
    clean_loss = clean_loss + 0.5 * weight_decay * n_c * (w**2).sum()
    gw_c, gb_c = torch.autograd.grad(clean_loss, (w, b))
    denom = float((gw_c**2).sum() + (gb_c**2).sum())
    zeta = z_init.detach().to(dtype).clone().requires_grad_(True)
    yp = y_init.long()
    value = math.inf
    for t in range(max_steps):
        loss = F.cross_entropy(zeta @ w.T + b, yp, reduction="sum")
        loss = loss + 0.5 * weight_decay * n_p * (w**2).sum()
        gw_p, gb_p = torch.autograd.grad(loss, (w, b), create_graph=True)
        objective = (((gw_c + gw_p) ** 2).sum() + ((gb_c + gb_p) ** 2).sum()) / denom
        value = float(objective.detach())
        if value < threshold:
            return GCRun(t, value, True, zeta.detach())
        (g,) = torch.autograd.grad(objective, zeta)
        with torch.no_grad():
            zeta -= lr * 0.5 * (1.0 + math.cos(math.pi * t / max_steps)) * g
    return GCRun(max_steps, value, False, zeta.detach())


class ReencodingFeatures:
    """The no-cache baseline: ``encode`` runs the extractor over the whole set every time."""

    def __init__(self, batch_size: int = 512) -> None:
        self.batch_size = batch_size

    def encode(self, extractor: nn.Module, data) -> torch.Tensor:
        return encode_batched(extractor, data.x, self.batch_size)
