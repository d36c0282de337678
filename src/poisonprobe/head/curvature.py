"""Curvature of the victim objective: Hessian-vector products, the explicit Hessian, the
Kronecker-factored preconditioner and (preconditioned) conjugate gradient.

The victim objective is strictly convex in W (weight decay > 0); Newton's method
(``head/solvers.py``) and TGDA's implicit hypergradient solve with this curvature.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .objective import LinearHead, row_chunks, row_softmax, with_bias_column


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


TRANSPOSED_ELEMENTS = 2**25  # n·d up to which HeadCurvature keeps a transposed copy (128 MiB)


class HeadCurvature:
    """Curvature of the victim objective ``F`` at a head, on features ``z`` (labels not needed:
    the CE Hessian depends on the softmax only).

    Parameters are ordered like ``LinearHead.flat()``: ``[vec(W) row-major, b]``. ``dtype``:
    the precision of the passes over ``z`` (float32 for Newton's inner CG, where 1e-7 relative
    error is far below the CG tolerance and a pass costs a third). Flat vectors in and out
    are float64; ``solve_cg`` iterates on ``[W | b]`` matrices in ``dtype``.
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
        # small problems on the CPU: transposed copies (d, n) and (k, n) make both products of
        # a Hessian-vector product long-row GEMMs (default, n = 1,482, d = 256, float32:
        # 0.72 → 0.44 ms, measured); large ones keep the chunked rows and no copy
        self._zt = self._pt = None
        small = len(self.chunks) == 1 and self.n * self.d <= TRANSPOSED_ELEMENTS
        if small and self.z.device.type == "cpu":
            self._zt, self._pt = self.z.T.contiguous(), self.p.T.contiguous()

    @property
    def n_params(self) -> int:
        return self.k * self.d + self.k

    def as_matrix(self, u: torch.Tensor) -> torch.Tensor:
        """Flat ``[vec(W), b]`` → ``[W | b]`` (k, d+1) in the passes' precision."""
        kd = self.k * self.d
        return torch.cat([u[:kd].reshape(self.k, self.d), u[kd:, None]], 1).to(self.z.dtype)

    def as_flat(self, m: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """``[W | b]`` (k, d+1) → flat ``[vec(W), b]`` in ``dtype``."""
        return torch.cat([m[:, : self.d].reshape(-1), m[:, self.d]]).to(dtype)

    def hvp(self, u: torch.Tensor) -> torch.Tensor:
        """``H u`` for a flat ``u`` (returned in ``u``'s dtype); see ``hvp_matrix``."""
        return self.as_flat(self.hvp_matrix(self.as_matrix(u)), u.dtype)

    def hvp_matrix(self, u: torch.Tensor) -> torch.Tensor:
        """``H U`` for ``U = [W | b]`` (k, d+1), in O(nkd): logits direction s = W z + b, then
        (diag p − p pᵀ) s per point. Matrix in, matrix out, in the passes' precision: the
        CG loops call it ~50 times per tgda leader step, and flat float64 vectors cost four
        casts and two concatenations per product."""
        d = self.d
        uw, ub = u[:, :d], u[:, d:]
        if self._zt is not None:  # (k, n) logit directions, one GEMM each way
            ps = self._pt * torch.addmm(ub, uw, self._zt)
            a = ps.sub_(self._pt * ps.sum(dim=0, keepdim=True))
            out = torch.cat([a @ self._zt.T, a.sum(dim=1, keepdim=True)], 1)
        else:
            out = torch.zeros(self.k, d + 1, dtype=self.z.dtype, device=self.z.device)
            for rows in self.chunks:
                z, p = self.z[rows], self.p[rows]
                ps = p * torch.addmm(ub.T, z, uw.T)
                a = ps.sub_(p * ps.sum(dim=1, keepdim=True))
                out[:, :d].addmm_(a.T, z)
                out[:, d] += a.sum(dim=0)
        out.div_(self.n)
        out[:, :d].add_(uw, alpha=self.wd)
        return out

    def matrix(self) -> torch.Tensor:
        """The explicit Hessian (kd+k)², built class-row by class-row (memory O(n·k·d))."""
        k, d, n = self.k, self.d, self.n
        zt = with_bias_column(self.z)
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
        # two triangular solves: torch.cholesky_solve took ~10× longer for one right-hand
        # side on CPU (p = 2,570: 34 ms vs 3 ms)
        half = torch.linalg.solve_triangular(chol, g[:, None], upper=False)
        return torch.linalg.solve_triangular(chol.T, half, upper=True)[:, 0]

    def precondition(self, u: torch.Tensor) -> torch.Tensor:
        """Apply ``(Ā ⊗ C + wd·I)⁻¹``: a Kronecker-factored approximation of ``H⁻¹``.

        ``Ā`` = mean softmax curvature (k×k), ``C = Z̃ᵀZ̃/n`` ((d+1)², bias as a constant
        feature). Both are eigendecomposed once per follower point, so applying it costs
        O(k²d + kd²). SSL features make ``H`` badly conditioned (κ ~ 1e4 at wd = 1e-3) and
        plain CG then needs hundreds of iterations; with this, a few dozen.
        """
        return self.as_flat(self._precondition_matrix(self.as_matrix(u)), u.dtype)

    def _kronecker_factors(self) -> None:
        """Eigenbases and inverse eigenvalues of ``Ā ⊗ C + wd·I`` (once per curvature)."""
        p = self.p.double()
        abar = torch.diag(p.mean(0)) - p.T @ p / self.n
        if self._feature_eig is None:
            self._feature_eig = feature_eig(self.z)
        qa, qc, eigvals = kronecker_eig(abar, self._feature_eig, self.wd)
        # applied in the passes' precision (float32 curvature: 40 % faster, and its
        # 1e-7 round-off is far below what a preconditioner needs)
        dt = self.z.dtype
        self._kfac = tuple(m.to(dt).contiguous() for m in (qa, qa.T, qc, qc.T, 1.0 / eigvals))

    def _precondition_matrix(self, u: torch.Tensor) -> torch.Tensor:
        """``precondition`` on ``[W | b]`` (k, d+1), in the passes' precision."""
        if self._kfac is None:
            self._kronecker_factors()
        qa, qa_t, qc, qc_t, inv = self._kfac
        return qa @ (((qa_t @ u) @ qc) * inv) @ qc_t

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
        x0m = None if x0 is None else self.as_matrix(x0 - (x0 @ self.null) * self.null)
        # CG on [W | b] matrices in the passes' precision (float32 curvature: float32
        # vectors too; the tolerances asked of it, ≥ ~1e-4 relative, are far above its
        # round-off)
        x = conjugate_gradient(self.hvp_matrix, self.as_matrix(g), iters, tol, pre, x0m)
        return self.as_flat(x)

    def _project_precondition(self, u: torch.Tensor) -> torch.Tensor:
        v = self._precondition_matrix(u)
        v[:, self.d] -= v[:, self.d].mean()  # keep CG iterates off the flat bias direction
        return v

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
    inverse square root (``solvers.lbfgs_float32``)."""
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
    (default 0) on vectors or matrices (Frobenius inner product); stops when the residual
    is below ``tol·||b||``."""
    if x0 is None:
        x = torch.zeros_like(b)
        r = b.clone()
    else:
        x = x0.to(b)
        r = b - matvec(x)
    zr = precondition(r) if precondition is not None else r
    p = zr.clone()
    rz = _dot(r, zr)
    stop = (tol * b.norm()) ** 2
    tiny = torch.finfo(b.dtype).tiny
    for _ in range(iters):
        if _dot(r, r) <= stop:
            break
        hp = matvec(p)
        alpha = rz / _dot(p, hp).clamp_min(tiny)
        x = x + alpha * p
        r = r - alpha * hp
        zr = precondition(r) if precondition is not None else r
        rz_new = _dot(r, zr)
        p = zr + (rz_new / rz.clamp_min(tiny)) * p
        rz = rz_new
    return x


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Inner product of two same-shaped tensors (vectors or matrices)."""
    return torch.dot(a.reshape(-1), b.reshape(-1))
