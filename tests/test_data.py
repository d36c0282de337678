"""Dataset loaders: shapes, ranges, determinism, on-disk formats and their one-line errors."""

from __future__ import annotations

import gzip
import socket
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import example_budget
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from poisonprobe.data import dataset_names, load_dataset
from poisonprobe.data import syndigits as syn
from poisonprobe.data import torchvision_sets as tvs
from poisonprobe.data.digits import DIGITS_DOMAIN
from poisonprobe.data.folder import parse_options, stratified_pick
from poisonprobe.errors import DataError

CIFAR_TARBALL = (
    Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10-jpg.tar.gz"
)


def _check_split(ds, channels: int, size: tuple[int, int]) -> None:
    assert ds.x.dtype == torch.float32 and ds.y.dtype == torch.int64
    assert tuple(ds.x.shape[1:]) == (channels, *size)
    assert ds.x.is_contiguous()
    assert float(ds.x.min()) >= 0.0 and float(ds.x.max()) <= 1.0
    assert torch.isfinite(ds.x).all()
    assert int(ds.y.min()) >= 0 and int(ds.y.max()) < ds.n_classes


def _one_line_error(excinfo: pytest.ExceptionInfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


# ------------------------------------------------------------------------------ registry


def test_registry_lists_every_loader_and_refuses_unknown_names() -> None:
    names = set(dataset_names())
    expected = {"digits", "syndigits", "cifar10", "cifar100", "stl10", "svhn", "mnist"}
    assert expected | {"imagefolder", "npz"} <= names
    with pytest.raises(DataError, match="unknown dataset 'nope'"):
        load_dataset("nope")


# -------------------------------------------------------------------------------- digits


def test_digits_shapes_range_and_levels() -> None:
    s = load_dataset("digits")
    for ds in (s.train, s.test):
        _check_split(ds, 1, (8, 8))
        assert torch.equal(ds.x * 16, (ds.x * 16).round())  # 17 levels
    assert len(s.train) + len(s.test) == 1797
    assert s.domain == DIGITS_DOMAIN and s.train.classes == [str(i) for i in range(10)]
    # the seed is the split seed (config split_seeds): another split, the same one again
    other = load_dataset("digits", seed=3)
    assert not torch.equal(other.test.x, s.test.x)
    assert torch.equal(load_dataset("digits", seed=3).test.x, other.test.x)
    assert torch.bincount(other.test.y).tolist() == torch.bincount(s.test.y).tolist()


# ----------------------------------------------------------------------------- syndigits


def test_syndigits_shape_range_levels_and_balance() -> None:
    s = load_dataset("syndigits")
    assert (len(s.train), len(s.test)) == (syn.DEFAULT_TRAIN, syn.DEFAULT_TEST)
    for ds in (s.train, s.test):
        _check_split(ds, 1, (8, 8))
        assert torch.equal(ds.x * 16, (ds.x * 16).round())  # quantised like digits
        counts = torch.bincount(ds.y, minlength=10)
        assert int(counts.max() - counts.min()) == 0
    assert s.domain == DIGITS_DOMAIN and s.train.classes == [str(i) for i in range(10)]


def test_syndigits_is_reproducible_and_ignores_the_run_seed() -> None:
    a = load_dataset("syndigits:300", seed=0)
    b = load_dataset("syndigits:300", seed=7)
    syn.generate.cache_clear()  # force a fresh generation
    c = load_dataset("syndigits:300", seed=0)
    for other in (b, c):
        assert a.train.x.numpy().tobytes() == other.train.x.numpy().tobytes()
        assert a.test.x.numpy().tobytes() == other.test.x.numpy().tobytes()
        assert torch.equal(a.train.y, other.train.y)
    assert a.train.fingerprint() == c.train.fingerprint()


def test_syndigits_spec_sizes_and_generation_seed() -> None:
    small = load_dataset("syndigits:205")
    assert len(small.train) == 205
    counts = torch.bincount(small.train.y, minlength=10)
    assert int(counts.max() - counts.min()) <= 1
    # the test split does not depend on the training size
    assert torch.equal(small.test.x, load_dataset("syndigits").test.x)
    assert torch.equal(load_dataset("syndigits:test=100&train=205").train.x, small.train.x)
    other = load_dataset("syndigits:205?seed=1&test=100")
    assert len(other.test) == 100 and not torch.equal(other.train.x, small.train.x)
    for bad in (
        "syndigits:abc",
        "syndigits:5",
        "syndigits:100?colour=red",
        "syndigits:seed=",
        "syndigits:seed=x",
    ):
        with pytest.raises(DataError):
            load_dataset(bad)


def test_syndigits_resembles_digits_but_is_a_different_distribution() -> None:
    s, d = load_dataset("syndigits"), load_dataset("digits")
    # comparable: same ink level, strokes spanning the full height like digits
    assert abs(float(s.train.x.mean()) - float(d.train.x.mean())) < 0.05
    rows_with_ink = (s.train.x[:, 0] > 0).any(dim=2).sum(dim=1).float()
    assert float(rows_with_ink.mean()) > 7.5
    # distinct: no synthetic image coincides with a handwritten one, and the class means differ
    dist = torch.cdist(s.test.x.reshape(len(s.test), -1), d.train.x.reshape(len(d.train), -1))
    assert float(dist.min()) > 0.0
    for c in range(10):
        gap = s.train.x[s.train.y == c].mean(0) - d.train.x[d.train.y == c].mean(0)
        assert float(gap.abs().max()) > 0.05


def test_syndigits_uses_only_fonts_that_render_digits() -> None:
    names = {p.name for p in syn.digit_fonts()}
    assert len(names) >= 10
    assert {"DejaVuSans.ttf", "cmr10.ttf", "STIXGeneral.ttf"} <= names
    # symbol fonts map '0'..'9' to other glyphs; the fallback font draws one box for all
    assert not names & {"cmex10.ttf", "cmsy10.ttf", "LastResortHE-Regular.ttf"}


# --------------------------------------------------------------------------- imagefolder


def _write_png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _make_split_folder(base: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    written = {}
    for split, n in (("train", 4), ("test", 2)):
        for cls in ("cat", "ant", "bee"):
            for i in range(n):
                arr = rng.integers(0, 256, size=(5, 6, 3), dtype=np.uint8)  # H=5, W=6
                rel = f"{split}/{cls}/{i:02d}.png"
                _write_png(base / rel, arr)
                written[rel] = arr
    return written


def test_imagefolder_train_test_layout_round_trips_pixels(tmp_path: Path) -> None:
    written = _make_split_folder(tmp_path / "imgs", np.random.default_rng(0))
    s = load_dataset(f"imagefolder:{tmp_path / 'imgs'}", root=tmp_path / "root")
    assert s.train.classes == ["ant", "bee", "cat"]
    assert (len(s.train), len(s.test)) == (12, 6)
    _check_split(s.train, 3, (5, 6))
    _check_split(s.test, 3, (5, 6))
    # files are read in sorted order: first training image is train/ant/00.png
    expected = torch.from_numpy(written["train/ant/00.png"]).permute(2, 0, 1).float() / 255
    assert torch.equal(s.train.x[0], expected)
    assert s.train.y.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert s.domain.shape == (3, 5, 6) and len(s.domain.mean) == 3
    # the decoded arrays are cached; a second load gives identical tensors
    assert list((tmp_path / "root" / "cache" / "imagefolder").glob("imgs-*.npz"))
    again = load_dataset(f"imagefolder:{tmp_path / 'imgs'}", root=tmp_path / "root")
    assert torch.equal(again.train.x, s.train.x) and again.domain == s.domain


def test_imagefolder_cache_notices_changed_files(tmp_path: Path) -> None:
    _make_split_folder(tmp_path / "imgs", np.random.default_rng(1))
    spec = f"imagefolder:{tmp_path / 'imgs'}"
    before = load_dataset(spec, root=tmp_path)
    _write_png(tmp_path / "imgs/train/ant/00.png", np.zeros((5, 6, 3), dtype=np.uint8))
    after = load_dataset(spec, root=tmp_path)
    assert float(after.train.x[0].abs().sum()) == 0.0
    assert not torch.equal(before.train.x[0], after.train.x[0])


def test_imagefolder_single_folder_is_split_80_20_deterministically(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    for cls in ("a", "b"):
        for i in range(10):
            _write_png(tmp_path / "grey" / cls / f"{i}.png", rng.integers(0, 256, (4, 4), np.uint8))
    s = load_dataset(f"imagefolder:{tmp_path / 'grey'}", root=tmp_path / "r1")
    t = load_dataset(f"imagefolder:{tmp_path / 'grey'}", root=tmp_path / "r2", seed=9)
    assert (len(s.train), len(s.test)) == (16, 4)
    assert torch.bincount(s.test.y).tolist() == [2, 2]
    _check_split(s.train, 1, (4, 4))
    assert torch.equal(s.train.x, t.train.x) and torch.equal(s.test.x, t.test.x)
    train_set = {x.numpy().tobytes() for x in s.train.x}
    assert not any(x.numpy().tobytes() in train_set for x in s.test.x)


def test_imagefolder_caps_are_stratified(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    for cls, n in (("a", 20), ("b", 10)):
        for i in range(n):
            _write_png(tmp_path / "d" / cls / f"{i}.png", rng.integers(0, 256, (3, 3, 3), np.uint8))
    s = load_dataset(f"imagefolder:{tmp_path / 'd'}?train=12&test=3", root=tmp_path)
    assert torch.bincount(s.train.y).tolist() == [8, 4]
    assert torch.bincount(s.test.y).tolist() == [2, 1]
    only_test = load_dataset(f"imagefolder:{tmp_path / 'd'}?test=3", root=tmp_path)
    assert torch.equal(only_test.test.x, s.test.x)  # capping train leaves the test subset alone
    with pytest.raises(DataError, match="unknown"):
        load_dataset(f"imagefolder:{tmp_path / 'd'}?size=3", root=tmp_path)
    with pytest.raises(DataError, match="positive integer"):
        load_dataset(f"imagefolder:{tmp_path / 'd'}?train=0", root=tmp_path)


def test_imagefolder_promotes_grey_images_in_a_colour_set(tmp_path: Path) -> None:
    _write_png(tmp_path / "m/x/0.png", np.full((4, 4, 3), 200, np.uint8))
    _write_png(tmp_path / "m/x/1.png", np.full((4, 4), 100, np.uint8))
    _write_png(tmp_path / "m/y/0.png", np.full((4, 4), 50, np.uint8))
    _write_png(tmp_path / "m/y/1.png", np.full((4, 4), 10, np.uint8))
    s = load_dataset(f"imagefolder:{tmp_path / 'm'}", root=tmp_path)
    assert s.domain.channels == 3
    grey = torch.cat([s.train.x, s.test.x])
    assert any(torch.equal(x, torch.full((3, 4, 4), 100 / 255)) for x in grey)


def test_imagefolder_errors_name_the_problem(tmp_path: Path) -> None:
    _write_png(tmp_path / "s/a/0.png", np.zeros((4, 4, 3), np.uint8))
    _write_png(tmp_path / "s/a/1.png", np.zeros((4, 5, 3), np.uint8))
    _write_png(tmp_path / "s/b/0.png", np.zeros((4, 4, 3), np.uint8))
    _write_png(tmp_path / "s/b/1.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DataError) as err:
        load_dataset(f"imagefolder:{tmp_path / 's'}", root=tmp_path)
    msg = _one_line_error(err)
    assert "1.png" in msg and "5x4" in msg and "4x4" in msg
    (tmp_path / "bad/a").mkdir(parents=True)
    (tmp_path / "bad/a/0.png").write_bytes(b"not a png")
    (tmp_path / "bad/a/1.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read image"):
        load_dataset(f"imagefolder:{tmp_path / 'bad'}", root=tmp_path)
    with pytest.raises(DataError, match="not a directory"):
        load_dataset(f"imagefolder:{tmp_path / 'missing'}", root=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        load_dataset(f"imagefolder:{tmp_path / 'empty'}", root=tmp_path)
    with pytest.raises(DataError, match="needs a path"):
        load_dataset("imagefolder", root=tmp_path)


def test_imagefolder_test_classes_must_exist_in_train(tmp_path: Path) -> None:
    _write_png(tmp_path / "t/train/a/0.png", np.zeros((2, 2), np.uint8))
    _write_png(tmp_path / "t/test/a/0.png", np.zeros((2, 2), np.uint8))
    _write_png(tmp_path / "t/test/zebra/0.png", np.zeros((2, 2), np.uint8))
    with pytest.raises(DataError, match="zebra"):
        load_dataset(f"imagefolder:{tmp_path / 't'}", root=tmp_path)


@pytest.mark.skipif(not CIFAR_TARBALL.is_file(), reason="shared CIFAR-10 JPEG tarball absent")
def test_imagefolder_on_real_cifar10_jpegs(tmp_path: Path) -> None:
    per_class: dict[str, int] = {}
    with tarfile.open(CIFAR_TARBALL, "r:gz") as tar:
        for member in tar:  # the test split comes first in the archive: stop early
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 3 or parts[0] != "test":
                continue
            if per_class.get(parts[1], 0) >= 20:
                if len(per_class) == 10 and min(per_class.values()) >= 20:
                    break
                continue
            per_class[parts[1]] = per_class.get(parts[1], 0) + 1
            dest = tmp_path / "cifar" / parts[1] / parts[2]
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(tar.extractfile(member).read())
    s = load_dataset(f"imagefolder:{tmp_path / 'cifar'}", root=tmp_path)
    assert s.train.classes[:3] == ["airplane", "automobile", "bird"] and s.train.n_classes == 10
    assert (len(s.train), len(s.test)) == (160, 40)
    _check_split(s.train, 3, (32, 32))
    assert 0.05 < float(s.train.x.std()) and 0.3 < s.domain.mean[0] < 0.7


# ----------------------------------------------------------------------------------- npz


def test_npz_uint8_nhwc_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    x_tr = rng.integers(0, 256, (12, 5, 5, 3), dtype=np.uint8)
    x_te = rng.integers(0, 256, (4, 5, 5, 3), dtype=np.uint8)
    path = tmp_path / "d.npz"
    np.savez(
        path,
        x_train=x_tr,
        y_train=np.arange(12) % 3,
        x_test=x_te,
        y_test=np.arange(4) % 3,
        classes=np.array(["r", "g", "b"]),
    )
    s = load_dataset(f"npz:{path}")
    _check_split(s.train, 3, (5, 5))
    assert torch.equal(s.train.x, torch.from_numpy(x_tr).permute(0, 3, 1, 2).float() / 255)
    assert s.train.classes == ["r", "g", "b"] and s.train.y.tolist() == [0, 1, 2] * 4
    exact = (x_tr / 255.0).transpose(3, 0, 1, 2).reshape(3, -1)
    assert np.allclose(s.domain.mean, exact.mean(1), atol=1e-4)
    assert np.allclose(s.domain.std, exact.std(1), atol=1e-4)


def test_npz_float_nchw_and_grey_nhw(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    x = rng.random((6, 1, 7, 7)).astype(np.float32)
    path = tmp_path / "f.npz"
    np.savez(
        path,
        x_train=x,
        y_train=np.arange(6) % 2,
        x_test=x[:2],
        y_test=np.array([0, 1]),
        mean=np.array([0.25]),
        std=np.array([0.5]),
    )
    s = load_dataset(f"npz:{path}")
    assert torch.equal(s.train.x, torch.from_numpy(x))
    assert s.domain.mean == (0.25,) and s.domain.std == (0.5,) and s.train.classes == ["0", "1"]
    np.savez(
        path,
        x_train=(x[:, 0] * 255).astype(np.uint8),
        y_train=np.arange(6) % 2,
        x_test=(x[:2, 0] * 255).astype(np.uint8),
        y_test=np.array([0, 1]),
    )
    _check_split(load_dataset(f"npz:{path}").train, 1, (7, 7))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda d: d.pop("y_test"), "lacks y_test"),
        (lambda d: d["x_train"].__setitem__((0, 0, 0, 0), np.nan), "NaN"),
        (lambda d: d.__setitem__("x_train", d["x_train"] * 255), "divide by 255"),
        (lambda d: d.__setitem__("x_train", d["x_train"][:, 0, 0, 0]), "expected"),
        (lambda d: d.__setitem__("y_train", d["y_train"][:3]), "there are 6 images"),
        (lambda d: d.__setitem__("x_test", d["x_test"][:, :, :3]), "one size"),
        (lambda d: d.__setitem__("classes", np.array([{"a": 1}], dtype=object)), "objects"),
    ],
)
def test_npz_errors_are_one_line_with_a_fix(tmp_path: Path, change, match: str) -> None:
    rng = np.random.default_rng(6)
    arrays = {
        "x_train": rng.random((6, 1, 4, 4)).astype(np.float32),
        "y_train": np.arange(6) % 2,
        "x_test": rng.random((2, 1, 4, 4)).astype(np.float32),
        "y_test": np.array([0, 1]),
    }
    change(arrays)
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=match) as err:
        load_dataset(f"npz:{path}")
    _one_line_error(err)


def test_npz_missing_file_and_garbage(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"npz:{tmp_path / 'nope.npz'}")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(DataError, match="not an .npz"):
        load_dataset(f"npz:{tmp_path / 'junk.npz'}")


# --------------------------------------------------------------------- torchvision (offline)


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "stl10", "svhn", "mnist"])
def test_torchvision_sets_offline_say_where_to_place_files(tmp_path: Path, name: str) -> None:
    with pytest.raises(DataError) as err:
        load_dataset(name, root=tmp_path, download=False)
    msg = _one_line_error(err)
    assert str(tmp_path / name) in msg and "place" in msg and "imagefolder:PATH" in msg
    hint = {
        "cifar10": "cifar-10-python.tar.gz",
        "cifar100": "cifar-100-python.tar.gz",
        "stl10": "stl10_binary.tar.gz",
        "svhn": "train_32x32.mat",
        "mnist": "train-images-idx3-ubyte.gz",
    }[name]
    assert hint in msg


def test_torchvision_partial_files_are_called_incomplete(tmp_path: Path) -> None:
    (tmp_path / "cifar10" / "cifar-10-batches-py").mkdir(parents=True)
    (tmp_path / "cifar10" / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"x")
    with pytest.raises(DataError, match="cifar10 is incomplete or corrupted on disk") as err:
        load_dataset("cifar10", root=tmp_path, download=False)
    _one_line_error(err)


def test_torchvision_download_without_network_fails_fast(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(tvs, "network_reachable", lambda url, timeout=0: False)
    with pytest.raises(DataError, match=r"cannot be downloaded \(offline\)") as err:
        load_dataset("cifar10", root=tmp_path, download=True)
    _one_line_error(err)


def test_torchvision_truncated_archive_is_reported(tmp_path: Path) -> None:
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "cifar-10-python.tar.gz").write_bytes(b"truncated")
    with pytest.raises(DataError, match="cannot be extracted") as err:
        load_dataset("cifar10", root=tmp_path, download=False)
    _one_line_error(err)


def test_network_probe_uses_the_configured_proxy(monkeypatch) -> None:
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    with socket.socket() as server:  # a local "proxy": no real network involved
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert tvs.network_reachable(f"http://127.0.0.1:{port}/file", timeout=2)
        monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{port}")
        assert tvs.network_reachable("https://host.invalid/file", timeout=2)
    monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{port}")  # closed now
    assert not tvs.network_reachable("https://host.invalid/file", timeout=2)


def _idx(arr: np.ndarray) -> bytes:
    """The IDX format MNIST ships in: magic (uint8, ndim), big-endian dims, raw bytes."""
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def test_mnist_archives_placed_by_hand_are_extracted_and_loaded(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    raw = tmp_path / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    parts = {"train": 30, "t10k": 10}
    images = {k: rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) for k, n in parts.items()}
    for k, n in parts.items():
        (raw / f"{k}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(images[k])))
        (raw / f"{k}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(np.arange(n) % 10)))
    s = load_dataset("mnist", root=tmp_path, download=False)
    _check_split(s.train, 1, (28, 28))
    assert (len(s.train), len(s.test)) == (30, 10) and s.train.classes[3] == "3"
    assert torch.equal(s.test.x[:, 0], torch.from_numpy(images["t10k"]).float() / 255)
    capped = load_dataset("mnist:train=20&test=10", root=tmp_path, download=False)
    assert torch.bincount(capped.train.y).tolist() == [2] * 10
    with pytest.raises(DataError, match="takes no argument"):
        load_dataset("mnist:foo", root=tmp_path, download=False)


# --------------------------------------------------------------------------------- helpers


def test_parse_options() -> None:
    assert parse_options(None, ("a",), "x") == ("", {})
    assert parse_options("/p/q", ("a",), "x") == ("/p/q", {})
    assert parse_options("/p?a=1&b=2", ("a", "b"), "x") == ("/p", {"a": "1", "b": "2"})
    with pytest.raises(DataError, match="unknown"):
        parse_options("/p?c=1", ("a",), "x")


@settings(max_examples=example_budget(40), deadline=None)
@given(
    counts=st.lists(st.integers(1, 30), min_size=1, max_size=6),
    frac=st.floats(0.0, 1.0),
)
def test_stratified_pick_is_proportional(counts: list[int], frac: float) -> None:
    labels = np.repeat(np.arange(len(counts)), counts)
    cap = max(len(counts), round(frac * len(labels)))
    idx = stratified_pick(labels, cap)
    assert len(idx) == min(cap, len(labels)) and len(set(idx.tolist())) == len(idx)
    got = np.bincount(labels[idx], minlength=len(counts))
    assert (got >= 1).all() and (got <= counts).all()
    if cap < len(labels):  # within 1 of the exact share, plus what tiny classes were lent
        exact = cap * np.array(counts) / len(labels)
        assert np.abs(got - exact).max() < 1 + (exact < 1).sum() + 1e-9
