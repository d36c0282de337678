"""Config values and the files a run writes: one-element lists from scalars, no strings for
numbers, paths relative to the config file, caches under $XDG_CACHE_HOME, the user's umask,
no folder left by a failed run, and Ray started without its token-authentication warning."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from poisonprobe._io import atomic_save, default_cache_dir
from poisonprobe.data.base import default_data_root
from poisonprobe.errors import ConfigError, DataError
from poisonprobe.experiment.config import load_config, parse_config
from poisonprobe.experiment.results import ResultsStore, atomic_write_text


def test_scalars_become_one_element_lists():
    cfg = parse_config(
        {
            "eps": 0.1,
            "seeds": 3,
            "regimes": "box",
            "defenses": "sphere",
            "attacks": "tgda",
            "settings": {"name": "a", "source": "digits", "target": "digits"},
        }
    )
    assert cfg.eps == [0.1] and cfg.seeds == [3] and cfg.regimes == ["box"]
    assert cfg.defenses == ["sphere"] and [a.name for a in cfg.attacks] == ["tgda"]
    assert [s.name for s in cfg.settings] == ["a"]
    assert parse_config({"defenses": [["sphere", "knn"]]}).defenses == [["sphere", "knn"]]


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"eps": ["0.1"]}, "eps.0"),
        ({"eps": "0.1"}, "eps.0"),
        ({"seeds": ["1"]}, "seeds.0"),
        ({"victim": {"weight_decay": "1e-3"}}, "victim.weight_decay"),
        ({"extractor": {"epochs": "30"}}, "extractor.epochs"),
        ({"linf": "0.1"}, "linf"),
    ],
)
def test_strings_are_refused_for_numbers(data, where):
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert f"'{where}'" in str(err.value) and "without quotes" in str(err.value)


def test_bools_are_refused_for_numbers_and_ints_pass_as_floats():
    with pytest.raises(ConfigError, match="eps.0"):
        parse_config({"eps": [True]})
    assert parse_config({"eps": [1], "victim": {"weight_decay": 1}}).eps == [1.0]


def test_yaml_exponent_without_dot_is_a_number(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("victim: {weight_decay: 1e-3, tol: 1E-7}\neps: [3e-2]\n")
    cfg = load_config(path)
    assert cfg.victim.weight_decay == 1e-3 and cfg.victim.tol == 1e-7 and cfg.eps == [0.03]
    path.write_text("eps: ['3e-2']\n")  # quoted: still a string, still refused
    with pytest.raises(ConfigError, match="without quotes"):
        load_config(path)


def test_paths_resolve_against_the_config_folder(tmp_path, monkeypatch):
    folder = tmp_path / "exp"
    folder.mkdir()
    (folder / "c.yaml").write_text(
        "data_root: data\n"
        "extractor: {checkpoint: weights/w.pt}\n"
        "settings:\n"
        "  - {name: a, source: 'imagefolder:faces?train=10@1x8x8', target: 'npz:../arr.npz'}\n"
        "  - {name: b, source: 'npz:/abs/x.npz', target: 'digits'}\n"
    )
    monkeypatch.chdir(tmp_path)  # somewhere else: must not matter
    cfg = load_config("exp/c.yaml")
    assert cfg.data_root == str(folder / "data")
    assert cfg.extractors[0].checkpoint == str(folder / "weights" / "w.pt")
    a, b = cfg.settings
    assert a.source == f"imagefolder:{folder / 'faces'}?train=10@1x8x8"
    assert a.target == f"npz:{folder / '..' / 'arr.npz'}"
    assert (b.source, b.target) == ("npz:/abs/x.npz", "digits")
    # a mapping (no file) keeps paths as given: relative to the working folder
    assert parse_config({"data_root": "data"}).data_root == "data"


def test_every_cache_follows_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("POISONPROBE_DATA", raising=False)
    assert default_cache_dir() == tmp_path / "poisonprobe"
    assert default_data_root() == tmp_path / "poisonprobe" / "data"
    monkeypatch.setenv("POISONPROBE_DATA", str(tmp_path / "mine"))
    assert default_data_root() == tmp_path / "mine"


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_are_written_with_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        atomic_save({"t": 1}, tmp_path / "b.pt")
        store = ResultsStore(tmp_path / "results.csv")
        key = {"setting": "s", "extractor": "e", "attack": "a", "regime": "box"}
        store.append({**key, "eps": 0.1, "defense": "none", "seed": 0, "cell_id": "c0"})
        expected = 0o666 & ~umask
        for name in ("a.txt", "b.pt", "results.csv"):
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name
    finally:
        os.umask(old)


def test_failed_run_leaves_no_new_folder(tmp_path):
    from poisonprobe.experiment.runner import run

    cfg = {
        "settings": [{"name": "a", "source": "digits", "target": f"npz:{tmp_path / 'no.npz'}"}],
        "extractor": {"epochs": 0},
        "attacks": ["label-flip"],
    }
    out = tmp_path / "runs" / "x"
    with pytest.raises(DataError):
        run(cfg, out=out, quiet=True)
    assert not (tmp_path / "runs").exists()  # nor the parent it created
    out.mkdir(parents=True)
    (out / "mine.txt").write_text("keep")
    with pytest.raises(DataError):
        run(cfg, out=out, quiet=True)
    assert (out / "mine.txt").read_text() == "keep"  # an existing folder is never removed


class FakeRay:
    def __init__(self) -> None:
        self.env = None

    def is_initialized(self) -> bool:
        return False

    def init(self, **kwargs) -> None:
        self.env = os.environ.get("RAY_AUTH_MODE")


def test_local_ray_sets_the_auth_mode_explicitly(monkeypatch):
    from poisonprobe.experiment.backends.ray import _init_ray

    # a private copy of the environment: _init_ray writes to it, and a real Ray started later
    # in this process must not inherit what this test set
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    monkeypatch.setattr(os, "environ", env)
    ray = FakeRay()
    assert _init_ray(ray, None)
    assert ray.env == "token"  # Ray's own default, set explicitly: no warning
    env["RAY_AUTH_MODE"] = "disabled"
    ray = FakeRay()
    _init_ray(ray, None)
    assert ray.env == "disabled"  # the user's choice wins


def test_npz_cache_file_mode(tmp_path):
    """The decoded-image cache goes through the same helper (no more 0600 files)."""
    from poisonprobe.data.folder import _write_cache

    old = os.umask(0o022)
    try:
        _write_cache(tmp_path / "c.npz", {"a": np.zeros(3)})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "c.npz").stat().st_mode) == 0o644
    assert not [p for p in Path(tmp_path).iterdir() if p.name.endswith(".tmp")]


def test_shipped_configs_point_at_the_shared_cifar_archive():
    """Dataset paths resolve against the config's folder: every shipped config that reads the
    shared CIFAR-10 archive must reach ``<repo>/../shared/data/cifar10-jpg.tar.gz``."""
    repo = Path(__file__).resolve().parents[1]
    archive = (repo.parent / "shared" / "data" / "cifar10-jpg.tar.gz").resolve()
    found = 0
    for path in sorted((repo / "configs").glob("*.yaml")):
        cfg = load_config(path)
        for setting in cfg.settings:
            for spec in (setting.source, setting.target):
                if "cifar10-jpg.tar.gz" in spec:
                    found += 1
                    where = spec.split(":", 1)[1].split("?", 1)[0]
                    assert Path(where).resolve() == archive, (path.name, spec)
    assert found >= 6
