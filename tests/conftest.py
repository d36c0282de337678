"""Shared fixtures: an isolated cache dir so tests never touch the user's cache.

Hypothesis runs under one of two profiles (docs/CONTRACT.md):

- ``ci`` (the default, what ``python -m pytest`` and ``.ci/run`` use): derandomised, no example
  database, so every run of a commit draws the same examples and passes or fails the same way;
- ``explore`` (``python -m pytest --hypothesis-profile=explore``): fresh random examples,
  ten times as many. What it finds becomes an explicit ``@example`` regression case.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
settings.register_profile(
    "explore",
    derandomize=False,
    database=None,
    deadline=None,
    max_examples=1000,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
# The hypothesis pytest plugin loads --hypothesis-profile after this file, so the option wins.
settings.load_profile(os.environ.get("POISONPROBE_HYPOTHESIS_PROFILE", "ci"))


HANG_GUARD_S = 3600
"""The one wall-clock limit tests may use: a guard against a hung subprocess, far above any
run's duration on a loaded machine (CI allows 90 minutes in all). Never a speed check."""


def example_budget(examples: int) -> int:
    """``examples`` under the ci profile; scaled up with the active profile's max_examples."""
    return max(examples, examples * settings.default.max_examples // 100)


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


class TinyNet(torch.nn.Module):
    """Conv → ReLU → avg-pool: non-negative features like the real extractors, but fast."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 16, 3, padding=1)
        self.feature_dim = 16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv((x - 0.3) / 0.4)).mean(dim=(2, 3))


def tiny_setup(n: int):
    """The first ``n`` digits training images, a frozen TinyNet, their features and the
    exact clean head: the small attack set-up the attack tests share."""
    from poisonprobe.data import load_dataset
    from poisonprobe.head.config import VictimConfig
    from poisonprobe.head.train import train_head

    train = load_dataset("digits").train.subset(torch.arange(n), name="digits-tiny")
    ext = TinyNet().eval()
    for p in ext.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        z = ext(train.x)
    victim = VictimConfig()
    head = train_head(z, train.y, train.n_classes, victim)
    return train, ext, z, head, victim


def results_row(**values: object) -> dict:
    """One results.csv row of an attacked cell with every column the report reads, the
    given ``values`` on top (report tests build their files from it)."""
    row: dict = {
        "setting": "s",
        "source": "digits",
        "target": "digits",
        "extractor": "e",
        "attack": "tgda",
        "regime": "box",
        "eps": 0.1,
        "defense": "none",
        "seed": 0,
        "extractor_seed": 0,
        "split_seed": 0,
        "n_poison": 3,
        "clean_acc": 0.9,
        "poisoned_acc": 0.8,
    }
    row.update(values)
    return row
