"""The four FT variants as registered attacks: their config surface and poisons are pinned.

Values captured from the code before the variants became ``FeatureTargeted`` objects (they were
wrappers given ``_ft``'s signature by ``__signature__`` surgery): the registry must report the
same parameters and defaults (config validation and ``benchmarks/convergence.py`` read them),
and a tiny seeded case must give the same poisons.
"""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_setup

from poisonprobe.attacks import AttackContext, PoisonKind, get_attack
from poisonprobe.attacks.ft.attack import FT_DEFAULTS, FeatureTargeted
from poisonprobe.errors import ConfigError

FT_PARAMS = {
    "radii": None,
    "radius": None,
    "target_acc": None,
    "norm": "l2",
    "gradpc_steps": 30,
    "seed_attacks": ("label-flip",),
    "max_tries": 3,
    "max_steps": 1000,
    "tol": 2e-4,
    "window": 20,
    "lr": 0.1,
    "optimizer": "adam",
    "labels": "optimal",
    "norm_cap": None,
    "accept": 1e-3,
    "decoder_steps": 1000,
    "match_steps": 1000,
    "match_lr": 0.03,
    "match_method": "adam",
    "start": "clean",
    "linf": None,
    "source": "auto",
}
"""Every FT variant's parameters, in order, with their defaults (before the change)."""

VARIANTS = {
    "ft-ideal": ("ideal", ("feature",)),
    "ft-feasible": ("feasible", ("feature",)),
    "ft-decoder": ("decoder", ("box",)),
    "ft-match": ("match", ("box",)),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_registry_reports_the_same_parameters_and_defaults(name: str) -> None:
    info = get_attack(name)
    params = info.params()
    assert list(params) == list(FT_PARAMS)
    assert {k: p.default for k, p in params.items()} == FT_PARAMS
    assert FT_DEFAULTS == FT_PARAMS
    assert info.regimes == VARIANTS[name][1]
    assert info.fn == FeatureTargeted(VARIANTS[name][0])


@pytest.mark.parametrize(
    "bad", [{"max_steps": "10"}, {"radii": "x"}, {"lr": float("nan")}, {"source": "ft-ideal"}]
)
def test_parameter_types_and_source_are_still_checked(bad: dict) -> None:
    """Annotations resolve for a callable object too (they are strings in the module)."""
    with pytest.raises(ConfigError):
        get_attack("ft-match").check_params(bad)


def test_unknown_variant_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown"):
        FeatureTargeted("exact")


# (sum, norm) of each variant's poisons on tiny_setup(120), eps 0.05, seed 0
PINNED = {
    "ft-ideal": (20.23929650336504, 2.406575683730939),
    "ft-feasible": (18.79335586540401, 2.1915942446613643),
    "ft-decoder": (106.22010822125674, 9.26868267929791),
    "ft-match": (110.8511638543423, 9.551979644939925),
}
SMALL = {
    "ft-ideal": {},
    "ft-feasible": {},
    "ft-decoder": {"decoder_steps": 30, "source": "gc"},
    "ft-match": {"match_steps": 30, "source": "gc"},
}


def test_tiny_case_gives_the_same_poisons_as_before() -> None:
    torch.set_num_threads(1)
    train, ext, z, head, victim = tiny_setup(120)
    for name, (total, norm) in PINNED.items():
        info = get_attack(name)
        ctx = AttackContext.build(
            ext, train, 0.05, info.regimes[0], victim=victim, z_train=z, clean_head=head
        )
        ps = info.fn(ctx, max_steps=40, gradpc_steps=10, **SMALL[name])
        assert ps.y.tolist() == [9, 2, 2, 3, 0, 4], name
        assert ps.base_idx is not None and ps.base_idx.tolist() == [34, 92, 4, 22, 44, 52], name
        images = name in ("ft-decoder", "ft-match")
        assert ps.kind == (PoisonKind.IMAGES if images else PoisonKind.FEATURES), name
        t = (ps.x if images else ps.z).double()
        assert t.shape == ((6, 1, 8, 8) if images else (6, 16)), name
        assert float(t.sum()) == pytest.approx(total, rel=1e-5), name
        assert float(t.norm()) == pytest.approx(norm, rel=1e-5), name
