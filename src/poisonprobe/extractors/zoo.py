"""Extractors we did not train: precomputed embeddings (pass-through) and, in ``ZOO``,
standard backbones from torchvision, timm, open_clip and Hugging Face transformers."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..domain import InputDomain
from ..errors import ConfigError
from .archs import Extractor, Normalize

PASSTHROUGH_ARCH = "features"


def passthrough_extractor(domain: InputDomain) -> Extractor:
    """The "extractor" of precomputed embeddings stored as (N, d, 1, 1): it flattens them.

    The domain's normalisation is the identity (mean 0, std 1), so features are the file's.
    """
    return Extractor(nn.Flatten(), domain, PASSTHROUGH_ARCH, domain.channels).eval()


# ------------------------------------------------------------------------------ model zoo

ZOO = ("torchvision", "timm", "open_clip", "hf")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_WEIGHTS = "default"  # the library's default pre-trained weights; None = random init


def is_zoo_arch(arch: str) -> bool:
    """Whether ``arch`` names a library model (``torchvision:resnet18``, ``timm:vit_small...``)."""
    return arch.partition(":")[0] in ZOO and bool(arch.partition(":")[2])


def offline() -> bool:
    """Whether downloads are off (``POISONPROBE_OFFLINE=1``, or ``HF_HUB_OFFLINE=1``)."""
    return any(
        os.environ.get(k, "") not in ("", "0") for k in ("POISONPROBE_OFFLINE", "HF_HUB_OFFLINE")
    )


@dataclass(frozen=True)
class Preprocessing:
    """The model's own input pipeline: resize to ``size``, then normalise (RGB)."""

    size: tuple[int, int]
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD


class ZooExtractor(Extractor):
    """A library model used frozen as given, fed images in the dataset's [0, 1] box.

    Grey images are replicated to RGB, resized (bilinear, differentiable) to the model's input
    size and normalised with the model's own statistics inside ``forward``, so attacks keep
    working in pixel space and images of any size can be fed.
    """

    def __init__(
        self, model: nn.Module, domain: InputDomain, arch: str, prep: Preprocessing
    ) -> None:
        super().__init__(model, domain, arch, 0)
        self.normalize = Normalize(prep.mean, prep.std, 3)
        self.size = tuple(prep.size)
        with torch.no_grad():
            probe = torch.full((1, domain.channels, domain.height, domain.width), domain.low)
            self.feature_dim = int(self.eval()(probe).shape[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        return self.backbone(self.normalize(x)).flatten(1)


def _drop_last_linear(model: nn.Module) -> None:
    """Replace the model's last ``nn.Linear`` (its classifier) by the identity."""
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    if last is None:
        return
    parent_name, _, child = last.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, nn.Identity())


def _weights_error(arch: str, what: str, where: str, fix: str) -> ConfigError:
    return ConfigError(
        f"extractor {arch}: weights {what} are not in the cache {where} and cannot be "
        f"downloaded here; {fix}, or set weights: null for random init"
    )


def torchvision_weights(arch: str, weights, download: bool = True):
    """The torchvision weight enum for ``arch`` (None for random init), its file in the torch
    hub cache made sure of: downloaded when missing, or a one-line error offline."""
    import torchvision

    name = arch.partition(":")[2]
    if name not in torchvision.models.list_models():
        raise ConfigError(f"{arch}: torchvision has no model {name!r}; see torchvision.models")
    if weights is None or weights is False:
        return None
    options = torchvision.models.get_model_weights(name)
    key = "DEFAULT" if weights in (DEFAULT_WEIGHTS, True) else str(weights)
    try:
        enum = options[key]
    except KeyError:
        names = ", ".join(w.name for w in options)
        raise ConfigError(f"{arch}: no weights {key!r}; choose one of: {names}") from None
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    file = folder / Path(enum.url).name
    if not file.is_file():
        fix = f"download {enum.url} and put it at {file}"
        if offline() or not download:
            raise _weights_error(arch, file.name, str(folder), fix)
        try:
            torch.hub.load_state_dict_from_url(enum.url, progress=False)
        except Exception:
            raise _weights_error(arch, file.name, str(folder), fix) from None
    return enum


def check_zoo_weights(arch: str, weights) -> None:
    """Before any data loads: offline, a torchvision weights file missing from the cache is a
    one-line error now (hub libraries are checked when the model is built)."""
    if arch.partition(":")[0] == "torchvision" and offline():
        torchvision_weights(arch, weights, download=False)


def _torchvision(name: str, weights, arch: str) -> tuple[nn.Module, Preprocessing]:
    import torchvision

    enum = torchvision_weights(arch, weights)
    model = torchvision.models.get_model(name, weights=enum)
    _drop_last_linear(model)
    size, mean, std = (224, 224), IMAGENET_MEAN, IMAGENET_STD
    if enum is not None:
        t = enum.transforms()
        crop = getattr(t, "crop_size", [224])
        size = (crop[0], crop[-1])
        mean, std = tuple(t.mean), tuple(t.std)
    return model, Preprocessing(size, mean, std)


def _hub_error(arch: str, repo: str, err: Exception) -> ConfigError:
    from huggingface_hub.constants import HF_HUB_CACHE

    fix = f"run `huggingface-cli download {repo}` on a connected machine and copy {HF_HUB_CACHE}"
    return _weights_error(arch, f"of {repo} ({type(err).__name__})", HF_HUB_CACHE, fix)


def _timm(name: str, weights, arch: str) -> tuple[nn.Module, Preprocessing]:
    timm = _need("timm", arch)
    if weights not in (None, False, True, DEFAULT_WEIGHTS):
        name = f"{name}.{weights}"  # a pretrained tag, e.g. timm:vit_small_patch14_dinov2 + lvd142m
    pretrained = weights is not None and weights is not False
    try:
        model = timm.create_model(name, pretrained=pretrained, num_classes=0)
    except RuntimeError as err:
        if "Unknown model" in str(err):
            raise ConfigError(
                f"{arch}: timm has no model {name!r}; see timm.list_models()"
            ) from None
        raise _hub_error(arch, name, err) from None
    except (OSError, ValueError) as err:
        cfg = timm.models.get_pretrained_cfg(name)
        raise _hub_error(arch, getattr(cfg, "hf_hub_id", None) or name, err) from None
    cfg = timm.data.resolve_data_config({}, model=model)
    _, h, w = cfg["input_size"]
    return model, Preprocessing((h, w), tuple(cfg["mean"]), tuple(cfg["std"]))


def _open_clip(name: str, weights, arch: str) -> tuple[nn.Module, Preprocessing]:
    open_clip = _need("open_clip", arch)
    if name not in open_clip.list_models():
        raise ConfigError(f"{arch}: open_clip has no model {name!r}; see open_clip.list_models()")
    tag = None
    if weights not in (None, False):
        tags = open_clip.list_pretrained_tags_by_model(name)
        tag = tags[0] if weights in (True, DEFAULT_WEIGHTS) and tags else str(weights)
        if tag not in tags:
            raise ConfigError(f"{arch}: no weights {tag!r}; choose one of: {', '.join(tags)}")
    try:
        model = open_clip.create_model(name, pretrained=tag)
    except (RuntimeError, OSError, ValueError) as err:
        if tag is None:
            raise
        hub = (open_clip.get_pretrained_cfg(name, tag) or {}).get("hf_hub", "").strip("/")
        raise _hub_error(arch, hub or f"{name}/{tag}", err) from None
    visual = model.visual
    size = visual.image_size if isinstance(visual.image_size, tuple) else (visual.image_size,) * 2
    cfg = getattr(visual, "preprocess_cfg", {}) or {}
    mean = tuple(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN))
    std = tuple(cfg.get("std", open_clip.OPENAI_DATASET_STD))
    return visual, Preprocessing(tuple(size), mean, std)


