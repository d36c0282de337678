"""Synthetic 8x8 digits rendered from matplotlib's fonts: the offline *source* domain.

The default transfer setting pre-trains the extractor on ``syndigits`` and probes it on
scikit-learn's handwritten ``digits``. The two must share shape, range and look (8x8 grey,
17 intensity levels, centred, filling the frame) yet come from different distributions
(printed glyphs under random affine jitter vs. handwriting). To get the same blocky statistics
we copy the UCI recipe behind ``digits``: a 32x32 *binary* bitmap whose 4x4 blocks are counted
(0..16). Generation is deterministic from a generation seed that is *not* the run seed, so
every run of an experiment sees the same source data.

Spec: ``syndigits[:N][?seed=S&test=M]`` (or ``syndigits:train=N&test=M&seed=S``) -- ``N``
training images (default 6000), ``M`` test images (default 1500), generation seed ``S``
(default 0; the run seed never changes the data). Classes are balanced (counts differ by at
most one) and the test set does not change when only ``N`` does.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError
from .base import DatasetSplits, ImageDataset, register_dataset
from .digits import DIGIT_CLASSES, DIGITS_DOMAIN
from .folder import parse_options

DEFAULT_TRAIN = 6000
DEFAULT_TEST = 1500
GENERATION_SEED = 0
MAX_IMAGES = 1_000_000  # a typo guard: 1e6 images is ~250 MB at 8x8 float32

_CANVAS = 64  # working resolution: 2x the UCI 32x32 bitmap
_GLYPH_PX = 96  # font size used to rasterise the glyphs before normalising them
_MARGIN = 2  # canvas pixels kept free around the canonical glyph
_BLUR_PX = 2.0  # Gaussian radius (canvas pixels) that makes strokes into ridges
_MAX_WIDTH = 0.7  # widest ink allowed, as a fraction of the frame (digits: ~6 of 8 columns)
_CHUNK = 1024
_DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def _maps_real_digits(path: Path) -> bool:
    """True if the font maps '0'..'9' to digit glyphs.

    Symbol fonts (cmex10, cmsy10) map the digit code points to brackets or arrows and the
    fallback font maps them all to one placeholder box, so checking the cmap alone is not
    enough: the glyph names must name digits too (old-style figures count).
    """
    from fontTools.ttLib import TTFont

    try:
        font = TTFont(str(path), lazy=True)
        cmap = font.getBestCmap() or {}
    except Exception:  # a font we cannot parse cannot be used either
        return False
    for d, word in enumerate(_DIGIT_NAMES):
        glyph = cmap.get(ord("0") + d)
        if glyph is None:
            return False
        g = glyph.lower()
        if not (g.startswith(word) or g in (f"uni{ord('0') + d:04x}", f"u{ord('0') + d:04x}")):
            return False
    return True


@functools.lru_cache(maxsize=1)
def digit_fonts() -> tuple[Path, ...]:
    """Every font file shipped with matplotlib that renders the ten digits (sorted by name)."""
    fonts = sorted(p for p in _font_dir().glob("*.ttf") if _maps_real_digits(p))
    if not fonts:
        raise DataError(
            f"no font under {_font_dir()} renders digits; reinstall matplotlib or use 'digits'"
        )
    return tuple(fonts)


def _render_glyph(path: Path, digit: int) -> tuple[np.ndarray, float]:
    """One glyph, cropped to its ink, scaled to fill the canvas height, centred, blurred.

    The blur turns each stroke into a ridge, so that thresholding the warped glyph at a
    random level later varies the stroke width (low threshold: thick pen).
    """
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    font = ImageFont.truetype(str(path), _GLYPH_PX)
    side = 3 * _GLYPH_PX
    img = Image.new("L", (side, side), 0)
    ImageDraw.Draw(img).text((side // 2, side // 2), str(digit), font=font, fill=255, anchor="mm")
    bbox = img.getbbox()
    if bbox is None:
        raise DataError(f"font {path.name} renders an empty '{digit}'; remove it from the font dir")
    glyph = img.crop(bbox)
    w, h = glyph.size
    k = (_CANVAS - 2 * _MARGIN) / max(h, w)
    nw, nh = max(1, round(w * k)), max(1, round(h * k))
    glyph = glyph.resize((nw, nh), Image.Resampling.LANCZOS)
    out = Image.new("L", (_CANVAS, _CANVAS), 0)
    out.paste(glyph, ((_CANVAS - nw) // 2, (_CANVAS - nh) // 2))
    out = out.filter(ImageFilter.GaussianBlur(_BLUR_PX))
    return np.asarray(out, dtype=np.float64) / 255.0, nw / (_CANVAS - 2 * _MARGIN)


@functools.lru_cache(maxsize=1)
def _glyph_bank() -> tuple[torch.Tensor, np.ndarray]:
    """All (font, digit) glyphs as a (n_fonts * 10, 1, 64, 64) float64 tensor + ink widths.

    Widths are fractions of the canvas height, used to keep stretched glyphs from
    touching the side borders (handwritten digits rarely do).
    """
    rendered = [_render_glyph(p, d) for p in digit_fonts() for d in range(10)]
    bank = torch.from_numpy(np.stack([g for g, _ in rendered])).unsqueeze(1)
    return bank, np.array([w for _, w in rendered])


def _affine_grid(theta: torch.Tensor, size: int) -> torch.Tensor:
    """``F.affine_grid`` (align_corners=False) written elementwise.

    Elementwise float64 arithmetic gives the same bits for any thread count, so the
    threshold that follows cannot flip pixels from one machine to the next.
    """
    coords = (2 * torch.arange(size, dtype=theta.dtype) + 1) / size - 1
    gx, gy = coords[None, None, :], coords[None, :, None]
    t = theta[:, :, :, None, None]
    x = t[:, 0, 0] * gx + t[:, 0, 1] * gy + t[:, 0, 2]
    y = t[:, 1, 0] * gx + t[:, 1, 1] * gy + t[:, 1, 2]
    return torch.stack([x, y], dim=-1)


def render_digits(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Render ``labels`` as 8x8 uint8 count images (0..16), one random font and jitter each.

    Pipeline per image: blurred canonical glyph -> random affine (rotation, anisotropic
    scale, shear, translation) sampled onto the 32x32 UCI grid -> random threshold (stroke
    width) -> binary bitmap -> ink count of each 4x4 block, as in the UCI original.
    """
    n = len(labels)
    bank, widths = _glyph_bank()
    n_fonts = bank.shape[0] // 10
    font = rng.integers(0, n_fonts, size=n)
    rot = np.deg2rad(np.clip(rng.normal(0.0, 6.0, size=n), -15, 15))
    shear = np.clip(rng.normal(0.0, 0.1, size=n), -0.25, 0.25)
    scale = rng.uniform(0.94, 1.04, size=n)
    aspect = rng.uniform(0.95, 1.3, size=n)  # handwritten digits are wider than printed
    shift = rng.uniform(-0.04, 0.04, size=(n, 2))
    thresh = rng.uniform(0.15, 0.45, size=n)

    # grid_sample maps output to input coordinates: the inverse of the forward map
    # translate . rotate . shear . scale (in normalised [-1, 1] coordinates).
    glyph = font * 10 + labels
    sx = np.minimum(scale * aspect, _MAX_WIDTH / widths[glyph])
    sy = scale
    a = np.zeros((n, 2, 2))
    c, s = np.cos(rot), np.sin(rot)
    a[:, 0, 0], a[:, 0, 1] = c * sx, c * shear * sy - s * sy
    a[:, 1, 0], a[:, 1, 1] = s * sx, s * shear * sy + c * sy
    inv = np.linalg.inv(a)
    theta = torch.from_numpy(np.concatenate([inv, -inv @ shift[:, :, None]], axis=2))

    out = np.empty((n, 8, 8), dtype=np.uint8)
    for start in range(0, n, _CHUNK):  # chunks keep the working set in cache
        sl = slice(start, min(start + _CHUNK, n))
        src = bank[torch.from_numpy(glyph[sl])]
        grid = _affine_grid(theta[sl], 32)
        soft = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        bitmap = (soft[:, 0] > torch.from_numpy(thresh[sl])[:, None, None]).to(torch.uint8)
        counts = bitmap.reshape(-1, 8, 4, 8, 4).sum(dim=(2, 4), dtype=torch.uint8)
        out[sl] = counts.numpy()
    return out


