"""Newton's inner pieces: the CG forcing term, the line search that hands back the gradient
of the full step, and the one float64 copy of small features — each changes only how much
work a solve does, never its answer (checked against scikit-learn and against each other)."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.linear_model import LogisticRegression

from poisonprobe.head import solvers
from poisonprobe.head.objective import LinearHead, flat_objective
from poisonprobe.head.solvers import _backtrack, forcing_term, newton_solve

WD = 1e-2


def _data(n: int = 400, d: int = 8, k: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    y = torch.arange(n) % k
    z = torch.randn(k, d, generator=gen)[y] + torch.randn(n, d, generator=gen)
    return z.float(), y


def _zero(k: int, d: int) -> LinearHead:
    return LinearHead(torch.zeros(k, d, dtype=torch.float64), torch.zeros(k, dtype=torch.float64))


def test_forcing_term_is_sqrt_of_the_gradient_but_not_tighter_than_needed():
    assert forcing_term(1.0, 1e-5) == 0.5  # far from the optimum: capped
    assert forcing_term(1e-2, 1e-5) == pytest.approx(0.1)  # √||g||
    # close to tol: a step that reduces ||g|| by 5x reaches tol/2, no tighter
    assert forcing_term(2.5e-5, 1e-5) == pytest.approx(0.2)
    assert forcing_term(1e-4, 1e-5) == pytest.approx(max(math.sqrt(1e-4), 0.05))


def test_full_step_hands_back_the_gradient_where_it_lands():
    z, y = _data()
    theta = _zero(4, 8).flat()
    loss, g = flat_objective(theta, z, y, WD, 4)

    def objective(th: torch.Tensor, grad: bool):
        return flat_objective(th, z, y, WD, 4, grad)

    step = 0.1 * g  # a short descent step: the full step is accepted
    t, value, grad = _backtrack(
        theta, step, g, loss, lambda th, gr: flat_objective(th, z, y, WD, 4, gr)
    )
    assert t == 1.0
    ref_loss, ref_grad = flat_objective(theta - step, z, y, WD, 4)
    assert value == ref_loss
    torch.testing.assert_close(grad, ref_grad, rtol=0, atol=0)
    # a step far too long is halved; its gradient is not computed during the search
    t, value, grad = _backtrack(
        theta, 1e4 * g, g, loss, lambda th, gr: flat_objective(th, z, y, WD, 4, gr)
    )
    assert t < 1.0 and grad is None
    assert value <= loss


@pytest.mark.parametrize("copy_limit", [0, solvers.SMALL_FLOAT64_ELEMENTS])
def test_newton_reaches_sklearn_with_or_without_the_float64_copy(monkeypatch, copy_limit):
    monkeypatch.setattr(solvers, "SMALL_FLOAT64_ELEMENTS", copy_limit)
    z, y = _data()
    n = len(y)
    head = newton_solve(_zero(4, 8), z, y, WD, tol=1e-10)
    sk = LogisticRegression(C=1 / (n * WD), tol=1e-12, max_iter=10_000).fit(z.double(), y)
    w_sk = torch.from_numpy(sk.coef_)
    assert float((head.weight - w_sk).abs().max()) < 1e-6 * float(w_sk.abs().max())
    _, g = flat_objective(head.flat(), z, y, WD, 4)
    assert float(g.norm()) <= 1e-10
