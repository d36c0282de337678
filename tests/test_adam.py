"""The attacks' one Adam (``attacks/_optim.Adam``): ``step_`` is ``torch.optim.Adam``, and
``direction`` reproduces, bit for bit, the hand-written Adams it replaced in tgda-feature,
kkt and the pixel optimiser (so their results did not move)."""

from __future__ import annotations

import pytest
import torch

from poisonprobe.attacks._optim import Adam


def _grads(n: int, dtype: torch.dtype, seed: int = 4) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(7, 5, generator=gen, dtype=dtype) * 10.0 ** (k % 3 - 1) for k in range(n)]


def test_step_matches_torch_adam():
    gen = torch.Generator().manual_seed(4)
    ours = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    ref = ours.clone().requires_grad_(True)
    opt = torch.optim.Adam([ref], lr=0.1)
    adam = Adam(ours, eps=1e-8)
    for t in range(6):
        g = torch.randn(5, 3, generator=gen, dtype=torch.float64)
        lr = 0.1 * (1.0 - t / 6)
        for group in opt.param_groups:
            group["lr"] = lr
        ref.grad = g.clone()
        opt.step()
        adam.step_(ours, g, lr)
    assert torch.allclose(ours, ref.detach(), rtol=1e-12, atol=1e-14)


def _textbook(grads: list[torch.Tensor], eps: float, w1: float, w2: float, reset_at: int):
    """The replaced loops, written out: decimal or ``1 - beta`` weights, a reset at one step."""
    m, v, t, out = torch.zeros_like(grads[0]), torch.zeros_like(grads[0]), 0, []
    for k, g in enumerate(grads):
        if k == reset_at:
            m, v, t = torch.zeros_like(g), torch.zeros_like(g), 0
        t += 1
        m.mul_(0.9).add_(g, alpha=w1)
        v.mul_(0.999).addcmul_(g, g, value=w2)
        out.append((m / (1 - 0.9**t)) / ((v / (1 - 0.999**t)).sqrt() + eps))
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "eps, weights",
    [(1e-20, (0.1, 0.001)), (1e-12, (0.1, 0.001)), (1e-12, None)],  # tgda, kkt, pixels
)
def test_direction_is_bit_identical_to_the_replaced_loops(dtype, eps, weights):
    grads = _grads(9, dtype)
    w1, w2 = weights if weights is not None else (1 - 0.9, 1 - 0.999)
    expected = _textbook(grads, eps, w1, w2, reset_at=5)
    adam = Adam(grads[0], eps=eps, weights=weights)
    for k, g in enumerate(grads):
        if k == 5:
            adam.reset()
        assert torch.equal(adam.direction(g), expected[k]), k


def test_first_step_after_reset_is_a_sign_step():
    g = _grads(3, torch.float64)
    adam = Adam(g[0], eps=1e-20)
    adam.direction(g[0])
    adam.direction(g[1])
    adam.reset()
    assert torch.allclose(adam.direction(g[2]), g[2].sign(), rtol=1e-12, atol=0)
