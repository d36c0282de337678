"""The one-call API: ``poisonprobe.attack`` and ``AttackContext.build``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import poisonprobe
from poisonprobe.attacks import AttackContext, ThreatModel, get_attack
from poisonprobe.data import load_dataset
from poisonprobe.data.loaders.features import embedding_domain
from poisonprobe.errors import ConfigError
from poisonprobe.extractors import build_extractor
from poisonprobe.extractors.zoo import passthrough_extractor
from poisonprobe.head.config import VictimConfig
from poisonprobe.head.train import train_head


def blobs(n: int = 120, d: int = 5, k: int = 3):
    rng = np.random.default_rng(0)
    y = np.arange(n) % k
    x = rng.normal(0, 1.2, (k, d))[y] + rng.normal(0, 1, (n, d))
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


def test_one_call_matches_a_context_on_precomputed_features():
    """``attack()`` on embeddings = ``build`` given the features and an independently fitted
    clean head (what the runner and the benchmarks pass), with or without a passthrough."""
    z, y = blobs()
    poison = poisonprobe.attack("ft-ideal", train=(z, y), eps=0.1)
    from poisonprobe.data import ImageDataset

    domain = embedding_domain(5)
    train = ImageDataset(z[:, :, None, None], y, ["0", "1", "2"], domain, "train")
    vcfg = VictimConfig()
    head = train_head(z, y, 3, vcfg)
    for extractor in (passthrough_extractor(domain), None):
        ctx = AttackContext.build(
            extractor, train, 0.1, regime="feature", z_train=z, clean_head=head
        )
        assert ctx.threat == ThreatModel(eps=0.1, domain=domain, regime="feature")
        assert ctx.victim == vcfg and ctx.seed == 0 and ctx.n_poison == 12
        by_hand = get_attack("ft-ideal").fn(ctx)
        assert len(poison) == 12
        torch.testing.assert_close(poison.z, by_hand.z)
        torch.testing.assert_close(poison.y, by_hand.y)


def test_build_without_extractor_needs_features():
    z, y = blobs()
    from poisonprobe.data import ImageDataset

    train = ImageDataset(z[:, :, None, None], y, ["0", "1", "2"], embedding_domain(5), "t")
    with pytest.raises(ConfigError, match="z_train"):
        AttackContext.build(None, train, 0.1, regime="feature")


def test_build_plans_with_c_on_the_poisoned_size():
    z, y = blobs()
    ext = passthrough_extractor(embedding_domain(5))
    from poisonprobe.data import ImageDataset

    train = ImageDataset(z[:, :, None, None], y, ["0", "1", "2"], ext.domain, "t")
    ctx = AttackContext.build(ext, train, 0.1, regime="feature", victim=VictimConfig(C=0.5))
    assert ctx.victim.weight_decay == pytest.approx(1 / (132 * 0.5))  # N + n_p = 120 + 12
    clean = train_head(z, y, 3, VictimConfig(C=0.5))
    torch.testing.assert_close(ctx.clean_head.weight, clean.weight)


def test_image_attack_through_an_extractor():
    digits = load_dataset("digits")
    x, y = digits.train.x[:60], digits.train.y[:60]
    ext = build_extractor("smallcnn", digits.domain, width=4, feature_dim=16, grid=2).eval()
    poison = poisonprobe.attack("gc-input", extractor=ext, train=(x, y), eps=0.05, max_steps=2)
    assert poison.x.shape == (3, 1, 8, 8)
    assert poison.x.min() >= 0 and poison.x.max() <= 1  # box regime by default


def test_images_without_an_extractor_refused():
    digits = load_dataset("digits")
    with pytest.raises(ConfigError, match="pass the extractor"):
        poisonprobe.attack("label-flip", train=digits.train, eps=0.1)


def test_image_attack_on_embeddings_refused():
    z, y = blobs()
    with pytest.raises(ConfigError, match="feature-space attack"):
        poisonprobe.attack("gc-input", train=(z, y), eps=0.1)
    with pytest.raises(ConfigError, match="no parameter 'stepz'"):
        poisonprobe.attack("ft-ideal", train=(z, y), eps=0.1, stepz=3)


def test_poison_set_needs_its_kind_stated_and_matching_fields():
    """No inference from which fields are set: the attack says how its poisons go in."""
    from poisonprobe.attacks import PoisonKind, PoisonSet

    y, x, z, idx = (
        torch.zeros(2, dtype=torch.long),
        torch.zeros(2, 1, 2, 2),
        torch.zeros(2, 3),
        torch.arange(2),
    )
    with pytest.raises(TypeError):
        PoisonSet(y=y, x=x)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="PoisonKind"):
        PoisonSet(kind="injected images", y=y, x=x)  # type: ignore[arg-type]
    assert PoisonSet(kind=PoisonKind.IMAGES, y=y, x=x).kind is PoisonKind.IMAGES
    assert PoisonSet(kind=PoisonKind.FEATURES, y=y, z=z).kind is PoisonKind.FEATURES
    ok = PoisonSet(kind=PoisonKind.REPLACEMENTS, y=y, x=x, replace_idx=idx)
    assert ok.kind is PoisonKind.REPLACEMENTS
    wrong = [
        dict(kind=PoisonKind.IMAGES, z=z),
        dict(kind=PoisonKind.IMAGES, x=x, replace_idx=idx),
        dict(kind=PoisonKind.FEATURES, x=x),
        dict(kind=PoisonKind.REPLACEMENTS, x=x),
        dict(kind=PoisonKind.REPLACEMENTS, z=z, replace_idx=idx),
    ]
    for fields in wrong:
        with pytest.raises(ValueError, match="wrong fields"):
            PoisonSet(y=y, **fields)


def test_contexts_are_only_made_by_build():
    """One way to make a context: none built by hand (calling the class) outside ``build``."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    pattern = re.compile(r"\bAttackContext" + r"\(")
    found = [
        f"{path.relative_to(root)}:{n}"
        for folder in ("src", "tests", "benchmarks", "tools")
        for path in sorted((root / folder).rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not found, "build contexts with AttackContext.build:\n" + "\n".join(found)
