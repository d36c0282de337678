"""The plateau rule (``attacks/_optim.py``) and the attacks built on it: convergence on a
known optimum, ``converged=False`` when the cap bites, defence-aware poisons (kkt and
tgda-feature) that the sphere / slab filters keep, determinism."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_setup

from poisonprobe.attacks import AttackContext, PoisonKind, PoisonSet, get_attack
from poisonprobe.attacks._feasible import defense_feasible_set
from poisonprobe.attacks._optim import (
    MAX_OUTLOOK,
    Plateau,
    StopRule,
    check_growth,
    stop_rule,
)
from poisonprobe.defenses import DefenseInput, apply_defense, parse_defense
from poisonprobe.errors import ConfigError
from poisonprobe.experiment.config import parse_config


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# ------------------------------------------------------------------------------ the rule


def _ascend(
    rule: StopRule, lr: float, optimum: float = 3.0, growth: float = 1.0
) -> tuple[Plateau, float]:
    """Gradient ascent on f(x) = −(x − optimum)² with the plateau rule, restarts and (with
    ``growth`` > 1) a step that grows after ``patience`` new bests in a row."""
    plateau = Plateau(rule, maximize=True)
    x, best_x = 0.0, 0.0
    for _ in range(rule.max_steps):
        value = -((x - optimum) ** 2) - 1.0  # max −1 at the optimum (a nonzero scale)
        if plateau.record(value):
            best_x = x
        if plateau.done():
            break
        if plateau.restart_due():
            x, lr = best_x, lr * 0.5
            continue
        if growth > 1 and plateau.grow_due():
            lr *= growth
        x += lr * (-2.0 * (x - optimum))
    return plateau, best_x


def test_a_slow_climb_is_told_apart_from_an_optimum():
    """Both stop by the rule; only the log-like climb, whose gains shrink slowly (unbounded:
    more steps would keep adding), is flagged ``still_rising``, and it runs until a window
    gains less than tol / MAX_OUTLOOK: 15 / (t ln t) < 5e-3 / 20 at t ≈ 6,800, where the
    plain rule (one window's gain < tol) stopped it at t ≈ 500."""
    climb = Plateau(StopRule(tol=5e-3, window=15, max_steps=100_000))
    t = 0
    while not climb.done():
        climb.record(0.1 * math.log(2 + t))  # no optimum: gains ∝ 1/t
        t += 1
    assert climb.converged and 6_000 < climb.steps < 7_500
    assert climb.outlook() == MAX_OUTLOOK
    assert climb.gain_ratio() == pytest.approx(1 - 15 / climb.steps, abs=0.01)
    assert climb.still_rising() and climb.summary()["still_rising"] is True
    quad, _ = _ascend(StopRule(tol=1e-6, window=5, max_steps=1000), lr=0.1)
    assert quad.converged and quad.gain_ratio() < 0.3 and not quad.still_rising()
    short = Plateau(StopRule(tol=1e-3, window=10, max_steps=5))
    for v in range(5):
        short.record(float(v))
    assert math.isnan(short.gain_ratio()) and not short.still_rising()
    flat = Plateau(StopRule(tol=1e-3, window=3, max_steps=50))
    for v in [1.0, 2.0, 3.0, 3.0, 3.0, 3.0, 3.0]:
        flat.record(v)
    assert flat.gain_ratio() == 0.0  # no gain in the last window


@pytest.mark.parametrize("per_window", [0.5, 0.9, 0.97])
def test_a_geometric_approach_stops_within_tol_of_its_known_optimum(per_window):
    """f_t = 1 − ρ^t, gains shrinking by ``per_window`` per window: what is left to gain when
    the rule stops is below tol (relative), whatever the rate. The plain rule (stop once a
    window gains < tol) left up to ρʷ/(1 − ρʷ)·tol: 9·tol at 0.9 per window, 32·tol at 0.97;
    with the outlook capped at 20, 0.97 may leave up to (32/20)·tol."""
    tol, window = 1e-3, 10
    rho = per_window ** (1 / window)
    plateau = Plateau(StopRule(tol=tol, window=window, max_steps=100_000))
    t = 0
    while not plateau.done():
        plateau.record(1.0 - rho**t)
        t += 1
    assert plateau.converged
    assert plateau.gain_ratio() == pytest.approx(per_window, rel=1e-6)
    left = 1.0 - plateau.best  # the optimum is 1
    assert left < tol * max(1.0, per_window / (1 - per_window) / MAX_OUTLOOK)
    assert left > 0.5 * tol * min(1.0, per_window / (1 - per_window) / MAX_OUTLOOK)


def test_plateau_stops_at_the_known_optimum_before_the_cap():
    plateau, x = _ascend(StopRule(tol=1e-6, window=5, max_steps=1000, patience=2), lr=0.1)
    assert plateau.converged and plateau.reason == "plateau"
    assert plateau.steps < 1000
    assert x == pytest.approx(3.0, abs=1e-2)
    assert plateau.best == pytest.approx(-1.0, abs=1e-4)


def test_a_run_that_never_beats_its_start_is_flagged_not_passed_off_as_converged():
    """Every step below the start (maximising): the rule stops after one window, and the
    row must say it reports the start (``never_improved``), unlike a run that gained, or one
    whose start already was a known optimum (``reach``)."""
    stalled = Plateau(StopRule(tol=1e-3, window=4, max_steps=100, patience=2))
    value = 1.0
    while not stalled.done():
        stalled.record(value)
        value -= 0.1  # every step overshoots downhill
    summary = stalled.summary()
    assert stalled.steps == 5 and stalled.best_step == 0
    assert summary["never_improved"] is True and summary["stop_reason"] == "no gain on its start"
    assert summary["converged"] is True and summary["attack_objective"] == 1.0
    gained = Plateau(StopRule(tol=1e-3, window=4, max_steps=100))
    for v in [1.0, 1.5, 1.5, 1.5, 1.5, 1.5]:
        gained.record(v)
    assert gained.done() and gained.reason == "plateau" and not gained.never_improved()
    minimised = Plateau(StopRule(tol=1e-3, window=2, max_steps=100), maximize=False)
    for v in [1.0, 1.2, 1.1]:
        minimised.record(v)
    assert minimised.done() and minimised.never_improved()  # direction is the plateau's own
    optimal = Plateau(StopRule(tol=1e-3, window=2, max_steps=100), maximize=False)
    optimal.record(0.0)
    optimal.record(0.0)
    optimal.reach("attained")
    assert optimal.done() and not optimal.never_improved()
    assert Plateau(StopRule()).summary()["never_improved"] is False  # no steps yet


def test_plateau_restarts_rescue_an_overshooting_step():
    """lr = 1.5 makes every step overshoot (|1 − 2·lr| = 2): only restarts converge."""
    plateau, x = _ascend(StopRule(tol=1e-6, window=8, max_steps=2000, patience=2), lr=1.5)
    assert plateau.restarts >= 1 and plateau.converged
    assert x == pytest.approx(3.0, abs=1e-2)
    stuck, _ = _ascend(StopRule(tol=1e-6, window=8, max_steps=2000, patience=0), lr=1.5)
    assert stuck.restarts == 0 and stuck.best < plateau.best  # never improved on the start


def test_a_growing_step_reaches_the_optimum_a_timid_one_does_not():
    """lr = 1e-4: a constant step moves 0.06 % of the way per step and stops far from the
    optimum, on the cap; growing the step after every 3 new bests in a row reaches it long
    before the cap."""
    rule = StopRule(tol=1e-6, window=5, max_steps=400, patience=3)
    timid, x_timid = _ascend(rule, lr=1e-4)
    bold, x_bold = _ascend(rule, lr=1e-4, growth=2.0)
    assert abs(x_timid - 3.0) > 1.0
    assert bold.converged and x_bold == pytest.approx(3.0, abs=1e-2)
    assert not timid.converged and timid.reason == "max_steps"
    assert bold.grows >= 5 and bold.steps < 100
    assert bold.summary()["grows"] == bold.grows


@pytest.mark.parametrize("factor", [0.5, math.inf, 11.0, "2", True])
def test_bad_lr_growth_is_one_line(factor):
    with pytest.raises(ConfigError) as info:
        check_growth(factor, "tgda")
    assert "lr_growth=" in str(info.value) and "\n" not in str(info.value)


def test_converged_is_false_when_the_cap_bites():
    plateau, _ = _ascend(StopRule(tol=1e-6, window=5, max_steps=4, patience=2), lr=0.01)
    assert not plateau.converged and plateau.reason == "max_steps" and plateau.steps == 4
    summary = plateau.summary()
    assert summary["converged"] is False and summary["attack_steps"] == 4
    assert len(summary["objective_trace"]) == 4


def test_minimising_and_reach():
    plateau = Plateau(StopRule(tol=0.1, window=2, max_steps=100), maximize=False)
    for v in (8.0, 4.0, 2.0):
        plateau.record(v)
        assert not plateau.done()
    plateau.record(1.95)
    plateau.record(1.94)  # (2.0 − 1.94)/2.0 = 3% over 2 steps < 10%
    assert plateau.done() and plateau.converged and plateau.best == 1.94
    goal = Plateau(StopRule(), maximize=False)
    goal.record(1e-9)
    goal.reach("goal")
    assert goal.done() and goal.converged and goal.reason == "goal"


def test_relative_to_start_stops_a_geometric_decay():
    """f_t = 0.9^t never slows down relative to itself (10 % a step), but its gains relative
    to the start fall below tol after a while: stop there, not at the cap."""
    own = Plateau(StopRule(tol=1e-3, window=10, max_steps=200), maximize=False)
    start = Plateau(
        StopRule(tol=1e-3, window=10, max_steps=200), maximize=False, relative_to_start=True
    )
    for t in range(200):
        for p in (own, start):
            if not p.converged and p.reason == "":
                p.record(0.9**t)
                p.done()
    assert own.reason == "max_steps" and not own.converged
    assert start.converged and 40 < start.steps < 100
    assert start.best < 1e-3 * 10  # within tol·(1/(1 − 0.9)) of the optimum 0


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        (dict(tol=0.0), "tol=0.0"),
        (dict(tol=math.nan), "tol=nan"),
        (dict(window=0), "window=0"),
        (dict(max_steps=0), "max_steps=0"),
        (dict(max_steps=2.5), "max_steps=2.5"),
        (dict(patience=-1), "patience=-1"),
    ],
)
def test_bad_stop_rule_is_one_line(kwargs, needle):
    args = dict(tol=1e-3, window=10, max_steps=100, patience=0) | kwargs
    with pytest.raises(ConfigError) as info:
        stop_rule("tgda", **args)
    assert needle in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "entry,needle",
    [
        ({"name": "tgda", "tol": -1.0}, "tol=-1.0"),
        ({"name": "tgda-feature", "max_steps": 0}, "max_steps=0"),
        ({"name": "gc-input", "window": 0}, "window=0"),
        ({"name": "tgda-feature", "defense": "knn"}, "defense='knn'"),
        ({"name": "ft-match", "source": "tgda"}, "source='tgda'"),
        ({"name": "kkt", "target": "gradpc"}, "target='gradpc'"),
        ({"name": "tgda", "starts": 0}, "starts=0"),
        ({"name": "tgda", "starts": 2.5}, "starts=2.5"),
        ({"name": "tgda", "start_steps": 0}, "start_steps=0"),
    ],
)
def test_bad_values_are_refused_when_the_config_is_parsed(entry, needle):
    """Before any work: at parse time, not when the attack runs after pre-training."""
    with pytest.raises(ConfigError) as info:
        parse_config({"attacks": [entry]})
    assert needle in str(info.value) and "\n" not in str(info.value)


