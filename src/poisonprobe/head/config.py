"""How the victim trains its head: the recipe (solver, weight decay or scikit-learn's C)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

from ..errors import ConfigError

SOLVERS = ("lbfgs", "sgd", "lbfgs-cv")
DEFAULT_C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)


@dataclass(frozen=True)
class VictimConfig:
    """How the victim trains its head. ``lbfgs`` is exact; ``sgd`` is the usual probe recipe;
    ``lbfgs-cv`` picks ``C`` from ``C_grid`` on a stratified validation split, then refits.

    ``C`` is scikit-learn's: ``LogisticRegression(C)`` minimises ``C Σ_i CE_i + ½‖W‖²``
    (intercept not penalised), which is ``N·C`` times our ``mean CE + (wd/2)‖W‖²`` with
    ``wd = 1 / (N·C)``. So with ``C`` set, each fit on N points uses that ``weight_decay``
    (poisons added, defended sets shrunk: N is the set actually fitted) and the
    ``weight_decay`` field is overwritten by ``for_n``.
    """

    solver: Literal["lbfgs", "sgd", "lbfgs-cv"] = "lbfgs"
    weight_decay: float = 1e-3
    max_iter: int = 100  # L-BFGS iterations before the Newton polish
    tol: float = 1e-9  # gradient norm the exact solver reaches
    sgd_epochs: int = 100
    sgd_lr: float = 4.0
    sgd_batch_size: int = 256
    sgd_momentum: float = 0.9
    C: float | None = None  # scikit-learn's C; replaces weight_decay (wd = 1 / (N C))
    C_grid: tuple[float, ...] = DEFAULT_C_GRID  # lbfgs-cv's candidates
    val_fraction: float = 0.2  # lbfgs-cv's stratified validation share

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise ConfigError(
                f"victim.solver={self.solver!r} is unknown; use one of {', '.join(SOLVERS)}"
            )
        if not self.weight_decay > 0:
            raise ConfigError(
                "victim.weight_decay must be > 0 (the head's minimiser must be unique); "
                "use a small value such as 1e-3"
            )
        if self.C is not None and not (self.C > 0 and math.isfinite(self.C)):
            raise ConfigError(f"victim.C={self.C} must be a positive number, e.g. 1.0")
        grid = tuple(float(c) for c in self.C_grid)
        if not grid or not all(c > 0 and math.isfinite(c) for c in grid):
            raise ConfigError(f"victim.C_grid={list(grid)} must list positive numbers")
        object.__setattr__(self, "C_grid", grid)

    def for_n(self, n: int) -> VictimConfig:
        """This recipe for a fit on ``n`` points: ``weight_decay = 1 / (n C)`` when C is set."""
        if self.C is None:
            return self
        return replace(self, weight_decay=1.0 / (n * self.C))

    @property
    def label(self) -> str:
        """What results record in the ``victim`` column, e.g. ``lbfgs C=0.1``."""
        if self.C is not None:
            return f"{self.solver} C={self.C:g}"
        return f"{self.solver} wd={self.weight_decay:g}"
