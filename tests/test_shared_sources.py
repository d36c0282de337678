"""A feature-space attack's poisons are computed once per unit: its own row and FT's
inversion source (``source: tgda-feature``) share them through the unit's memo, billed once."""

from __future__ import annotations

import dataclasses
from dataclasses import replace

import torch
from conftest import tiny_setup

from poisonprobe.attacks import AttackContext, PoisonKind, PoisonSet, base
from poisonprobe.attacks.ft.attack import _feature_source
from poisonprobe.shared_work import SharedWork, offer, shared


def _ctx(memo: SharedWork) -> AttackContext:
    train, ext, z, head, victim = tiny_setup(200)
    return AttackContext.build(
        ext, train, 0.05, regime="box", victim=victim, z_train=z, clean_head=head, memo=memo
    )


def test_ft_source_reuses_the_rows_poisons_and_bills_them_once(monkeypatch):
    memo = SharedWork()
    ctx = _ctx(memo)
    sub = replace(ctx, threat=replace(ctx.threat, regime="feature"))
    n = ctx.n_poison
    gen = torch.Generator().manual_seed(0)
    row = PoisonSet(
        kind=PoisonKind.FEATURES,
        z=ctx.z_train[:n] + 0.1 * torch.randn(n, ctx.z_train.shape[1], generator=gen),
        y=(ctx.train.y[:n] + 1) % ctx.n_classes,
        base_idx=torch.arange(n),
    )
    offer(memo, sub.result_key("tgda-feature", {}), row, seconds=7.0)  # the row ran first

    def never(*_, **__):
        raise AssertionError("FT recomputed poisons its unit already has")

    info = base.get_attack("tgda-feature")
    monkeypatch.setitem(base._ATTACKS, "tgda-feature", dataclasses.replace(info, fn=never))
    assert memo.take_used() == 0.0  # offering does not bill the maker twice
    source = _feature_source(ctx, "tgda-feature")
    torch.testing.assert_close(source.z, row.z.to(source.z))
    assert torch.equal(source.y.cpu(), row.y)
    assert memo.take_used() >= 7.0  # FT is billed for the poisons it reused


def test_result_keys_separate_what_differs():
    ctx = _ctx(SharedWork())
    key = ctx.result_key("tgda-feature", {})
    assert key == ctx.result_key("tgda-feature", {})
    assert key != ctx.result_key("tgda-feature", {"max_steps": 5})
    assert key != ctx.result_key("gc-input", {})
    other_eps = replace(ctx, threat=replace(ctx.threat, eps=0.1))
    assert key != other_eps.result_key("tgda-feature", {})
    assert shared({}, key, lambda: 3) == 3


def test_an_offered_value_is_what_shared_returns_and_bills():
    memo = SharedWork()
    value = object()
    offer(memo, ("k",), value, 1.5)
    assert shared(memo, ("k",), lambda: None) is value
    assert memo.take_used() == 1.5
