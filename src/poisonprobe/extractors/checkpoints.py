"""Safe extractor checkpoints: our own format, torchvision state dicts, Lightning ``.ckpt``
files (solo-learn, lightly) and ``.safetensors``.

A checkpoint from the internet is untrusted input: pickles are only ever read with
``torch.load(..., weights_only=True)``, which cannot run code, and anything it refuses is
reported (never retried unsafely). A checkpoint that does not fit the architecture fails with
the keys and shapes that disagree, so the user sees *which* network the file belongs to.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from .._io import atomic_save
from ..domain import InputDomain
from ..errors import CheckpointError, error_gist
from .archs import Extractor, arch_config, build_extractor

log = logging.getLogger(__name__)

FORMAT = "poisonprobe-extractor"
FORMAT_VERSION = 1
# heads that SSL/classification checkpoints carry next to the backbone; never loaded
IGNORED_PREFIXES = (
    "fc.",
    "head.",
    "heads.",
    "classifier.",
    "projection_head.",
    "prediction_head.",
    "projector.",
    "predictor.",
)


def save_extractor(ext: Extractor, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Save weights + JSON metadata; ``.safetensors`` suffix -> safetensors, else torch.save.

    The file holds only tensors and strings, so it loads with ``weights_only=True``. The
    architecture options (e.g. ``width``) travel in the metadata, so a tuned ``smallcnn``
    rebuilds exactly. Written atomically (temp file + rename).
    """
    path = Path(path)
    info = {
        **(meta or {}),
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": ext.arch,
        "arch_kwargs": arch_config(ext.backbone),
        "feature_dim": ext.feature_dim,
        "domain": ext.domain.to_dict(),
    }
    state = {k: v.detach().cpu().contiguous() for k, v in ext.state_dict().items()}
    text = json.dumps(info, sort_keys=True, default=str)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        atomic_save(state, path, lambda obj, p: save_file(obj, p, metadata={"poisonprobe": text}))
    else:
        atomic_save({"format": FORMAT, "meta": text, "state_dict": state}, path)
    return path


def checkpoint_sha256(path: str | Path) -> str:
    """Hex sha256 of a file (recorded in the run manifest so results name their weights)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and metadata of a checkpoint file, read without running any code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found; check the path")
    try:
        safetensors = path.suffix == ".safetensors" or _looks_like_safetensors(path)
    except OSError as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err.strerror}") from None
    if safetensors:
        return _read_safetensors(path)
    payload = _torch_load(path)
    return _unwrap(payload, path)


def _looks_like_safetensors(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 1 << 30


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # SafetensorError, OSError, ...: all mean "unreadable"
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt ({error_gist(err)}); "
            "download or save it again"
        ) from None
    info = _metadata(meta["poisonprobe"], path) if "poisonprobe" in meta else {}
    return state, info


def _torch_load(path: Path) -> Any:
    try:
        with warnings.catch_warnings():  # a plain pickle (protocol 4, Python's default) makes
            # torch warn on stderr before it refuses or loads: the outcome says all there is
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if _is_refusal(str(err), path):
            raise CheckpointError(
                f"refusing to unpickle {path}: it is not a plain tensor checkpoint; "
                "re-save it with torch.save(state_dict) or safetensors"
            ) from None
        raise _corrupt(path, err) from None
    except Exception as err:  # garbage makes the safe unpickler raise anything (struct.error...)
        raise _corrupt(path, err) from None


def _is_refusal(message: str, path: Path) -> bool:
    """Did the weights-only unpickler refuse a *valid* pickle (vs. choke on garbage)?"""
    if "GLOBAL" in message or "Unsupported global" in message:
        return True  # the pickle wants to import something: the dangerous case
    with open(path, "rb") as f:
        magic = f.read(2)
    # a well-formed pickle (protocol >= 2) or zip checkpoint with opcodes we do not allow
    return magic[:1] == b"\x80" or magic == b"PK"


def _corrupt(path: Path, err: BaseException) -> CheckpointError:
    return CheckpointError(
        f"checkpoint {path} is truncated or corrupt ({error_gist(err)}); download or save it again"
    )


def _metadata(text: Any, path: Path) -> dict[str, Any]:
    """Our JSON metadata block, or a one-line error if it is damaged."""
    try:
        meta = json.loads(text)
    except (TypeError, ValueError) as err:
        raise CheckpointError(
            f"checkpoint {path} has corrupt poisonprobe metadata ({error_gist(err)}); save it again"
        ) from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint {path} has corrupt poisonprobe metadata; save it again")
    return meta


def _unwrap(payload: Any, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Find the tensor dict inside our format, a Lightning checkpoint or a plain state dict."""
    meta: dict[str, Any] = {}
    if isinstance(payload, dict) and payload.get("format") == FORMAT:
        meta = _metadata(payload.get("meta") or "{}", path)
        payload = payload.get("state_dict")
    elif isinstance(payload, dict):
        for key in ("state_dict", "model", "model_state_dict"):  # Lightning, others
            if isinstance(payload.get(key), dict):
                payload = payload[key]
                break
    if not isinstance(payload, dict):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(payload).__name__}, not a state dict; "
            "re-save it with torch.save(model.state_dict())"
        )
    state = {k: v for k, v in payload.items() if isinstance(k, str) and torch.is_tensor(v)}
    if not state:
        raise CheckpointError(f"checkpoint {path} contains no tensors; is it a model checkpoint?")
    return state, meta


