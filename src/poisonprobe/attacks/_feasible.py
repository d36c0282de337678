"""What a sphere / slab sanitiser would keep, as a set poisons can be projected onto.

Attacks that know the defence (Koh, Steinhardt, Liang 2022) keep their poisons where the filter
does not look: per label c, within distance ``r_c`` of the clean class centroid μ_c (sphere) and
within ``s_c`` of it along the unit line from the other classes' centre to μ_c (slab, the
``rest`` direction of ``defenses/filters.py``). The radii are quantiles of the clean points'
own scores: the filter removes ``round(fraction · (n_c + p_c))`` points of class c, so a poison
is safe when at least that many clean points of its class score higher than it.

Both constraints are centred on μ_c, and μ_c lies in the feature box, so scaling ``z − μ_c``
towards μ_c after clipping to the box satisfies all three at once (a feasible point, not the
exact Euclidean projection).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..defenses.filters import DEFENSE_SET_KINDS, class_geometry
from ..errors import ConfigError
from .base import AttackContext


@dataclass(frozen=True)
class FeasibleSet:
    """Per-class centre, slab direction and radii (inf where a constraint is not used)."""

    center: torch.Tensor  # (k, d)
    direction: torch.Tensor  # (k, d), unit slab directions
    sphere: torch.Tensor  # (k,) radii
    slab: torch.Tensor  # (k,) half-widths
    low: torch.Tensor  # (d,) feature box
    high: torch.Tensor

    def project(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """A point of the set for each row (box clip, then a shrink towards its centre)."""
        dtype = z.dtype
        y = y.long().to(z.device)
        z = torch.max(torch.min(z, self.high.to(dtype)), self.low.to(dtype))
        mu = self.center.to(dtype)[y]
        diff = z - mu
        norm = diff.norm(dim=1).clamp_min(1e-30)
        along = (diff * self.direction.to(dtype)[y]).sum(1).abs().clamp_min(1e-30)
        t = torch.minimum(self.sphere.to(dtype)[y] / norm, self.slab.to(dtype)[y] / along)
        return mu + diff * t.clamp(max=1.0)[:, None]

    def shrunk(self, factor: float) -> FeasibleSet:
        """The same set with sphere radii and slab half-widths times ``factor`` (a margin)."""
        return replace(self, sphere=self.sphere * factor, slab=self.slab * factor)

    def contains(self, z: torch.Tensor, y: torch.Tensor, slack: float = 1e-6) -> torch.Tensor:
        """Rows inside the set (up to a relative ``slack``)."""
        y = y.long().to(z.device)
        diff = z.to(self.center) - self.center[y]
        ok_sphere = diff.norm(dim=1) <= self.sphere[y] * (1 + slack)
        ok_slab = (diff * self.direction[y]).sum(1).abs() <= self.slab[y] * (1 + slack)
        return ok_sphere & ok_slab


def check_defense_kind(kind: str, fraction: float | None, who: str) -> None:
    """One-line ConfigErrors for ``defense`` / ``defense_fraction`` (before any work)."""
    if kind not in DEFENSE_SET_KINDS:
        raise ConfigError(f"{who} defense={kind!r} is unknown; use one of {DEFENSE_SET_KINDS}")
    if fraction is not None and not 0.0 <= fraction < 1.0:
        raise ConfigError(f"{who} defense_fraction={fraction} must be in [0, 1) (or null: eps)")


def defense_feasible_set(
    ctx: AttackContext,
    kind: str,
    fraction: float | None,
    y_poison: torch.Tensor | None = None,
    who: str = "attack",
) -> FeasibleSet:
    """The set ``kind`` (sphere, slab or sphere+slab) keeps at ``fraction`` (default: eps, the
    runner's default defence fraction), from the clean training features only."""
    check_defense_kind(kind, fraction, who)
    frac = ctx.threat.eps if fraction is None else fraction
    z = ctx.z_train.double()
    y = ctx.train.y.to(z.device).long()
    k = ctx.n_classes
    per_class = torch.zeros(k, dtype=torch.float64)
    if y_poison is not None:
        per_class += torch.bincount(y_poison.long().cpu(), minlength=k).double()
    else:  # spread over the classes as the clean labels are
        per_class += torch.bincount(y.cpu(), minlength=k).double() * ctx.n_poison / ctx.n_clean
    center, direction, d_sphere, d_slab = class_geometry(z, y, k)
    inf = torch.full((k,), float("inf"), dtype=torch.float64)
    sphere, slab = inf.clone(), inf.clone()
    for c in range(k):
        mask = y == c
        n_c = int(mask.sum())
        if n_c == 0:
            continue
        removed = round(frac * (n_c + float(per_class[c])))
        q = max(0.0, 1.0 - (removed + 1) / n_c)  # keep removed+1 clean points above a poison
        if "sphere" in kind:
            sphere[c] = torch.quantile(d_sphere[mask], q)
        if "slab" in kind:
            slab[c] = torch.quantile(d_slab[mask], q)
    return FeasibleSet(
        center=center,
        direction=direction,
        sphere=sphere.to(z.device),
        slab=slab.to(z.device),
        low=z.min(0).values,
        high=z.max(0).values,
    )
