"""Feasible poison sets for the certified loss bound, and the exact maximum of a linear
function over them.

A poison ``(x, y)`` is feasible when ``x`` lies in the clean-feature box (what feature-space
attacks may use: ``attacks.tgda.feature_bounds``) and, under an *oracle* sphere / slab
defence, inside label ``y``'s sphere / slab around the clean class centroid. The oracle
radius is what ``defenses/filters.py`` would keep of the clean class at the configured
removal fraction: the largest score among the clean points it keeps (Steinhardt et al.
2017 model the defence the same way: centroids from clean data, clean points kept).

``max_linear`` returns, for a batch of linear objectives ``a·x + c`` each tied to one label's
region, a value that is *never below* the true maximum (a dual value: sound for any
multiplier) and a feasible point attaining (nearly) it:

- box: coordinatewise, exact;
- box ∩ sphere ``‖x − μ‖ ≤ r``: Lagrangian in ``λ ≥ 0`` for the sphere, separable over the
  box: ``x(t) = clip(μ + t·a, lo, hi)`` with ``t = 1/(2λ)``; ``‖x(t) − μ‖`` grows with ``t``
  (μ lies in the box), so bisection on ``t`` finds the dual optimum; the dual value at the
  final ``t`` is reported (sound whatever ``t`` is);
- box ∩ slab ``|v·(x − μ)| ≤ s``: Lagrangian in ``ν ∈ R``; the dual is convex piecewise
  linear in ν with breakpoints ``a_i / v_i`` (and 0), its slope rises by ``|v_i|(hi_i−lo_i)``
  at each (``2s`` at 0): sorting them gives the exact minimiser (an LP with one two-sided
  constraint);
- box ∩ sphere ∩ slab: the smaller of the two values above (the intersection lies in each:
  sound, not always exact), with the point shrunk towards μ until it satisfies both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..defenses.base import DefenseSpec, removal_count
from ..errors import ConfigError
from ..head.objective import row_chunks

MODELLED = ("sphere", "slab", "input-box")
"""Defences the bound models (``input-box`` never removes a feature-space poison)."""


@dataclass
class FeasibleSet:
    """Per-label feasible feature regions (float64). ``radius``/``width`` of ``inf`` = no
    sphere/slab; a negative radius = the label admits no poison at all."""

    low: torch.Tensor  # (d,)
    high: torch.Tensor  # (d,)
    center: torch.Tensor  # (K, d) clean class centroids (inside the box)
    radius: torch.Tensor  # (K,)
    slab_dir: torch.Tensor  # (K, d) unit vectors (zeros where no slab)
    width: torch.Tensor  # (K,)

    @property
    def n_classes(self) -> int:
        return int(self.center.shape[0])

    @property
    def labels(self) -> list[int]:
        """Labels under which some poison is feasible."""
        return [c for c in range(self.n_classes) if float(self.radius[c]) >= 0]

    def contains(self, z: torch.Tensor, y: torch.Tensor, tol: float = 1e-9) -> torch.Tensor:
        """Which points ``(z, y)`` lie in the set (tolerance relative to the box width)."""
        z = z.to(self.low)
        y = y.long().to(z.device)
        scale = float((self.high - self.low).max().clamp_min(1.0))
        slack = tol * scale
        ok = ((z >= self.low - slack) & (z <= self.high + slack)).all(1)
        diff = z - self.center[y]
        ok &= diff.norm(dim=1) <= self.radius[y] + slack
        ok &= (diff * self.slab_dir[y]).sum(1).abs() <= self.width[y] + slack
        return ok

    @classmethod
    def box(cls, z: torch.Tensor, y: torch.Tensor, n_classes: int) -> FeasibleSet:
        """The clean-feature box alone (defence ``none``)."""
        z = z.detach()
        low, high = z.min(0).values.double(), z.max(0).values.double()
        # class means summed in float64 chunk by chunk: no float64 copy of z, no k masks
        yl = y.long().to(z.device)
        sums = torch.zeros(n_classes, z.shape[1], dtype=torch.float64, device=z.device)
        for rows in row_chunks(z.shape[0], n_classes):
            sums.index_add_(0, yl[rows], z[rows].double())
        counts = torch.bincount(yl, minlength=n_classes)[:, None]
        overall = sums.sum(0) / max(z.shape[0], 1)
        center = torch.where(counts > 0, sums / counts.clamp_min(1), overall)
        inf = torch.full((n_classes,), float("inf"), dtype=torch.float64, device=z.device)
        return cls(low, high, center, inf, torch.zeros_like(center), inf.clone())


def check_modellable(spec: DefenseSpec) -> None:
    """Refuse (one line) a defence whose surviving set the bound cannot describe."""
    for step in spec.steps:
        if step.name not in MODELLED:
            raise ConfigError(
                f"bounds: loss cannot model defence {step.name!r} (it depends on the poisons "
                "themselves); use defences none, sphere, slab or input-box with bounds, or drop "
                "'loss' from bounds"
            )
    centroids = {s.kwargs.get("centroid", "mean") for s in spec.steps if s.name != "input-box"}
    if len(centroids) > 1:
        raise ConfigError(
            f"bounds: defence {spec.label!r} mixes centroid types; give its steps one "
            "centroid (mean or median) so the bound can model them together"
        )


def oracle_feasible_set(
    z: torch.Tensor, y: torch.Tensor, n_classes: int, spec: DefenseSpec, eps: float
) -> FeasibleSet:
    """The box ∩ the oracle sphere/slab of each step of ``spec`` (fraction default = eps)."""
    check_modellable(spec)
    fs = FeasibleSet.box(z, y, n_classes)
    zd, yl = z.detach(), y.long().to(z.device)  # float64 per class or per row chunk below
    for step in spec.steps:
        if step.name == "input-box":
            continue
        fraction = eps if step.fraction is None else step.fraction
        kw = step.kwargs
        centers = _centers(zd, yl, n_classes, kw.get("centroid", "mean"))
        if step.name == "sphere":
            scores = _row_scores(zd, yl, centers, None)
            radius = _kept_max(scores, yl, n_classes, fraction, kw.get("per_class", True))
            fs.radius = torch.minimum(fs.radius, radius)
            fs.center = centers
        else:
            dirs = _slab_dirs(zd, yl, centers, n_classes, kw.get("direction", "rest"), kw)
            scores = _row_scores(zd, yl, centers, dirs)
            fs.width = _kept_max(scores, yl, n_classes, fraction, kw.get("per_class", True))
            fs.slab_dir, fs.center = dirs, centers
    return fs


def _row_scores(z, y, centers, dirs) -> torch.Tensor:
    """Per point: distance to its class centre (``dirs`` None) or |projection on its slab
    line|, in float64 row chunks (no float64 copy of all features)."""
    out = torch.empty(z.shape[0], dtype=torch.float64, device=z.device)
    for rows in row_chunks(z.shape[0], z.shape[1]):
        diff = z[rows].double() - centers[y[rows]]
        out[rows] = diff.norm(dim=1) if dirs is None else (diff * dirs[y[rows]]).sum(1).abs()
    return out


def _centers(z: torch.Tensor, y: torch.Tensor, k: int, how: str) -> torch.Tensor:
    out = []
    for c in range(k):
        zc = z[y == c] if bool((y == c).any()) else z
        zc = zc.double()
        out.append(zc.median(0).values if how == "median" else zc.mean(0))
    return torch.stack(out)


def _slab_dirs(z, y, centers, k: int, direction: str, kw) -> torch.Tensor:
    """The filter's slab line per class (unit), as ``filters.slab_scores`` draws it."""
    how = kw.get("centroid", "mean")
    dirs = torch.zeros_like(centers)
    total = None
    if direction != "nearest" and how == "mean":  # rest mean = (total − class sum) / count
        total = torch.zeros(z.shape[1], dtype=torch.float64, device=z.device)
        for rows in row_chunks(z.shape[0], z.shape[1]):
            total += z[rows].double().sum(0)
    for c in range(k):
        if direction == "nearest":
            dist = (centers - centers[c]).norm(dim=1)  # vectorised over the other classes
            dist[c] = float("inf")
            other = centers[int(dist.argmin())] if k > 1 else None  # ties: lower index
        elif total is not None:
            n_c = int((y == c).sum())
            n_rest = z.shape[0] - n_c
            other = (total - centers[c] * n_c) / n_rest if n_rest else None
        else:
            rest = z[y != c].double()
            other = None
            if rest.shape[0]:
                other = rest.median(0).values
        if other is not None and float((centers[c] - other).norm()) > 0:
            line = centers[c] - other
            dirs[c] = line / line.norm()
    return dirs