def _best_prefix(keys: list[str], wanted: set[str]) -> str:
    """The key prefix (``''``, ``'backbone.'``, ``'module.encoder_q.'`` ...) under which the
    most checkpoint keys match the model; ties go to the shortest prefix, so ``backbone.``
    wins over ``momentum_backbone.``."""
    votes: Counter[str] = Counter()
    for k in keys:
        parts = k.split(".")
        for i in range(len(parts)):
            if ".".join(parts[i:]) in wanted:
                votes[".".join(parts[:i]) + ("." if i else "")] += 1
                break
    if not votes:
        return ""
    return min(votes, key=lambda p: (-votes[p], len(p)))


def _sample(names: list[str], n: int = 4) -> str:
    shown = ", ".join(names[:n])
    return f"{len(names)} ({shown}{', ...' if len(names) > n else ''})"


def match_state_dict(
    state: dict[str, torch.Tensor], model: torch.nn.Module, path: Path | str, arch: str
) -> dict[str, torch.Tensor]:
    """Map checkpoint keys onto ``model``'s; raise one line naming what does not fit
    (keys in file / model order, which usually shows the stem first)."""
    target = model.state_dict()
    wanted = set(target)
    prefix = _best_prefix(sorted(state), wanted)
    picked: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for k, v in state.items():
        if not k.startswith(prefix):
            continue  # another module of a Lightning checkpoint (heads, momentum copies)
        name = k[len(prefix) :]
        if name in wanted:
            picked[name] = v
        elif not name.startswith(IGNORED_PREFIXES):
            unexpected.append(name)
    # BatchNorm's step counter is bookkeeping, not a weight; older files lack it
    missing = [k for k in target if k not in picked and not k.endswith("num_batches_tracked")]
    shapes = sorted(
        f"{k} {tuple(v.shape)} vs {tuple(target[k].shape)}"
        for k, v in picked.items()
        if v.shape != target[k].shape
    )
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {_sample(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_sample(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches (checkpoint vs model) {_sample(shapes, 3)}")
        raise CheckpointError(
            f"checkpoint {path} does not fit arch {arch!r}: {'; '.join(parts)}; "
            "pass the arch the checkpoint was trained with"
        )
    for k in wanted - set(picked):
        picked[k] = target[k]
    return {k: v.to(target[k].dtype) for k, v in picked.items()}


def load_extractor(path: str | Path, arch: str, domain: InputDomain) -> Extractor:
    """An :class:`Extractor` with the checkpoint's backbone weights, in eval mode.

    Normalisation: our own checkpoints bring the statistics they were trained with; for
    foreign backbones the domain's ``mean``/``std`` apply.
    """
    state, meta = read_checkpoint(path)
    if meta.get("arch") not in (None, arch):
        raise CheckpointError(
            f"checkpoint {path} is a {meta['arch']!r} extractor, not {arch!r}; "
            f"set arch: {meta['arch']}"
        )
    options = meta.get("arch_kwargs", {})
    try:
        ext = build_extractor(arch, domain, 0, **options)
    except (TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(
            f"checkpoint {path} asks for {arch} options {options!r} that cannot be built "
            f"({error_gist(err)}); save it again with this version"
        ) from None
    has_norm = "normalize.mean" in state and "normalize.std" in state
    norm = {k: state.pop(k) for k in ("normalize.mean", "normalize.std") if k in state}
    backbone_state = match_state_dict(state, ext.backbone, path, arch)
    ext.backbone.load_state_dict(backbone_state)
    if has_norm:
        if norm["normalize.mean"].shape != ext.normalize.mean.shape:
            raise CheckpointError(
                f"checkpoint {path} normalises {norm['normalize.mean'].numel()} channels but "
                f"the data has {domain.channels}; use data with the checkpoint's channels"
            )
        ext.normalize.mean.copy_(norm["normalize.mean"])
        ext.normalize.std.copy_(norm["normalize.std"])
    ext.checkpoint_meta = meta
    return ext.eval()
