"""Certified bounds: the loss bound against brute force and every feature-space attack, the
exact inner maximisation against an LP solver, DPA radii against brute-force vote flips."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from scipy.optimize import linprog, minimize
from torch import nn

from poisonprobe.attacks import AttackContext, ThreatModel, get_attack
from poisonprobe.bounds.dpa import certified_accuracy, certify, partition, votes
from poisonprobe.bounds.feasible import FeasibleSet, max_linear, oracle_feasible_set
from poisonprobe.bounds.loss_bound import clean_loss, minimax
from poisonprobe.data import load_dataset
from poisonprobe.defenses import DefenseInput, apply_defense, parse_defense
from poisonprobe.extractors.archs import Extractor
from poisonprobe.head.config import VictimConfig
from poisonprobe.head.train import train_head

torch.set_num_threads(2)
WD = 1e-2


def toy(n: int = 60, seed: int = 0):
    """Three 2-D Gaussian classes, features ≥ 0 like ReLU features."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.tensor([[1.0, 1.0], [3.0, 1.2], [2.0, 3.0]], dtype=torch.float64)
    y = torch.arange(n) % 3
    z = (centers[y] + 0.5 * torch.randn(n, 2, generator=g, dtype=torch.float64)).clamp_min(0)
    return z, y


def retrain_loss(z, y, zp, yp, cfg, init=None) -> float:
    head = train_head(torch.cat([z, zp]), torch.cat([y, yp]), 3, cfg, init=init)
    return clean_loss(head, z, y)


# --- the inner maximisation -------------------------------------------------------------------


def _lp_max(a, lo, hi, mu=None, v=None, s=None) -> float:
    """max a·x over box (∩ slab) by scipy's LP solver."""
    a_ub = b_ub = None
    if v is not None:
        a_ub = np.stack([v, -v])
        b_ub = np.array([s + v @ mu, s - v @ mu])
    res = linprog(-a, A_ub=a_ub, b_ub=b_ub, bounds=list(zip(lo, hi, strict=True)))
    return -res.fun


def _ball_max(a, lo, hi, mu, r) -> float:
    """max a·x over box ∩ ball by SLSQP from several starts (an independent solver)."""
    best = -math.inf
    for x0 in (mu, np.clip(mu + r * a / np.linalg.norm(a) * 0.5, lo, hi)):
        res = minimize(
            lambda x: -(a @ x),
            x0,
            jac=lambda x: -a,
            bounds=list(zip(lo, hi, strict=True)),
            constraints=[{"type": "ineq", "fun": lambda x: r * r - ((x - mu) ** 2).sum()}],
            method="SLSQP",
            options={"ftol": 1e-12, "maxiter": 500},
        )
        best = max(best, -res.fun)
    return best


@pytest.mark.parametrize("seed", range(4))
def test_max_linear_matches_independent_solvers_and_points_are_feasible(seed):
    g = torch.Generator().manual_seed(seed)
    d, m = 6, 5
    z = torch.rand(80, d, generator=g, dtype=torch.float64) * 3
    y = torch.arange(80) % 2
    a = torch.randn(m, d, generator=g, dtype=torch.float64)
    c = torch.randn(m, generator=g, dtype=torch.float64)
    labels = torch.arange(m) % 2
    for defense in ("none", "sphere", "slab"):
        fs = oracle_feasible_set(z, y, 2, parse_defense(defense), 0.3)
        val, x = max_linear(fs, labels, a, c)
        assert bool(fs.contains(x, labels, tol=1e-7).all())
        primal = (a * x).sum(1) + c
        assert bool((primal <= val + 1e-9).all())  # the point never beats the bound
        lo, hi = fs.low.numpy(), fs.high.numpy()
        for i in range(m):
            yi = int(labels[i])
            mu = fs.center[yi].numpy()
            if defense == "none":
                ref = _lp_max(a[i].numpy(), lo, hi)
            elif defense == "slab":
                ref = _lp_max(
                    a[i].numpy(), lo, hi, mu, fs.slab_dir[yi].numpy(), float(fs.width[yi])
                )
            else:
                ref = _ball_max(a[i].numpy(), lo, hi, mu, float(fs.radius[yi]))
            ref += float(c[i])
            assert float(val[i]) >= ref - 1e-7  # sound
            assert float(val[i]) <= ref + 1e-5 * max(1.0, abs(ref))  # and exact
            assert float(primal[i]) >= ref - 1e-4 * max(1.0, abs(ref))  # attained


# --- the loss bound on a 2-D toy problem ------------------------------------------------------

GAP = {"none": 0.6, "sphere": 0.25}
"""Stated gap (bound − best brute-force poison, in nats) at eps 0.1 on ``toy``; measured
0.48 (box: bound 0.879 vs 0.397, clean 0.084) and 0.18 (sphere: 0.271 vs 0.092). Sources:
the dropped poison-loss and regulariser terms of θ̂, log(K−1) in the relaxation, and
brute force placing all poisons at one point."""


