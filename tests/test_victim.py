"""The victim head against independent oracles (scikit-learn, autograd, finite differences)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from poisonprobe.data import load_dataset
from poisonprobe.errors import ConfigError, DataError
from poisonprobe.head.config import VictimConfig
from poisonprobe.head.objective import (
    LinearHead,
    all_finite,
    gradient_sums,
    per_point_gradients,
    victim_objective,
)
from poisonprobe.head.train import train_head


@pytest.fixture(scope="module")
def digits_pixels():
    s = load_dataset("digits")
    return s.train.x.flatten(1), s.train.y, s.test.x.flatten(1), s.test.y


def test_lbfgs_matches_sklearn(digits_pixels):
    ztr, ytr, zte, yte = digits_pixels
    wd = 1e-3
    head = train_head(ztr, ytr, 10, VictimConfig(weight_decay=wd))
    # sklearn minimises C*sum CE + 0.5||W||^2  ==  N*C*(mean CE + 1/(2 N C)||W||^2)
    sk = LogisticRegression(C=1.0 / (wd * len(ztr)), max_iter=10000, tol=1e-10)
    sk.fit(ztr.numpy().astype(np.float64), ytr.numpy())
    acc_ours = head.accuracy(zte, yte)
    acc_sk = sk.score(zte.numpy(), yte.numpy())
    assert abs(acc_ours - acc_sk) <= 0.005
    # same optimum, not just the same accuracy
    w_sk = torch.tensor(sk.coef_)
    rel = (head.weight - w_sk).norm() / w_sk.norm()
    assert rel < 1e-3


def test_sgd_recipe_within_one_point(digits_pixels):
    ztr, ytr, zte, yte = digits_pixels
    exact = train_head(ztr, ytr, 10, VictimConfig())
    sgd = train_head(ztr, ytr, 10, VictimConfig(solver="sgd", sgd_epochs=100))
    assert abs(exact.accuracy(zte, yte) - sgd.accuracy(zte, yte)) <= 0.01


def test_lbfgs_reaches_stationary_point(digits_pixels):
    ztr, ytr, _, _ = digits_pixels
    cfg = VictimConfig(weight_decay=1e-2)
    head = train_head(ztr, ytr, 10, cfg)
    gw, gb = gradient_sums(head, ztr, ytr)
    n = len(ztr)
    grad_w = gw / n + cfg.weight_decay * head.weight
    assert grad_w.abs().max() < 1e-5 and (gb / n).abs().max() < 1e-5


def test_closed_form_gradients_equal_autograd():
    gen = torch.Generator().manual_seed(0)
    z = torch.rand(30, 7, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 4, (30,), generator=gen)
    w = torch.randn(4, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, generator=gen, dtype=torch.float64, requires_grad=True)
    head = LinearHead(w, b)
    loss = torch.nn.functional.cross_entropy(head.logits(z), y, reduction="sum")
    aw, ab = torch.autograd.grad(loss, [w, b])
    cw, cb = gradient_sums(LinearHead(w.detach(), b.detach()), z, y)
    assert torch.allclose(aw, cw, atol=1e-10) and torch.allclose(ab, cb, atol=1e-10)
    pw, pb = per_point_gradients(LinearHead(w.detach(), b.detach()), z, y)
    assert torch.allclose(pw.sum(0), cw) and torch.allclose(pb.sum(0), cb)


def test_objective_gradient_matches_finite_differences():
    gen = torch.Generator().manual_seed(1)
    z = torch.rand(20, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (20,), generator=gen)
    head = LinearHead(
        torch.randn(3, 5, generator=gen, dtype=torch.float64),
        torch.randn(3, generator=gen, dtype=torch.float64),
    )
    gw, _ = gradient_sums(head, z, y)
    analytic = gw / 20 + 0.1 * head.weight
    h = 1e-6
    for i, j in [(0, 0), (1, 3), (2, 4)]:
        plus, minus = head.clone(), head.clone()
        plus.weight[i, j] += h
        minus.weight[i, j] -= h
        fd = (victim_objective(plus, z, y, 0.1) - victim_objective(minus, z, y, 0.1)) / (2 * h)
        assert abs(float(fd) - float(analytic[i, j])) < 1e-6


def test_bad_inputs_are_refused():
    with pytest.raises(ConfigError, match="weight_decay"):
        VictimConfig(weight_decay=0.0)
    with pytest.raises(ConfigError, match="solver"):
        VictimConfig(solver="adam")  # type: ignore[arg-type]
    z = torch.zeros(4, 3)
    z[0, 0] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        train_head(z, torch.zeros(4, dtype=torch.long), 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_all_finite_agrees_with_elementwise_isfinite(dtype):
    """The summing shortcut must never pass a NaN/inf, nor refuse finite values whose sum
    overflows (the exact check decides then)."""
    big = torch.finfo(dtype).max
    cases = [
        torch.zeros(0, 3, dtype=dtype),
        torch.rand(50, 7, dtype=dtype),
        torch.full((4, 4), big, dtype=dtype),  # finite, but the sum overflows to inf
        torch.tensor([big, -big, big], dtype=dtype),
    ]
    for bad in (float("nan"), float("inf"), -float("inf")):
        x = torch.rand(50, 7, dtype=dtype)
        x[13, 2] = bad
        cases.append(x)
    both = torch.rand(10, dtype=dtype)
    both[1], both[5] = float("inf"), -float("inf")  # sums to NaN
    cases.append(both)
    for x in cases:
        assert all_finite(x) == bool(torch.isfinite(x).all())
    assert all_finite(torch.arange(5))  # integers are always finite
