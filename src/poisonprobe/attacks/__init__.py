"""Poisoning attacks: one registered function each, one uniform call."""

from .base import (
    REGIMES,
    AttackContext,
    AttackInfo,
    PoisonSet,
    ThreatModel,
    attack_names,
    check_embedding_attack,
    get_attack,
    register_attack,
)

__all__ = [
    "REGIMES",
    "AttackContext",
    "AttackInfo",
    "PoisonSet",
    "ThreatModel",
    "attack_names",
    "check_embedding_attack",
    "get_attack",
    "register_attack",
]
