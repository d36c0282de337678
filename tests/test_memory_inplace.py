"""Memory fixes for CIFAR-scale poison sets (15k images, ~180 MB per copy) must not change
results: the in-place updates give the same bits as the out-of-place formulas they replace,
and nothing that callers keep a reference to is written over."""

from __future__ import annotations

import tracemalloc

import pytest
import torch

from poisonprobe.attacks.base import AttackContext, ThreatModel
from poisonprobe.attacks.common import PixelOptimizer, cosine_lr
from poisonprobe.attacks.emn import emn_project_
from poisonprobe.attacks.ft.invert import Decoder, decode, feature_match
from poisonprobe.data.base import ImageDataset
from poisonprobe.domain import InputDomain
from poisonprobe.head.config import VictimConfig
from poisonprobe.head.objective import LinearHead

DOMAIN = InputDomain(channels=3, height=4, width=4, low=0.0, high=1.0)


def _ctx(regime: str = "box", linf: float | None = None) -> AttackContext:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(20, 3, 4, 4, generator=gen)
    train = ImageDataset(x, torch.arange(20) % 2, ["a", "b"], DOMAIN, "toy")
    return AttackContext.build(
        torch.nn.Flatten(),
        train,
        0.5,
        regime=regime,
        linf=linf,
        victim=VictimConfig(),
        z_train=x.flatten(1),
        clean_head=LinearHead(torch.zeros(2, 48), torch.zeros(2)),
    )


def _reference_step(ctx, x, m, v, t, grad, start, method, lr, steps):
    """The out-of-place update PixelOptimizer.step used before (the behaviour to keep)."""
    lr_t = cosine_lr(lr, t - 1, steps)
    if method == "sign":
        upd = grad.sign()
    else:
        b1, b2 = 0.9, 0.999
        m.mul_(b1).add_(grad, alpha=1 - b1)
        v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        upd = (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + 1e-12)
    return ctx.threat.project(x - lr_t * upd, start)


@pytest.mark.parametrize("method", ["adam", "sign"])
@pytest.mark.parametrize(
    ("regime", "linf"), [("box", None), ("box", 0.05), ("unconstrained", None)]
)
def test_pixel_optimizer_matches_out_of_place_update(method, regime, linf):
    ctx = _ctx(regime, linf)
    gen = torch.Generator().manual_seed(1)
    start = ctx.train.x[:8]
    start_before = start.clone()
    opt = PixelOptimizer(ctx, start * 1.3 - 0.1, start, method, lr=0.1, steps=6)
    x_ref = ctx.threat.project(start * 1.3 - 0.1, start)
    assert torch.equal(opt.x, x_ref)
    m, v = torch.zeros_like(x_ref), torch.zeros_like(x_ref)
    returned = []
    for t in range(1, 7):
        grad = torch.randn(x_ref.shape, generator=gen)
        x_ref = _reference_step(ctx, x_ref, m, v, t, grad, start, method, 0.1, 6)
        x = opt.step(grad)
        assert torch.equal(x, x_ref)
        returned.append((x, x.clone()))
    # earlier iterates are never written over (callers keep them as their best, uncopied)
    assert all(torch.equal(a, b) for a, b in returned)
    assert len({a.data_ptr() for a, _ in returned}) == len(returned)
    assert torch.equal(start, start_before)


@pytest.mark.parametrize(
    ("regime", "linf"), [("box", None), ("box", 0.05), ("unconstrained", 0.05)]
)
def test_project_in_place_equals_project(regime, linf):
    threat = ThreatModel(eps=0.1, domain=DOMAIN, regime=regime, linf=linf)
    gen = torch.Generator().manual_seed(2)
    start = torch.rand(6, 3, 4, 4, generator=gen)
    x = start + 0.3 * torch.randn(start.shape, generator=gen)
    expected = threat.project(x, start)
    out = threat.project_(x.clone(), start)
    assert torch.equal(out, expected)


@pytest.mark.parametrize(
    ("regime", "linf"), [("box", None), ("box", 0.02), ("unconstrained", None)]
)
def test_emn_projection_in_place_equals_reference(regime, linf):
    ctx = _ctx(regime, linf)
    gen = torch.Generator().manual_seed(3)
    x0 = torch.rand(6, 3, 4, 4, generator=gen)
    x = x0 + 0.2 * torch.randn(x0.shape, generator=gen)
    eps = 8 / 255
    expected = ctx.threat.project(torch.max(torch.min(x, x0 + eps), x0 - eps), x0)
    x0_before = x0.clone()
    assert torch.equal(emn_project_(ctx, x.clone(), x0, eps), expected)
    assert torch.equal(x0, x0_before)


