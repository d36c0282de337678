"""Fit the victim's head: pick the recipe (``lbfgs-cv`` selects ``C``), then run its solver."""

from __future__ import annotations

from dataclasses import replace

import torch

from ..threads import single_thread_if_small
from .config import VictimConfig
from .cv import select_c
from .objective import LinearHead, check_features
from .solvers import train_lbfgs, train_sgd


def train_head(
    z: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    config: VictimConfig | None = None,
    init: LinearHead | None = None,
    seed: int = 0,
) -> LinearHead:
    """Fit the victim's head on features ``z`` (n, d) with labels ``y`` (n,).

    ``lbfgs`` (exact): L-BFGS from zero, then Newton-CG to ``||∇F|| <= tol``; a warm start
    (``init``) goes straight to damped Newton and falls back to L-BFGS if that stalls. Large
    cold fits run a preconditioned float32 L-BFGS first (``solvers.lbfgs_float32``), ~10x cheaper.
    """
    check_features(z, y)
    config = resolve_victim(z, y, n_classes, config or VictimConfig(), seed)
    # SGD's minibatch ops are small whatever N is: always one thread on the CPU
    work = z.numel() if config.solver != "sgd" else 0
    with single_thread_if_small(work, z.device):
        if config.solver != "sgd":
            return train_lbfgs(z, y, n_classes, config, init)
        return train_sgd(z, y, n_classes, config, init, seed)


def resolve_victim(
    z: torch.Tensor, y: torch.Tensor, n_classes: int, config: VictimConfig, seed: int = 0
) -> VictimConfig:
    """The concrete recipe for fitting on ``(z, y)``: ``lbfgs-cv`` gets the
    ``C`` it picks on a validation split (seeded by ``seed``), and ``C`` becomes the weight
    decay for ``len(z)`` points. A config without ``C`` comes back unchanged."""
    if config.solver == "lbfgs-cv" and config.C is None:  # C set: already picked, keep it
        exact = replace(config, solver="lbfgs", C=None)

        def fit(zt: torch.Tensor, yt: torch.Tensor, c: float):
            cfg = replace(exact, weight_decay=1.0 / (len(zt) * c))
            return train_lbfgs(zt, yt, n_classes, cfg, None).predict

        c, _ = select_c(z, y, config.C_grid, config.val_fraction, seed, fit)
        config = replace(config, C=c)
    return config.for_n(int(z.shape[0]))
