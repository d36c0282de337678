"""Feature cache: encode each (extractor, data) pair once per machine.

Every attack, defence and victim works on the frozen extractor's features, and the same
target data is encoded for every attack x eps x defence x seed cell, so the features are
keyed by *content* (a hash of the weights and of the images) and kept in memory and on
disk. A stale entry is impossible by construction: different weights or images, different key.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

from .._io import atomic_save, default_cache_dir
from ..data.base import ImageDataset

log = logging.getLogger(__name__)

CACHE_VERSION = 1


def extractor_digest(model: nn.Module) -> str:
    """sha256 over the state dict (names, dtypes, shapes, bytes), memoised on the module.

    The memo is tagged with the tensors' in-place version counters, so weights changed in
    place after hashing are noticed and re-hashed.
    """
    state = model.state_dict(keep_vars=True)
    versions = tuple(t._version for t in state.values())
    memo = getattr(model, "_poisonprobe_digest", None)
    if memo is not None and memo[0] == versions:
        return memo[1]
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(_bytes(t))
    digest = h.hexdigest()
    object.__setattr__(model, "_poisonprobe_digest", (versions, digest))
    return digest


def _bytes(t: torch.Tensor) -> bytes:
    """Raw bytes of any tensor (0-d and bfloat16 included, which ``numpy()`` refuses)."""
    t = t.detach().cpu().contiguous().reshape(-1)
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


def data_fingerprint(data: ImageDataset | torch.Tensor) -> str:
    """A dataset's own fingerprint, or a content hash of a bare image tensor."""
    if isinstance(data, ImageDataset):
        return data.fingerprint()
    t = data.detach().cpu().contiguous()
    h = hashlib.sha256(f"{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(_bytes(t))
    return h.hexdigest()[:16]


class FeatureCache:
    """``encode(extractor, data)`` -> (N, d) float32 features on CPU, computed at most once.

    ``hits`` / ``misses`` count lookups (``disk_hits`` the hits served from disk), so a run
    can report that its second pass re-used the features. Pass ``cache_dir=False`` for a
    memory-only cache.
    """

    def __init__(self, cache_dir: str | Path | None | bool = None, batch_size: int = 512):
        if cache_dir is False:
            self.dir: Path | None = None
        else:
            root = default_cache_dir() if cache_dir in (None, True) else Path(cache_dir)
            self.dir = root / "features"
        self.batch_size = batch_size
        self.memory: dict[str, torch.Tensor] = {}
        self.hits = 0
        self.misses = 0
        self.disk_hits = 0

    def key(
        self, extractor: nn.Module, data: ImageDataset | torch.Tensor, key_extra: str = ""
    ) -> str:
        """Content key: weights hash + data fingerprint (+ caller's extra, e.g. a layer)."""
        parts = (f"v{CACHE_VERSION}", extractor_digest(extractor), data_fingerprint(data))
        spec = "|".join((*parts, key_extra))
        return hashlib.sha256(spec.encode()).hexdigest()[:32]

    def encode(
        self,
        extractor: nn.Module,
        data: ImageDataset | torch.Tensor,
        key_extra: str = "",
        progress: Callable[..., Iterable] | None = None,
    ) -> torch.Tensor:
        """Features of ``data`` (a dataset or an (N, C, H, W) image tensor)."""
        key = self.key(extractor, data, key_extra)
        if key in self.memory:
            self.hits += 1
            return self.memory[key]
        z = self._load(key)
        if z is not None:
            self.hits += 1
            self.disk_hits += 1
            self.memory[key] = z
            return z
        self.misses += 1
        x = data.x if isinstance(data, ImageDataset) else data
        z = encode_batched(extractor, x, self.batch_size, progress)
        self.memory[key] = z
        self._store(key, z)
        return z

    def _path(self, key: str) -> Path | None:
        return None if self.dir is None else self.dir / f"{key}.pt"

    def _load(self, key: str) -> torch.Tensor | None:
        path = self._path(key)
        if path is None or not path.is_file():
            return None
        try:
            z = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # a damaged cache file is a miss, never a crash
            log.warning("ignoring unreadable feature cache %s (%s)", path, err)
            return None
        return z if torch.is_tensor(z) else None

    def _store(self, key: str, z: torch.Tensor) -> None:
        path = self._path(key)
        if path is None:
            return
        try:
            atomic_save(z, path)
        except OSError as err:
            log.warning("cannot write feature cache %s (%s); keeping it in memory", path, err)


def encode_batched(
    extractor: nn.Module,
    x: torch.Tensor,
    batch_size: int = 512,
    progress: Callable[..., Iterable] | None = None,
) -> torch.Tensor:
    """Encode in eval mode without a graph, on the extractor's device; CPU float32 out."""
    param = next(extractor.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    starts = range(0, x.shape[0], batch_size)
    if progress is not None:
        starts = progress(starts, description="encode features", total=len(starts))
    was_training = extractor.training
    extractor.eval()
    outs = []
    try:
        with torch.no_grad():
            for s in starts:
                outs.append(extractor(x[s : s + batch_size].to(device)).float().cpu())
    finally:
        extractor.train(was_training)
    return torch.cat(outs)
