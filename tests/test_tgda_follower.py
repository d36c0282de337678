"""TGDA's follower problem: the Kronecker preconditioner counts the poisons' features."""

from __future__ import annotations

import torch
from conftest import tiny_setup

from poisonprobe.attacks.tgda import FollowerProblem, total_gradient_surrogate
from poisonprobe.head.config import VictimConfig


def _problem(z: torch.Tensor, y: torch.Tensor, victim: VictimConfig) -> FollowerProblem:
    return FollowerProblem(
        z_fol=z, y_fol=y, z_val=z, y_val=y, n_classes=10, victim=victim, hessian="cg"
    )


def test_preconditioner_eig_is_the_gram_of_clean_and_poison_features() -> None:
    train, _, z, _, victim = tiny_setup(200)
    z_p = 20.0 * z[:15].double()  # far outside the clean cloud, like unconstrained poisons
    prob = _problem(z.double(), train.y, victim)
    vals, vecs = prob.preconditioner_eig(z_p)
    z_all = torch.cat([z.double(), z_p])
    zt = torch.cat([z_all, torch.ones(len(z_all), 1, dtype=z_all.dtype)], 1)
    gram = zt.T @ zt / len(z_all)
    torch.testing.assert_close(vecs @ torch.diag(vals) @ vecs.T, gram, rtol=1e-9, atol=1e-9)
    assert prob.preconditioner_eig(z_p) is prob.preconditioner_eig(z_p)  # cached per step
    # a leader step that barely moves the Gram matrix keeps the decomposition (a
    # preconditioner), one that moves it by more than STALE_GRAM decomposes the new one
    assert prob.preconditioner_eig(z_p * (1 + 1e-4))[0] is vals
    moved = z_p * 1.5
    vals2, vecs2 = prob.preconditioner_eig(moved)
    assert vals2 is not vals
    zt = torch.cat([torch.cat([z.double(), moved]), torch.ones(len(z_all), 1).double()], 1)
    torch.testing.assert_close(vecs2 @ torch.diag(vals2) @ vecs2.T, zt.T @ zt / len(zt))


def test_hypergradient_with_far_poisons_is_solved_and_reported() -> None:
    """Poisons 20x the clean scale: the hypergradient solve still reports its residual, and
    the surrogate's gradient w.r.t. the poison features is finite (no blow-up in CG)."""
    train, _, z, head, victim = tiny_setup(200)
    z = z.double()
    z_p = (20.0 * z[:15]).requires_grad_(True)
    y_p = (train.y[:15] + 1) % 10
    prob = _problem(z, train.y, victim)
    stats: dict[str, float] = {}
    total_gradient_surrogate(head, prob, z_p, y_p, stats).backward()
    assert 0.0 <= stats["solve_residual_last"] < 0.1
    assert torch.isfinite(z_p.grad).all() and z_p.grad.abs().sum() > 0
