"""User data on disk: ``imagefolder:PATH`` (one folder per class) and ``npz:PATH`` arrays.

These are the two ways to bring data the built-in loaders do not know. Both end in the same
place as every loader: float32 (N, C, H, W) in [0, 1] with an ``InputDomain`` whose
normalisation is measured on the training split.

``imagefolder:PATH[?train=N&test=M]``
    ``PATH/train/<class>/*`` and ``PATH/test/<class>/*``, or ``PATH/<class>/*`` which is split
    80/20 per class (fixed, whatever the run seed). ``train``/``test`` cap each split to a
    stratified, deterministic subset. Decoded images are cached as uint8 arrays under
    ``ROOT/cache/imagefolder`` keyed by path, caps and every file's size and mtime.
    PATH may also be a ``.tar``/``.tar.gz`` of either layout, extracted once into the cache.
``npz:PATH``
    keys ``x_train, y_train, x_test, y_test`` (uint8 0..255 or float in [0, 1]; NHWC, NCHW or
    NHW), optional ``classes``, ``mean``, ``std``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from .._io import atomic_write_bytes_via
from ..domain import InputDomain, channel_stats
from ..errors import DataError
from .base import DatasetSplits, ImageDataset, class_names, register_dataset

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)
TEST_FRACTION = 0.2
SPLIT_SEED = 0  # fixed: splits and caps must not change with the run seed
_CACHE_VERSION = 1
_GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})
# torchvision decodes JPEGs faster than PIL; PNGs go to PIL: torchvision 0.29's PNG decoder
# segfaults on some corrupt files (a damaged IDAT), which would kill the whole run
_FAST_EXTENSIONS = frozenset({".jpg", ".jpeg"})


# ----------------------------------------------------------------------------- shared helpers


def parse_options(
    arg: str | None, allowed: tuple[str, ...], what: str
) -> tuple[str, dict[str, str]]:
    """Split a spec argument ``HEAD?key=value&key=value`` into HEAD and its options.

    Specs are single strings (config files, CLI), so options ride in a URL-like query.
    Unknown keys are refused rather than ignored, so a typo cannot silently load the
    full dataset.
    """
    if not arg:
        return "", {}
    head, sep, query = arg.rpartition("?")
    if not sep:
        return arg, {}
    opts: dict[str, str] = {}
    for part in filter(None, query.split("&")):
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq or not value.strip():
            raise DataError(f"{what} option {part!r} has no value; write it as key=value")
        if key not in allowed:
            raise DataError(f"{what} option {key!r} is unknown; use one of: {', '.join(allowed)}")
        opts[key] = value.strip()
    return head, opts


def int_option(opts: dict[str, str], key: str, what: str) -> int | None:
    """A positive integer option such as ``train=5000``, or None when absent."""
    if key not in opts:
        return None
    try:
        value = int(opts[key])
    except ValueError:
        value = 0
    if value < 1:
        raise DataError(f"{what} {key}={opts[key]!r} is not a positive integer; e.g. {key}=1000")
    return value


def uint8_to_float(x: np.ndarray, channels_last: bool) -> torch.Tensor:
    """uint8 images -> contiguous float32 (N, C, H, W) in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(x))
    if channels_last:
        t = t.permute(0, 3, 1, 2)
    return t.contiguous().to(torch.float32).div_(255.0)


def stratified_pick(labels: np.ndarray, cap: int, stream: int = 0) -> np.ndarray:
    """Sorted indices of a class-proportional subset of size ``cap`` (largest remainder).

    Deterministic: which images are kept depends only on the labels, ``cap`` and ``stream``
    (one per split, so capping the training split never changes the test subset).
    """
    rng = np.random.default_rng([SPLIT_SEED, stream])
    classes, counts = np.unique(labels, return_counts=True)
    if cap >= len(labels):
        return np.arange(len(labels))
    if cap < len(classes):
        raise DataError(
            f"a cap of {cap} images cannot cover the {len(classes)} classes; "
            f"use at least {len(classes)}"
        )
    exact = cap * counts / counts.sum()
    quota = np.floor(exact).astype(int)
    order = np.lexsort((np.arange(len(classes)), -(exact - quota)))
    quota[order[: cap - quota.sum()]] += 1
    for i in np.flatnonzero(quota == 0):  # every class keeps at least one image
        quota[i] = 1
        quota[np.argmax(quota)] -= 1
    picked = [
        np.flatnonzero(labels == c)[rng.permutation(n)[:q]]
        for c, n, q in zip(classes, counts, quota, strict=True)
    ]
    return np.sort(np.concatenate(picked))


