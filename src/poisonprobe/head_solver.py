"""Exact second-order tools for the victim's head: curvature (Hessian-vector products,
explicit Hessian, preconditioned CG) and a warm-started Newton solve.

The victim objective is strictly convex in W (weight decay > 0), so Newton reaches the unique
minimiser to ~1e-10 in a few steps, where L-BFGS stalls around 1e-6 on ill-conditioned SSL
features. Gradient canceling and TGDA's implicit hypergradient both assume ``∇F = 0``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .victim import LinearHead, row_softmax

# Passes over the N rows go in chunks of at most this many (rows × classes) elements, so the
# (N, k) logits/softmax temporaries stay ~32 MB at k = 1000 (ImageNet-sized heads, N = 100k
# would otherwise hold several N×k float64 arrays, 0.8 GB each); at k = 10 a chunk is 400k
# rows, i.e. one chunk and the same arithmetic as unchunked for any usual N.
CHUNK_ELEMENTS = 4_000_000


def row_chunks(n: int, k: int) -> list[slice]:
    """Row slices covering ``range(n)`` with at most ``CHUNK_ELEMENTS`` (rows × k) each."""
    rows = max(256, CHUNK_ELEMENTS // max(k, 1))
    return [slice(i, min(n, i + rows)) for i in range(0, n, rows)]


def exact_is_cheap(n: int, k: int, d: int, device_type: str = "cpu") -> bool:
    """Explicit Hessian when it is cheap: ~nk²(d+1)² flops + (kd+k)³/3 Cholesky.

    CPU: up to ~1 GFLOP (e.g. k=10, d≤128 on digits-sized data); GPU: up to ~4 TFLOP
    and 2 GiB of Hessian (e.g. k=10, d=512 on CIFAR). Otherwise CG. Decided from the sizes
    alone, before any pass over the data.
    """
    p = k * d + k
    flops = 1.0 * n * k**2 * (d + 1) ** 2 + p**3 / 3  # half: symmetric
    if device_type == "cuda":
        return flops <= 4e12 and p * p * 8 <= 2 * 2**30
    return flops <= 1e9


# ---------------------------------------------------------------------------------------------
# follower curvature: Hessian-vector products, explicit Hessian, solves
# ---------------------------------------------------------------------------------------------


class HeadCurvature:
    """Curvature of the victim objective ``F`` at a head, on features ``z`` (labels not needed:
    the CE Hessian depends on the softmax only).

    Parameters are ordered like ``LinearHead.flat()``: ``[vec(W) row-major, b]``. ``dtype``:
    the precision of the passes over ``z`` (float32 for Newton's inner CG, where 1e-7 relative
    error is far below the CG tolerance and a pass costs a third); vectors stay float64.
    """

    def __init__(
        self,
        head: LinearHead,
        z: torch.Tensor,
        weight_decay: float,
        feature_eig: tuple[torch.Tensor, torch.Tensor] | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        self.z = z.detach().to(head.weight.device, dtype)
        self.head = head
        self.k, self.d = head.weight.shape
        self.n = int(self.z.shape[0])
        self.wd = weight_decay
        w, b = head.weight.to(dtype), head.bias.to(dtype)
        self.chunks = row_chunks(self.n, self.k)
        self.p = torch.empty(self.n, self.k, dtype=dtype, device=self.z.device)
        for rows in self.chunks:  # chunked: one (N, k) array, not three
            self.p[rows] = row_softmax(torch.addmm(b, self.z[rows], w.T))
        # the null direction of H: shifting every bias by the same amount changes nothing
        self.null = torch.zeros(self.k * self.d + self.k, dtype=torch.float64, device=self.z.device)
        self.null[self.k * self.d :] = 1.0 / math.sqrt(self.k)
        self._kfac: tuple[torch.Tensor, ...] | None = None
        self._feature_eig = feature_eig

    @property
    def n_params(self) -> int:
        return self.k * self.d + self.k

    def hvp(self, u: torch.Tensor) -> torch.Tensor:
        """``H u`` in O(nkd): logits direction s = U z + c, then (diag p − p pᵀ) s per point."""
        kd = self.k * self.d
        uw, ub = u[:kd].reshape(self.k, self.d), u[kd:]
        uw_z, ub_z = uw.T.to(self.z.dtype), ub.to(self.z.dtype)
        hw = torch.zeros(self.k, self.d, dtype=self.z.dtype, device=self.z.device)
        hb = torch.zeros(self.k, dtype=self.z.dtype, device=self.z.device)
        for rows in self.chunks:
            z, p = self.z[rows], self.p[rows]
            ps = p * torch.addmm(ub_z, z, uw_z)
            a = ps.sub_(p * ps.sum(dim=1, keepdim=True))
            hw.addmm_(a.T, z)
            hb += a.sum(dim=0)
        hw = hw.to(u.dtype) / self.n + self.wd * uw
        return torch.cat([hw.reshape(-1), hb.to(u.dtype) / self.n])

    def matrix(self) -> torch.Tensor:
        """The explicit Hessian (kd+k)², built class-row by class-row (memory O(n·k·d))."""
        k, d, n = self.k, self.d, self.n
        zt = torch.cat([self.z, torch.ones(n, 1, dtype=self.z.dtype, device=self.z.device)], 1)
        full = torch.empty(k, d + 1, k, d + 1, dtype=self.z.dtype, device=self.z.device)
        for a in range(k):  # blocks b ≥ a only: H is symmetric (half the flops)
            coef = -self.p[:, a : a + 1] * self.p[:, a:]  # A_i[a, b] = p_a (δ_ab − p_b)
            coef[:, 0] += self.p[:, a]
            rows = (coef[:, :, None] * zt[:, None, :]).reshape(n, (k - a) * (d + 1))
            block = (zt.T @ rows / n).reshape(d + 1, k - a, d + 1)
            full[a, :, a:] = block
            full[a + 1 :, :, a] = block[:, 1:].permute(1, 2, 0)
        idx_w = (torch.arange(k)[:, None] * (d + 1) + torch.arange(d)[None, :]).reshape(-1)
        perm = torch.cat([idx_w, torch.arange(k) * (d + 1) + d]).to(self.z.device)
        h = full.reshape(k * (d + 1), k * (d + 1))[perm][:, perm]
        h[range(k * d), range(k * d)] += self.wd
        return h

    def solve_exact(self, g: torch.Tensor) -> torch.Tensor:
        """``H⁻¹ g`` on the complement of the null direction: Cholesky of ``H + σ·u uᵀ``.

        For ``g ⟂ u`` the solution of the shifted system is ``⟂ u`` and solves ``H v = g``.
        """
        h = self.matrix()
        sigma = float(torch.diagonal(h).mean())
        h = h + sigma * torch.outer(self.null, self.null)
        g = g - (g @ self.null) * self.null
        chol, info = torch.linalg.cholesky_ex(h)
        if int(info) != 0:  # numerically indefinite: tiny ridge, still far below wd
            eye = torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
            chol = torch.linalg.cholesky(h + 1e-10 * sigma * eye)
        return torch.cholesky_solve(g[:, None], chol)[:, 0]

    def precondition(self, u: torch.Tensor) -> torch.Tensor:
        """Apply ``(Ā ⊗ C + wd·I)⁻¹``: a Kronecker-factored approximation of ``H⁻¹``.

        ``Ā`` = mean softmax curvature (k×k), ``C = Z̃ᵀZ̃/n`` ((d+1)², bias as a constant
        feature). Both are eigendecomposed once per follower point, so applying it costs
        O(k²d + kd²). SSL features make ``H`` badly conditioned (κ ~ 1e4 at wd = 1e-3) and
        plain CG then needs hundreds of iterations; with this, a few dozen.
        """
        if self._kfac is None:
            p = self.p.double()
            abar = torch.diag(p.mean(0)) - p.T @ p / self.n
            if self._feature_eig is None:
                self._feature_eig = feature_eig(self.z)
            qa, qc, eigvals = kronecker_eig(abar, self._feature_eig, self.wd)
            self._kfac = (qa, qc, 1.0 / eigvals)
        qa, qc, inv = self._kfac
        k, d = self.k, self.d
        full = torch.cat([u[: k * d].reshape(k, d), u[k * d :, None]], 1)
        out = qa @ ((qa.T @ full @ qc) * inv) @ qc.T
        return torch.cat([out[:, :d].reshape(-1), out[:, d]])

    def solve_cg(
        self,
        g: torch.Tensor,
        iters: int = 16,
        tol: float = 1e-10,
        precondition: bool = True,
        x0: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``H⁻¹ g`` by (preconditioned) conjugate gradient on Hessian-vector products;
        ``x0`` warm-starts it (e.g. the previous leader step's solution)."""
        g = g - (g @ self.null) * self.null
        pre = self._project_precondition if precondition else None
        if x0 is not None:
            x0 = x0 - (x0 @ self.null) * self.null
        return conjugate_gradient(self.hvp, g, iters, tol, pre, x0)

    def _project_precondition(self, u: torch.Tensor) -> torch.Tensor:
        v = self.precondition(u)
        return v - (v @ self.null) * self.null  # keep CG iterates off the flat direction

    def auto_exact(self) -> bool:
        """``exact_is_cheap`` for this problem's sizes."""
        return exact_is_cheap(self.n, self.k, self.d, self.z.device.type)


