"""The large cold-start head fit (preconditioned float32 L-BFGS) against the float64 path,
and its preconditioner against the explicit Hessian."""

from __future__ import annotations

import pytest
import torch

from poisonprobe.head import solvers
from poisonprobe.head.config import VictimConfig
from poisonprobe.head.curvature import HeadCurvature, feature_eig
from poisonprobe.head.objective import LinearHead, gradient_norm
from poisonprobe.head.solvers import kronecker_basis, lbfgs_float32
from poisonprobe.head.train import train_head


def _correlated_features(n: int, d: int, k: int = 10, seed: int = 0):
    """Ill-conditioned, class-dependent features (like SSL features: κ of the covariance
    ~1e4), labels from a noisy linear teacher."""
    gen = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=gen) * torch.logspace(0, -2, d)[None, :]
    z = torch.relu(torch.randn(n, d, generator=gen) @ mix + 0.1)
    z = z / z.pow(2).sum(1).mean().sqrt() * 16.0  # mean ||z||² = 256, like CIFAR features
    teacher = torch.randn(d, k, generator=gen)
    y = (z @ teacher + 2.0 * torch.randn(n, k, generator=gen)).argmax(1)
    return z.float(), y


@pytest.fixture(scope="module")
def large():
    return _correlated_features(16_000, 260)  # 4.2M elements: above LARGE_COLD_START


def _grad_norm(head: LinearHead, z: torch.Tensor, y: torch.Tensor, wd: float) -> float:
    return gradient_norm(head, z.double(), y, wd)


def test_large_cold_fit_reaches_the_float64_optimum(large, monkeypatch):
    z, y = large
    assert z.numel() > solvers.LARGE_COLD_START
    fast = train_head(z, y, 10, VictimConfig())
    monkeypatch.setattr(solvers, "LARGE_COLD_START", 10**12)  # force the float64 path
    slow = train_head(z, y, 10, VictimConfig())
    assert _grad_norm(fast, z, y, 1e-3) <= 1e-9
    assert (fast.weight - slow.weight).norm() <= 1e-6 * slow.weight.norm()
    # the bias is unique up to a common shift (softmax ignores it, wd does not decay it)
    shift = (fast.bias - fast.bias.mean()) - (slow.bias - slow.bias.mean())
    assert shift.norm() <= 1e-6 * max(1.0, float(slow.bias.norm()))


def test_loose_tol_stops_in_float32_with_an_honest_norm(large):
    z, y = large
    head, norm32 = lbfgs_float32(z, y, 10, 1e-3, feature_eig(z), tol=1e-4)
    norm64 = _grad_norm(head, z, y, 1e-3)
    assert norm32 <= 1e-4
    assert abs(norm32 - norm64) <= 1e-6  # the float32 norm is what float64 says
    # and train_head with that tol returns such a head (no float64 polish needed)
    assert _grad_norm(train_head(z, y, 10, VictimConfig(tol=2e-4)), z, y, 1e-3) <= 2e-4


def test_first_step_is_the_exact_newton_step_at_zero():
    """At θ = 0 every softmax is uniform, so Ā ⊗ C is the exact Hessian of the CE part;
    the change of variables must turn the preconditioned gradient step into Newton's."""
    z, y = _correlated_features(600, 12, k=4)
    k, d, wd = 4, 12, 1e-2
    zero = LinearHead(torch.zeros(k, d, dtype=torch.float64), torch.zeros(k, dtype=torch.float64))
    qa, qct, scale = kronecker_basis(feature_eig(z.double()), k, wd)
    # gradient at 0 in (k, d+1) layout, mapped to V, stepped, mapped back
    zd = z.double()
    resid = torch.full((len(z), k), 1.0 / k, dtype=torch.float64)
    resid -= torch.nn.functional.one_hot(y, k).double()
    grad = torch.cat([resid.T @ zd, resid.sum(0)[:, None]], 1) / len(z)
    gv = (qa.double().T @ grad @ qct.double().T) * scale.double()
    step = qa.double() @ (-gv * scale.double()) @ qct.double()
    # oracle: the explicit Hessian with wd also on the bias (the preconditioner's model)
    h = HeadCurvature(zero, zd, wd).matrix()
    h[range(k * d, k * d + k), range(k * d, k * d + k)] += wd
    flat = torch.cat([grad[:, :d].reshape(-1), grad[:, d]])
    newton = -torch.linalg.solve(h, flat)
    ours = torch.cat([step[:, :d].reshape(-1), step[:, d]])
    # the basis is stored in float32: equal to its precision (a wrong basis is off by O(1))
    assert (ours - newton).norm() <= 1e-5 * newton.norm()
