"""Poisoning attacks: one registered function each, one uniform call.

The registry (``base.py``) is filled here, by importing every attack module: importing any
``poisonprobe.attacks`` module runs this first, so the registry is always complete.
"""

# registration: each attack module registers itself on import (each imports base)
from . import baselines, emn, kkt, min_max, tgda  # noqa: F401
from .base import (
    REGIMES,
    AttackContext,
    AttackInfo,
    PoisonKind,
    PoisonSet,
    ThreatModel,
    attack_names,
    check_embedding_attack,
    get_attack,
    register_attack,
)
from .ft import attack as ft_attack  # noqa: F401
from .gc import input as gc_input  # noqa: F401

__all__ = [
    "REGIMES",
    "AttackContext",
    "AttackInfo",
    "PoisonKind",
    "PoisonSet",
    "ThreatModel",
    "attack_names",
    "check_embedding_attack",
    "get_attack",
    "register_attack",
]
