"""What identifies a result: cell fingerprints (``cell_id``) and config fingerprints.

A results folder may only serve a row again when everything that determined it is the same:
the data (content fingerprints of the target splits), the extractor (the sha256 of the exact
weights used, pre-trained or loaded), the victim recipe, the attack and its parameters, the
regime and L∞ radius, eps, the defence with its parameters, the seeds, the device type, and
the version of the result-affecting code. Every row carries that hash as ``cell_id``; resume
reuses a row only when its ``cell_id`` matches, so a changed config can never be answered
with another experiment's rows.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ..errors import ConfigError
from .config import Config

RESULTS_VERSION = 4  # 4: column target_acc renamed target_head_acc (#19); 3: plateau (#15)
"""Bump when a code change alters results: old rows then stop matching (they are refused)."""

NON_RESULT_KEYS = frozenset({"save_poisons", "download"})
"""Config keys that never change a result (everything else does)."""


def _digest(payload: Any, length: int = 16) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def result_config(cfg: Config) -> dict[str, Any]:
    """The config's result-affecting part, as plain data."""
    return {k: v for k, v in cfg.model_dump(mode="json").items() if k not in NON_RESULT_KEYS}


def config_id(cfg: Config) -> str:
    """A short fingerprint of everything in the config that changes results."""
    return _digest({"code": RESULTS_VERSION, "config": result_config(cfg)}, 12)


def config_differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the keys whose values differ between two config dumps."""
    out: list[str] = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key), new.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, name + ".")
        elif a != b:
            out.append(name)
    return out


def check_same_experiment(old_yaml: str | None, cfg: Config, add: bool) -> None:
    """Refuse to run ``cfg`` into a folder made by a config that differs in results.

    ``old_yaml`` is the folder's ``config.yaml`` (None: a new folder). With ``add`` the new
    cells go beside the old ones, each row keyed by its own fingerprint.
    """
    if old_yaml is None or add:
        return
    import yaml

    from .config import parse_config

    try:
        old = result_config(parse_config(yaml.safe_load(old_yaml)))
    except (ConfigError, yaml.YAMLError):
        raise ConfigError(
            "the output folder's config.yaml is not a valid config; "
            "choose another --out (or --add to keep its rows and add this config's)"
        ) from None
    diff = config_differences(old, result_config(cfg))
    if diff:
        shown = ", ".join(diff[:6]) + (f" (+{len(diff) - 6} more)" if len(diff) > 6 else "")
        raise ConfigError(
            f"the output folder holds results of another config (differs in {shown}); "
            "choose another --out, or pass --add to add this config's cells beside them"
        )


def cell_id(
    *,
    setting: dict[str, Any],
    extractor: Any,
    victim: dict[str, Any],
    attack: str,
    params: dict[str, Any],
    regime: str,
    linf: float | None,
    eps: float,
    defense: str,
    seed: int,
    device: str,
    batch_size: int,
) -> str:
    """The fingerprint of one cell (one results row)."""
    return _digest(
        {
            "code": RESULTS_VERSION,
            "setting": setting,
            "extractor": extractor,
            "victim": victim,
            "attack": attack,
            "params": params,
            "regime": regime,
            "linf": linf,
            "eps": round(float(eps), 10),
            "defense": defense,
            "seed": int(seed),
            "device": device,
            "batch_size": batch_size,
        }
    )
