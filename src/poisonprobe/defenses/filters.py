"""The sanitisation defences (data-dependent outlier filters) and the input-box check.

Each filter scores every point by how outlying it looks for its own label and
removes the top ``fraction`` per class (see ``base.remove_top``). Scores are in
float64 except k-NN distances, which keep the features' dtype for speed. They are
called by ``apply_defense`` in a canonical order, so nothing here needs to care
about the order of the points.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import ConfigError
from ..head.objective import row_chunks
from ..head.train import train_head
from .base import DefenseInput, register_defense, remove_top

KNN_BLOCK_ELEMENTS = 2**24
"""Largest distance block k-NN holds at once (rows × n): 64 MB in float32."""


def _choice(defense: str, key: str, options: tuple[str, ...]):
    def check(params: dict[str, Any]) -> None:
        if params[key] not in options:
            raise ConfigError(
                f"defence {defense!r}: {key}={params[key]!r} is unknown; use one of {options}"
            )

    return check


def _centroid(z: torch.Tensor, how: str) -> torch.Tensor:
    """Class centre: the mean, or the coordinate-wise median (robust to a poison cluster
    that would otherwise drag the mean, and with it the sphere, towards itself)."""
    if how == "median":
        return z.median(dim=0).values.double()  # lower median for even counts: deterministic
    return z.double().mean(dim=0)


def _centroids(
    z: torch.Tensor, y: torch.Tensor, n_classes: int, how: str
) -> dict[int, torch.Tensor]:
    return {c: _centroid(z[y == c], how) for c in range(n_classes) if bool((y == c).any())}


@register_defense("none", "no sanitisation: the victim trains on everything", uses_fraction=False)
def no_defense(inp: DefenseInput, fraction: float) -> torch.Tensor:
    return torch.ones(len(inp), dtype=torch.bool, device=inp.z.device)


@register_defense(
    "input-box",
    "reject points whose image leaves the valid pixel box (removes only invalid points)",
    uses_fraction=False,
)
def input_box(inp: DefenseInput, fraction: float) -> torch.Tensor:
    """The cheapest countermeasure: an image outside the box cannot be a real input.

    Feature-only poisons carry ``in_box=True``: this check cannot see them.
    """
    return inp.in_box.clone()


def _rest_means(z: torch.Tensor, y: torch.Tensor, cents: dict[int, torch.Tensor]) -> dict:
    """Mean of all points with another label, per class: (total − class sum) / count, one
    float64 pass instead of a copy of the other N − n_c rows per class (k = 1000: 1000 copies
    of nearly all features)."""
    total = torch.zeros(z.shape[1], dtype=torch.float64, device=z.device)
    for rows in row_chunks(z.shape[0], z.shape[1]):
        total += z[rows].double().sum(0)
    out = {}
    for c, mu in cents.items():
        n_c = int((y == c).sum())
        if n_c < z.shape[0]:
            out[c] = (total - mu * n_c) / (z.shape[0] - n_c)
    return out


def sphere_scores(inp: DefenseInput, centroid: str = "mean") -> torch.Tensor:
    """L2 distance of each point to its own class's centre (float64, one class at a time:
    no float64 copy of all features)."""
    z = inp.z
    score = torch.zeros(len(inp), dtype=torch.float64, device=z.device)
    for c, mu in _centroids(z, inp.y, inp.n_classes, centroid).items():
        mask = inp.y == c
        score[mask] = (z[mask].double() - mu).norm(dim=1)
    return score


@register_defense(
    "sphere",
    "drop the points farthest (L2) from their class centroid, per class",
    validate=_choice("sphere", "centroid", ("mean", "median")),
)
def sphere(
    inp: DefenseInput, fraction: float, *, centroid: str = "mean", per_class: bool = True
) -> torch.Tensor:
    """Sphere defence: poisons far from where their label's data lives are suspicious."""
    return remove_top((sphere_scores(inp, centroid),), inp.y, inp.n_classes, fraction, per_class)


def slab_scores(inp: DefenseInput, direction: str = "rest", centroid: str = "mean") -> torch.Tensor:
    """|projection of z - mu_y on the unit line from mu_y to the other side|.

    ``rest``: the other side is the centre of all points with another label (the
    binary slab of Steinhardt et al.); ``nearest``: the nearest other class centre
    (ties to the lower class index). A class with no other side falls back to the
    sphere distance.
    """
    z, y = inp.z, inp.y
    cents = _centroids(z, y, inp.n_classes, centroid)
    rest = _rest_means(z, y, cents) if direction != "nearest" and centroid == "mean" else None
    score = torch.zeros(len(inp), dtype=torch.float64, device=z.device)
    for c, mu in cents.items():
        mask = y == c
        if direction == "nearest":
            others = [(float((cents[o] - mu).norm()), o) for o in cents if o != c]
            other = cents[min(others)[1]] if others else None
        elif rest is not None:
            other = rest.get(c)
        else:
            other = _centroid(z[~mask], centroid) if bool((~mask).any()) else None
        diff = z[mask].double() - mu
        line = None if other is None else mu - other
        if line is None or float(line.norm()) == 0.0:
            score[mask] = diff.norm(dim=1)
        else:
            score[mask] = (diff @ (line / line.norm())).abs()
    return score


DEFENSE_SET_KINDS = ("sphere", "slab", "sphere+slab")
"""The filters whose kept set a defence-aware attack can project onto (``attacks/_feasible``)."""