# ------------------------------------------------------------------------------ attacks


@pytest.fixture(scope="module")
def tiny():
    return tiny_setup(300)


def _ctx(tiny, eps: float = 0.05, regime: str = "feature") -> AttackContext:
    train, ext, z, head, victim = tiny
    return AttackContext.build(
        ext, train, eps, regime=regime, victim=victim, z_train=z, clean_head=head
    )


def _kept_share(ctx: AttackContext, ps, spec: str) -> float:
    """Share of the poisons the defence keeps when it sees clean ∪ poisons (unflagged)."""
    z = torch.cat([ctx.z_train, ps.z.to(ctx.z_train)]).double()
    y = torch.cat([ctx.train.y, ps.y]).long()
    inp = DefenseInput(z, y, torch.ones(len(y), dtype=torch.bool), ctx.n_classes, ctx.victim, 0)
    keep = apply_defense(parse_defense(spec), inp, default_fraction=ctx.threat.eps)
    return float(keep[ctx.n_clean :].double().mean())


@pytest.mark.parametrize("spec", ["sphere", "slab"])
def test_kkt_poisons_pass_the_defence_they_were_built_for(tiny, spec):
    ctx = _ctx(tiny)
    ps = get_attack("kkt").fn(ctx, defense=spec, max_steps=60, target="tgda-feature")
    assert ps.z is not None and len(ps) == ctx.n_poison
    assert ps.info["n_distinct"] < len(ps)  # a few repeated points
    assert ps.info["in_feasible_set"] == 1.0
    assert _kept_share(ctx, ps, spec) == 1.0
    assert ps.info["attack_objective"] < 1.0  # some of the clean gradient is cancelled