class _HFPooled(nn.Module):
    """A transformers vision model's pooled output (``pooler_output``, else the token mean)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=x)
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:
            hidden = out.last_hidden_state
            pooled = hidden.mean(dim=1) if hidden.ndim == 3 else hidden.mean(dim=(2, 3))
        return pooled


def _hf(repo: str, weights, arch: str) -> tuple[nn.Module, Preprocessing]:
    transformers = _need("transformers", arch)
    try:
        config = transformers.AutoConfig.from_pretrained(repo)
        if weights is None or weights is False:
            model = transformers.AutoModel.from_config(config)
        else:
            revision = None if weights in (True, DEFAULT_WEIGHTS) else str(weights)
            model = transformers.AutoModel.from_pretrained(repo, revision=revision)
    except (OSError, ValueError) as err:
        raise _hub_error(arch, repo, err) from None
    size = getattr(config, "image_size", 224)
    size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    try:
        proc = transformers.AutoImageProcessor.from_pretrained(repo)
        mean, std = tuple(proc.image_mean), tuple(proc.image_std)
    except (OSError, ValueError, AttributeError, TypeError):
        pass  # no preprocessor_config.json (e.g. a local config): ImageNet statistics
    return _HFPooled(model), Preprocessing(size, mean, std)


def _need(module: str, arch: str):
    import importlib

    extra = {"timm": "timm", "open_clip": "open_clip", "transformers": "hf"}[module]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"extractor {arch} needs {module}; pip install 'poisonprobe[{extra}]'"
        ) from None


@contextmanager
def _quiet_libraries() -> Iterator[None]:
    """Mute the libraries' own log lines while building (open_clip logs a failed download on
    the root logger before raising): our one-line error says it instead."""
    previous = logging.root.manager.disable
    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        logging.disable(previous)


_BUILDERS = {"torchvision": _torchvision, "timm": _timm, "open_clip": _open_clip, "hf": _hf}


def build_zoo_extractor(
    arch: str,
    domain: InputDomain,
    weights: str | bool | None = DEFAULT_WEIGHTS,
    image_size: int | None = None,
    seed: int = 0,
) -> ZooExtractor:
    """A library model as a frozen extractor for images of ``domain``.

    ``weights``: ``"default"`` (the library's default pre-trained weights), a weight name or
    tag (torchvision enum member such as ``IMAGENET1K_V1``, timm / open_clip tag, HF
    revision), or ``None`` for random init (seeded). ``image_size`` overrides the model's
    input size (e.g. 32 to probe a CIFAR-sized ResNet cheaply).
    """
    lib, _, name = arch.partition(":")
    if lib not in _BUILDERS or not name:
        raise ConfigError(
            f"extractor {arch!r}: use torchvision:NAME, timm:NAME, open_clip:NAME or hf:REPO"
        )
    with torch.random.fork_rng(devices=[]), _quiet_libraries():
        torch.manual_seed(seed)
        model, prep = _BUILDERS[lib](name, weights, arch)
    if image_size is not None:
        prep = Preprocessing((image_size, image_size), prep.mean, prep.std)
    ext = ZooExtractor(model.eval(), domain, arch, prep)
    for p in ext.parameters():
        p.requires_grad_(False)
    return ext.eval()
