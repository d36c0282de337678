"""``SPEC@CxHxW``: shape, channels, re-measured statistics, one-line errors."""

from __future__ import annotations

import pytest
import torch

from poisonprobe.data import load_dataset
from poisonprobe.data.base import split_shape_suffix
from poisonprobe.errors import DataError
from poisonprobe.experiment.config import load_config


def test_digits_rendered_as_rgb_32() -> None:
    small = load_dataset("digits")
    big = load_dataset("digits@3x32x32")
    assert big.train.x.shape == (len(small.train), 3, 32, 32)
    assert torch.equal(big.train.y, small.train.y) and big.test.x.shape[1:] == (3, 32, 32)
    # grey -> RGB replicates one plane; bilinear upsampling keeps each image's mean closely
    assert torch.equal(big.train.x[:, 0], big.train.x[:, 2])
    assert torch.allclose(big.train.x.mean((1, 2, 3)), small.train.x.mean((1, 2, 3)), atol=0.02)
    measured = big.train.x[:, 0].mean().item()
    assert big.domain.mean == pytest.approx((measured,) * 3, abs=1e-4)
    assert big.domain.shape == (3, 32, 32) and big.train.name == "digits@3x32x32"


def test_rgb_to_grey_uses_luminance() -> None:
    from poisonprobe.data.reshape import _convert

    x = torch.rand(5, 3, 4, 4)
    grey = _convert(x, (1, 4, 4))
    expected = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    assert torch.allclose(grey[:, 0], expected, atol=1e-6)


@pytest.mark.parametrize("spec", ["digits@3x32", "digits@2x8x8", "digits@3x0x8", "digits@axbxc"])
def test_bad_shape_suffix_is_one_line(spec: str) -> None:
    with pytest.raises(DataError, match="CxHxW|channels"):
        split_shape_suffix(spec)
    with pytest.raises(DataError):
        load_config({"settings": [{"name": "t", "source": "digits", "target": spec}]})


def test_suffix_passes_config_validation() -> None:
    cfg = load_config(
        {"settings": [{"name": "t", "source": "syndigits@1x16x16", "target": "digits@1x16x16"}]}
    )
    assert cfg.settings[0].target == "digits@1x16x16"