def test_tgda_feature_defense_aware_poisons_are_kept(tiny):
    ctx = _ctx(tiny)
    naive = get_attack("tgda-feature").fn(ctx, max_steps=30)
    aware = get_attack("tgda-feature").fn(ctx, max_steps=30, defense_aware=True)
    feasible = defense_feasible_set(ctx, "sphere+slab", None, aware.y)
    assert bool(feasible.contains(aware.z.double(), aware.y).all())
    for spec in ("sphere", "slab"):
        assert _kept_share(ctx, aware, spec) == 1.0
    assert _kept_share(ctx, naive, "sphere") < 1.0  # the naive poisons are outliers
    assert aware.info["attack_objective"] > aware.info["val_loss_init"]


def test_tgda_feature_reports_convergence_and_is_deterministic(tiny):
    ctx = _ctx(tiny)
    capped = get_attack("tgda-feature").fn(ctx, max_steps=3)
    assert capped.info["converged"] is False and capped.info["attack_steps"] == 3
    a = get_attack("tgda-feature").fn(ctx, max_steps=400, window=10)
    assert a.info["converged"] is True and a.info["attack_steps"] < 400
    assert a.info["attack_objective"] >= capped.info["attack_objective"]
    assert a.info["solve_residual"] < 1e-2  # the follower system is solved accurately
    b = get_attack("tgda-feature").fn(ctx, max_steps=400, window=10)
    assert torch.equal(a.z, b.z) and a.info["objective_trace"] == b.info["objective_trace"]


