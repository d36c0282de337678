"""Standard benchmarks through torchvision: cifar10, cifar100, stl10, svhn, mnist.

Each lives in torchvision's own on-disk format under ``ROOT/<name>`` (ROOT defaults to
``$XDG_CACHE_HOME/poisonprobe/data``). A downloaded-but-unextracted archive is extracted locally,
without the network. Otherwise, with ``download=True``, the host is probed first with a short
timeout so that an offline machine fails in seconds instead of hanging inside urllib; every
failure becomes one ``DataError`` line saying which files to place where.

Spec: ``NAME[:train=N&test=M]`` caps each split to a stratified, deterministic subset (handy
on a CPU). STL-10 uses its labelled train/test splits only (5000/8000 images, 96x96).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import getproxies, proxy_bypass

import numpy as np
import torch

from ..domain import InputDomain
from ..errors import DataError
from .base import DatasetSplits, ImageDataset, register_dataset
from .folder import int_option, parse_options, stratified_pick, uint8_to_float

PROBE_TIMEOUT_S = 3.0  # how long to wait for a TCP connection before calling it offline
DOWNLOAD_SOCKET_TIMEOUT_S = 60.0  # a stalled download fails instead of hanging forever

# (uint8 images, channels_last, labels) from a torchvision dataset object
Extract = Callable[[Any], tuple[np.ndarray, bool, np.ndarray]]


def _cifar(ds: Any) -> tuple[np.ndarray, bool, np.ndarray]:
    return np.asarray(ds.data), True, np.asarray(ds.targets)


def _labelled(ds: Any) -> tuple[np.ndarray, bool, np.ndarray]:  # STL-10 and SVHN: NCHW
    return np.asarray(ds.data), False, np.asarray(ds.labels)


def _mnist(ds: Any) -> tuple[np.ndarray, bool, np.ndarray]:
    return ds.data.numpy()[:, None], False, ds.targets.numpy()


@dataclass(frozen=True)
class TorchvisionSet:
    """How to find, fetch and convert one torchvision dataset."""

    name: str
    cls_name: str
    split_kw: Callable[[bool], dict[str, Any]]  # train? -> constructor keyword arguments
    extract: Extract
    domain: InputDomain
    classes: tuple[str, ...] | None  # None: take ``ds.classes``
    files: str  # what the user must place where ({dir} is ROOT/<name>), for error messages
    archives: tuple[str, ...]  # archives (relative to ROOT/<name>) we can extract ourselves
    url: str  # a download URL, only to probe its host

    def folder(self, root: Path) -> Path:
        return root / self.name

    def placement(self, root: Path) -> str:
        """Which files go where, for error messages."""
        return self.files.format(dir=self.folder(root))


_DIGITS = tuple(str(i) for i in range(10))
_MNIST_RAW = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

SETS: dict[str, TorchvisionSet] = {
    s.name: s
    for s in (
        TorchvisionSet(
            name="cifar10",
            cls_name="CIFAR10",
            split_kw=lambda tr: {"train": tr},
            extract=_cifar,
            domain=InputDomain(
                3, 32, 32, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616)
            ),
            classes=None,
            files="cifar-10-python.tar.gz (or the extracted cifar-10-batches-py/) in {dir}",
            archives=("cifar-10-python.tar.gz",),
            url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        ),
        TorchvisionSet(
            name="cifar100",
            cls_name="CIFAR100",
            split_kw=lambda tr: {"train": tr},
            extract=_cifar,
            domain=InputDomain(
                3, 32, 32, mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762)
            ),
            classes=None,
            files="cifar-100-python.tar.gz (or the extracted cifar-100-python/) in {dir}",
            archives=("cifar-100-python.tar.gz",),
            url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        ),
        TorchvisionSet(
            name="stl10",
            cls_name="STL10",
            split_kw=lambda tr: {"split": "train" if tr else "test"},
            extract=_labelled,
            domain=InputDomain(
                3, 96, 96, mean=(0.4467, 0.4398, 0.4066), std=(0.2603, 0.2566, 0.2713)
            ),
            classes=None,
            files="stl10_binary.tar.gz (or the extracted stl10_binary/) in {dir}",
            archives=("stl10_binary.tar.gz",),
            url="http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",
        ),
        TorchvisionSet(
            name="svhn",
            cls_name="SVHN",
            split_kw=lambda tr: {"split": "train" if tr else "test"},
            extract=_labelled,
            domain=InputDomain(
                3, 32, 32, mean=(0.4377, 0.4438, 0.4728), std=(0.1980, 0.2010, 0.1970)
            ),
            classes=_DIGITS,
            files="train_32x32.mat and test_32x32.mat in {dir}",
            archives=(),
            url="http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
        ),
        TorchvisionSet(
            name="mnist",
            cls_name="MNIST",
            split_kw=lambda tr: {"train": tr},
            extract=_mnist,
            domain=InputDomain(1, 28, 28, mean=(0.1307,), std=(0.3081,)),
            classes=_DIGITS,
            files=", ".join(_MNIST_RAW) + " in {dir}/MNIST/raw",
            archives=tuple(f"MNIST/raw/{f}" for f in _MNIST_RAW),
            url="https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz",
        ),
    )
}


def network_reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Can we open a TCP connection to ``url``'s host within ``timeout`` seconds?

    Runs in a daemon thread because name resolution ignores socket timeouts and can hang
    on a machine without network. With an HTTP(S) proxy configured, the proxy is probed.
    """
    parsed = urlparse(url)
    proxy = getproxies().get(parsed.scheme)
    if proxy and not proxy_bypass(parsed.hostname or ""):
        parsed = urlparse(proxy if "//" in proxy else f"http://{proxy}")  # urllib goes there
    host = parsed.hostname or ""
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(timeout + 1.0)
    return bool(result and result[0])