def test_decode_equals_concatenated_batches():
    torch.manual_seed(0)
    dec = Decoder(5, DOMAIN, hidden=16).eval()
    z = 3 * torch.randn(23, 5)
    with torch.no_grad():
        expected = DOMAIN.project(torch.cat([dec(z[i : i + 4]) for i in range(0, 23, 4)]))
    assert torch.equal(decode(dec, z, batch_size=4), expected)
    assert decode(dec, z[:0]).shape == (0, 3, 4, 4)


def _reference_feature_match(extractor, zeta, start, domain, linf, steps, lr, method, bs):
    """feature_match as it was before the in-place rewrite."""
    from poisonprobe.attacks.ft.invert import _project

    target = zeta.detach().float()
    center = start.detach().float()
    x = _project(start.detach().float().clone(), center, domain, linf)
    step = lr * (domain.high - domain.low)

    def eg(xc, need_grad):
        errs, grads = [], []
        for i in range(0, xc.shape[0], bs):
            chunk = xc[i : i + bs].detach().requires_grad_(need_grad)
            with torch.set_grad_enabled(need_grad):
                err = ((extractor(chunk) - target[i : i + bs]) ** 2).sum(1)
            if need_grad:
                grads.append(torch.autograd.grad(err.sum(), chunk)[0])
            errs.append(err.detach())
        return torch.cat(errs), (torch.cat(grads) if need_grad else None)

    best_x = x.clone()
    best_err = eg(x, False)[0]
    param = x.clone().requires_grad_(True)
    opt = torch.optim.Adam([param], lr=step) if method == "adam" else None
    for _ in range(steps):
        err, grad = eg(param.detach(), True)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_x[better] = param.detach()[better]
        with torch.no_grad():
            if opt is not None:
                param.grad = grad
                opt.step()
            else:
                param -= step * grad.sign()
            param.copy_(_project(param, center, domain, linf))
    err = eg(param.detach(), False)[0]
    better = err < best_err
    best_err = torch.where(better, err, best_err)
    best_x[better] = param.detach()[better]
    return best_x, best_err


@pytest.mark.parametrize(("method", "linf"), [("adam", None), ("signed", 0.03)])
def test_feature_match_matches_reference(method, linf):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 6), torch.nn.Tanh())
    for p in net.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(4)
    start = torch.rand(11, 3, 4, 4, generator=gen)
    zeta = net(torch.rand(11, 3, 4, 4, generator=gen))
    start_before = start.clone()
    # patience=0: no restarts, so the fixed-step reference applies step for step
    res = feature_match(net, zeta, start, DOMAIN, linf, 7, 0.05, method, batch_size=4, patience=0)
    ref_x, ref_err = _reference_feature_match(net, zeta, start, DOMAIN, linf, 7, 0.05, method, 4)
    assert torch.equal(res.x, ref_x)
    norm2 = (zeta**2).sum(1).clamp_min(1e-12)
    assert res.rel_error == float((ref_err / norm2).mean())
    assert torch.equal(start, start_before)


def test_fingerprint_hashes_images_without_a_bytes_copy():
    x = torch.rand(1000, 3, 16, 16)  # 3 MB of pixels
    ds = ImageDataset(x, torch.zeros(1000, dtype=torch.long), ["a"], DOMAIN_16, "big")
    tracemalloc.start()
    try:
        ds.fingerprint()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < x.numel() * 4 // 4  # tobytes() allocated the whole 3 MB as a bytes object


DOMAIN_16 = InputDomain(channels=3, height=16, width=16)


def test_chunked_image_checks_keep_errors_and_answers(monkeypatch):
    import poisonprobe.data.base as base
    from poisonprobe.errors import DataError

    monkeypatch.setattr(base, "CHECK_CHUNK", 4)
    x = torch.rand(10, 3, 16, 16)
    x[7, 0, 0, 0] = 2.0  # outside the box: that image only
    expected = DOMAIN_16.contains(x)
    assert torch.equal(base.images_in_box(DOMAIN_16, x), expected)
    assert not expected[7] and expected.sum() == 9
    base.check_images(DOMAIN_16, x, "toy")  # finite and well shaped: passes
    x[9, 1, 2, 3] = float("nan")
    with pytest.raises(DataError, match="toy contain NaN"):
        base.check_images(DOMAIN_16, x, "toy")
    with pytest.raises(DataError, match=r"have shape \(10, 3, 16, 15\)"):
        base.check_images(DOMAIN_16, x[..., :15], "toy")
