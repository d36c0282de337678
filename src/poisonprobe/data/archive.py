"""Image folders shipped as tar archives: extracted once, safely, into the data cache.

Research datasets travel as ``.tar.gz`` files (the CIFAR-10 JPEG copy, for one). Users should
not have to unpack them by hand, and an archive must never write outside its target: members
with absolute paths, ``..`` components, links or device files are refused.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from ..errors import DataError, error_gist

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _safe_members(tar: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    members = []
    for m in tar.getmembers():
        parts = PurePosixPath(m.name).parts
        if m.name.startswith("/") or ".." in parts:
            raise DataError(f"{archive}: member {m.name!r} would extract outside its folder")
        if not (m.isfile() or m.isdir()):
            raise DataError(f"{archive}: member {m.name!r} is a link or device file; refused")
        members.append(m)
    return members


def extract_archive(archive: Path, root: Path) -> Path:
    """Extract ``archive`` under ``ROOT/cache/extracted`` (keyed by path, size and mtime).

    Returns the folder holding the images: the archive's single top-level folder when it has
    one, else the extraction folder itself. A finished extraction is reused; a half-finished
    one is never seen (extract to a temp folder, then rename).
    """
    st = archive.stat()
    key = hashlib.sha256(f"{archive.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    stem = archive.name.split(".")[0] or "archive"
    dest = root / "cache" / "extracted" / f"{stem}-{key.hexdigest()[:16]}"
    if not dest.is_dir():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{stem}.", dir=dest.parent))
        try:
            with tarfile.open(archive) as tar:
                for m in _safe_members(tar, archive):
                    target = tmp / m.name
                    if m.isdir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    src = tar.extractfile(m)
                    if src is None:
                        continue
                    with src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out)
            os.replace(tmp, dest)
        except (tarfile.TarError, EOFError, OSError) as err:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(err, OSError) and dest.is_dir():  # another process won the race
                return _content_root(dest)
            raise DataError(
                f"cannot extract {archive} ({error_gist(err)}); check the file is a tar archive"
            ) from err
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return _content_root(dest)


def _content_root(folder: Path) -> Path:
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return folder