GRAM_ROWS = 8192  # rows (at least; 4·d for wide features) sampled for feature_eig


def feature_eig(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigen-decomposition of ``Z̃ᵀZ̃/n`` (bias as a constant feature; float64 result): the
    head-independent factor of the Kronecker preconditioners, shared by every Newton step of
    one solve. Computed in float32 on a strided sample of rows: a preconditioner needs the
    spectrum's shape, not its last digit, and the full float64 product cost more than the
    CG it speeds up."""
    n, d = z.shape
    step = max(1, n // max(GRAM_ROWS, 4 * (d + 1)))
    zs = z[::step].to(torch.float32)
    m = zs.shape[0]
    c = torch.empty(d + 1, d + 1, dtype=torch.float64, device=z.device)
    c[:d, :d] = (zs.T @ zs).double() / m
    mean = zs.sum(0).double() / m
    c[:d, d], c[d, :d], c[d, d] = mean, mean, 1.0
    return torch.linalg.eigh(c)


def kronecker_eig(
    abar: torch.Tensor, feature_eig: tuple[torch.Tensor, torch.Tensor], wd: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eigenbasis of the Kronecker approximation ``Ā ⊗ C + wd·I`` of the head's Hessian:
    ``(Qa, Qc, λa λcᵀ + wd)`` with ``Ā`` (k×k) the softmax curvature and ``C`` given by
    ``feature_eig``. Newton's preconditioner applies its inverse, the cold-start L-BFGS its
    inverse square root (``head_lbfgs``)."""
    la, qa = torch.linalg.eigh(abar)
    lc, qc = feature_eig
    return qa, qc, la.clamp_min(0)[:, None] * lc.clamp_min(0)[None, :] + wd


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    iters: int,
    tol: float = 1e-10,
    precondition: Callable[[torch.Tensor], torch.Tensor] | None = None,
    x0: torch.Tensor | None = None,
) -> torch.Tensor:
    """(Preconditioned) CG for a symmetric positive (semi-)definite operator from ``x0``
    (default 0); stops when the residual is below ``tol·||b||``."""
    if x0 is None:
        x = torch.zeros_like(b)
        r = b.clone()
    else:
        x = x0.to(b)
        r = b - matvec(x)
    zr = precondition(r) if precondition is not None else r
    p = zr.clone()
    rz = r @ zr
    stop = (tol * b.norm()) ** 2
    for _ in range(iters):
        if r @ r <= stop:
            break
        hp = matvec(p)
        alpha = rz / (p @ hp).clamp_min(1e-300)
        x = x + alpha * p
        r = r - alpha * hp
        zr = precondition(r) if precondition is not None else r
        rz_new = r @ zr
        p = zr + (rz_new / rz.clamp_min(1e-300)) * p
        rz = rz_new
    return x