# ------------------------------------------------------------------------------- imagefolder


def _scan_images(folder: Path) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime_ns) of every image file under ``folder``, sorted."""
    found: list[tuple[str, int, int]] = []
    prefix = len(str(folder)) + 1
    stack = [str(folder)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir():
                    stack.append(entry.path)
                elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
                    st = entry.stat()
                    found.append((entry.path[prefix:], st.st_size, st.st_mtime_ns))
    found.sort()
    return found


def _class_dirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _list_split(folder: Path, classes: list[str]) -> tuple[list[tuple[str, int, int]], np.ndarray]:
    """Files (relative to ``folder``) and labels for the class folders of one split."""
    files: list[tuple[str, int, int]] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        sub = folder / name
        if not sub.is_dir():
            continue
        found = _scan_images(sub)
        if not found:
            raise DataError(
                f"class folder {sub} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))}); "
                "add images or remove the folder"
            )
        files += [(f"{name}/{rel}", size, mtime) for rel, size, mtime in found]
        labels += [label] * len(found)
    return files, np.asarray(labels, dtype=np.int64)


def _decode(path: Path) -> np.ndarray:
    """One image as uint8 (C, H, W) with C = 1 (grey) or 3 (colour).

    JPEGs go through torchvision's decoder (about 2.5x faster than PIL on 32x32 CIFAR
    JPEGs, identical pixels in our checks: both use libjpeg-turbo); anything it does not give
    as plain 8-bit grey/RGB (CMYK, alpha) and every other format (PNG included, see
    ``_FAST_EXTENSIONS``) goes through PIL.
    """
    if path.suffix.lower() in _FAST_EXTENSIONS:
        try:
            from torchvision.io import ImageReadMode, decode_image

            with open(path, "rb") as fh:
                data = torch.frombuffer(bytearray(fh.read()), dtype=torch.uint8)
            t = decode_image(data, mode=ImageReadMode.UNCHANGED)
            if t.dtype == torch.uint8 and t.shape[0] in (1, 3):
                return t.numpy()
        except Exception:  # fall through to PIL, which reports real damage
            pass
    from PIL import Image

    with Image.open(path) as img:
        if img.mode.startswith("I;16"):  # 16-bit grey: keep the top byte, do not clip
            arr = (np.asarray(img).astype(np.uint16) >> 8).astype(np.uint8)
        else:
            arr = np.asarray(img.convert("L" if img.mode in _GREY_MODES else "RGB"), np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _decode_chunk(paths: list[Path]) -> list[np.ndarray | Exception]:
    out: list[np.ndarray | Exception] = []
    for p in paths:
        try:
            out.append(_decode(p))
        except Exception as err:  # reported in file order by the caller
            out.append(err)
    return out


def _default_workers(first: Path) -> int:
    """Decoder threads worth using, judged from the size of the first image.

    Measured on a 16-core host: for 32x32 JPEGs the per-file Python work holds the GIL and
    threads only add contention (30k files: 1.6 s with 1 thread, 9.2 s with 8), while
    224x224 JPEGs decode 2.6x faster with 4 threads than with 1; more than 4 never helped.
    """
    probe = _decode_chunk([first])[0]
    if isinstance(probe, Exception):
        return 1
    pixels = probe.shape[1] * probe.shape[2]
    return max(1, min(os.cpu_count() or 1, 4, 1 + pixels // 4096))


def decode_images(paths: list[Path], workers: int | None = None) -> np.ndarray:
    """Decode equally sized images, with threads when they pay off, into uint8 (N, C, H, W).

    Threads rather than processes: the decoders release the GIL for the pixel work and
    no arrays need pickling back. Grey images are promoted to RGB when the set also holds
    colour images (ImageNet-style folders often mix a few in).
    """
    if not paths:
        raise DataError("no image files to decode; check the folder and the caps")
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its decoders with a warning per call; when they are
        # removed the import fails and _decode falls back to PIL.
        warnings.filterwarnings("ignore", message=".*image decoding", category=DeprecationWarning)
        workers = workers or _default_workers(paths[0])
        if workers == 1:
            images = _decode_chunk(paths)
        else:
            chunk = max(16, math.ceil(len(paths) / (workers * 8)))
            pieces = [paths[i : i + chunk] for i in range(0, len(paths), chunk)]
            with ThreadPoolExecutor(max_workers=workers) as pool:
                images = [img for part in pool.map(_decode_chunk, pieces) for img in part]
    arrays: list[np.ndarray] = []
    for p, img in zip(paths, images, strict=True):
        if isinstance(img, Exception):
            raise DataError(f"cannot read image {p} ({type(img).__name__}); fix or delete it")
        arrays.append(img)
    expected = arrays[0].shape[1:]
    colour = False
    for p, img in zip(paths, arrays, strict=True):
        if img.shape[1:] != expected:
            raise DataError(
                f"image {p} is {img.shape[2]}x{img.shape[1]} (WxH) but {paths[0]} is "
                f"{expected[1]}x{expected[0]}; resize all images to {expected[1]}x{expected[0]}"
            )
        colour = colour or img.shape[0] == 3
    out = np.empty((len(arrays), 3 if colour else 1, *expected), dtype=np.uint8)
    for i, img in enumerate(arrays):
        out[i] = img  # broadcasting promotes a (1, H, W) grey image to RGB
    return out


def _cache_path(root: Path, folder: Path, key_parts: dict) -> Path:
    key = hashlib.sha256(json.dumps(key_parts, sort_keys=True).encode()).hexdigest()[:20]
    return root / "cache" / "imagefolder" / f"{folder.name or 'data'}-{key}.npz"


_CACHE_KEYS = ("x_train", "y_train", "x_test", "y_test", "classes", "mean", "std")


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in _CACHE_KEYS}
    except Exception:  # missing or damaged: rebuild it
        return None


def _write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Atomic write (temp file + rename); an unwritable cache only costs speed."""
    try:
        atomic_write_bytes_via(path, lambda fh: np.savez(fh, **arrays))
    except OSError:
        pass