@pytest.mark.parametrize("defense", ["none", "sphere"])
def test_bound_dominates_brute_force_on_a_grid_and_is_within_the_stated_gap(defense):
    z, y = toy()
    cfg = VictimConfig(weight_decay=WD)
    head = train_head(z, y, 3, cfg)
    n_p = 6  # eps = 0.1
    fs = oracle_feasible_set(z, y, 3, parse_defense(defense), 0.1)
    res = minimax(z, y, 3, WD, n_p, fs, head)
    assert res.bound_loss >= res.clean_loss
    lo, hi = fs.low, fs.high
    grid = [lo + (hi - lo) * torch.tensor([i / 6, j / 6]) for i in range(7) for j in range(7)]
    grid += [fs.center[c] for c in range(3)]
    worst = res.clean_loss
    for point, label in itertools.product(grid, range(3)):
        p = point[None].double()
        lab = torch.tensor([label])
        if not bool(fs.contains(p, lab).all()):  # the oracle defence removes it
            continue
        loss = retrain_loss(z, y, p.repeat(n_p, 1), lab.repeat(n_p), cfg, head)
        assert loss <= res.bound_loss + 1e-9
        worst = max(worst, loss)
    # mixtures: the min-max attack's own points (spread along the loop) also stay below
    pick = torch.linspace(0, len(res.worst_y) - 1, n_p).round().long()
    mm = retrain_loss(z, y, res.worst_z[pick], res.worst_y[pick], cfg)
    assert mm <= res.bound_loss
    worst = max(worst, mm)
    assert worst > res.clean_loss + 5e-3  # the brute force did find damaging poisons
    assert res.bound_loss - worst <= GAP[defense]


def test_a_defence_that_removes_every_poison_gives_the_clean_loss():
    z, y = toy()
    head = train_head(z, y, 3, VictimConfig(weight_decay=WD))
    fs = FeasibleSet.box(z, y, 3)
    fs.radius = torch.full((3,), -1.0, dtype=torch.float64)  # no label admits a poison
    res = minimax(z, y, 3, WD, 6, fs, head)
    assert res.bound_loss == pytest.approx(clean_loss(head, z, y), abs=1e-12)
    assert res.worst_z.shape[0] == 0
    # and with no poison at all (n_p = 0) the same
    assert minimax(z, y, 3, WD, 0, FeasibleSet.box(z, y, 3), head).bound_loss == res.bound_loss


def test_oracle_sphere_and_slab_keep_what_the_filters_keep_of_clean_data():
    z, y = toy(90)
    inp = DefenseInput(z, y, torch.ones(90, dtype=torch.bool), 3, VictimConfig(), 0)
    kept = {}
    for name in ("sphere", "slab", "slab(direction=nearest,centroid=median)"):
        spec = parse_defense(
            name
            if "(" not in name
            else {"name": "slab", "direction": "nearest", "centroid": "median"}
        )
        kept[name] = apply_defense(spec, inp, default_fraction=0.1)
        inside = oracle_feasible_set(z, y, 3, spec, 0.1).contains(z, y, tol=1e-12)
        assert torch.equal(inside, kept[name]), name
    # a composition is modelled as each filter alone on the clean data, intersected
    both = oracle_feasible_set(z, y, 3, parse_defense("sphere+slab"), 0.1)
    assert torch.equal(both.contains(z, y, tol=1e-12), kept["sphere"] & kept["slab"])


# --- every feature-space attack stays below the bound (small real case) -----------------------


def tiny_extractor(domain) -> Extractor:
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU())
    ext = Extractor(backbone, domain, "tiny", 16).eval()
    for p in ext.parameters():
        p.requires_grad_(False)
    return ext


FAST = {
    "ft-ideal": dict(max_steps=60, max_tries=1, gradpc_steps=10),
    "ft-feasible": dict(max_steps=60, max_tries=1, gradpc_steps=10),
    "tgda-feature": dict(max_steps=8),
    "label-flip": {},
    "min-max": dict(steps=150),
}


def test_no_feature_space_attack_exceeds_the_bound_on_digits():
    digits = load_dataset("digits")
    train = digits.train.subset(torch.arange(240))
    ext = tiny_extractor(digits.domain)
    with torch.no_grad():
        z = ext(train.x)
    cfg = VictimConfig(weight_decay=WD)
    head = train_head(z, train.y, 10, cfg)
    eps = 0.1
    threat = ThreatModel(eps=eps, domain=train.domain, regime="feature")
    memo: dict = {}
    seen = {}
    for name, params in FAST.items():
        info = get_attack(name)
        regime = "box" if "box" in info.regimes else "feature"
        ctx = AttackContext.build(
            ext, train, eps, regime=regime, victim=cfg, z_train=z, clean_head=head, memo=memo
        )
        ps = info.fn(ctx, **params)
        zp = ps.z.to(z) if ps.z is not None else ext(ps.x)
        victim = train_head(torch.cat([z, zp]), torch.cat([train.y, ps.y]), 10, cfg, init=head)
        loss = clean_loss(victim, z, train.y)
        # the bound over the smallest box holding the clean features AND these poisons (the
        # same feasible set: ft-ideal's features may leave the clean box)
        fs = FeasibleSet.box(torch.cat([z, zp]), torch.cat([train.y, ps.y]), 10)
        n_p = threat.n_poison(len(train))
        assert len(ps) == n_p
        bound = minimax(z, train.y, 10, WD, n_p, fs, head, steps=150).bound_loss
        assert loss <= bound, name
        seen[name] = (loss, bound)
    assert seen["min-max"][0] > clean_loss(head, z, train.y)  # the attack does damage