def flat_objective(
    theta: torch.Tensor, z: torch.Tensor, yoh: torch.Tensor, wd: float, k: int, grad: bool = True
) -> tuple[float, torch.Tensor | None]:
    """The victim objective F and its flat gradient (closed form, float64).

    ``yoh``: one-hot/soft targets (n, k), or integer labels (n,) (no (n, k) one-hot array).
    ``z`` may be float32: rows are converted chunk by chunk, so the sums are float64 without
    a float64 copy of the features (1.6 GB at N = 100k, d = 2048)."""
    n, d = z.shape
    w, b = theta[: k * d].reshape(k, d), theta[k * d :]
    hard = yoh.ndim == 1
    ce = torch.zeros((), dtype=torch.float64, device=theta.device)
    gw = torch.zeros(k, d, dtype=torch.float64, device=theta.device) if grad else None
    gb = torch.zeros(k, dtype=torch.float64, device=theta.device) if grad else None
    for rows in row_chunks(n, k):
        zc = z[rows].to(torch.float64)
        logp = row_softmax(torch.addmm(b, zc, w.T), log=True)
        if hard:
            yc = yoh[rows].long()[:, None]
            ce -= logp.gather(1, yc).sum()
        else:
            ce -= (yoh[rows] * logp).sum()
        if grad:
            resid = logp.exp()
            if hard:
                resid.scatter_add_(1, yc, torch.full_like(yc, -1, dtype=resid.dtype))
            else:
                resid -= yoh[rows]
            gw.addmm_(resid.T, zc)
            gb += resid.sum(0)
    loss = float(ce / n + 0.5 * wd * (w**2).sum())
    if not grad:
        return loss, None
    return loss, torch.cat([(gw / n + wd * w).reshape(-1), gb / n])


