"""The feature-targeted attack: each stage against an independent oracle or invariant."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.special import lambertw
from torch import nn

from poisonprobe.attacks import AttackContext, get_attack
from poisonprobe.attacks.ft.invert import decode, feature_match, train_decoder
from poisonprobe.attacks.gc.feature import feature_gc, relabel
from poisonprobe.attacks.gc.objective import (
    clean_gradient,
    gc_loss,
    gc_loss_and_grad,
    gc_residual,
)
from poisonprobe.attacks.gradpc import clean_loss, gradpc, radius_scale
from poisonprobe.attacks.poisonability import (
    FeatureBox,
    gap_intervals,
    max_cancellation,
    min_cancellation,
    poisonability,
)
from poisonprobe.data import load_dataset
from poisonprobe.errors import ConfigError
from poisonprobe.extractors.archs import Extractor
from poisonprobe.head.config import VictimConfig
from poisonprobe.head.objective import (
    LinearHead,
    gradient_sums,
    per_point_gradients,
    victim_objective,
)
from poisonprobe.head.train import train_head

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def pixels(digits):
    """Raw pixels as features (non-negative, like ReLU features) and the clean head."""
    z = digits.train.x.flatten(1)
    cfg = VictimConfig()
    return z, digits.test.x.flatten(1), train_head(z, digits.train.y, 10, cfg), cfg


def blobs(n: int = 300, k: int = 3, d: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centers = 2 * torch.randn(k, d, generator=g, dtype=torch.float64)
    y = torch.arange(n) % k
    z = (centers[y] + torch.randn(n, d, generator=g, dtype=torch.float64)).abs()
    return z, y, g


def tiny_extractor(domain) -> Extractor:
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU())
    ext = Extractor(backbone, domain, "tiny", 32).eval()
    for p in ext.parameters():
        p.requires_grad_(False)
    return ext


def context(train, z, head, cfg, eps, regime, extractor=None, memo=None, seed=0, linf=None):
    return AttackContext.build(
        extractor,
        train,
        eps,
        regime=regime,
        linf=linf,
        victim=cfg,
        seed=seed,
        z_train=z,
        clean_head=head,
        memo={} if memo is None else memo,
    )


# --- closed-form gradients and the GC residual ------------------------------------------------


def test_closed_form_gradients_equal_autograd_of_victim_objective():
    z, y, g = blobs(40, 4, 6)
    zp = torch.rand(7, 6, generator=g, dtype=torch.float64)
    yp = torch.randint(0, 4, (7,), generator=g)
    w = torch.randn(4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True)
    wd = 0.05
    zz, yy = torch.cat([z, zp]), torch.cat([y, yp])
    aw, ab = torch.autograd.grad(victim_objective(LinearHead(w, b), zz, yy, wd), [w, b])
    head = LinearHead(w.detach(), b.detach())
    gw, gb = gradient_sums(head, zz, yy)
    n = len(zz)
    assert torch.allclose(gw / n + wd * head.weight, aw, atol=1e-12)
    assert torch.allclose(gb / n, ab, atol=1e-12)
    pw, pb = per_point_gradients(head, zz, yy)
    assert torch.allclose(pw.sum(0), gw, atol=1e-12) and torch.allclose(pb.sum(0), gb, atol=1e-12)
    # the GC residual is exactly N_t × the gradient of the victim's objective on clean ∪ poison
    rw, rb = gc_residual(head, clean_gradient(head, z, y, wd), zp, yp, wd)
    assert torch.allclose(rw, n * aw, atol=1e-10) and torch.allclose(rb, n * ab, atol=1e-10)


def test_gc_closed_form_gradient_matches_autograd_and_finite_differences():
    gen = torch.Generator().manual_seed(3)
    k, d, wd = 4, 6, 1e-2
    head = LinearHead(
        torch.randn(k, d, generator=gen, dtype=torch.float64),
        torch.randn(k, generator=gen, dtype=torch.float64),
    )
    zc = torch.randn(30, d, generator=gen, dtype=torch.float64)
    clean = clean_gradient(head, zc, torch.randint(0, k, (30,), generator=gen), wd)
    zp = torch.randn(7, d, generator=gen, dtype=torch.float64)
    yp = torch.randint(0, k, (7,), generator=gen)
    value, grad = gc_loss_and_grad(head, clean, zp, yp, wd)
    leaf = zp.clone().requires_grad_(True)
    loss = gc_loss(head, clean, leaf, yp, wd)
    (auto,) = torch.autograd.grad(loss, leaf)
    assert value == pytest.approx(float(loss.detach()), rel=1e-12)
    assert torch.allclose(grad, auto, rtol=1e-10, atol=1e-14)
    h = 1e-6  # central differences on a few coordinates
    for j, c in ((0, 0), (3, 5), (6, 2)):
        up, down = zp.clone(), zp.clone()
        up[j, c] += h
        down[j, c] -= h
        fd = float(gc_loss(head, clean, up, yp, wd)) - float(gc_loss(head, clean, down, yp, wd))
        assert fd / (2 * h) == pytest.approx(float(grad[j, c]), rel=1e-6, abs=1e-9)


def test_gc_near_zero_objective_makes_target_the_victims_solution():
    z, y, g = blobs()
    wd = 1e-2
    cfg = VictimConfig(weight_decay=wd, tol=1e-10, max_iter=2000)
    # a target that 60 poisons provably reach (they induce it); GC must find its own poisons
    p = torch.randperm(len(z), generator=g)[:60]
    target = train_head(torch.cat([z, z[p] + 0.3]), torch.cat([y, (y[p] + 1) % 3]), 3, cfg)
    clean = clean_gradient(target, z, y, wd)
    idx = torch.randperm(len(z), generator=g)[:60]
    res = feature_gc(
        target, clean, z[idx], y[idx], wd, steps=1000, lr=0.05, labels="optimal", rel_tol=1e-7
    )
    assert res.objective < 1e-6 < res.init_objective
    victim = train_head(torch.cat([z, res.z]), torch.cat([y, res.y]), 3, cfg)
    dist = (victim.flat() - target.flat()).norm() / target.flat().norm()
    assert dist < 1e-2
    assert abs(victim.accuracy(z, y) - target.accuracy(z, y)) <= 0.01
    assert target.accuracy(z, y) < train_head(z, y, 3, cfg).accuracy(z, y) - 0.02  # it did harm


def _blob_target(n_poison: int, wd: float = 1e-2):
    """Blobs, a GradPC target head on them, its clean gradient and poison start indices."""
    z, y, g = blobs()
    head = gradpc(train_head(z, y, 3, VictimConfig(weight_decay=wd)), z, y, 0.5)
    clean = clean_gradient(head, z, y, wd)
    return z, y, head, clean, torch.randperm(len(z), generator=g)[:n_poison], wd


def test_relabel_never_increases_the_objective_and_box_is_respected():
    z, y, head, clean, idx, wd = _blob_target(40)
    before = float(gc_loss(head, clean, z[idx], y[idx], wd))
    y2 = relabel(head, clean, z[idx], y[idx], wd)
    assert float(gc_loss(head, clean, z[idx], y2, wd)) <= before + 1e-12
    box = FeatureBox.from_features(z)
    res = feature_gc(head, clean, z[idx], y[idx], wd, box=box, steps=50)
    assert bool(((res.z >= box.low - 1e-12) & (res.z <= box.high + 1e-12)).all())
    assert res.objective <= res.init_objective


# --- stage 1: GradPC and poisonability ----------------------------------------------------------


def test_gradpc_stays_in_its_ball_and_increases_the_clean_loss(pixels, digits):
    z, _, h0, _ = pixels
    y = digits.train.y
    base = clean_loss(h0, z, y)
    losses = []
    for rel in (0.02, 0.05):
        r = rel * radius_scale(h0, "l2")
        head = gradpc(h0, z, y, r)
        assert float((head.flat() - h0.flat()).norm()) <= r * (1 + 1e-9)
        losses.append(clean_loss(head, z, y))
    assert base < losses[0] < losses[1]
    r = 0.02 * radius_scale(h0, "linf")
    head = gradpc(h0, z, y, r, norm="linf")
    assert float((head.flat() - h0.flat()).abs().max()) <= r * (1 + 1e-9)
    assert clean_loss(head, z, y) > base
    with pytest.raises(ConfigError):
        gradpc(h0, z, y, r, norm="l3")


def test_poisonability_reduces_to_the_binary_closed_form(digits):
    keep = (digits.train.y == 1) | (digits.train.y == 7)
    z = digits.train.x.flatten(1)[keep].double()
    y = (digits.train.y[keep] == 7).long()
    w_e = float(lambertw(1 / math.e).real)
    for wd in (1e-3, 1e-7):
        h0 = train_head(z, y, 2, VictimConfig(weight_decay=wd))
        target = gradpc(h0, z, y, 0.3 * radius_scale(h0, "l2"))
        p = poisonability(target, z, y, wd)  # unbounded feature set
        gw, gb = gradient_sums(target, z, y)
        n = len(z)
        reg = wd * float((target.weight**2).sum())
        mean_align = float((gw * target.weight).sum() + (gb * target.bias).sum()) / n
        assert mean_align > 0
        assert p.phi_max == pytest.approx(w_e, rel=1e-9)
        assert p.eps_direction == pytest.approx((mean_align + reg) / (w_e - reg), rel=1e-6)
        if wd < 1e-6:  # the published form ⟨ḡ_c, ŵ⟩ / W(1/e)
            assert p.eps_direction == pytest.approx(mean_align / w_e, rel=1e-3)
        assert p.eps_needed >= p.eps_direction


def test_gap_intervals_contain_every_feasible_gap_and_are_attained():
    z, y, g = blobs(200, 4, 6)
    head = LinearHead(
        torch.randn(4, 6, generator=g, dtype=torch.float64),
        torch.randn(4, generator=g, dtype=torch.float64),
    )
    box = FeatureBox.from_features(z)
    lo, hi = gap_intervals(head, box)
    u = torch.rand(5000, 6, generator=g, dtype=torch.float64)
    corners = (torch.rand(5000, 6, generator=g) < 0.5).double()
    for frac in (u, corners):
        s = head.logits(box.low + frac * (box.high - box.low))
        gaps = s[:, :, None] - s[:, None, :]  # (n, y, k)
        assert bool((gaps >= lo - 1e-9).all() and (gaps <= hi + 1e-9).all())
    # each end is attained at the corner picked by the coefficient signs
    dw = head.weight[0] - head.weight[1]
    top = torch.where(dw > 0, box.high, box.low)
    assert float(head.logits(top[None])[0, 0] - head.logits(top[None])[0, 1]) == pytest.approx(
        float(hi[0, 1])
    )


def test_max_and_min_cancellation_bound_random_feasible_gaps():
    g = torch.Generator().manual_seed(3)
    k = 4
    lo = -3 * torch.rand(k, k, generator=g, dtype=torch.float64)
    hi = lo + 4 * torch.rand(k, k, generator=g, dtype=torch.float64)
    eye = torch.eye(k, dtype=torch.bool)
    lo, hi = lo.masked_fill(eye, 0.0), hi.masked_fill(eye, 0.0)
    shift = torch.randn(k, generator=g, dtype=torch.float64)
    best, worst = max_cancellation(lo, hi, shift), min_cancellation(lo, hi, shift)
    e = shift[None, :] - shift[:, None]
    u = torch.rand(20000, k, k, generator=g, dtype=torch.float64)
    corners = torch.rand(20000, k, k, generator=g) < 0.5
    for sample in (lo + u * (hi - lo), torch.where(corners, hi, lo)):
        d = sample.masked_fill(eye, 0.0)
        phi = (torch.softmax(-d, dim=2) * (d - e)).sum(2)  # (samples, y)
        assert bool((phi.max(0).values <= best + 1e-9).all())
        assert bool((phi.min(0).values >= worst - 1e-9).all())
    # tight: multi-start projected ascent attains the maximum (so the bound is not loose)
    d_var = (lo + torch.rand(64, k, k, generator=g, dtype=torch.float64) * (hi - lo)).clone()
    d_var.requires_grad_(True)
    opt = torch.optim.Adam([d_var], lr=0.05)
    for _ in range(800):
        d = torch.max(torch.min(d_var, hi), lo).masked_fill(eye, 0.0)
        phi = (torch.softmax(-d, dim=2) * (d - e)).sum(2)
        opt.zero_grad()
        (-phi.sum()).backward()
        opt.step()
    assert torch.allclose(phi.detach().max(0).values, best, atol=1e-4)


def test_max_cancellation_is_the_root_of_h_and_matches_a_dense_grid():
    """φ(D(t)) along the KKT curve is unimodal (rises while h = 1 + φ − t ≥ 0, falls after),
    so the multisection's answer must equal a brute-force dense-grid maximum, for labels with
    finite, half-infinite and infinite gap intervals and several bias shifts at once."""
    g = torch.Generator().manual_seed(11)
    for trial in range(24):
        k = (2, 3, 5, 10)[trial % 4]
        lo = -5 * torch.rand(k, k, generator=g, dtype=torch.float64)
        hi = lo + 8 * torch.rand(k, k, generator=g, dtype=torch.float64)
        if trial % 3 == 0:
            lo[:] = -math.inf
        if trial % 5 == 0:
            hi[:] = math.inf
        eye = torch.eye(k, dtype=torch.bool)
        lo, hi = lo.masked_fill(eye, 0.0), hi.masked_fill(eye, 0.0)
        shift = 2 * torch.randn(3, k, generator=g, dtype=torch.float64)
        best = max_cancellation(lo, hi, shift)
        e = shift[:, None, :] - shift[:, :, None]  # (shift, y, k)
        t = torch.linspace(-20.0, 20.0, 40001, dtype=torch.float64)
        d = torch.minimum(
            torch.maximum(t[None, None, :, None] + e[:, :, None, :], lo[:, None]), hi[:, None]
        )
        d = d.masked_fill(eye[:, None, :], 0.0)
        phi = torch.softmax(-d, -1) * (d - e[:, :, None, :]).masked_fill(eye[:, None, :], 0.0)
        phi = phi.sum(-1)  # (shift, y, t)
        h = 1.0 + phi - t
        rising = h >= 0
        assert bool(rising[..., 0].all() and not rising[..., -1].any())  # t* inside the grid
        # the sign of h is a prefix pattern (+ then −) and φ is unimodal on the grid
        assert bool((rising[..., 1:] <= rising[..., :-1]).all())
        assert bool((best >= phi.max(-1).values - 1e-12).all())
        assert torch.allclose(best, phi.max(-1).values, atol=1e-6)  # grid step 1e-3, φ' = 0 at t*
        # and φ* = t* − 1 at the sign change of h (φ may be flat around it: clipped gaps)
        t_star = t[rising.sum(-1) - 1]
        assert bool(((t_star - 1.0 - best).abs() <= 2e-3).all())


# --- stage 3: inversion -------------------------------------------------------------------------


def test_feature_matching_never_leaves_the_box_or_the_linf_ball(digits):
    ext = tiny_extractor(digits.domain)
    start = digits.train.x[:24]
    with torch.no_grad():
        zeta = ext(digits.train.x[100:124]) * 3.0  # far targets push the images hard
    for method, linf in (("signed", 0.1), ("adam", None)):
        res = feature_match(
            ext, zeta, start, digits.domain, linf=linf, steps=15, lr=0.2, method=method
        )
        assert bool(digits.domain.contains(res.x).all())
        if linf is not None:
            assert float((res.x - start).abs().max()) <= linf + 1e-6
        assert res.rel_error < res.init_rel_error
    dec = train_decoder(ext, digits.train.x[:200], domain=digits.domain, steps=20)
    x = decode(dec, zeta * 10)
    assert x.shape == start.shape and bool(digits.domain.contains(x).all())


# --- the registered attacks ---------------------------------------------------------------------

FAST = dict(max_steps=60, max_tries=1, decoder_steps=20, match_steps=4, gradpc_steps=10)


def test_same_seed_gives_identical_poisons_for_every_variant(digits):
    train = digits.train.subset(torch.arange(300))
    ext = tiny_extractor(digits.domain)
    with torch.no_grad():
        z = ext(train.x)
    cfg = VictimConfig(weight_decay=1e-2)
    head = train_head(z, train.y, 10, cfg)
    runs = []
    for _ in range(2):
        memo: dict = {}
        out = {}
        for name in ("ft-match", "ft-ideal", "ft-feasible", "ft-decoder"):
            info = get_attack(name)
            ctx = context(train, z, head, cfg, 0.1, info.regimes[0], ext, memo, linf=0.2)
            out[name] = info.fn(ctx, **FAST)
        assert sum(1 for k in memo if k[0] == "ft/stage12") == 1  # stages 1-2 shared
        runs.append(out)
    for name, ps in runs[0].items():
        other = runs[1][name]
        assert torch.equal(ps.y, other.y)
        for field in ("x", "z"):
            a, b = getattr(ps, field), getattr(other, field)
            assert (a is None and b is None) or torch.equal(a, b)
        if ps.x is not None:
            assert bool(digits.domain.contains(ps.x).all())
            start = train.x[ps.base_idx]
            assert float((ps.x - start).abs().max()) <= 0.2 + 1e-6
        assert len(ps) == ctx.n_poison
        for key in ("target_head_acc", "target_r", "gc_objective", "eps_needed"):
            assert key in ps.info
        assert {"stage1", "stage2"} <= set(ps.stage_seconds)
    assert "inversion" in runs[0]["ft-match"].stage_seconds
    assert "decoder_train" in runs[0]["ft-decoder"].stage_seconds


def test_ft_ideal_beats_label_flip_at_eps_03(pixels, digits):
    z, zt, h0, cfg = pixels
    y, yt = digits.train.y, digits.test.y
    clean = h0.accuracy(zt, yt)
    drops, train_acc = {}, {}
    for name in ("label-flip", "ft-ideal"):
        info = get_attack(name)
        ps = info.fn(context(digits.train, z, h0, cfg, 0.3, info.regimes[0]))
        zp = ps.z if ps.z is not None else ps.x.flatten(1)
        victim = train_head(torch.cat([z, zp]), torch.cat([y, ps.y]), 10, cfg, init=h0)
        drops[name] = clean - victim.accuracy(zt, yt)
        train_acc[name] = victim.accuracy(z, y)
    assert drops["ft-ideal"] > drops["label-flip"] + 0.05
    assert train_acc["ft-ideal"] <= train_acc["label-flip"]


def test_user_errors_are_config_errors(digits):
    info = get_attack("ft-ideal")
    assert info.regimes == ("feature",) and get_attack("ft-match").regimes == ("box",)
    with pytest.raises(ConfigError):
        info.check_params({"no_such_param": 1})
    info.check_params({"labels": "init", "radius": 0.1})
    z = digits.train.x.flatten(1)
    ctx = context(
        digits.train, z, train_head(z, digits.train.y, 10), VictimConfig(), 0.1, "feature"
    )
    bad_params = [
        {"labels": "best"},
        {"radius": -1.0},
        {"seed_attacks": ["ft-ideal"]},
        {"radius": 0.1, "target_acc": 0.5},
        {"match_method": "sgd"},
        {"radii": ["a"]},
    ]
    for bad in bad_params:
        with pytest.raises(ConfigError):
            info.fn(ctx, **bad)


def test_relabel_equals_brute_force_coordinate_descent():
    """Oracle: for each point in order, evaluate gc_loss under every label and keep the best."""
    z, y, head, clean, idx, wd = _blob_target(15)
    zp, labels = z[idx], y[idx].clone()
    for j in range(len(zp)):
        losses = []
        for c in range(3):
            trial = labels.clone()
            trial[j] = c
            losses.append(float(gc_loss(head, clean, zp, trial, wd)))
        labels[j] = int(torch.tensor(losses).argmin())
    assert torch.equal(relabel(head, clean, zp, y[idx], wd), labels)
