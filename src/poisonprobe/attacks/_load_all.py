"""Imports every attack module so that their ``@register_attack`` decorators run."""

from . import baselines, emn, feature_targeted, gc_input, kkt, min_max, tgda  # noqa: F401