def newton_solve(
    head: LinearHead,
    z: torch.Tensor,
    y: torch.Tensor,
    wd: float,
    tol: float = 1e-9,
    max_steps: int = 30,
    cg_iters: int = 100,
    eig: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> LinearHead:
    """Minimise F exactly: warm-started Newton with preconditioned-CG steps + backtracking.

    ``victim.train_head``'s L-BFGS stalls near ``||∇F|| ~ 1e-6`` on SSL features (κ ~ 1e4)
    after hundreds of iterations; Newton reaches ``tol`` in a handful of steps, which the
    implicit-function hypergradient needs (it assumes ``∇F = 0``). ``eig``: a
    ``feature_eig``-like decomposition to reuse for the preconditioner.
    """
    k, d = head.weight.shape
    # the features as given (float32 stays float32: flat_objective sums in float64 chunk by
    # chunk, the inner CG runs on float32 anyway): no float64 copy of an (N, d) matrix
    zd = z.detach().to(head.weight.device)
    if not zd.dtype.is_floating_point:
        zd = zd.to(torch.float64)
    yoh = y.long().to(zd.device)  # labels: no (N, k) one-hot
    theta = head.flat().detach().clone()
    loss, g = flat_objective(theta, zd, yoh, wd, k)
    z_as = {zd.dtype: zd}
    for _ in range(max_steps):
        gnorm = float(g.norm())
        if gnorm <= tol:
            break
        eig = feature_eig(zd) if eig is None else eig
        now = LinearHead.from_flat(theta, k, d)
        t = None
        # gradient and line search in float64; the inner CG on float32 curvature first
        # (inexact Newton needs the step only to the CG tolerance, ≥ 1e-5 relative), float64
        # when that step fails (a softmax saturated in float32 at a tiny weight decay)
        for dtype in (torch.float32, torch.float64):
            if dtype not in z_as:  # converted once per solve, not once per Newton step
                z_as[dtype] = zd.to(dtype)
            curv = HeadCurvature(now, z_as[dtype], wd, eig, dtype)
            step = curv.solve_cg(g, iters=cg_iters, tol=min(0.5, math.sqrt(gnorm)))
            t = _backtrack(theta, step, g, loss, lambda th: flat_objective(th, zd, yoh, wd, k)[0])
            if t is not None:
                break
        if t is None:  # no descent direction even in float64: as exact as it gets
            break
        theta = theta - t * step
        loss, g = flat_objective(theta, zd, yoh, wd, k)
    return LinearHead.from_flat(theta, k, d)


def _backtrack(
    theta: torch.Tensor,
    step: torch.Tensor,
    g: torch.Tensor,
    loss: float,
    objective: Callable[[torch.Tensor], float],
) -> float | None:
    """Armijo step length along ``-step`` (halving from 1), or None if there is none."""
    if not bool(torch.isfinite(step).all()):
        return None
    slope = float(g @ step)
    t = 1.0
    while t > 1e-10:
        if objective(theta - t * step) <= loss - 1e-4 * t * slope:
            return t
        t *= 0.5
    return None
