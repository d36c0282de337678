"""The default run's pre-trained extractors, shipped inside the package.

SSL pre-training amplifies last-bit differences between torch builds, BLAS libraries and
thread counts, so two machines pre-training "the same" extractor get different weights and
different drops. The package therefore ships the extractors the embedded default pre-trains
(``src/poisonprobe/pretrained/``, built by ``tools/build_pretrained.py``), each with its
sha256 and the full pre-training spec (data fingerprint, arch, recipe, augmentations, seed).
A run whose spec equals a shipped one loads that file instead of pre-training; the file is
verified against its sha256 first, and a mismatch is a one-line error, never silently other
weights. ``extractor.pretrain: true`` (or ``poisonprobe run --pretrain``) pre-trains instead.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..domain import InputDomain
from ..errors import CheckpointError
from .archs import Extractor
from .checkpoints import checkpoint_sha256, load_extractor

log = logging.getLogger(__name__)

PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class ShippedExtractor:
    """One shipped file: where it is, its sha256, and the pre-training spec it answers."""

    path: Path
    sha256: str
    spec: dict[str, Any]
    built_with: dict[str, Any]


def shipped_extractors(directory: Path | None = None) -> tuple[ShippedExtractor, ...]:
    """The entries of ``directory/manifest.json`` (default: the package's ``pretrained/``;
    none when the folder has no manifest)."""
    return _read_manifest(Path(directory) if directory is not None else PRETRAINED_DIR)


@functools.lru_cache(maxsize=4)
def _read_manifest(directory: Path) -> tuple[ShippedExtractor, ...]:
    manifest = directory / MANIFEST
    if not manifest.is_file():
        return ()
    try:
        data = json.loads(manifest.read_text())
        return tuple(
            ShippedExtractor(directory / e["file"], e["sha256"], e["spec"], e.get("built_with", {}))
            for e in data["extractors"]
        )
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(
            f"{manifest} is damaged ({type(err).__name__}: {err}); reinstall poisonprobe"
        ) from None


def find_shipped(spec: dict[str, Any], directory: Path | None = None) -> ShippedExtractor | None:
    """The shipped extractor pre-trained with exactly ``spec``, if any."""
    wanted = _canonical(spec)
    for entry in shipped_extractors(directory):
        if _canonical(entry.spec) == wanted:
            return entry
    return None


def _canonical(spec: dict[str, Any]) -> str:
    # JSON round trip: tuples become lists, as they are in the manifest
    return json.dumps(spec, sort_keys=True, default=list)


def verify(entry: ShippedExtractor) -> Path:
    """The file's path after checking its sha256 against the manifest (one-line error if not)."""
    if not entry.path.is_file():
        raise CheckpointError(
            f"shipped extractor {entry.path} is missing; reinstall poisonprobe, "
            "or set extractor.pretrain: true to pre-train instead"
        )
    actual = checkpoint_sha256(entry.path)
    if actual != entry.sha256:
        raise CheckpointError(
            f"shipped extractor {entry.path.name} has sha256 {actual[:16]}…, expected "
            f"{entry.sha256[:16]}…; reinstall poisonprobe, or set extractor.pretrain: true"
        )
    return entry.path


def load_shipped(entry: ShippedExtractor, arch: str, domain: InputDomain) -> Extractor:
    """The verified shipped extractor, in eval mode."""
    ext = load_extractor(verify(entry), arch, domain)
    log.info("shipped pre-trained extractor: %s", entry.path)
    return ext


__all__ = ["PRETRAINED_DIR", "ShippedExtractor", "find_shipped", "load_shipped", "verify"]
