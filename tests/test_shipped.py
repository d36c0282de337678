"""The shipped pre-trained extractors: the default run loads them (verified by sha256), and
``pretrain: true`` / ``--pretrain`` pre-trains instead."""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from poisonprobe.data import load_dataset
from poisonprobe.errors import CheckpointError
from poisonprobe.experiment.config import ExtractorConfig, load_config, with_pretrain
from poisonprobe.experiment.prepare import obtain_extractor
from poisonprobe.extractors import shipped
from poisonprobe.extractors.archs import build_extractor
from poisonprobe.extractors.cache import extractor_digest
from poisonprobe.extractors.checkpoints import checkpoint_sha256
from poisonprobe.extractors.pretrain import PretrainConfig, pretrain_spec
from poisonprobe.progress import Reporter

pretrain_mod = importlib.import_module("poisonprobe.extractors.pretrain")  # not the function

MANIFEST = json.loads((shipped.PRETRAINED_DIR / shipped.MANIFEST).read_text())


def _default_specs() -> list[tuple[str, dict]]:
    """(source, pre-training spec) of every extractor the embedded default pre-trains."""
    cfg = load_config(None)
    out = []
    for setting in cfg.settings:
        for ext in cfg.extractors:
            recipe = PretrainConfig(
                method=ext.method, epochs=ext.epochs, batch_size=ext.batch_size, lr=ext.lr
            )
            train = load_dataset(setting.source).train
            out.append((setting.source, pretrain_spec(train, ext.arch, recipe, ext.seed)))
    return out


@pytest.fixture
def no_pretraining(monkeypatch):
    """Pre-training raises: whatever passes under this fixture loaded weights instead."""

    def refuse(*args, **kwargs):
        raise AssertionError("pre-trained although shipped weights exist")

    monkeypatch.setattr(pretrain_mod, "_pretrain", refuse)


def test_every_default_extractor_is_shipped_and_verified():
    specs = _default_specs()
    assert len(specs) == 2 == len(MANIFEST["extractors"])
    for source, spec in specs:
        entry = shipped.find_shipped(spec)
        assert entry is not None, f"no shipped extractor for the default's {source}"
        assert shipped.verify(entry) == entry.path
        assert checkpoint_sha256(entry.path) == entry.sha256
        assert entry.path.stat().st_size < 200_000  # small package data
        raw = next(e for e in MANIFEST["extractors"] if e["file"] == entry.path.name)
        assert raw["built_with"]["threads"] == 2
        # the file reloads to the very weights the build trained (state-dict digest)
        ext = shipped.load_shipped(entry, spec["arch"], load_dataset(source).train.domain)
        assert extractor_digest(ext) == raw["weights_digest"]


def test_other_recipes_are_not_shipped():
    train = load_dataset("digits").train
    for recipe, seed in ((PretrainConfig(epochs=29), 0), (PretrainConfig(), 1)):
        assert shipped.find_shipped(pretrain_spec(train, "smallcnn", recipe, seed)) is None
    moco = PretrainConfig(method="moco")
    assert shipped.find_shipped(pretrain_spec(train, "smallcnn", moco, 0)) is None


def test_default_run_loads_the_shipped_extractor(no_pretraining):
    source = load_dataset("syndigits")
    ext, path, sha, _ = obtain_extractor(
        ExtractorConfig(), source, torch.device("cpu"), Reporter(quiet=True)
    )
    assert Path(path).parent == shipped.PRETRAINED_DIR and "syndigits" in Path(path).name
    entry = shipped.find_shipped(_default_specs()[1][1])
    assert sha == entry.sha256
    assert not any(p.requires_grad for p in ext.parameters())


def test_sha256_mismatch_is_one_line_error(tmp_path, monkeypatch, no_pretraining):
    copy = tmp_path / "pretrained"
    shutil.copytree(shipped.PRETRAINED_DIR, copy)
    victim = copy / MANIFEST["extractors"][0]["file"]
    data = bytearray(victim.read_bytes())
    data[-5] ^= 0xFF  # one flipped byte inside the weights
    victim.write_bytes(bytes(data))
    monkeypatch.setattr(shipped, "PRETRAINED_DIR", copy)
    train = load_dataset("digits").train
    with pytest.raises(CheckpointError) as err:
        pretrain_mod.get_or_pretrain(train, cache_dir=tmp_path / "cache")
    msg = str(err.value)
    assert "sha256" in msg and victim.name in msg and "\n" not in msg
    assert "pretrain: true" in msg  # the way out


def test_pretrain_true_bypasses_the_shipped_weights(tmp_path, monkeypatch):
    calls = []

    def fake_pretrain(train, arch, cfg, seed, device, progress):
        calls.append((train.name, cfg.epochs))
        return build_extractor(arch, train.domain, seed + 123).eval()

    monkeypatch.setattr(pretrain_mod, "_pretrain", fake_pretrain)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cfg = with_pretrain(load_config(None))
    assert all(e.pretrain for e in cfg.extractors)
    source = load_dataset("digits")
    ext, path, sha, _ = obtain_extractor(
        cfg.extractors[0], source, torch.device("cpu"), Reporter(quiet=True)
    )
    assert calls == [("digits", 30)]
    assert Path(path).is_relative_to(tmp_path / "poisonprobe" / "extractors")
    shipped_sha = {e["sha256"] for e in MANIFEST["extractors"]}
    assert sha not in shipped_sha


def test_pretrain_flag_in_config_and_checkpoint_exclude_each_other():
    from poisonprobe.errors import ConfigError
    from poisonprobe.experiment.config import parse_config

    assert parse_config({"extractor": {"pretrain": True}}).extractors[0].pretrain
    with pytest.raises(ConfigError, match="exclude each other"):
        parse_config({"extractor": {"pretrain": True, "checkpoint": "x.pt"}})
