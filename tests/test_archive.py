"""imagefolder from a tar archive: same arrays as the unpacked folder, hostile members refused."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from poisonprobe.data import load_dataset
from poisonprobe.errors import DataError


def _write_folder(root: Path) -> None:
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 3)):
        for cls in ("cat", "dog"):
            d = root / "set" / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                arr = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{i}.png")


def test_archive_loads_like_the_folder(tmp_path: Path) -> None:
    _write_folder(tmp_path / "src")
    archive = tmp_path / "set.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "set", arcname="set")
    data_root = tmp_path / "root"
    from_folder = load_dataset(f"imagefolder:{tmp_path / 'src' / 'set'}", data_root, download=False)
    from_tar = load_dataset(f"imagefolder:{archive}", data_root, download=False)
    assert np.array_equal(from_folder.train.x.numpy(), from_tar.train.x.numpy())
    assert np.array_equal(from_folder.test.y.numpy(), from_tar.test.y.numpy())
    assert from_tar.train.classes == ["cat", "dog"]
    again = load_dataset(f"imagefolder:{archive}?train=4", data_root, download=False)
    assert len(again.train) == 4
    assert len(list((data_root / "cache" / "extracted").iterdir())) == 1


@pytest.mark.parametrize("name", ["../escape.png", "/abs/escape.png", "a/../../escape.png"])
def test_archive_member_outside_target_is_refused(tmp_path: Path, name: str) -> None:
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo(name)
        payload = b"not an image"
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(DataError, match="outside its folder"):
        load_dataset(f"imagefolder:{archive}", tmp_path / "root", download=False)
    assert not (tmp_path / "escape.png").exists()


def test_archive_symlink_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "link.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("set/cat/x.png")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(DataError, match="link"):
        load_dataset(f"imagefolder:{archive}", tmp_path / "root", download=False)


def test_corrupt_archive_is_a_data_error(tmp_path: Path) -> None:
    archive = tmp_path / "junk.tar.gz"
    archive.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DataError, match="cannot extract"):
        load_dataset(f"imagefolder:{archive}", tmp_path / "root", download=False)
