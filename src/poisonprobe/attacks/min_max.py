"""The ``min-max`` attack (Koh, Steinhardt, Liang 2022; Steinhardt et al. 2017): the worst
feasible points against the decoy heads of the certified-bound loop (``bounds/loss_bound``).

One loop serves both: it minimises the upper bound U(θ) over decoy heads θ_t, and at each
θ_t finds the feasible point (z, y) with the largest (relaxed) loss; those points, taken
evenly along the loop, are the poisons. They lie in the clean-feature box and, with
``defense`` set to sphere / slab, inside what that (oracle) defence keeps.
"""

from __future__ import annotations

import torch

from ..bounds.feasible import check_modellable
from ..bounds.loss_bound import shared_minimax
from ..defenses import parse_defense
from ..errors import ConfigError
from .base import AttackContext, PoisonKind, PoisonSet, register_attack


def _validate(p: dict) -> None:
    """The defence name and the loop's values, at parse time and when the attack runs."""
    check_modellable(parse_defense(p["defense"]))
    if p["steps"] < 1 or not p["lr"] > 0:
        raise ConfigError(
            f"min-max: steps={p['steps']} must be >= 1 and lr={p['lr']} > 0, e.g. 300, 0.2"
        )


@register_attack("min-max", regimes=("feature",), validate=_validate)
def min_max(
    ctx: AttackContext, defense: str = "none", steps: int = 300, lr: float = 0.2
) -> PoisonSet:
    """Worst feasible points collected along the certified bound's minimax loop."""
    _validate({"defense": defense, "steps": steps, "lr": lr})
    spec = parse_defense(defense)
    res = shared_minimax(
        ctx.memo,
        ctx.z_train,
        ctx.train.y.to(ctx.z_train.device),
        ctx.n_classes,
        ctx.victim.weight_decay,
        ctx.n_poison,
        spec,
        ctx.threat.eps,
        ctx.clean_head,
        steps,
        lr,
    )
    if res.worst_z.shape[0] == 0:
        raise ConfigError(
            f"min-max: defence {defense!r} at eps={ctx.threat.eps} keeps no feasible poison; "
            "use a smaller removal fraction"
        )
    pick = torch.linspace(0, res.worst_z.shape[0] - 1, ctx.n_poison).round().long()
    return PoisonSet(
        y=res.worst_y[pick].cpu(),
        z=res.worst_z[pick].float(),
        info={"bound_loss": res.bound_loss, "minimax_steps": res.steps},
        stage_seconds={},
        kind=PoisonKind.FEATURES,
    )
