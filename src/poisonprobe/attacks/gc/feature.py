"""FT stage 2: gradient canceling in feature space — the poisoned features ζ are free variables.

Minimises ``gc_loss(ŵ, ζ, ỹ) = ‖R_c + Σ_j g(ζ_j, ỹ_j) + wd·n_p·[Ŵ, 0]‖² / ‖R_c‖²`` (shared with
input-space GC). No network and no autograd are in the loop: the objective's gradient w.r.t. ζ
is closed form too (``GCLossAndGrad``: no double backprop, no training loop to
differentiate). Adam (default) or normalised GD, both with cosine-decayed lr.

Two constraint sets: ``box=None`` (unconstrained ζ — the upper bound of any feature-space
attack) and a ``FeatureBox`` (features the extractor can produce: the clean per-dimension
range, hence ≥ 0 for ReLU features; optionally a norm cap), projected after every step.

Labels: ``"init"`` keeps the labels of the points ζ started from; ``"optimal"`` re-assigns them
by exact coordinate descent on the objective (``relabel``), at the start and periodically.
Changing point j's label from y to y' moves its gradient by ((e_y − e_y') ζ_jᵀ, e_y − e_y')
(p_j does not depend on the label). With R'' the residual minus point j's label term −e_y[ζ_j, 1],
‖R'' − e_y[ζ_j, 1]‖² = ‖R''‖² − 2(R''_W ζ_j + R''_b)_y + ‖ζ_j‖² + 1, so the best label is
``argmax_y (R''_W ζ_j + R''_b)_y``; each update never increases ‖R‖².
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ...errors import ConfigError
from ...head.objective import LinearHead, label_targets
from .._optim import Adam, Plateau, StopRule
from ..poisonability import FeatureBox
from .objective import CleanGradient, GCLossAndGrad, gc_loss, gc_residual

OPTIMIZERS = ("adam", "gd")
LABEL_MODES = ("init", "optimal")


@dataclass
class FeatureGCResult:
    """Stage-2 output: poisoned features, their labels, and the relative objective."""

    z: torch.Tensor  # (n_p, d), dtype of the clean features
    y: torch.Tensor  # (n_p,) int64
    objective: float  # final ‖R‖² / ‖R_c‖² (the best iterate)
    init_objective: float
    steps_run: int
    summary: dict = field(default_factory=dict)  # _optim.Plateau.summary (steps, converged…)


def project_features(
    z: torch.Tensor, box: FeatureBox | None, norm_cap: float | None = None
) -> torch.Tensor:
    """Into the box, then under the norm cap, then into the box again (a cheap approximation
    of the projection onto their intersection; exact when no cap is set)."""
    if box is not None:
        z = box.project(z)
    if norm_cap is not None:
        norms = z.norm(dim=1, keepdim=True).clamp_min(1e-30)
        z = z * (norm_cap / norms).clamp_max(1.0)
        if box is not None:
            z = box.project(z)
    return z


def relabel(
    head: LinearHead,
    clean: CleanGradient,
    z: torch.Tensor,
    y: torch.Tensor,
    weight_decay: float,
) -> torch.Tensor:
    """One sequential pass of exact coordinate descent over the poisons' labels.

    Runs on host numpy arrays whatever the device: each point is a few O(kd) operations, and
    NumPy's per-call cost (~1 µs) is a tenth of a torch op's, so the pass is ~5x faster than
    with tensors (and one host round trip on a GPU instead of one per point).
    """
    z = z.detach().to(head.weight.dtype)
    with torch.no_grad():
        rw_t, rb_t = gc_residual(head, clean, z, y.to(z.device), weight_decay)
    rw, rb = rw_t.cpu().numpy().copy(), rb_t.cpu().numpy().copy()
    zs = z.cpu().numpy()
    own = (zs * zs).sum(1) + 1.0  # ‖[ζ_j, 1]‖²: point j's own label term in its score
    labels = y.detach().cpu().numpy().astype(np.int64)
    for j in range(zs.shape[0]):
        zj, old = zs[j], labels[j]
        score = rw @ zj + rb  # (R'' − e_old[ζ_j, 1]) [ζ_j, 1], then add the label term back
        score[old] += own[j]
        new = int(score.argmax())  # ‖R'' − e_new[ζ_j, 1]‖² is least here
        if new != old:
            rw[old] += zj
            rb[old] += 1.0
            rw[new] -= zj
            rb[new] -= 1.0
            labels[j] = new
    return torch.from_numpy(labels).to(y.device)


# long: one loop whose state (ζ, labels, one-hot targets, Adam, step size) changes together
def feature_gc(
    head: LinearHead,
    clean: CleanGradient,
    z_init: torch.Tensor,
    y_init: torch.Tensor,
    weight_decay: float,
    box: FeatureBox | None = None,
    norm_cap: float | None = None,
    steps: int = 300,
    lr: float = 0.1,
    scale: float | None = None,
    optimizer: str = "adam",
    labels: str = "init",
    relabel_every: int = 100,
    tol: float = 1e-8,
    dtype: torch.dtype = torch.float32,
    rel_tol: float = 1e-3,
    window: int = 20,
    patience: int = 5,
) -> FeatureGCResult:
    """Optimise ζ (started at ``z_init``) so that ŵ = ``head`` becomes the victim's solution.

    ``lr`` (constant) is relative to ``scale`` (default: the std of ``z_init``), so one value
    serves extractors with very different feature magnitudes. Stops once the objective < tol
    (attained), or when it has less than ``rel_tol`` left to gain (``window``-step gains), at most
    ``steps``; after ``patience`` steps without a new best, ζ goes back to the best iterate
    at half the step with fresh Adam moments (``_optim.Plateau``).
    ``dtype``: the working precision. float32 by default: Adam's steps are scale-free and the
    objective's float32 floor (~1e-12) is far below what stage 2 reaches, while each step
    costs half or less (and a GPU's float64 rate is a fraction of its float32 rate); the
    reported objectives are recomputed in the head's precision.
    """
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"stage-2 optimizer={optimizer!r} is unknown; use one of {OPTIMIZERS}")
    if labels not in LABEL_MODES:
        raise ConfigError(f"stage-2 labels={labels!r} is unknown; use one of {LABEL_MODES}")
    if steps < 0 or not lr > 0:
        raise ConfigError(f"stage-2 needs steps ≥ 0 and lr > 0 (got {steps}, {lr})")
    out_dtype = z_init.dtype
    exact_head, exact_clean = head, clean
    head = head.to(dtype=dtype)
    clean = CleanGradient(clean.weight.to(dtype), clean.bias.to(dtype), clean.n_clean)
    out_box = box
    if box is not None:  # converted once, not at every step's projection
        box = FeatureBox(box.low.to(z_init.device, dtype), box.high.to(z_init.device, dtype))
    zeta = project_features(z_init.detach().to(dtype), box, norm_cap).clone()
    y = y_init.to(zeta.device).long()

    def exact(z: torch.Tensor, y: torch.Tensor) -> float:  # the reported values: float64
        return float(
            gc_loss(exact_head, exact_clean, z.to(exact_head.weight.dtype), y, weight_decay)
        )

    if labels == "optimal":
        y = relabel(head, clean, zeta, y, weight_decay)
    init_obj = exact(zeta, y)
    if scale is None:
        scale = float(z_init.float().std()) or 1.0
    lr_abs = lr * scale

    def objective(z: torch.Tensor) -> float:
        return float(gc_loss(head, clean, z, y, weight_decay))

    targets = label_targets(y, head.n_classes, dtype)  # one-hot, rebuilt only on relabelling
    loss_and_grad = GCLossAndGrad(head, clean, int(zeta.shape[0]), weight_decay)
    adam = Adam(zeta, eps=1e-8) if optimizer == "adam" else None
    plateau = Plateau(
        StopRule(rel_tol, window, max(steps, 1), patience), maximize=False, relative_to_start=True
    )
    best_z, best_y = zeta.clone(), y.clone()
    ran = 0
    for t in range(steps):
        if labels == "optimal" and relabel_every > 0 and t > 0 and t % relabel_every == 0:
            y = relabel(head, clean, zeta, y, weight_decay)
            targets = label_targets(y, head.n_classes, dtype)
        value, grad = loss_and_grad(zeta, targets)
        if plateau.record(value):
            best_z, best_y = zeta.clone(), y.clone()
        if value < tol:
            plateau.reach("attained")
        if plateau.done():
            break
        if plateau.restart_due():  # overshooting: back to the best ζ, half the step
            zeta, y, lr_abs = best_z.clone(), best_y.clone(), lr_abs * 0.5
            targets = label_targets(y, head.n_classes, dtype)
            if adam is not None:
                adam.reset()
            continue
        if adam is not None:
            adam.step_(zeta, grad, lr_abs)
        else:
            rms = grad.pow(2).mean().sqrt().clamp_min(1e-30)
            zeta -= lr_abs * grad / rms
        zeta = project_features(zeta, box, norm_cap)
        ran = t + 1
    best_obj = plateau.best if plateau.steps else objective(zeta)
    final = objective(zeta)
    if final < best_obj:
        best_obj, best_z, best_y = final, zeta.clone(), y.clone()
    # back in the caller's precision, inside the box exactly (its float32 rounding may not be)
    best_z = project_features(best_z.to(out_dtype), out_box, norm_cap)
    return FeatureGCResult(
        z=best_z,
        y=best_y,
        objective=exact(best_z, best_y),
        init_objective=init_obj,
        steps_run=ran,
        summary=plateau.summary(),
    )