def _split_single(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class 80/20 split with a fixed seed (at least one test image if a class has 2)."""
    rng = np.random.default_rng(SPLIT_SEED)
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n_test = round(len(idx) * TEST_FRACTION)
        if len(idx) >= 2:
            n_test = min(max(n_test, 1), len(idx) - 1)
        perm = idx[rng.permutation(len(idx))]
        test.append(perm[:n_test])
        train.append(perm[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _list_folder(folder: Path) -> tuple[list[str], list, np.ndarray, list, np.ndarray]:
    """Classes and (files, labels) of both splits, for either layout."""
    if (folder / "train").is_dir() and (folder / "test").is_dir():
        classes = _class_dirs(folder / "train")
        extra = sorted(set(_class_dirs(folder / "test")) - set(classes))
        if extra:
            raise DataError(
                f"{folder / 'test'} has class folders {extra} missing from {folder / 'train'}; "
                "use the same class folders in both"
            )
        tr_files, tr_y = _list_split(folder / "train", classes)
        te_files, te_y = _list_split(folder / "test", classes)
        tr_files = [("train/" + f, s, m) for f, s, m in tr_files]
        te_files = [("test/" + f, s, m) for f, s, m in te_files]
    else:
        classes = _class_dirs(folder)
        files, labels = _list_split(folder, classes)
        tr_idx, te_idx = _split_single(labels) if files else (np.zeros(0, int), np.zeros(0, int))
        tr_files, tr_y = [files[i] for i in tr_idx], labels[tr_idx]
        te_files, te_y = [files[i] for i in te_idx], labels[te_idx]
    if not classes or not tr_files:
        raise DataError(
            f"{folder} has no class folders with images; expected PATH/<class>/*.png or "
            "PATH/train/<class>/ and PATH/test/<class>/"
        )
    if not te_files:
        raise DataError(
            f"{folder} yields no test images; add images to test/<class>/ or use at least "
            "2 images per class"
        )
    return classes, tr_files, tr_y, te_files, te_y


# long: reads, validates and caches in one pass; its error messages need the local names
def load_image_folder(
    path: Path, root: Path, train_cap: int | None = None, test_cap: int | None = None
) -> DatasetSplits:
    """Load an image folder (see module docstring), using the decoded-array cache."""
    from .archive import extract_archive, is_archive

    folder = path.expanduser()
    if is_archive(folder):
        folder = extract_archive(folder, root)
    if not folder.is_dir():
        raise DataError(
            f"imagefolder path {folder} is not a directory or tar archive; "
            "give PATH/<class>/*.png or a .tar.gz of that layout"
        )
    folder = folder.resolve()
    classes, tr_files, tr_y, te_files, te_y = _list_folder(folder)
    if train_cap is not None:
        keep = stratified_pick(tr_y, train_cap, stream=0)
        tr_files, tr_y = [tr_files[i] for i in keep], tr_y[keep]
    if test_cap is not None:
        keep = stratified_pick(te_y, test_cap, stream=1)
        te_files, te_y = [te_files[i] for i in keep], te_y[keep]

    key = {
        "v": _CACHE_VERSION,
        "path": str(folder),
        "classes": classes,
        "train": [tr_files, tr_y.tolist()],
        "test": [te_files, te_y.tolist()],
    }
    cache = _cache_path(root, folder, key)
    arrays = _read_cache(cache)
    if arrays is None:
        x_tr = decode_images([folder / f for f, _, _ in tr_files])
        x_te = decode_images([folder / f for f, _, _ in te_files])
        if x_tr.shape[2:] != x_te.shape[2:]:
            raise DataError(
                f"test image {folder / te_files[0][0]} is {x_te.shape[3]}x{x_te.shape[2]} but "
                f"training images are {x_tr.shape[3]}x{x_tr.shape[2]}; resize to one size"
            )
        if x_tr.shape[1] != x_te.shape[1]:  # one split grey, the other colour
            x_tr, x_te = (np.repeat(a, 3, axis=1) if a.shape[1] == 1 else a for a in (x_tr, x_te))
        mean, std = channel_stats(torch.from_numpy(x_tr))
        arrays = {
            "x_train": x_tr,
            "y_train": tr_y,
            "x_test": x_te,
            "y_test": te_y,
            "classes": np.asarray(classes, dtype=str),
            "mean": np.asarray(mean),
            "std": np.asarray(std),
        }
        _write_cache(cache, arrays)
    c, h, w = arrays["x_train"].shape[1:]
    domain = InputDomain(
        channels=c,
        height=h,
        width=w,
        mean=tuple(float(m) for m in arrays["mean"]),
        std=tuple(float(s) for s in arrays["std"]),
    )
    names = [str(s) for s in arrays["classes"].tolist()]
    name = f"imagefolder:{folder.name}"
    return DatasetSplits(
        train=ImageDataset(
            uint8_to_float(arrays["x_train"], channels_last=False),
            torch.from_numpy(arrays["y_train"].astype(np.int64)),
            names,
            domain,
            name,
        ),
        test=ImageDataset(
            uint8_to_float(arrays["x_test"], channels_last=False),
            torch.from_numpy(arrays["y_test"].astype(np.int64)),
            names,
            domain,
            name,
        ),
    )


@register_dataset(
    "imagefolder",
    "your images, one folder per class: imagefolder:PATH[?train=N&test=M] "
    "(PATH/train|test/<class>/ or PATH/<class>/ split 80/20)",
)
def load_imagefolder(arg: str | None, root: Path, seed: int, download: bool) -> DatasetSplits:
    """Registry entry for ``imagefolder:PATH``; the run seed does not change the data."""
    path, opts = parse_options(arg, allowed=("train", "test"), what="imagefolder")
    if not path:
        raise DataError("imagefolder needs a path: imagefolder:PATH (one folder per class)")
    return load_image_folder(
        Path(path),
        root,
        train_cap=int_option(opts, "train", "imagefolder"),
        test_cap=int_option(opts, "test", "imagefolder"),
    )


# ----------------------------------------------------------------------------------------- npz

_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
_MAX_CLASSES = 100_000  # labels beyond this are a mistake (ids, not class indices)


def _npz_images(x: np.ndarray, key: str, path: Path) -> tuple[np.ndarray, bool]:
    """Validate one image array; returns it as (N, C, H, W) or (N, H, W, C) + channels_last."""
    if x.ndim == 3:
        return x[:, None], False
    if x.ndim != 4:
        raise DataError(
            f"{path}: {key} has shape {x.shape}; expected (N, H, W), (N, H, W, C) or (N, C, H, W)"
        )
    first, last = x.shape[1] in (1, 3), x.shape[3] in (1, 3)
    if first and (not last or x.shape[2] == x.shape[3]):
        return x, False
    if last:
        return x, True
    raise DataError(
        f"{path}: {key} has shape {x.shape} with no channel axis of size 1 or 3; "
        "store grey or RGB images as NHWC or NCHW"
    )


def _npz_pixels(x: np.ndarray, key: str, path: Path) -> np.ndarray:
    """Pixels as uint8 (integer arrays, 0..255) or float32 in [0, 1]."""
    if x.dtype == np.uint8:
        return x
    if x.dtype.kind in "iu":
        if x.size and (x.min() < 0 or x.max() > 255):
            raise DataError(
                f"{path}: {key} holds integers in [{x.min()}, {x.max()}]; integer pixels must be "
                "0..255 (or store floats in [0, 1])"
            )
        return x.astype(np.uint8)
    if x.dtype.kind == "f":
        if not np.isfinite(x).all():
            raise DataError(f"{path}: {key} contains NaN or inf pixels; clean or drop those images")
        lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
        if lo < -1e-6 or hi > 1 + 1e-6:
            hint = " (divide by 255?)" if hi <= 255 and lo >= 0 else ""
            raise DataError(
                f"{path}: {key} has values in [{lo:.4g}, {hi:.4g}]; float pixels must lie in "
                f"[0, 1]{hint}"
            )
        return np.clip(x, 0.0, 1.0).astype(np.float32)
    raise DataError(f"{path}: {key} has dtype {x.dtype}; use uint8 0..255 or float in [0, 1]")


def _npz_labels(y: np.ndarray, n: int, key: str, path: Path) -> np.ndarray:
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{path}: {key} has shape {y.shape} but there are {n} images; give (N,)")
    if y.dtype.kind == "f" and np.isfinite(y).all() and (y == np.round(y)).all():
        y = y.astype(np.int64)
    if y.dtype.kind not in "iu":
        raise DataError(f"{path}: {key} has dtype {y.dtype}; labels must be integer class indices")
    if y.size and y.min() < 0:
        raise DataError(f"{path}: {key} has negative labels; use class indices 0..K-1")
    return y.astype(np.int64)


def _npz_channel_tuple(
    z: dict[str, np.ndarray], key: str, channels: int, path: Path
) -> tuple | None:
    if key not in z:
        return None
    v = np.asarray(z[key], dtype=np.float64).reshape(-1)
    if len(v) == 1:
        v = np.repeat(v, channels)
    if len(v) != channels or not np.isfinite(v).all() or (key == "std" and (v <= 0).any()):
        raise DataError(
            f"{path}: {key} is {v.tolist()}; give {channels} finite value(s)"
            + (" > 0" if key == "std" else "")
        )
    return tuple(float(a) for a in v)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file, or a one-line error saying what is wrong with it."""
    if not path.is_file():
        raise DataError(f"npz file {path} does not exist; give npz:PATH to an .npz file")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path} is not an .npz (zip) archive; write it with np.savez")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except ValueError as err:
        if "pickle" in str(err):
            raise DataError(
                f"{path} stores Python objects; save plain arrays (classes as a string array)"
            ) from None
        raise DataError(
            f"{path} is not a readable .npz file ({err}); write it with np.savez"
        ) from None
    except Exception as err:
        raise DataError(
            f"{path} is not a readable .npz file ({type(err).__name__}); write it with np.savez"
        ) from None