def test_ft_inverts_the_source_it_is_given(tiny):
    ctx = _ctx(tiny, regime="box")
    fast = dict(max_tries=1, decoder_steps=20, match_steps=3, gradpc_steps=10, max_steps=60)
    ps = get_attack("ft-match").fn(ctx, source="kkt", **fast)
    assert ps.info["source"] == "kkt" and ps.x is not None and len(ps) == ctx.n_poison
    auto = get_attack("ft-match").fn(ctx, **fast)
    assert auto.info["source"] in ("gc", "tgda-feature")


def test_ft_auto_keeps_the_source_whose_images_hurt_the_attackers_victim_most(tiny):
    """``auto`` ranks sources after inversion: each candidate's images are encoded and the
    victim retrained on them; the kept one has the lowest clean-train accuracy, and inverting
    that source by name gives the same images."""
    from poisonprobe.attacks.ft.attack import attacker_train_acc

    ctx = _ctx(tiny, regime="box")
    fast = dict(max_tries=1, decoder_steps=20, match_steps=3, gradpc_steps=10, max_steps=60)
    auto = get_attack("ft-decoder").fn(ctx, **fast)
    scores = auto.info["auto_inverted_train_acc"]
    assert set(scores) == {"gc", "tgda-feature"}
    assert scores[auto.info["source"]] == min(scores.values())
    named = get_attack("ft-decoder").fn(ctx, source=auto.info["source"], **fast)
    assert torch.equal(named.x, auto.x) and torch.equal(named.y, auto.y)
    z_x = ctx.encode(auto.x.to(ctx.device))  # the score is the retrained victim's, recomputed
    assert attacker_train_acc(ctx, z_x, auto.y) == pytest.approx(scores[auto.info["source"]])


def test_tgda_images_defense_aware_poisons_are_kept(tiny):
    """Pixel tgda cannot project features, so it steers them: with ``defense_aware`` the
    sphere+slab filter keeps (nearly) every poison, the unconstrained naive ones it removes."""
    ctx = _ctx(tiny, regime="unconstrained")
    naive = get_attack("tgda").fn(ctx, max_steps=30)
    aware = get_attack("tgda").fn(ctx, max_steps=30, defense_aware=True)

    def kept(ps, spec: str) -> float:
        with torch.no_grad():
            z = ctx.extractor(ps.x.to(ctx.device))
        return _kept_share(ctx, PoisonSet(kind=PoisonKind.FEATURES, y=ps.y, z=z), spec)

    assert aware.info["defense_aware"] == "sphere+slab"
    assert kept(aware, "sphere+slab") >= 0.9
    assert kept(naive, "sphere+slab") < kept(aware, "sphere+slab")
    assert aware.info["attack_objective"] > aware.info["val_loss_init"]


