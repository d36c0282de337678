"""Sanitisation defences: run on the victim's training set before the head trains.

The registry (``base.py``) is filled here, by importing every defence module: importing any
``poisonprobe.defenses`` module runs this first, so the registry is always complete.
"""

from . import filters  # noqa: F401  (registration; after base, which it imports)
from .base import (
    DefenseInfo,
    DefenseInput,
    DefenseSpec,
    DefenseStep,
    apply_defense,
    canonical_order,
    defense_names,
    get_defense,
    parse_defense,
    register_defense,
    removal_count,
    remove_top,
)

__all__ = [
    "DefenseInfo",
    "DefenseInput",
    "DefenseSpec",
    "DefenseStep",
    "apply_defense",
    "canonical_order",
    "defense_names",
    "get_defense",
    "parse_defense",
    "register_defense",
    "remove_top",
    "removal_count",
]
