"""Large-head paths (issue #20): ``auto`` picks by size at both ends, the explicit and the
Hessian-free solves agree, and the row-chunked passes (used at k = 1000) give the unchunked
answers — checked on small problems by shrinking the chunk sizes."""

from __future__ import annotations

import pytest
import torch
from sklearn.linear_model import LogisticRegression

from poisonprobe.attacks import tgda
from poisonprobe.bounds import loss_bound
from poisonprobe.bounds.feasible import FeasibleSet
from poisonprobe.head import curvature, objective, solvers
from poisonprobe.head.curvature import HeadCurvature, exact_is_cheap
from poisonprobe.head.objective import LinearHead, flat_objective
from poisonprobe.head.solvers import newton_solve

WD = 1e-2


def _mixture(n: int, d: int, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(k, d, generator=gen)
    y = torch.arange(n) % k
    return (means[y] + torch.randn(n, d, generator=gen)).float(), y


def _head(k: int, d: int, seed: int = 1) -> LinearHead:
    gen = torch.Generator().manual_seed(seed)
    w = 0.3 * torch.randn(k, d, generator=gen, dtype=torch.float64)
    return LinearHead(w, 0.1 * torch.randn(k, generator=gen, dtype=torch.float64))


@pytest.fixture
def tiny_chunks(monkeypatch):
    """Chunks of 256 rows (the minimum) and of a few label pairs: several chunks per pass."""
    monkeypatch.setattr(objective, "CHUNK_ELEMENTS", 1)
    monkeypatch.setattr(loss_bound, "PAIR_CHUNK_ELEMENTS", 1)
    monkeypatch.setattr(solvers, "SMALL_FLOAT64_ELEMENTS", 0)  # Newton on float32 features


def test_transposed_hvp_matches_the_matrix_and_the_chunked_rows(monkeypatch):
    """Small problems take the transposed (d, n) path; it computes the same products."""
    z, _ = _mixture(500, 12, 5)
    head = _head(5, 12)
    u = torch.randn(5 * 12 + 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    fast = HeadCurvature(head, z.double(), WD)
    assert fast._zt is not None
    torch.testing.assert_close(fast.hvp(u), fast.matrix() @ u, rtol=1e-10, atol=1e-12)
    fast32 = HeadCurvature(head, z, WD, dtype=torch.float32)
    monkeypatch.setattr(curvature, "TRANSPOSED_ELEMENTS", 0)
    rows32 = HeadCurvature(head, z, WD, dtype=torch.float32)
    assert rows32._zt is None
    torch.testing.assert_close(fast32.hvp(u), rows32.hvp(u), rtol=1e-5, atol=1e-6)


def test_auto_is_explicit_when_small_and_hessian_free_when_large():
    assert exact_is_cheap(1347, 10, 16)  # digits-sized, 170 parameters
    assert not exact_is_cheap(100_000, 1000, 2048)  # ImageNet-sized: 2M parameters
    assert not exact_is_cheap(50_000, 10, 512)  # CIFAR on the CPU: CG
    assert exact_is_cheap(50_000, 10, 512, "cuda")  # ...but explicit on a GPU
    z, y = _mixture(300, 8, 4)
    assert HeadCurvature(_head(4, 8), z.double(), WD).auto_exact()


def test_explicit_and_cg_solves_agree_on_a_medium_problem():
    z, y = _mixture(600, 24, 6)
    head = newton_solve(_head(6, 24), z.double(), y, WD, tol=1e-11)
    curv = HeadCurvature(head, z.double(), WD)
    g = torch.randn(curv.n_params, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    exact = curv.solve_exact(g)
    cg = curv.solve_cg(g, iters=500, tol=1e-12)
    assert float((exact - cg).norm() / exact.norm()) < 1e-8


def test_float32_matrix_cg_reaches_its_tolerance_against_the_explicit_solve(monkeypatch):
    """CG runs on [W | b] matrices in the curvature's precision: with float32 passes (the
    tgda follower and hypergradient) its answer is as good as the tolerance asked, on both
    pass layouts, and stays off the flat bias direction."""
    z, y = _mixture(600, 24, 6)
    head = newton_solve(_head(6, 24), z.double(), y, WD, tol=1e-11)
    g = torch.randn(6 * 24 + 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    exact = HeadCurvature(head, z.double(), WD).solve_exact(g)
    for transposed in (True, False):
        if not transposed:
            monkeypatch.setattr(curvature, "TRANSPOSED_ELEMENTS", 0)
        curv = HeadCurvature(head, z, WD, dtype=torch.float32)
        assert (curv._zt is not None) == transposed
        for tol in (1e-2, 1e-4):
            v = curv.solve_cg(g, iters=500, tol=tol)
            assert v.dtype == torch.float64
            assert float((v - exact).norm() / exact.norm()) < 50 * tol
            assert abs(float(v @ curv.null)) < 1e-6 * float(v.norm())
        warm = curv.solve_cg(g, iters=1, tol=1e-4, x0=exact)  # a converged start stays put
        assert float((warm - exact).norm() / exact.norm()) < 1e-4


def test_chunked_objective_and_hvp_match_one_pass(tiny_chunks):
    z, y = _mixture(1000, 12, 5)  # 4 chunks of 256 rows
    head = _head(5, 12)
    theta = head.flat()
    yoh = torch.nn.functional.one_hot(y, 5).double()
    # one pass, written out: the reference
    logp = torch.log_softmax(z.double() @ head.weight.T + head.bias, 1)
    resid = (logp.exp() - yoh) / len(y)
    ref_loss = float(-(yoh * logp).sum() / len(y) + 0.5 * WD * (head.weight**2).sum())
    ref_grad = torch.cat([(resid.T @ z.double() + WD * head.weight).reshape(-1), resid.sum(0)])
    for targets in (yoh, y):  # soft/one-hot targets and integer labels
        loss, grad = flat_objective(theta, z, targets, WD, 5)  # float32 features: float64 sums
        assert loss == pytest.approx(ref_loss, rel=1e-12)
        torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-13)
    curv = HeadCurvature(head, z.double(), WD)
    assert len(curv.chunks) == 4
    u = torch.randn(curv.n_params, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    torch.testing.assert_close(curv.hvp(u), curv.matrix() @ u, rtol=1e-10, atol=1e-12)


def test_newton_on_float32_features_matches_sklearn(tiny_chunks):
    n, d, k = 900, 10, 4
    z, y = _mixture(n, d, k, seed=5)
    head = newton_solve(
        LinearHead(torch.zeros(k, d, dtype=torch.float64), torch.zeros(k, dtype=torch.float64)),
        z,
        y,
        WD,
        tol=1e-10,
    )
    sk = LogisticRegression(C=1 / (n * WD), tol=1e-12, max_iter=10_000).fit(z.double(), y)
    w_sk = torch.from_numpy(sk.coef_)
    assert float((head.weight - w_sk).abs().max()) < 1e-5 * float(w_sk.abs().max())
    # softmax is shift-invariant in the bias: compare centred intercepts
    b_sk = torch.from_numpy(sk.intercept_)
    torch.testing.assert_close(head.bias - head.bias.mean(), b_sk - b_sk.mean(), atol=1e-5, rtol=0)


def test_chunked_validation_gradient_matches_one_pass(tiny_chunks):
    z, y = _mixture(700, 6, 3)
    head = _head(3, 6)
    for kind in tgda.LEADER_LOSSES:
        loss, g = tgda.val_loss_and_grad(head, z, y, kind)
        theta = head.flat().clone().requires_grad_(True)
        logits = LinearHead.from_flat(theta, 3, 6).logits(z)
        if kind == "ce":
            ref = torch.nn.functional.cross_entropy(logits, y)
        elif kind == "prob":
            ref = 1.0 - torch.softmax(logits, 1).gather(1, y[:, None]).mean()
        else:
            other = logits.scatter(1, y[:, None], -torch.inf).amax(1)
            ref = (other - logits.gather(1, y[:, None])[:, 0]).clamp(max=0.0).mean()
        (ref_g,) = torch.autograd.grad(ref, theta)
        assert loss == pytest.approx(float(ref.detach()), rel=1e-12, abs=1e-15)
        torch.testing.assert_close(g, ref_g, rtol=1e-10, atol=1e-14)


def test_pair_maxima_keeps_the_worst_pairs_across_chunks(tiny_chunks):
    k, d = 7, 5
    z, y = _mixture(400, d, k)
    fs = FeasibleSet.box(z, y, k)
    head = _head(k, d)
    ys, js, vals, kept, points = loss_bound.pair_maxima(head.weight, head.bias, fs, keep=10**6)
    assert kept.tolist() == list(range(k * (k - 1)))  # everything kept, in pair order
    # brute force: the box's best corner per pair
    a = head.weight[js] - head.weight[ys]
    corner = torch.where(a > 0, fs.high, fs.low)
    torch.testing.assert_close(vals, (a * corner).sum(1) + head.bias[js] - head.bias[ys])
    torch.testing.assert_close(points, corner)
    _, _, vals5, kept5, points5 = loss_bound.pair_maxima(head.weight, head.bias, fs, keep=5)
    torch.testing.assert_close(vals5, vals)
    assert sorted(kept5.tolist()) == sorted(vals.topk(5).indices.tolist())
    torch.testing.assert_close(points5, corner[kept5])
    assert int(vals.argmax()) in kept5.tolist()


def test_slab_lines_from_rest_means_match_the_complement(tiny_chunks):
    from poisonprobe.bounds.feasible import _slab_dirs
    from poisonprobe.defenses.filters import class_geometry

    k = 5
    z, y = _mixture(700, 6, k)
    zd = z.double()
    center, direction, sphere, slab = class_geometry(z, y, k)
    dirs = _slab_dirs(z, y, center, k, "rest", {})
    for c in range(k):  # brute force: the mean of every point with another label
        line = zd[y == c].mean(0) - zd[y != c].mean(0)
        torch.testing.assert_close(direction[c], line / line.norm(), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(dirs[c], line / line.norm(), rtol=1e-10, atol=1e-12)
    diff = zd - center[y]
    torch.testing.assert_close(sphere, diff.norm(dim=1))
    torch.testing.assert_close(slab, (diff * direction[y]).sum(1).abs())
    near = _slab_dirs(z, y, center, k, "nearest", {})
    for c in range(k):
        dist = [(float((center[o] - center[c]).norm()), o) for o in range(k) if o != c]
        line = center[c] - center[min(dist)[1]]
        torch.testing.assert_close(near[c], line / line.norm())
