"""THE victim objective and its head: ``mean_i CE(W z_i + b, y_i) + (weight_decay / 2) * ||W||^2``
(bias not decayed, like scikit-learn), with its closed-form gradients.

It is strictly convex in ``W`` for ``weight_decay > 0``, so the exact minimiser is unique:
gradient canceling relies on exactly this objective (see ``attacks/gc/objective.py``). Every
other module that needs the objective or its gradient takes it from here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import DataError


@dataclass
class LinearHead:
    """``h(z) = z @ weight.T + bias`` with ``weight`` (k, d) and ``bias`` (k,)."""

    weight: torch.Tensor
    bias: torch.Tensor

    @property
    def n_classes(self) -> int:
        return int(self.weight.shape[0])

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        return z.to(self.weight.dtype) @ self.weight.T + self.bias

    def predict(self, z: torch.Tensor) -> torch.Tensor:
        return self.logits(z).argmax(dim=1)

    def accuracy(self, z: torch.Tensor, y: torch.Tensor) -> float:
        return float((self.predict(z) == y.to(z.device)).double().mean())

    def flat(self) -> torch.Tensor:
        """Parameters as one vector ``[vec(W), b]`` (row-major W)."""
        return torch.cat([self.weight.reshape(-1), self.bias])

    @classmethod
    def from_flat(cls, theta: torch.Tensor, n_classes: int, dim: int) -> LinearHead:
        w = theta[: n_classes * dim].reshape(n_classes, dim)
        return cls(w, theta[n_classes * dim :])

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        return LinearHead(self.weight.to(device, dtype), self.bias.to(device, dtype))

    def clone(self) -> LinearHead:
        return LinearHead(self.weight.detach().clone(), self.bias.detach().clone())


# Passes over the N rows go in chunks of at most this many (rows × classes) elements, so the
# (N, k) logits/softmax temporaries stay ~32 MB at k = 1000 (ImageNet-sized heads, N = 100k
# would otherwise hold several N×k float64 arrays, 0.8 GB each); at k = 10 a chunk is 400k
# rows, i.e. one chunk and the same arithmetic as unchunked for any usual N.
CHUNK_ELEMENTS = 4_000_000


def row_chunks(n: int, k: int) -> list[slice]:
    """Row slices covering ``range(n)`` with at most ``CHUNK_ELEMENTS`` (rows × k) each."""
    rows = max(256, CHUNK_ELEMENTS // max(k, 1))
    return [slice(i, min(n, i + rows)) for i in range(0, n, rows)]


def with_bias_column(z: torch.Tensor) -> torch.Tensor:
    """``[z, 1]``: the features with the bias as a constant last feature (``Z̃``)."""
    return torch.cat([z, torch.ones(z.shape[0], 1, dtype=z.dtype, device=z.device)], 1)


def row_softmax(logits: torch.Tensor, log: bool = False) -> torch.Tensor:
    """(Log-)softmax over the classes of (n, k) logits, run along contiguous memory on the CPU:
    PyTorch's CPU kernel over a short last dimension (k = 10) is 4-8x slower than over the
    first dimension of the transposed copy. Same values; returns a transposed view."""
    fn = torch.log_softmax if log else torch.softmax
    if logits.device.type != "cpu" or logits.ndim != 2:
        return fn(logits, dim=1)
    return fn(logits.T.contiguous(), dim=0).T


def label_targets(y: torch.Tensor, n_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """Integer labels -> one-hot; soft labels (n, k) pass through."""
    if y.dtype.is_floating_point and y.ndim == 2:
        return y.to(dtype)
    return F.one_hot(y.long(), n_classes).to(dtype)


def gradient_sums(
    head: LinearHead, z: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form ``sum_i grad CE_i`` w.r.t. (W, b): ``(P - Y)^T Z`` and ``sum (P - Y)``.

    Differentiable w.r.t. ``z`` (input-space and feature-space GC backpropagate
    through it once; no double backprop is needed).
    """
    z = z.to(head.weight.dtype)
    resid = row_softmax(head.logits(z)) - label_targets(y, head.n_classes, z.dtype)
    return resid.T @ z, resid.sum(dim=0)


def per_point_gradients(
    head: LinearHead, z: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-point CE gradients: ``(p_i - y_i) z_i^T`` (n, k, d) and ``p_i - y_i`` (n, k)."""
    z = z.to(head.weight.dtype)
    resid = row_softmax(head.logits(z)) - label_targets(y, head.n_classes, z.dtype)
    return resid[:, :, None] * z[:, None, :], resid


def victim_objective(head: LinearHead, z: torch.Tensor, y: torch.Tensor, weight_decay: float):
    """The exact objective the victim minimises (mean CE + L2 on W)."""
    logits = head.logits(z)
    if y.dtype.is_floating_point and y.ndim == 2:
        ce = -(y.to(logits.dtype) * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()
    else:
        ce = F.cross_entropy(logits, y.long())
    return ce + 0.5 * weight_decay * (head.weight**2).sum()


def all_finite(x: torch.Tensor) -> bool:
    """Whether every element is finite, usually in one summing pass without temporaries.

    A finite sum proves every element finite (an inf or NaN makes the sum inf or NaN), and
    costs ~4 ms on 50k×512 float32 features where ``isfinite(x).all()`` (an ``abs`` copy and
    two masks) costs ~130 ms — 8% of a cold CIFAR-scale head fit. Only a non-finite sum (a bad
    value, or finite values so large that their sum overflows) pays for the exact check.
    """
    if not x.dtype.is_floating_point:
        return True
    return bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all())


def check_features(z: torch.Tensor, y: torch.Tensor, what: str = "features") -> None:
    """Refuse NaN/inf features or mismatched labels with a one-line error."""
    if z.ndim != 2 or z.shape[0] != y.shape[0]:
        raise DataError(f"{what}: expected (N, d) features and N labels, got {tuple(z.shape)}")
    if not all_finite(z):
        raise DataError(f"{what} contain NaN or inf; check the extractor and the input images")


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


def gradient_norm(head: LinearHead, z: torch.Tensor, y: torch.Tensor, wd: float) -> float:
    """||∇F|| of the victim objective at ``head`` (mean CE + wd/2 ||W||²)."""
    gw, gb = gradient_sums(head, z, y)
    n = z.shape[0]
    return float(torch.cat([(gw / n + wd * head.weight).reshape(-1), gb / n]).norm())
