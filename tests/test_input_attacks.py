"""Input-space attacks: gc-input, tgda (+ tgda-feature), emn.

The maths is checked on tiny problems against independent references (finite differences,
autograd Hessians, dense solves); the attacks are checked for their contracts (box, L∞
budget, determinism, regimes) on a small digits subset with a tiny extractor.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import tiny_setup

from poisonprobe.attacks import AttackContext, ThreatModel, get_attack
from poisonprobe.attacks.common import PixelOptimizer, feature_loss_and_grad
from poisonprobe.attacks.gc.input import gc_objective_fn
from poisonprobe.attacks.targets import target_head
from poisonprobe.attacks.tgda import (
    FollowerProblem,
    follower_update,
    total_gradient_surrogate,
    val_loss_and_grad,
)
from poisonprobe.errors import ConfigError
from poisonprobe.head.config import VictimConfig
from poisonprobe.head.curvature import HeadCurvature, conjugate_gradient
from poisonprobe.head.objective import LinearHead, victim_objective
from poisonprobe.head.train import train_head

TIGHT = VictimConfig(weight_decay=1e-2, max_iter=5000, tol=1e-13)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These problems are tiny: a second intra-op thread only adds sync overhead, which on a
    shared, busy machine turned a 1 s test into 20 s."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# ------------------------------------------------------------------------------ tiny problems


def _blobs(n: int, k: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    centers = torch.rand(k, d, generator=g, dtype=torch.float64) * 2
    z = (centers[y] + 0.7 * torch.randn(n, d, generator=g, dtype=torch.float64)).clamp_min(0)
    return z, y


def _random_head(k: int, d: int, seed: int) -> LinearHead:
    g = torch.Generator().manual_seed(seed)
    return LinearHead(
        torch.randn(k, d, generator=g, dtype=torch.float64),
        torch.randn(k, generator=g, dtype=torch.float64),
    )


def test_exact_hessian_equals_autograd_hessian_of_victim_objective():
    k, d = 3, 4
    z, y = _blobs(25, k, d, 0)
    head = _random_head(k, d, 1)
    wd = 0.05
    expected = torch.autograd.functional.hessian(
        lambda th: victim_objective(LinearHead.from_flat(th, k, d), z, y, wd), head.flat()
    )
    curv = HeadCurvature(head, z, wd)
    torch.testing.assert_close(curv.matrix(), expected, rtol=1e-10, atol=1e-12)
    u = torch.randn(k * d + k, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(curv.hvp(u), expected @ u, rtol=1e-10, atol=1e-12)
    # the only flat direction is a common bias shift
    assert curv.hvp(curv.null).abs().max() < 1e-12


def test_cg_and_cholesky_solves_match_dense_solve():
    k, d = 4, 5
    z, _ = _blobs(40, k, d, 3)
    curv = HeadCurvature(_random_head(k, d, 4), z, 1e-2)
    h = curv.matrix()
    g = torch.randn(k * d + k, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    g = g - (g @ curv.null) * curv.null  # validation gradients never move the common bias
    reference = torch.linalg.pinv(h, hermitian=True) @ g
    torch.testing.assert_close(curv.solve_exact(g), reference, rtol=1e-7, atol=1e-9)
    # CG on the (kd+k)-dim system converges in at most kd+k steps (up to rounding)
    v_cg = curv.solve_cg(g, iters=10 * (k * d + k), tol=1e-14)
    torch.testing.assert_close(v_cg, reference, rtol=1e-6, atol=1e-8)
    # plain CG on an explicit SPD matrix
    a = h + torch.eye(h.shape[0], dtype=h.dtype)
    expected = torch.linalg.solve(a, g)
    torch.testing.assert_close(conjugate_gradient(lambda v: a @ v, g, 200), expected)


def _problem(
    hessian: str, precise: bool = True
) -> tuple[FollowerProblem, torch.Tensor, torch.Tensor]:
    k, d = 3, 4
    z_fol, y_fol = _blobs(30, k, d, 6)
    z_val, y_val = _blobs(20, k, d, 7)
    z_p, _ = _blobs(3, k, d, 8)
    y_p = torch.tensor([1, 2, 0])
    prob = FollowerProblem(z_fol, y_fol, z_val, y_val, k, TIGHT, hessian=hessian, cg_iters=200)
    if precise:  # float64 CG to 1e-14 (the attack's default is float32 to 1e-4: a direction)
        prob.cg_tol, prob.cg_dtype = 1e-14, torch.float64
    return prob, z_p, y_p


def _follower_optimum(prob: FollowerProblem, z_p: torch.Tensor, y_p: torch.Tensor) -> LinearHead:
    """L-BFGS, then Newton steps with autograd's Hessian: the optimum to ~1e-15 (L-BFGS alone
    stops near 1e-8, too coarse for finite differences)."""
    z, y = torch.cat([prob.z_fol, z_p]), torch.cat([prob.y_fol, y_p])
    theta = train_head(z, y, 3, TIGHT).flat()

    def objective(th: torch.Tensor) -> torch.Tensor:
        return victim_objective(LinearHead.from_flat(th, 3, 4), z, y, TIGHT.weight_decay)

    for _ in range(3):
        g = torch.autograd.functional.jacobian(objective, theta)
        h = torch.autograd.functional.hessian(objective, theta)
        theta = theta - torch.linalg.pinv(h, hermitian=True) @ g
    return LinearHead.from_flat(theta, 3, 4)


def _leader_loss(prob: FollowerProblem, z_p: torch.Tensor, y_p: torch.Tensor) -> float:
    return val_loss_and_grad(_follower_optimum(prob, z_p, y_p), prob.z_val, prob.y_val)[0]


@pytest.mark.parametrize("hessian", ["exact", "cg"])
def test_tgda_total_gradient_matches_finite_differences(hessian: str):
    """Exact follower ⇒ the total gradient is the hypergradient d𝓛(w*(z_p))/dz_p."""
    prob, z_p, y_p = _problem(hessian)
    head = _follower_optimum(prob, z_p, y_p)
    zz = z_p.clone().requires_grad_(True)
    stats: dict[str, float] = {}
    (grad,) = torch.autograd.grad(total_gradient_surrogate(head, prob, zz, y_p, stats), zz)
    assert stats["exact_hessian"] == float(hessian == "exact")
    fd = torch.zeros_like(z_p)
    h = 1e-5
    for i in range(z_p.shape[0]):
        for j in range(z_p.shape[1]):
            e = torch.zeros_like(z_p)
            e[i, j] = h
            up, down = _leader_loss(prob, z_p + e, y_p), _leader_loss(prob, z_p - e, y_p)
            fd[i, j] = (up - down) / (2 * h)
    assert grad.abs().max() > 1e-3  # a non-trivial gradient
    torch.testing.assert_close(grad, fd, rtol=1e-5, atol=1e-8)
    if hessian == "cg":  # the attack's defaults (float32 CG to 1e-4, warm-started) stay close
        fast, _, _ = _problem(hessian, precise=False)
        fast.cg_iters = 16
        for _ in range(2):  # the second solve starts from the first (warm start)
            zz = z_p.clone().requires_grad_(True)
            s = total_gradient_surrogate(head, fast, zz, y_p, stats)
            (g32,) = torch.autograd.grad(s, zz)
            torch.testing.assert_close(g32, fd, rtol=2e-3, atol=1e-6)
        assert stats["solve_residual"] < 1e-3


def test_follower_steps_approach_exact_solution():
    prob, z_p, y_p = _problem("exact")
    start = _random_head(3, 4, 9)
    exact = follower_update(start, prob, z_p, y_p, "exact", 1)
    few = follower_update(start, prob, z_p, y_p, "steps", 5)
    many = follower_update(start, prob, z_p, y_p, "steps", 2000)
    gap = (few.flat() - exact.flat()).norm()
    assert (many.flat() - exact.flat()).norm() < 0.2 * gap


# ------------------------------------------------------------------------------ attack contracts


@pytest.fixture(scope="module")
def tiny():
    return tiny_setup(200)


def _ctx(
    tiny, eps: float = 0.1, regime: str = "box", linf: float | None = None, seed: int = 0
) -> AttackContext:
    train, ext, z, head, victim = tiny
    return AttackContext.build(
        ext,
        train,
        eps,
        regime=regime,
        linf=linf,
        victim=victim,
        seed=seed,
        z_train=z,
        clean_head=head,
        batch_size=16,  # smaller than n_p: exercises the two-pass batched VJP
    )


FAST = {
    "gc-input": {"max_steps": 4},
    "tgda": {"max_steps": 3},
    "tgda-generator": {"max_steps": 3, "leader": "generator", "lr": 0.05},
    "tgda-steps-cg": {"max_steps": 3, "follower": "steps", "hessian": "cg"},
    "emn": {"max_steps": 4, "max_rounds": 2},
}


def _run(name: str, ctx: AttackContext):
    attack = name if name in ("gc-input", "emn") else "tgda"
    return get_attack(attack).fn(ctx, **FAST[name])


@pytest.mark.parametrize("name", list(FAST))
def test_box_poisons_stay_in_box_and_linf_ball(tiny, name):
    linf = 0.05
    ctx = _ctx(tiny, regime="box", linf=linf)
    ps = _run(name, ctx)
    assert ps.x is not None and len(ps) == (ctx.n_poison)
    assert bool(ctx.threat.domain.contains(ps.x, tol=0).all())
    start = ctx.train.x[ps.base_idx]
    assert float((ps.x - start).abs().max()) <= linf + 1e-6
    assert float((ps.x - start).abs().max()) > 0  # the attack did move the images


@pytest.mark.parametrize("name", list(FAST))
def test_same_seed_same_poisons(tiny, name):
    a = _run(name, _ctx(tiny, seed=3))
    b = _run(name, _ctx(tiny, seed=3))
    c = _run(name, _ctx(tiny, seed=4))
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)


@pytest.mark.parametrize("name", ["gc-input", "tgda"])
def test_unconstrained_regime_can_leave_the_box(tiny, name):
    ctx = _ctx(tiny, regime="unconstrained")
    ps = _run(name, ctx)
    assert not bool(ctx.threat.domain.contains(ps.x).all())


def test_emn_noise_within_linf_budget_and_replaces_points(tiny):
    for regime in ("unconstrained", "box"):
        ctx = _ctx(tiny, eps=0.2, regime=regime)
        ps = get_attack("emn").fn(ctx, max_steps=5, max_rounds=2, linf=4 / 255, step_size=2 / 255)
        delta = ps.x - ctx.train.x[ps.replace_idx]
        assert float(delta.abs().max()) <= 4 / 255 + 1e-7
        assert float(delta.abs().max()) > 3 / 255  # sign steps reach the budget
        assert torch.equal(ps.y, ctx.train.y[ps.replace_idx])  # true labels
        assert len(set(ps.replace_idx.tolist())) == len(ps) == ctx.n_poison
        if regime == "box":
            assert bool(ctx.threat.domain.contains(ps.x, tol=0).all())
    all_ps = get_attack("emn").fn(_ctx(tiny), max_steps=1, max_rounds=1, fraction="all")
    assert torch.equal(all_ps.replace_idx, torch.arange(len(tiny[0])))


def test_emn_lowers_surrogate_loss_of_perturbed_points(tiny):
    ctx = _ctx(tiny, eps=0.2, regime="box")
    ps = get_attack("emn").fn(ctx, max_steps=10, max_rounds=1)
    head = ctx.clean_head
    before = torch.nn.functional.cross_entropy(head.logits(ctx.z_train[ps.replace_idx]), ps.y)
    after = torch.nn.functional.cross_entropy(head.logits(ctx.extractor(ps.x)), ps.y)
    assert after < before


def test_batched_feature_gradient_equals_one_pass(tiny):
    """The two-pass (encode, closed-form dL/dz, batched VJP) path must equal plain autograd."""
    ctx = _ctx(tiny, eps=0.2)
    x = ctx.train.x[:40] + 0.01
    target, _ = target_head(ctx)
    fn = gc_objective_fn(target, ctx.z_train, ctx.train.y, ctx.train.y[:40], ctx.victim)
    loss_b, g_b, _ = feature_loss_and_grad(ctx, x, fn)  # batch_size 16 < 40: two passes
    loss_1, g_1, _ = feature_loss_and_grad(dataclasses.replace(ctx, batch_size=512), x, fn)
    assert loss_b == pytest.approx(loss_1, rel=1e-6)
    torch.testing.assert_close(g_b, g_1, rtol=1e-4, atol=1e-9)


def test_gc_input_with_tgda_feature_target(tiny):
    ctx = _ctx(tiny, eps=0.2, regime="box")
    ps = get_attack("gc-input").fn(ctx, max_steps=6, target="tgda-feature")
    assert ps.info["gc_objective"] < ps.info["gc_objective_init"]
    assert bool(ctx.threat.domain.contains(ps.x, tol=0).all())


def test_tgda_feature_inversion_gives_box_images(tiny):
    ctx = dataclasses.replace(_ctx(tiny), threat=ThreatModel(0.1, tiny[0].domain, "feature"))
    ps = get_attack("tgda-feature").fn(ctx, max_steps=3, invert="feature-match", match_steps=3)
    assert ps.x is not None and ps.z is None
    assert bool(ctx.threat.domain.contains(ps.x, tol=0).all())


def test_gc_input_decreases_gc_objective(tiny):
    ctx = _ctx(tiny, eps=0.2, regime="box")
    ps = get_attack("gc-input").fn(ctx, max_steps=8, labels="confusable", target="gradpc")
    target, _ = target_head(ctx)
    fn = gc_objective_fn(target, ctx.z_train, ctx.train.y, ps.y, ctx.victim)
    before = float(fn(ctx.z_train[ps.base_idx]))
    after = float(fn(ctx.extractor(ps.x)))
    assert after < 0.95 * before
    assert ps.info["gc_objective"] == pytest.approx(after, rel=1e-4)


def test_gc_input_restarts_with_smaller_steps_when_they_overshoot(tiny):
    """A step size far too large for the images: without restarts no step beats the start;
    with them the images go back to the best iterate with half the step until steps help."""
    ctx = _ctx(tiny, eps=0.2, regime="unconstrained")
    kw = dict(max_steps=16, window=16, lr=30.0, labels="confusable", target="gradpc")
    stuck = get_attack("gc-input").fn(ctx, patience=10_000, **kw)
    assert stuck.info["restarts"] == 0
    assert stuck.info["gc_objective"] == stuck.info["gc_objective_init"]  # never improved
    fixed = get_attack("gc-input").fn(ctx, **kw)
    assert fixed.info["restarts"] >= 1
    assert fixed.info["gc_objective"] < 0.9 * fixed.info["gc_objective_init"]


def test_pixel_optimizer_restart_halves_the_step_and_resets_adam(tiny):
    ctx = _ctx(tiny, regime="unconstrained")
    x0 = ctx.train.x[:4].clone()
    g = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    opt = PixelOptimizer(ctx, x0, x0, "adam", lr=0.1, steps=1_000)
    first = opt.step(g)  # Adam's first step: lr · sign(g) (up to the 1e-12 and the cosine)
    step1 = (first - x0).abs().max()
    opt.step(-g)
    opt.restart(first)
    assert opt.x is first
    again = opt.step(g)  # fresh moments: sign-like again, at half the size
    assert float((again - first).abs().max()) == pytest.approx(0.5 * float(step1), rel=1e-3)
    assert torch.equal(torch.sign(first - again), torch.sign(g))


def test_tgda_raises_validation_loss_and_hurts_victim(tiny):
    ctx = _ctx(tiny, eps=0.2, regime="box")
    ps = get_attack("tgda").fn(ctx, max_steps=6)
    assert ps.info["val_loss"] > ps.info["val_loss_init"]
    assert 0 <= ps.stage_seconds["solve_share"] <= 1
    z = torch.cat([ctx.z_train, ctx.extractor(ps.x)])
    y = torch.cat([ctx.train.y, ps.y])
    head = train_head(z, y, ctx.n_classes, ctx.victim)
    assert head.accuracy(ctx.z_train, ctx.train.y) < ctx.clean_head.accuracy(
        ctx.z_train, ctx.train.y
    )


def test_tgda_feature_stays_in_clean_feature_range(tiny):
    ctx = dataclasses.replace(_ctx(tiny), threat=ThreatModel(0.1, tiny[0].domain, "feature"))
    ps = get_attack("tgda-feature").fn(ctx, max_steps=5)
    assert ps.x is None and ps.z is not None and len(ps) == ctx.n_poison
    lo, hi = ctx.z_train.min(0).values, ctx.z_train.max(0).values
    assert bool(((ps.z >= lo - 1e-6) & (ps.z <= hi + 1e-6)).all())
    assert ps.info["val_loss"] > ps.info["val_loss_init"]


@pytest.mark.parametrize(
    "name,params",
    [
        ("tgda", {"follower": "newton"}),
        ("tgda", {"hessian": "lu"}),
        ("tgda", {"leader": "gan"}),
        ("tgda", {"val_fraction": 1.5}),
        ("gc-input", {"optimizer": "sgd"}),
        ("gc-input", {"labels": "mine"}),
        ("gc-input", {"target": "oracle"}),
        ("gc-input", {"patience": 0}),
        ("tgda", {"leader_loss": "mse"}),
        ("emn", {"fraction": "half"}),
        ("emn", {"linf": 0}),
        ("tgda-feature", {"invert": "decoder"}),
    ],
)
def test_bad_parameters_are_one_line_config_errors(tiny, name, params):
    with pytest.raises(ConfigError) as err:
        get_attack(name).fn(_ctx(tiny), **params)
    assert "\n" not in str(err.value)