@pytest.mark.parametrize("name", ["tgda", "tgda-feature"])
def test_reported_objective_is_the_exactly_retrained_victims(tiny, name):
    """A loose ``follower_tol`` only moves the leader: ``attack_objective`` is the clean-train
    CE of a victim fitted from scratch (``train_head``, L-BFGS + Newton to 1e-9) on clean ∪
    the returned poisons, and the value the leader saw at the loose tolerance differs."""
    import torch.nn.functional as F

    from poisonprobe.head.train import train_head

    ctx = _ctx(tiny, regime="unconstrained" if name == "tgda" else "box")
    ps = get_attack(name).fn(ctx, max_steps=25, follower_tol=5e-2)
    z_p = ctx.encode(ps.x.to(ctx.device)) if ps.z is None else ps.z
    z = torch.cat([ctx.z_train.double(), z_p.double()])
    y = torch.cat([ctx.train.y, ps.y.to(ctx.train.y.device)])
    victim = train_head(z, y, ctx.n_classes, ctx.victim)
    ce = float(F.cross_entropy(victim.logits(ctx.z_train.double()), ctx.train.y.long()))
    assert ps.info["attack_objective"] == pytest.approx(ce, rel=1e-6)
    assert ps.info["val_loss"] == ps.info["attack_objective"]
    assert abs(ps.info["objective_at_follower_tol"] - ce) > 1e-6


def test_tgda_starts_probes_each_draw_and_continues_the_best(tiny):
    """``starts``: each draw climbs ``start_steps`` leader steps, the highest objective then
    runs on. Start 0 is the single-start attack's own draw (same salt), so when it wins the
    result is the one-start result bit for bit; a different winner is a different draw."""
    ctx = _ctx(tiny, eps=0.1, regime="unconstrained")
    rule = dict(max_steps=12, tol=1e-12)
    one = get_attack("tgda").fn(ctx, starts=1, **rule)
    many = get_attack("tgda").fn(ctx, starts=3, start_steps=4, **rule)
    info = many.info
    best = max(range(3), key=lambda j: info["start_objectives"][j])
    assert info["starts"] == 3 and info["start_chosen"] == best
    assert info["attack_steps"] == 12 and info["start_steps_total"] == 12 + 2 * 4
    assert info["attack_objective"] >= max(info["start_objectives"]) - 1e-5  # victim's tol
    probe = max(info["objective_trace"][:4])  # the winner's trace starts with its probe
    assert info["start_objectives"][best] == pytest.approx(probe, abs=1e-7)
    first = max(one.info["objective_trace"][:4])  # the trace is rounded to 8 digits
    assert info["start_objectives"][0] == pytest.approx(first, abs=1e-7)  # the same draw
    assert "starts" not in one.info  # one start: the row's info is what it always was
    # probes as long as the cap: every draw runs to its end, draw 0 exactly as the one-start
    # attack, so the kept draw is at least as strong as the single draw
    full = get_attack("tgda").fn(ctx, starts=3, start_steps=12, **rule).info
    assert full["start_steps_total"] == 3 * 12
    assert full["start_objectives"][0] == pytest.approx(max(one.info["objective_trace"]), abs=1e-7)
    assert full["start_objectives"][full["start_chosen"]] == max(full["start_objectives"])
    assert full["attack_objective"] >= one.info["attack_objective"] - 1e-9
    for bad in (dict(starts=0), dict(start_steps=True)):  # direct calls skip the parse
        with pytest.raises(ConfigError, match="must be an integer >= 1"):
            get_attack("tgda").fn(ctx, **bad)
    short = get_attack("tgda").fn(ctx, starts=2, start_steps=60, max_steps=5, tol=1e-12)
    assert short.info["attack_steps"] == 5 and short.info["start_steps_total"] == 10  # capped
    if best == 0:
        assert torch.equal(many.x, one.x)
    else:
        assert not torch.equal(many.base_idx, one.base_idx)
        assert info["objective_trace"][:4] != one.info["objective_trace"][:4]
