"""Where files go and how they are written: the cache root (``$XDG_CACHE_HOME/poisonprobe``)
and atomic writes (temp file in the same folder + ``os.replace``) with the user's umask.

A killed run never leaves a half-written file under its final name. ``tempfile.mkstemp``
creates its file with mode 0600 whatever the umask; results, reports and caches are not
secret, so every temp file is given the mode a plain ``open(path, "w")`` would have
(``0666 & ~umask``) before it takes the final name.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

_umask_lock = threading.Lock()


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/poisonprobe`` (fallback ``~/.cache/poisonprobe``): every cache
    (pre-trained extractors, features, extracted data) lives under it."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "poisonprobe"


def current_umask() -> int:
    """The process umask (read by setting and restoring it; no other portable way)."""
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file under the current umask."""
    return 0o666 & ~current_umask()


def make_temp(path: Path, suffix: str = ".tmp") -> tuple[int, str]:
    """``mkstemp`` next to ``path`` (same file system, so the rename is atomic), mode fixed to
    the umask's default; returns ``(fd, temp_path)``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    try:
        os.fchmod(fd, default_file_mode())
    except (AttributeError, OSError):  # no fchmod (Windows): keep mkstemp's mode
        pass
    return fd, tmp


def atomic_save(obj: Any, path: Path, saver: Callable[[Any, str], None] | None = None) -> None:
    """Write ``obj`` with ``saver(obj, temp_path)`` (default ``torch.save``), then rename."""
    path = Path(path)
    fd, tmp = make_temp(path)
    os.close(fd)
    try:
        if saver is None:
            import torch

            saver = torch.save
        saver(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes_via(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Open a temp file next to ``path`` in ``mode``, let ``write(fh)`` fill it, fsync, rename."""
    path = Path(path)
    fd, tmp = make_temp(path)
    try:
        with os.fdopen(fd, mode, **({"newline": ""} if "b" not in mode else {})) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