def load_npz(path: Path) -> DatasetSplits:
    """Load and validate an ``.npz`` dataset (see module docstring)."""
    path = path.expanduser()
    z = _read_npz(path)
    missing = [k for k in _NPZ_KEYS if k not in z]
    if missing:
        raise DataError(
            f"{path} lacks {', '.join(missing)}; an npz dataset needs {', '.join(_NPZ_KEYS)}"
        )
    xs, layouts = {}, {}
    for key in ("x_train", "x_test"):
        x, layouts[key] = _npz_images(z[key], key, path)
        xs[key] = _npz_pixels(x, key, path)
    shape = {
        k: (x.shape[1:] if not layouts[k] else (x.shape[3], *x.shape[1:3])) for k, x in xs.items()
    }
    if shape["x_train"] != shape["x_test"]:
        raise DataError(
            f"{path}: train images are {shape['x_train']} (C, H, W) but test images are "
            f"{shape['x_test']}; store both splits at one size"
        )
    c, h, w = shape["x_train"]
    if c not in (1, 3):
        raise DataError(f"{path}: images have {c} channels; use 1 (grey) or 3 (RGB)")
    y_tr = _npz_labels(z["y_train"], len(xs["x_train"]), "y_train", path)
    y_te = _npz_labels(z["y_test"], len(xs["x_test"]), "y_test", path)
    n_classes = int(max(y_tr.max(initial=0), y_te.max(initial=0))) + 1
    classes = class_names(z.get("classes"), n_classes, path, _MAX_CLASSES)
    nchw = {}
    for key, x in xs.items():
        t = torch.from_numpy(np.ascontiguousarray(x))
        nchw[key] = t.permute(0, 3, 1, 2) if layouts[key] else t
    mean = _npz_channel_tuple(z, "mean", c, path)
    std = _npz_channel_tuple(z, "std", c, path)
    if mean is None or std is None:
        m, s = channel_stats(nchw["x_train"])
        mean, std = mean or m, std or s
    tensors = {
        key: t.contiguous().to(torch.float32).div_(255.0)
        if t.dtype == torch.uint8
        else t.contiguous()
        for key, t in nchw.items()
    }
    domain = InputDomain(channels=c, height=h, width=w, mean=mean, std=std)
    name = f"npz:{path.stem}"
    return DatasetSplits(
        train=ImageDataset(tensors["x_train"], torch.from_numpy(y_tr), classes, domain, name),
        test=ImageDataset(tensors["x_test"], torch.from_numpy(y_te), classes, domain, name),
    )


@register_dataset(
    "npz",
    "arrays in an .npz: npz:PATH with x_train, y_train, x_test, y_test (uint8 or [0,1] floats)",
)
def load_npz_dataset(arg: str | None, root: Path, seed: int, download: bool) -> DatasetSplits:
    """Registry entry for ``npz:PATH``."""
    if not arg:
        raise DataError(
            "npz needs a path: npz:PATH to a file with x_train, y_train, x_test, y_test"
        )
    return load_npz(Path(arg))
