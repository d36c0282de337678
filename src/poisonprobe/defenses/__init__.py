"""Sanitisation defences: run on the victim's training set before the head trains."""

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
