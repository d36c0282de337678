"""Shared fixtures: an isolated cache dir so tests never touch the user's cache."""

from __future__ import annotations

import os

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("xdg-cache")
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(cache)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield cache
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old


TINY = {
    "settings": [{"name": "finetune", "source": "digits", "target": "digits"}],
    "extractor": {"arch": "smallcnn", "method": "simclr", "epochs": 1},
    "attacks": ["label-flip", "random-noise"],
    "eps": [0.1],
    "defenses": ["none"],
    "seeds": [0],
}


@pytest.fixture
def tiny_config() -> dict:
    import copy

    return copy.deepcopy(TINY)