def _balanced_labels(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` labels, class counts differing by at most one, in shuffled order."""
    return rng.permutation(np.arange(n) % 10).astype(np.int64)


@functools.lru_cache(maxsize=8)
def generate(n: int, seed: int, split: str) -> tuple[np.ndarray, np.ndarray]:
    """One split as (uint8 counts (n, 8, 8), int64 labels (n,)); cached in memory.

    Each split has its own random stream (seeded by generation seed and split name), so
    the test set stays the same when only the training size changes.
    """
    rng = np.random.default_rng([seed, {"train": 0, "test": 1}[split]])
    labels = _balanced_labels(n, rng)
    counts = render_digits(labels, rng)
    counts.setflags(write=False)
    labels.setflags(write=False)
    return counts, labels


def _parse(arg: str | None) -> tuple[int, int, int]:
    """``[N][?seed=S&test=M]`` -> (n_train, n_test, generation seed)."""
    if arg and "=" in arg and "?" not in arg:  # "syndigits:seed=1" without a size
        arg = "?" + arg
    head, opts = parse_options(arg, allowed=("train", "test", "seed"), what="syndigits")
    values = {"train": DEFAULT_TRAIN, "test": DEFAULT_TEST, "seed": GENERATION_SEED}
    if head:
        opts = {"train": head, **opts}
    for key, raw in opts.items():
        try:
            values[key] = int(raw)
        except ValueError:
            raise DataError(
                f"syndigits {key}={raw!r} is not an integer; use e.g. syndigits:6000?test=1500"
            ) from None
    for key in ("train", "test"):
        if not 10 <= values[key] <= MAX_IMAGES:
            raise DataError(
                f"syndigits {key}={values[key]} is out of range; use 10..{MAX_IMAGES} images"
            )
    if values["seed"] < 0:
        raise DataError(f"syndigits seed={values['seed']} is negative; use a seed >= 0")
    return values["train"], values["test"], values["seed"]


def _as_dataset(counts: np.ndarray, labels: np.ndarray) -> ImageDataset:
    x = torch.from_numpy(counts.astype(np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(labels.copy())
    return ImageDataset(x, y, list(DIGIT_CLASSES), DIGITS_DOMAIN, "syndigits")


@register_dataset(
    "syndigits",
    "digits 0-9 rendered from matplotlib's fonts with affine jitter, 8x8 like 'digits' "
    "(offline; syndigits:N for N train images)",
)
def load_syndigits(arg: str | None, root: Path, seed: int, download: bool) -> DatasetSplits:
    """Generate (or reuse) the synthetic digits; ``seed`` (the run seed) is ignored on purpose."""
    n_train, n_test, gen_seed = _parse(arg)
    return DatasetSplits(
        train=_as_dataset(*generate(n_train, gen_seed, "train")),
        test=_as_dataset(*generate(n_test, gen_seed, "test")),
    )
