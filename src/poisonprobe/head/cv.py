"""Pick scikit-learn's ``C`` on a held-out split: the CLIP paper's linear-probe protocol.

The victim sweeps ``C`` over a grid on a stratified validation split of its (possibly
poisoned) training set, keeps the most accurate (the first in grid order on ties, as
scikit-learn's ``LogisticRegressionCV`` does), and refits on all of it. The head fit is
passed in (``fit``), so this module needs nothing from ``train.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..errors import ConfigError

Fit = Callable[[torch.Tensor, torch.Tensor, float], Callable[[torch.Tensor], torch.Tensor]]
"""``fit(z, y, C) -> predict``: fit the head with scikit-learn's ``C``, return its predictor."""


def stratified_validation(y: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Boolean mask of a validation split: ``round(fraction * n_c)`` random points per class,
    at least one, and at least one left to train on (classes with one point stay in train)."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"victim.val_fraction={fraction} must lie in (0, 1), e.g. 0.2")
    gen = torch.Generator().manual_seed(seed)
    y = y.detach().cpu().long()
    mask = torch.zeros(len(y), dtype=torch.bool)
    for c in torch.unique(y):
        idx = torch.nonzero(y == c).flatten()
        k = min(max(1, round(fraction * len(idx))), len(idx) - 1)
        if k > 0:
            mask[idx[torch.randperm(len(idx), generator=gen)[:k]]] = True
    return mask


def select_c(
    z: torch.Tensor,
    y: torch.Tensor,
    grid: Sequence[float],
    val_fraction: float,
    seed: int,
    fit: Fit,
) -> tuple[float, list[float]]:
    """The grid's most accurate ``C`` on the validation split, and every grid accuracy."""
    if not grid:
        raise ConfigError("victim.C_grid is empty; give candidate C values, e.g. [0.01, 0.1, 1]")
    val = stratified_validation(y, val_fraction, seed).to(z.device)
    y = y.to(z.device)
    scores = []
    for c in grid:
        predict = fit(z[~val], y[~val], float(c))
        scores.append(float((predict(z[val]) == y[val]).double().mean()))
    best = max(range(len(grid)), key=lambda i: (scores[i], -i))
    return float(grid[best]), scores