def _missing(spec: TorchvisionSet, root: Path, why: str) -> DataError:
    folder = spec.folder(root)
    state = "is incomplete or corrupted" if folder.is_dir() and any(folder.iterdir()) else "is not"
    return DataError(
        f"{spec.name} {state} on disk at {folder} and {why}; "
        f"place {spec.placement(root)}, or use imagefolder:PATH"
    )


def _construct(spec: TorchvisionSet, root: Path, download: bool) -> tuple[Any, Any]:
    import torchvision.datasets as tvd

    cls = getattr(tvd, spec.cls_name)
    folder = str(spec.folder(root))
    train = cls(folder, download=download, **spec.split_kw(True))
    test = cls(folder, download=download, **spec.split_kw(False))
    return train, test


def _extract_local_archives(spec: TorchvisionSet, root: Path) -> bool:
    """Extract archives the user placed by hand; True if there was any."""
    from torchvision.datasets.utils import extract_archive

    present = [spec.folder(root) / a for a in spec.archives if (spec.folder(root) / a).is_file()]
    for archive in present:
        try:
            extract_archive(str(archive), str(archive.parent))
        except Exception as err:
            raise DataError(
                f"{archive} cannot be extracted ({type(err).__name__}); it is probably "
                "truncated: delete it and place a complete copy there"
            ) from None
    return bool(present)


def _open(spec: TorchvisionSet, root: Path, download: bool) -> tuple[Any, Any]:
    """Both splits as torchvision datasets, or a one-line DataError."""
    try:
        return _construct(spec, root, download=False)
    except ImportError as err:
        raise DataError(
            f"{spec.name} needs {err.name or 'a missing package'}; pip install it"
        ) from None
    except Exception:  # not there (or not extracted): try the remedies below
        pass
    if _extract_local_archives(spec, root):
        try:
            return _construct(spec, root, download=False)
        except Exception as err:
            raise DataError(
                f"{spec.name} files under {spec.folder(root)} are incomplete or corrupted "
                f"({type(err).__name__}); replace them: place {spec.placement(root)}"
            ) from None
    if not download:
        raise _missing(spec, root, "downloading is off (download=False)")
    if not network_reachable(spec.url):
        raise _missing(spec, root, "cannot be downloaded (offline)")
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_SOCKET_TIMEOUT_S)
    try:
        spec.folder(root).mkdir(parents=True, exist_ok=True)
        return _construct(spec, root, download=True)
    except Exception as err:
        reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise _missing(spec, root, f"the download failed ({reason})") from None
    finally:
        socket.setdefaulttimeout(previous)


def _to_dataset(
    spec: TorchvisionSet, ds: Any, classes: list[str], cap: int | None, stream: int
) -> ImageDataset:
    x, channels_last, y = spec.extract(ds)
    y = y.astype(np.int64)
    if cap is not None:
        keep = stratified_pick(y, cap, stream)
        x, y = x[keep], y[keep]
    return ImageDataset(
        uint8_to_float(x, channels_last), torch.from_numpy(y), classes, spec.domain, spec.name
    )


def load_torchvision_set(
    name: str, root: Path, download: bool, train_cap: int | None = None, test_cap: int | None = None
) -> DatasetSplits:
    """Load one of :data:`SETS` as float32 (N, C, H, W) in [0, 1]."""
    spec = SETS[name]
    train, test = _open(spec, root, download)
    classes = list(spec.classes or [str(c) for c in train.classes])
    return DatasetSplits(
        train=_to_dataset(spec, train, classes, train_cap, stream=0),
        test=_to_dataset(spec, test, classes, test_cap, stream=1),
    )


def _register(name: str, description: str) -> None:
    def loader(arg: str | None, root: Path, seed: int, download: bool) -> DatasetSplits:
        if arg and "=" in arg and "?" not in arg:  # "cifar10:train=5000" reads better
            arg = "?" + arg
        head, opts = parse_options(arg, allowed=("train", "test"), what=name)
        if head:
            raise DataError(
                f"{name} takes no argument {head!r}; use {name} or {name}:train=N&test=M"
            )
        return load_torchvision_set(
            name, root, download, int_option(opts, "train", name), int_option(opts, "test", name)
        )

    loader.__name__ = f"load_{name}"
    loader.__doc__ = f"Registry entry for ``{name}`` (torchvision format under ROOT/{name})."
    register_dataset(name, description)(loader)


_register("cifar10", "CIFAR-10, 32x32 RGB, 50k/10k, 10 classes (torchvision; downloads)")
_register("cifar100", "CIFAR-100, 32x32 RGB, 50k/10k, 100 classes (torchvision; downloads)")
_register("stl10", "STL-10 labelled splits, 96x96 RGB, 5k/8k, 10 classes (torchvision; downloads)")
_register("svhn", "SVHN cropped digits, 32x32 RGB, 73k/26k (torchvision + scipy; downloads)")
_register("mnist", "MNIST, 28x28 grey, 60k/10k (torchvision; downloads)")