def _kept_max(
    scores: torch.Tensor, y: torch.Tensor, k: int, fraction: float, per_class: bool
) -> torch.Tensor:
    """Largest score the filter keeps among clean points (per class, or one global value)."""
    out = torch.full((k,), -1.0, dtype=torch.float64, device=scores.device)
    if not per_class:
        s = torch.sort(scores).values
        keep = s.numel() - removal_count(fraction, int(s.numel()))
        out[:] = s[keep - 1] if keep > 0 else -1.0
        return out
    for c in range(k):
        s = torch.sort(scores[y == c]).values
        keep = s.numel() - removal_count(fraction, int(s.numel()))
        if keep > 0:
            out[c] = s[keep - 1]
    return out


# ----------------------------------------------------------------------------- max of a·x + c


def max_linear(
    fs: FeasibleSet, labels: torch.Tensor, a: torch.Tensor, c: torch.Tensor, iters: int = 60
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row ``m``: an upper bound on ``max_{x ∈ F_{labels[m]}} a_m·x + c_m`` and a
    feasible ``x`` (float64). See the module docstring for the method per set."""
    a, c = a.double(), c.double()
    lo, hi = fs.low, fs.high
    mu = fs.center[labels]
    r, v, s = fs.radius[labels], fs.slab_dir[labels], fs.width[labels]
    corner = torch.where(a > 0, hi, lo)
    val = (a * corner).sum(1) + c
    x = corner
    sph = torch.isfinite(r)
    if bool(sph.any()):
        xs, us = _sphere(a[sph], mu[sph], r[sph], lo, hi, iters)
        better = us + c[sph] < val[sph]
        val[sph] = torch.where(better, us + c[sph], val[sph])
        x = x.clone()
        x[sph] = torch.where(better[:, None], xs, x[sph])
    slab = torch.isfinite(s)
    if bool(slab.any()):
        xl, ul = _slab(a[slab], mu[slab], v[slab], s[slab], lo, hi)
        better = ul + c[slab] < val[slab]
        val[slab] = torch.where(better, ul + c[slab], val[slab])
        x = x.clone()
        x[slab] = torch.where(better[:, None], xl, x[slab])
    x = _shrink(x, mu, r, v, s)
    return val, x


def _sphere(a, mu, r, lo, hi, iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Dual bound and point for ``max a·x`` over box ∩ ball(μ, r), r ≥ 0."""
    anorm = a.norm(dim=1).clamp_min(1e-300)
    t_lo = (r / anorm).clamp_min(1e-300)  # ‖clip(μ + t a) − μ‖ ≤ t‖a‖: feasible up to here
    log_lo, log_hi = t_lo.log(), (t_lo * 1e8).log()
    for _ in range(iters):
        mid = 0.5 * (log_lo + log_hi)
        xm = torch.minimum(torch.maximum(mu + mid.exp()[:, None] * a, lo), hi)
        inside = (xm - mu).norm(dim=1) <= r
        log_lo = torch.where(inside, mid, log_lo)
        log_hi = torch.where(inside, log_hi, mid)
    t = log_lo.exp()
    x = torch.minimum(torch.maximum(mu + t[:, None] * a, lo), hi)
    lam = 0.5 / t
    # dual value at λ: max_box [a·x − λ‖x−μ‖²] + λ r², attained at x (exactly, for this λ)
    dual = (a * x).sum(1) - lam * ((x - mu) ** 2).sum(1) + lam * r * r
    corner = torch.where(a > 0, hi, lo)
    free = (corner - mu).norm(dim=1) <= r  # the box corner is inside the ball: λ = 0, exact
    dual = torch.where(free, (a * corner).sum(1), dual)
    x = torch.where(free[:, None], corner, x)
    return x, dual


def _slab(a, mu, v, s, lo, hi) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact ``max a·x`` over box ∩ {|v·(x−μ)| ≤ s}: minimise the piecewise-linear dual in ν."""
    m, d = a.shape
    width = hi - lo
    safe_v = torch.where(v == 0, torch.ones_like(v), v)
    bp = torch.where(v == 0, torch.full_like(a, float("inf")), a / safe_v)  # (m, d)
    inc = (v.abs() * width).expand(m, d)
    bp = torch.cat([bp, torch.zeros(m, 1, dtype=a.dtype, device=a.device)], 1)
    inc = torch.cat([inc, 2 * s[:, None]], 1)
    # slope at ν → −∞: coordinate i sits at hi where v_i > 0 (g_i = a_i − ν v_i > 0)
    x_neg = torch.where(v > 0, hi, torch.where(v < 0, lo, torch.where(a > 0, hi, lo)))
    slope0 = -(v * x_neg).sum(1) + (v * mu).sum(1) - s
    order = torch.argsort(bp, dim=1)
    bps = torch.gather(bp, 1, order)
    slopes = slope0[:, None] + torch.cumsum(torch.gather(inc, 1, order), 1)
    first = (slopes >= 0).double().argmax(1)  # slope turns non-negative here: the minimiser
    nu = bps.gather(1, first[:, None])[:, 0]
    nu = torch.where(torch.isfinite(nu), nu, torch.zeros_like(nu))
    g = a - nu[:, None] * v
    xb = torch.where(g > 0, hi, lo)
    dual = (g * xb).sum(1) + nu * (v * mu).sum(1) + nu.abs() * s
    # a primal optimum: every coordinate with g_i ≠ 0 sits at its box end; the coordinate
    # whose breakpoint is ν* (g_i = 0) is free and takes the value that puts v·(x − μ) on the
    # active side of the slab (complementary slackness), clipped to its box
    pivot = order.gather(1, first[:, None])[:, 0]
    rows = (pivot < d).nonzero().squeeze(1)
    if rows.numel():
        i = pivot[rows]
        side = torch.sign(nu[rows]) * s[rows]
        vi, mui = v[rows, i], mu[rows, i]
        rest = ((xb[rows] - mu[rows]) * v[rows]).sum(1) - vi * (xb[rows, i] - mui)
        want = mui + (side - rest) / torch.where(vi == 0, torch.ones_like(vi), vi)
        xb[rows, i] = torch.minimum(torch.maximum(want, lo[i]), hi[i])
    return xb, dual


def _shrink(x, mu, r, v, s) -> torch.Tensor:
    """Move ``x`` towards μ (inside the box, as both are) until it is in sphere and slab."""
    diff = x - mu
    dist = diff.norm(dim=1)
    proj = (diff * v).sum(1).abs()
    f = torch.ones_like(dist)
    f = torch.where(dist > r, r.clamp_min(0) / dist.clamp_min(1e-300), f)
    f = torch.minimum(f, torch.where(proj > s, s / proj.clamp_min(1e-300), torch.ones_like(f)))
    return mu + f[:, None] * diff
