"""Extractors: SSL pre-training, safe checkpoints, the pre-training and feature caches."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from poisonprobe.data import load_dataset
from poisonprobe.data.base import ImageDataset
from poisonprobe.domain import InputDomain
from poisonprobe.errors import CheckpointError
from poisonprobe.extractors import (
    Augment,
    AugmentConfig,
    FeatureCache,
    build_extractor,
    checkpoint_sha256,
    get_or_pretrain,
    load_extractor,
    pretrain,
    save_extractor,
)
from poisonprobe.head.train import train_head

CIFAR = InputDomain(3, 32, 32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def small(digits) -> ImageDataset:
    return digits.train.subset(torch.arange(96))


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _cifar_resnet18() -> nn.Module:
    """A torchvision resnet18 with the CIFAR stem, built the way SSL repos build it."""
    from torchvision.models import resnet18

    net = resnet18(num_classes=10)
    net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    net.maxpool = nn.Identity()
    return net


# --------------------------------------------------------------------------- pre-training


@pytest.mark.parametrize("method", ["simclr", "moco", "byol"])
def test_pretrain_one_epoch_gives_finite_features(small, method):
    ext = pretrain(small, method=method, epochs=1, batch_size=32, seed=0)
    with torch.no_grad():
        z = ext(small.x[:10])
    assert z.shape == (10, ext.feature_dim)
    assert torch.isfinite(z).all() and (z >= 0).all()
    assert not ext.training and not any(p.requires_grad for p in ext.parameters())


@pytest.mark.parametrize("method", ["simclr", "moco"])
def test_pretrain_is_deterministic(small, method):
    a = pretrain(small, method=method, epochs=1, batch_size=32, seed=3)
    b = pretrain(small, method=method, epochs=1, batch_size=32, seed=3)
    c = pretrain(small, method=method, epochs=1, batch_size=32, seed=4)
    assert _same_weights(a, b)
    assert not _same_weights(a, c)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", ["simclr", "byol"])
def test_pretrain_on_cuda_rgb_resnet(method):
    """The GPU path: generators, augmentations (with flips) and heads all on the device."""
    g = torch.Generator().manual_seed(0)
    data = ImageDataset(
        torch.rand(64, 3, 32, 32, generator=g),
        torch.randint(0, 2, (64,), generator=g),
        ["a", "b"],
        CIFAR,
        "noise",
    )
    ext = pretrain(data, arch="resnet18", method=method, epochs=1, batch_size=32, device="cuda")
    with torch.no_grad():
        z = ext(data.x[:4].cuda())
    assert z.shape == (4, 512) and torch.isfinite(z).all()


def test_pretrain_leaves_global_rng_alone(small):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    pretrain(small, epochs=1, batch_size=32)
    assert torch.equal(torch.rand(3), expected)


def test_ssl_beats_random_init_on_a_probe(digits):
    """Two epochs on digits already lift the linear probe well above random weights."""
    tr, te = digits.train, digits.test

    def probe(ext) -> float:
        with torch.no_grad():
            head = train_head(ext(tr.x), tr.y, 10)
            return head.accuracy(ext(te.x), te.y)

    random_acc = probe(build_extractor("smallcnn", tr.domain, 0).eval())
    ssl_acc = probe(pretrain(tr, epochs=2, seed=0))
    assert ssl_acc > random_acc + 0.03, (ssl_acc, random_acc)


def test_augment_is_seeded_in_box_and_never_flips_digits(small):
    aug = Augment(small.domain)
    assert aug.cfg.hflip is False and AugmentConfig.for_domain(CIFAR).hflip is True
    v1 = aug(small.x, torch.Generator().manual_seed(0))
    v2 = aug(small.x, torch.Generator().manual_seed(0))
    assert torch.equal(v1, v2) and v1.shape == small.x.shape
    assert v1.min() >= 0 and v1.max() <= 1 and not torch.equal(v1, small.x)
    rgb = torch.rand(4, 3, 32, 32)
    assert Augment(CIFAR)(rgb, torch.Generator().manual_seed(0)).shape == rgb.shape


def test_get_or_pretrain_caches_on_disk(small, tmp_path):
    kw = dict(arch="smallcnn", method="simclr", epochs=1, seed=0, batch_size=32)
    ext1, path1, hit1 = get_or_pretrain(small, cache_dir=tmp_path, **kw)
    ext2, path2, hit2 = get_or_pretrain(small, cache_dir=tmp_path, **kw)
    assert (hit1, hit2) == (False, True) and path1 == path2
    assert path1.parent == tmp_path / "extractors" and path1.suffix == ".pt"
    assert _same_weights(ext1, ext2)
    _, path3, hit3 = get_or_pretrain(small, cache_dir=tmp_path, **{**kw, "seed": 1})
    assert not hit3 and path3 != path1
    assert not list((tmp_path / "extractors").glob("*.tmp"))  # atomic writes leave no debris


def test_default_cache_dir_follows_xdg(monkeypatch, tmp_path):
    from poisonprobe.extractors import default_cache_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "poisonprobe"


# --------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_checkpoint_round_trip_gives_identical_features(small, tmp_path, suffix):
    ext = build_extractor("smallcnn", small.domain, seed=5, width=8, feature_dim=64)
    ext.backbone.body[1].running_mean.uniform_()  # buffers must travel too
    path = save_extractor(ext, tmp_path / f"ext{suffix}", {"method": "simclr", "epochs": 7})
    loaded = load_extractor(path, "smallcnn", small.domain)
    with torch.no_grad():
        assert torch.equal(ext.eval()(small.x), loaded(small.x))
    assert loaded.feature_dim == 64 and loaded.checkpoint_meta["epochs"] == 7
    assert len(checkpoint_sha256(path)) == 64


def test_torchvision_resnet18_state_dict_loads(tmp_path):
    ref = _cifar_resnet18().eval()
    path = tmp_path / "resnet18.pth"
    torch.save(ref.state_dict(), path)  # carries fc.* which the extractor ignores
    ext = load_extractor(path, "resnet18", CIFAR)
    assert ext.feature_dim == 512
    x = torch.rand(2, 3, 32, 32)
    ref.fc = nn.Identity()
    with torch.no_grad():
        torch.testing.assert_close(ext(x), ref((x - 0.5) / 0.25))


def test_lightning_checkpoint_loads_backbone_only(small, tmp_path):
    src = build_extractor("smallcnn", small.domain, seed=1)
    state = {f"backbone.{k}": v for k, v in src.backbone.state_dict().items()}
    state |= {
        f"momentum_backbone.{k}": torch.zeros_like(v) for k, v in src.backbone.state_dict().items()
    }
    state |= {
        "projection_head.layers.0.weight": torch.randn(8, 256),
        "projection_head.b": torch.ones(8),
    }
    path = tmp_path / "solo.ckpt"
    torch.save({"state_dict": state, "epoch": 3, "global_step": 100}, path)
    ext = load_extractor(path, "smallcnn", small.domain)
    with torch.no_grad():
        assert torch.equal(ext(small.x), src.eval()(small.x))


class _Payload:
    """Unpickling this would create a file: the proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("how", ["torch", "pickle"])