# --- DPA --------------------------------------------------------------------------------------


def _flips_needed(counts: list[int], pred: int, limit: int) -> int:
    """Fewest single-vote changes (one part switching its vote to any class) that change the
    majority vote with ties to the smaller index: breadth-first over count vectors."""
    start = tuple(counts)
    frontier = {start}
    for step in range(1, limit + 1):
        nxt = set()
        for state in frontier:
            for i, j in itertools.permutations(range(len(state)), 2):
                if state[i] == 0:
                    continue
                s = list(state)
                s[i] -= 1
                s[j] += 1
                if int(np.argmax(s)) != pred:
                    return step
                nxt.add(tuple(s))
        frontier = nxt
    return limit + 1


def test_dpa_radius_equals_brute_force_vote_flips():
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        k = int(torch.randint(2, 10, (1,), generator=g))
        counts = torch.zeros(4, dtype=torch.long)
        for _ in range(k):
            counts[int(torch.randint(0, 4, (1,), generator=g))] += 1
        pred, radius = certify(counts[None])
        assert int(pred) == int(np.argmax(counts.numpy()))
        # a changed training point changes one part's vote: radius = flips needed − 1
        assert int(radius) == _flips_needed(counts.tolist(), int(pred), k) - 1


def test_dpa_partition_is_by_content_and_votes_count_every_part():
    digits = load_dataset("digits")
    train = digits.train.subset(torch.arange(200))
    parts = partition(train.x, train.y, 7)
    perm = torch.randperm(200, generator=torch.Generator().manual_seed(1))
    assert torch.equal(partition(train.x[perm], train.y[perm], 7), parts[perm])  # position-free
    z = train.x.flatten(1)
    counts = votes(z, train.y, parts, 7, 10, VictimConfig(), digits.test.x.flatten(1)[:50])
    nonempty = len(torch.unique(parts))
    assert bool((counts.sum(1) == nonempty).all())
    pred, radius = certify(counts)
    acc = certified_accuracy(pred, radius, digits.test.y[:50], [0, 1, 2, 4])
    assert acc == sorted(acc, reverse=True) and acc[0] > 0.5


# --- the runner -------------------------------------------------------------------------------


def test_run_writes_bound_rows_train_loss_and_certified_csv(tmp_path, tiny_config):
    import pandas as pd

    from poisonprobe.experiment.runner import run

    cfg = {
        **tiny_config,
        "attacks": ["label-flip", {"name": "min-max", "steps": 40}],
        "defenses": ["none", "sphere"],
        "bounds": ["loss", "dpa"],
        "dpa_k": [3, 7],
    }
    df = run(cfg, out=tmp_path, quiet=True)
    bound = df[df["attack"] == "bound"]
    assert len(bound) == 2 and set(bound["defense"]) == {"none", "sphere"}
    assert bound["regime"].eq("feature").all()
    rest = df[df["attack"] != "bound"]
    assert rest["train_loss"].notna().all()
    for d in ("none", "sphere"):
        b = float(bound.loc[bound["defense"] == d, "bound_loss"].iloc[0])
        clean = float(
            rest.loc[(rest["attack"] == "none") & (rest["defense"] == d), "train_loss"].iloc[0]
        )
        assert b > clean
    # the min-max poisons under defence none are feature-box poisons: the bound holds
    mm = rest[(rest["attack"] == "min-max") & (rest["defense"] == "none")]
    assert float(mm["train_loss"].iloc[0]) <= float(
        bound.loc[bound["defense"] == "none", "bound_loss"].iloc[0]
    )
    # both attacks' poisons lie in the clean-feature box, and each row says so
    attacked = rest[rest["attack"] != "none"]
    assert [json.loads(v)["in_feature_box"] for v in attacked["info"]] == [1.0] * 4
    cert = pd.read_csv(tmp_path / "certified.csv")
    assert list(cert.columns) == ["setting", "extractor", "k", "radius", "certified_acc"]
    assert set(cert["k"]) == {3, 7}
    for _, g in cert.groupby("k"):
        assert g["certified_acc"].is_monotonic_decreasing
    assert (tmp_path / "certified_finetune_smallcnn-simclr.png").exists()
    assert any(p.name.startswith("bound_vs_eps") for p in tmp_path.glob("*.png"))
    assert "Certified loss bound" in (tmp_path / "report.md").read_text()
    again = run(cfg, out=tmp_path, quiet=True)  # resume: nothing duplicated
    assert len(again) == len(df)
