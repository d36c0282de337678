"""``features:PATH``: precomputed embeddings, so a probe is audited without loading its model.

A user who extracted CLIP or DINOv2 features with their own stack gives them as

- ``.npz`` or ``.safetensors`` with ``x_train`` (N, d), ``y_train`` (N,), ``x_test`` (M, d),
  ``y_test`` (M,) (optional ``classes``, npz only: one name per class);
- ``.parquet`` with an embedding column (``embedding``; a list of floats per row), a label
  column (``label``) and a split column (``split``: ``train`` / ``test``).

The embeddings travel as (N, d, 1, 1) "images" in an unbounded domain, read by a pass-through
extractor (``extractors/zoo.passthrough_extractor``): the runner, the head, feature-space
attacks and defences then need no special case. Image-space attacks are refused (there are no
pixels to perturb): see ``embedding_attack_error``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ...domain import InputDomain
from ...errors import DataError
from ..base import DatasetSplits, ImageDataset, class_names, register_dataset

KEYS = ("x_train", "y_train", "x_test", "y_test")
SUFFIXES = (".npz", ".safetensors", ".parquet")
PARQUET_COLUMNS = {"embedding": "embedding", "label": "label", "split": "split"}
MAX_CLASSES = 1000  # labels beyond this without class names are almost surely not indices


def is_features_spec(spec: str) -> bool:
    """Whether a dataset spec names precomputed embeddings (``features:PATH``)."""
    return spec.partition(":")[0] == "features"


def embedding_domain(dim: int) -> InputDomain:
    """The domain of d-dimensional embeddings: d channels of 1×1, no box, no normalisation."""
    return InputDomain(
        channels=dim, height=1, width=1, low=-math.inf, high=math.inf, mean=(0.0,), std=(1.0,)
    )


def is_embedding_domain(domain: InputDomain) -> bool:
    """Whether ``domain`` holds embeddings rather than images (no pixel box)."""
    return domain.height == 1 and domain.width == 1 and math.isinf(domain.low)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except Exception as err:
        raise DataError(
            f"{path} is not a readable .npz of plain arrays ({type(err).__name__}); "
            "write it with np.savez(x_train=..., y_train=..., x_test=..., y_test=...)"
        ) from None


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    try:
        return dict(load_file(str(path)))
    except Exception as err:
        raise DataError(
            f"{path} is not a readable safetensors file ({type(err).__name__}); "
            "write it with safetensors.numpy.save_file"
        ) from None


def _read_parquet(path: Path) -> dict[str, np.ndarray]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(
            f"{path}: reading parquet needs pyarrow; pip install 'poisonprobe[parquet]'"
        ) from None
    try:
        table = pq.read_table(path)
    except Exception as err:
        raise DataError(
            f"{path} is not a readable parquet file ({type(err).__name__}); "
            "write it with pandas.DataFrame.to_parquet"
        ) from None
    cols = PARQUET_COLUMNS
    missing = [c for c in cols.values() if c not in table.column_names]
    if missing:
        raise DataError(
            f"{path} lacks column(s) {', '.join(missing)} (has {', '.join(table.column_names)}); "
            "a parquet embeddings file needs 'embedding' (list of floats), 'label' and 'split' "
            "('train'/'test')"
        )
    split = np.asarray(table.column(cols["split"]).to_pylist(), dtype=object)
    unknown = sorted({str(s) for s in split} - {"train", "test"})
    if unknown:
        raise DataError(
            f"{path}: split column has value(s) {', '.join(unknown[:3])}; use 'train' or 'test'"
        )
    try:
        emb = np.asarray(table.column(cols["embedding"]).to_pylist(), dtype=np.float32)
    except (ValueError, TypeError):
        raise DataError(
            f"{path}: 'embedding' rows are not lists of floats of one length; "
            "store one fixed-length float vector per row"
        ) from None
    label = np.asarray(table.column(cols["label"]).to_pylist())
    train, test = split == "train", split == "test"
    return {
        "x_train": emb[train],
        "y_train": label[train],
        "x_test": emb[test],
        "y_test": label[test],
    }


def _embeddings(x: np.ndarray, key: str, path: Path) -> torch.Tensor:
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise DataError(f"{path}: {key} has shape {x.shape}; give a non-empty (N, d) float array")
    if x.dtype.kind not in "fiu":
        raise DataError(f"{path}: {key} has dtype {x.dtype}; embeddings must be numbers")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x).all(axis=1)).sum())
        raise DataError(
            f"{path}: {key} has {bad} row(s) with NaN or inf; drop or recompute those embeddings"
        )
    return torch.from_numpy(np.ascontiguousarray(x))


def _labels(y: np.ndarray, n: int, key: str, path: Path) -> torch.Tensor:
    if y.ndim != 1 or len(y) != n:
        raise DataError(
            f"{path}: {key} has shape {y.shape} but there are {n} embeddings; give (N,)"
        )
    if y.dtype.kind == "f" and np.isfinite(y).all() and (y == np.round(y)).all():
        y = y.astype(np.int64)
    if y.dtype.kind not in "iu":
        raise DataError(f"{path}: {key} has dtype {y.dtype}; labels must be integer class indices")
    if y.min() < 0:
        raise DataError(f"{path}: {key} has negative labels; use class indices 0..K-1")
    return torch.from_numpy(y.astype(np.int64))


def load_features(path: Path) -> DatasetSplits:
    """Read and validate an embeddings file (npz, safetensors or parquet)."""
    path = path.expanduser()
    if path.suffix not in SUFFIXES:
        raise DataError(
            f"features file {path} has suffix {path.suffix or '(none)'!r}; "
            f"use one of {', '.join(SUFFIXES)}"
        )
    if not path.is_file():
        raise DataError(f"features file {path} does not exist; give features:PATH to a file")
    reader = {".npz": _read_npz, ".safetensors": _read_safetensors, ".parquet": _read_parquet}
    arrays = reader[path.suffix](path)
    missing = [k for k in KEYS if k not in arrays]
    if missing:
        raise DataError(
            f"{path} lacks {', '.join(missing)} (has {', '.join(sorted(arrays)) or 'nothing'}); "
            f"an embeddings file needs {', '.join(KEYS)}"
        )
    x_tr = _embeddings(arrays["x_train"], "x_train", path)
    x_te = _embeddings(arrays["x_test"], "x_test", path)
    if x_tr.shape[1] != x_te.shape[1]:
        raise DataError(
            f"{path}: x_train has {x_tr.shape[1]} dimensions but x_test has {x_te.shape[1]}; "
            "embed both splits with one model"
        )
    y_tr = _labels(arrays["y_train"], len(x_tr), "y_train", path)
    y_te = _labels(arrays["y_test"], len(x_te), "y_test", path)
    n_classes = int(max(y_tr.max(), y_te.max())) + 1
    classes = class_names(arrays.get("classes"), n_classes, path, MAX_CLASSES)
    domain = embedding_domain(int(x_tr.shape[1]))
    name = f"features:{path.stem}"
    return DatasetSplits(
        train=ImageDataset(x_tr[:, :, None, None], y_tr, classes, domain, name),
        test=ImageDataset(x_te[:, :, None, None], y_te, classes, domain, name),
    )


@register_dataset(
    "features",
    "precomputed embeddings: features:PATH (.npz/.safetensors with x_train, y_train, x_test, "
    "y_test; .parquet with embedding, label, split columns)",
)
def load_features_dataset(arg: str | None, root: Path, seed: int, download: bool) -> DatasetSplits:
    """Registry entry for ``features:PATH``."""
    if not arg:
        raise DataError("features needs a path: features:PATH to an .npz, .safetensors or .parquet")
    return load_features(Path(arg))