def test_pickle_payload_is_refused_without_running_it(tmp_path, how):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    obj = {"state_dict": {"w": torch.ones(2)}, "x": _Payload(marker)}
    if how == "torch":
        torch.save(obj, path)
    else:
        path.write_bytes(pickle.dumps(obj))
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refusing to unpickle .*not a plain tensor"):
        load_extractor(path, "smallcnn", InputDomain(1, 8, 8))
    assert not marker.exists()


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_truncated_checkpoint_is_a_checkpoint_error(small, tmp_path, suffix):
    path = save_extractor(build_extractor("smallcnn", small.domain), tmp_path / f"e{suffix}")
    data = path.read_bytes()
    for cut in (7, len(data) // 2, len(data) - 40):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="truncated or corrupt"):
            load_extractor(path, "smallcnn", small.domain)


def test_missing_and_garbage_files(tmp_path):
    dom = InputDomain(1, 8, 8)
    with pytest.raises(CheckpointError, match="not found"):
        load_extractor(tmp_path / "nope.pt", "smallcnn", dom)
    (tmp_path / "g.pt").write_bytes(b"garbage" * 9)
    with pytest.raises(CheckpointError):
        load_extractor(tmp_path / "g.pt", "smallcnn", dom)


def test_wrong_arch_names_missing_and_unexpected_keys(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(_cifar_resnet18().state_dict(), path)
    with pytest.raises(CheckpointError) as err:
        load_extractor(path, "smallcnn", CIFAR)
    msg = str(err.value)
    assert "missing keys" in msg and "unexpected keys" in msg and "body.0.weight" in msg
    assert "conv1.weight" in msg and "\n" not in msg


def test_shape_mismatch_is_reported(small, tmp_path):
    path = tmp_path / "narrow.pth"
    narrow = build_extractor("smallcnn", small.domain, width=8)
    torch.save(narrow.backbone.state_dict(), path)  # plain state dict: no arch options
    with pytest.raises(CheckpointError, match="shape mismatches .*body.0.weight"):
        load_extractor(path, "smallcnn", small.domain)


def test_our_checkpoint_refuses_another_arch(small, tmp_path):
    path = save_extractor(build_extractor("smallcnn", small.domain), tmp_path / "s.pt")
    with pytest.raises(CheckpointError, match="'smallcnn' extractor, not 'resnet18'"):
        load_extractor(path, "resnet18", small.domain)


# --------------------------------------------------------------------------- feature cache


def test_feature_cache_hits_memory_then_disk(small, tmp_path):
    ext = build_extractor("smallcnn", small.domain, seed=2)
    calls = []
    ext.register_forward_hook(lambda *a: calls.append(1))
    cache = FeatureCache(tmp_path)
    z1 = cache.encode(ext, small)
    n_calls = len(calls)
    z2 = cache.encode(ext, small)
    assert (cache.hits, cache.misses) == (1, 1) and len(calls) == n_calls
    assert torch.equal(z1, z2) and z1.shape == (len(small), ext.feature_dim)
    assert len(list((tmp_path / "features").glob("*.pt"))) == 1

    fresh = FeatureCache(tmp_path)
    z3 = fresh.encode(ext, small)
    assert (fresh.hits, fresh.disk_hits, fresh.misses) == (1, 1, 0) and len(calls) == n_calls
    assert torch.equal(z1, z3)

    fresh.encode(ext, small.x[:5])  # bare tensors are keyed by content too
    with torch.no_grad():
        ext.backbone.body[0].weight.mul_(2)  # in-place change -> new key, fresh features
    z4 = fresh.encode(ext, small)
    assert fresh.misses == 2 and not torch.equal(z4, z1)


def test_feature_cache_encodes_in_eval_mode(small):
    ext = build_extractor("smallcnn", small.domain).train()
    z = FeatureCache(False).encode(ext, small)
    with torch.no_grad():
        assert torch.equal(z, ext.eval()(small.x))
    assert FeatureCache(False).dir is None
