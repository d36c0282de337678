"""The local backend: every (setting, split, extractor) unit in this process, in order."""

from __future__ import annotations

from collections.abc import Callable

from ..cell import RunScope
from ..config import ExtractorConfig, SettingConfig
from ..prepare import Prepared

Unit = tuple[SettingConfig, ExtractorConfig, int]


def run_local(
    scope: RunScope,
    units: list[Unit],
    prepared: Callable[[SettingConfig, ExtractorConfig, int], Prepared],
) -> None:
    """Prepare each unit when its turn comes (``prepared``), then run every seed's cells."""
    for unit in units:
        prep = prepared(*unit)
        for seed in scope.cfg.seeds:
            scope.run_unit(prep, seed)
