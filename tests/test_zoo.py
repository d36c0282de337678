"""The extractor zoo: torchvision, timm, open_clip and Hugging Face models, frozen, random init
(offline), each through a feature-space and an input-space attack; offline weights → one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import HANG_GUARD_S

import poisonprobe
from poisonprobe.data import load_dataset
from poisonprobe.extractors.cache import extractor_digest
from poisonprobe.extractors.zoo import build_zoo_extractor

SRC = str(Path(poisonprobe.__file__).resolve().parents[1])
pytest.importorskip("timm")
pytest.importorskip("open_clip")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> Path:
    """The smallest open_clip and HF ViT we can build: configs written here, no download."""
    import open_clip
    import transformers

    d = tmp_path_factory.mktemp("tiny")
    clip = {
        "embed_dim": 16,
        "vision_cfg": {
            "image_size": 32,
            "layers": 2,
            "width": 32,
            "head_width": 16,
            "patch_size": 16,
        },
        "text_cfg": {"context_length": 8, "vocab_size": 100, "width": 16, "heads": 2, "layers": 1},
    }
    (d / "tiny-clip.json").write_text(json.dumps(clip))
    open_clip.add_model_config(d / "tiny-clip.json")
    transformers.ViTConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=16,
    ).save_pretrained(d / "tiny-vit")
    return d


def archs(d: Path) -> dict[str, tuple[str, int | None, int]]:
    """arch -> (spec, image_size override, expected feature dim)."""
    return {
        "torchvision": ("torchvision:resnet18", 32, 512),
        "timm": ("timm:resnet18", 32, 512),
        "open_clip": ("open_clip:tiny-clip", None, 16),
        "hf": (f"hf:{d / 'tiny-vit'}", None, 32),
    }


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("digits")
    return data.train.x[:40], data.train.y[:40], data.domain


@pytest.mark.parametrize("lib", ["torchvision", "timm", "open_clip", "hf"])
def test_zoo_model_through_feature_and_input_attacks(lib, tiny_models, digits):
    x, y, domain = digits
    spec, size, dim = archs(tiny_models)[lib]
    ext = build_zoo_extractor(spec, domain, weights=None, image_size=size)
    assert ext.feature_dim == dim and not any(p.requires_grad for p in ext.parameters())
    digest = extractor_digest(ext)
    feat = poisonprobe.attack("ft-feasible", extractor=ext, train=(x, y), eps=0.1)
    assert feat.z.shape == (4, dim) and torch.isfinite(feat.z).all()
    img = poisonprobe.attack(
        "gc-input", extractor=ext, train=(x, y), eps=0.1, max_steps=2, target="gradpc"
    )
    assert img.x.shape == (4, 1, 8, 8) and img.x.min() >= 0 and img.x.max() <= 1
    assert (img.x - x[img.base_idx]).abs().max() > 0  # gradients reached the pixels
    assert img.info["gc_objective"] < img.info["gc_objective_init"]
    assert extractor_digest(ext) == digest  # used frozen: the attack changed no weight


def test_preprocessing_runs_inside_the_extractor(digits):
    """Grey 8×8 in [0, 1] → RGB, resized to the model's size, normalised with its statistics."""
    import torchvision

    x, _, domain = digits
    ext = build_zoo_extractor("torchvision:resnet18", domain, weights=None, image_size=40)
    net = torchvision.models.resnet18()
    net.fc = torch.nn.Identity()
    net.load_state_dict(ext.backbone.state_dict())
    net.eval()
    rgb = F.interpolate(x[:3].expand(-1, 3, -1, -1), size=(40, 40), mode="bilinear")
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(ext(x[:3]), net((rgb - mean) / std))


def test_zoo_model_through_the_runner(tmp_path):
    cfg = {
        "settings": [{"name": "t", "source": "digits", "target": "digits"}],
        "extractor": {"arch": "timm:resnet18", "weights": None, "image_size": 16},
        "attacks": ["label-flip", "ft-ideal"],
        "regimes": ["box"],
        "eps": [0.05],
    }
    df = poisonprobe.run(cfg, out=tmp_path, quiet=True)
    assert (df["extractor"] == "timm:resnet18-random").all()
    assert set(df["attack"]) == {"none", "label-flip", "ft-ideal"}
    assert df["clean_acc"].iloc[0] > 0.3  # random conv features: well above chance (0.1)


def _cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "poisonprobe.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        # the package under test, wherever the working directory is
        env={**os.environ, "NO_COLOR": "1", "PYTHONPATH": SRC, **env},
        timeout=HANG_GUARD_S,
    )


@pytest.mark.parametrize(
    ("extractor", "needle"),
    [
        ({"arch": "torchvision:resnet18", "weights": "IMAGENET1K_V1"}, "resnet18-f37072fd.pth"),
        ({"arch": "timm:resnet18"}, "resnet18"),
        ({"arch": "open_clip:RN50", "weights": "openai"}, "RN50"),
        ({"arch": "hf:facebook/dinov2-small"}, "facebook/dinov2-small"),
    ],
)
def test_offline_weights_request_is_one_line(tmp_path, extractor, needle):
    cfg = {
        "settings": [{"name": "t", "source": "digits", "target": "digits"}],
        "extractor": extractor,
        "attacks": ["label-flip"],
        "eps": [0.1],
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    proc = _cli(
        ["run", "c.yaml", "--out", "out", "-q"],
        tmp_path,
        HF_HUB_OFFLINE="1",
        TORCH_HOME=str(tmp_path / "torch"),
        HF_HOME=str(tmp_path / "hf"),
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert needle in lines[0] and "not in the cache" in lines[0] and "weights: null" in lines[0]
