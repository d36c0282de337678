"""``features:PATH``: precomputed embeddings (npz, safetensors, parquet) through the runner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from poisonprobe.data import load_dataset
from poisonprobe.errors import ConfigError, DataError
from poisonprobe.experiment.config import parse_config
from poisonprobe.experiment.runner import run

WD = 1e-3


def embeddings(seed: int = 0, n: int = 150, m: int = 60, d: int = 6, k: int = 3):
    """Three Gaussian blobs in d dimensions (overlapping, so the probe is not perfect)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.5, (k, d))
    y_tr, y_te = np.arange(n) % k, np.arange(m) % k
    x_tr = (centres[y_tr] + rng.normal(0, 1, (n, d))).astype(np.float32)
    x_te = (centres[y_te] + rng.normal(0, 1, (m, d))).astype(np.float32)
    return {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te}


def write(path: Path, arrays: dict[str, np.ndarray]) -> str:
    if path.suffix == ".npz":
        np.savez(path, **arrays)
    elif path.suffix == ".safetensors":
        from safetensors.numpy import save_file

        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(path))
    else:
        frames = [
            pd.DataFrame(
                {"embedding": list(arrays[f"x_{s}"]), "label": arrays[f"y_{s}"], "split": s}
            )
            for s in ("train", "test")
        ]
        pd.concat(frames).to_parquet(path)
    return f"features:{path}"


def config(spec: str, attacks=None) -> dict:
    return {
        "settings": [{"name": "emb", "target": spec}],
        "extractor": {"name": "my-embeddings"},
        "victim": {"weight_decay": WD},
        "attacks": attacks or ["label-flip", "ft-ideal"],
        "eps": [0.1],
        "defenses": ["none", "knn"],
    }


@pytest.mark.parametrize("suffix", [".npz", ".safetensors", ".parquet"])
def test_loads_every_format_identically(tmp_path, suffix):
    arrays = embeddings()
    splits = load_dataset(write(tmp_path / f"e{suffix}", arrays))
    assert splits.train.x.shape == (150, 6, 1, 1)
    np.testing.assert_array_equal(splits.train.x[:, :, 0, 0].numpy(), arrays["x_train"])
    np.testing.assert_array_equal(splits.test.y.numpy(), arrays["y_test"])
    assert splits.train.classes == ["0", "1", "2"]


def test_runs_attacks_and_defences_on_embeddings(tmp_path):
    arrays = embeddings()
    spec = write(tmp_path / "e.npz", arrays)
    df = run(config(spec), out=tmp_path / "out", quiet=True)
    assert sorted(set(df["attack"])) == ["ft-ideal", "label-flip", "none"]
    assert set(df["defense"]) == {"none", "knn"}
    assert (df["extractor"] == "my-embeddings").all() and (df["n_clean"] == 150).all()
    # the clean head is the scikit-learn probe on the file's own vectors: C = 1 / (N * wd)
    sk = LogisticRegression(C=1 / (150 * WD), tol=1e-10, max_iter=10_000)
    sk.fit(arrays["x_train"], arrays["y_train"])
    assert df["clean_acc"].iloc[0] == pytest.approx(sk.score(arrays["x_test"], arrays["y_test"]))
    lf = df[(df["attack"] == "label-flip") & (df["defense"] == "none")].iloc[0]
    assert lf["n_poison"] == 15
    ft = df[(df["attack"] == "ft-ideal") & (df["defense"] == "none")].iloc[0]
    assert ft["poisoned_acc"] < ft["clean_acc"] - 0.05


def test_formats_give_the_same_rows(tmp_path):
    arrays = embeddings(seed=1)
    attacks = ["label-flip"]
    frames = []
    for suffix in (".npz", ".safetensors", ".parquet"):
        spec = write(tmp_path / f"e{suffix}", arrays)
        df = run(config(spec, attacks), out=tmp_path / suffix[1:], quiet=True)
        frames.append(df.sort_values(["attack", "defense"])["poisoned_acc"].to_numpy())
    np.testing.assert_array_equal(frames[0], frames[1])
    np.testing.assert_array_equal(frames[0], frames[2])


def test_image_attack_refused_before_work(tmp_path):
    spec = write(tmp_path / "e.npz", embeddings())
    with pytest.raises(ConfigError, match="gc-input.*feature-space attack"):
        parse_config(config(spec, ["gc-input"]))


def test_source_with_embeddings_refused(tmp_path):
    spec = write(tmp_path / "e.npz", embeddings())
    cfg = config(spec)
    cfg["settings"][0]["source"] = "digits"
    with pytest.raises(ConfigError, match="drop 'source'"):
        parse_config(cfg)
    cfg["settings"] = [{"name": "s", "target": "digits"}]
    with pytest.raises(ConfigError, match="needs a source"):
        parse_config(cfg)


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"x_train": None}, "lacks x_train"),
        ({"y_train": np.zeros(149, dtype=np.int64)}, "there are 150 embeddings"),
        ({"x_test": np.zeros((60, 5), dtype=np.float32)}, "has 6 dimensions but x_test has 5"),
        ({"x_train": np.full((150, 6), np.nan, dtype=np.float32)}, "NaN or inf"),
        ({"x_test": np.full((60, 6), np.inf, dtype=np.float32)}, "NaN or inf"),
        ({"y_train": -np.ones(150, dtype=np.int64)}, "negative labels"),
        ({"x_train": np.zeros((150, 6, 2), dtype=np.float32)}, r"\(N, d\)"),
    ],
)
def test_bad_files_one_line(tmp_path, change, needle):
    arrays = embeddings()
    for key, value in change.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    with pytest.raises(DataError, match=needle) as err:
        load_dataset(write(tmp_path / "e.npz", arrays))
    assert "\n" not in str(err.value)


def test_parquet_missing_column_and_bad_split(tmp_path):
    pd.DataFrame({"embedding": [[1.0, 2.0]], "label": [0]}).to_parquet(tmp_path / "a.parquet")
    with pytest.raises(DataError, match="lacks column.*split"):
        load_dataset(f"features:{tmp_path / 'a.parquet'}")
    pd.DataFrame({"embedding": [[1.0]], "label": [0], "split": ["val"]}).to_parquet(
        tmp_path / "b.parquet"
    )
    with pytest.raises(DataError, match="'val'|val; use"):
        load_dataset(f"features:{tmp_path / 'b.parquet'}")


def test_unknown_suffix_and_missing_file(tmp_path):
    with pytest.raises(DataError, match="suffix"):
        load_dataset(f"features:{tmp_path / 'e.csv'}")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"features:{tmp_path / 'e.npz'}")