def class_geometry(
    z: torch.Tensor, y: torch.Tensor, n_classes: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per class: mean centre, unit ``rest`` slab direction; per point: sphere and slab scores.

    The same definitions as ``sphere_scores`` / ``slab_scores`` (mean centroids, ``rest``),
    as tensors an attack can project onto: (centres (k, d), directions (k, d), sphere (n,),
    slab (n,)). A class without points gets centre 0 and direction 0.
    """
    k, d = n_classes, z.shape[1]
    center = torch.zeros(k, d, dtype=torch.float64, device=z.device)
    direction = torch.zeros(k, d, dtype=torch.float64, device=z.device)
    cents = _centroids(z, y, n_classes, "mean")
    rest = _rest_means(z, y, cents)
    for c, mu in cents.items():
        center[c] = mu
        if c in rest:
            line = mu - rest[c]
            if float(line.norm()) > 0:
                direction[c] = line / line.norm()
    yl = y.long()
    sphere = torch.empty(z.shape[0], dtype=torch.float64, device=z.device)
    slab = torch.empty(z.shape[0], dtype=torch.float64, device=z.device)
    for rows in row_chunks(z.shape[0], d):  # float64 rows chunk by chunk, not all of z
        diff = z[rows].double() - center[yl[rows]]
        sphere[rows] = diff.norm(dim=1)
        slab[rows] = (diff * direction[yl[rows]]).sum(1).abs()
    return center, direction, sphere, slab


def _slab_check(params: dict[str, Any]) -> None:
    _choice("slab", "direction", ("rest", "nearest"))(params)
    _choice("slab", "centroid", ("mean", "median"))(params)


@register_defense(
    "slab",
    "drop the points farthest along the line between class centroids (Steinhardt slab)",
    validate=_slab_check,
)
def slab(
    inp: DefenseInput,
    fraction: float,
    *,
    direction: str = "rest",
    centroid: str = "mean",
    per_class: bool = True,
) -> torch.Tensor:
    """Slab defence: effective poisons move along the direction that separates classes,
    where the sphere (isotropic) is loosest."""
    score = slab_scores(inp, direction, centroid)
    return remove_top((score,), inp.y, inp.n_classes, fraction, per_class)


def _block_sq_dists(a: torch.Tensor, b: torch.Tensor, b_sq: torch.Tensor) -> torch.Tensor:
    """``||b_j||² - 2 a_i·b_j`` for a block of rows ``a`` against all rows ``b``.

    That is the squared distance minus ``||a_i||²``, a per-row constant, so it ranks
    each row's neighbours exactly as the distance does at the cost of one fused
    matmul pass (the constant is added back to the k winners only).
    """
    return torch.addmm(b_sq[None, :], a, b.T, beta=1.0, alpha=-2.0)


def knn_scores(z: torch.Tensor, y: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(share of the k nearest other points with another label, mean distance to them).

    Exact brute force in row blocks of at most ``KNN_BLOCK_ELEMENTS`` distances, so
    memory stays bounded at any n (it runs wherever ``z`` lives: a GPU makes 50k
    points instant). The point itself is excluded by index: an exact duplicate
    elsewhere is a genuine neighbour.
    """
    n = int(z.shape[0])
    k = min(k, n - 1)
    disagree = torch.zeros(n, dtype=torch.float64, device=z.device)
    spread = torch.zeros(n, dtype=torch.float64, device=z.device)
    if k <= 0:
        return disagree, spread
    if z.dtype not in (torch.float32, torch.float64):
        z = z.float()
    z_sq = (z * z).sum(1)
    rows = max(1, KNN_BLOCK_ELEMENTS // n)
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        d = _block_sq_dists(z[start:stop], z, z_sq)
        local = torch.arange(stop - start, device=z.device)
        d[local, local + start] = float("inf")
        part, idx = torch.topk(d, k, dim=1, largest=False, sorted=False)
        dist = (part.double() + z_sq[start:stop, None].double()).clamp_min(0.0).sqrt()
        disagree[start:stop] = (y[idx] != y[start:stop, None]).double().mean(1)
        spread[start:stop] = dist.mean(1)
    return disagree, spread


def _knn_check(params: dict[str, Any]) -> None:
    if params["k"] < 1:
        raise ConfigError(f"defence 'knn': k={params['k']} must be >= 1, e.g. 5")


@register_defense(
    "knn",
    "drop the points whose k nearest neighbours most disagree with their label",
    validate=_knn_check,
)
def knn(inp: DefenseInput, fraction: float, *, k: int = 5, per_class: bool = True) -> torch.Tensor:
    """k-NN label consistency: a mislabelled or misplaced poison sits among the wrong class.

    Ties in the (discrete) disagreement go to the point whose neighbours are farther.
    """
    disagree, spread = knn_scores(inp.z, inp.y, k)
    return remove_top((disagree, spread), inp.y, inp.n_classes, fraction, per_class)


def loss_scores(inp: DefenseInput) -> torch.Tensor:
    """Per-point CE under the victim's own head trained on the contaminated set."""
    head = train_head(inp.z, inp.y, inp.n_classes, inp.victim, seed=inp.seed)
    out = torch.empty(len(inp), dtype=torch.float64, device=inp.z.device)
    yl = inp.y.long()
    for rows in row_chunks(len(inp), inp.n_classes):  # (chunk, k) logits, not (N, k)
        logits = head.logits(inp.z[rows].double())
        out[rows] = torch.logsumexp(logits, dim=1) - logits.gather(1, yl[rows, None]).squeeze(1)
    return out


@register_defense(
    "loss",
    "drop the highest-loss points under a head trained on the contaminated set",
)
def loss(inp: DefenseInput, fraction: float, *, per_class: bool = True) -> torch.Tensor:
    """Loss filter: points the (mostly clean) fit cannot explain are likely poisons."""
    if fraction == 0.0:
        return torch.ones(len(inp), dtype=torch.bool, device=inp.z.device)
    return remove_top((loss_scores(inp),), inp.y, inp.n_classes, fraction, per_class)
