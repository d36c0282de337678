"""The experiment config: a validated (pydantic) schema read from YAML.

Every wrong key or value becomes a one-line ``ConfigError`` naming the key and the fix.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import ConfigError, check_device, check_eps

DEFAULT_ATTACKS: list[str] = [
    "label-flip",
    "random-noise",
    "gc-input",
    "tgda",
    "tgda-feature",
    "emn",
    "ft-ideal",
    "ft-feasible",
    "ft-decoder",
    "ft-match",
]
"""The default run's attacks (every registered attack joins as it lands)."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SettingConfig(Strict):
    """A downstream setting: pre-train the extractor on ``source``, probe on ``target``."""

    name: str
    source: str
    target: str

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v or "," in v:
            raise ValueError("setting name must be non-empty and contain no comma")
        return v


class ExtractorConfig(Strict):
    """Which extractor, and how to pre-train it when no checkpoint is given."""

    arch: str = "smallcnn"
    method: Literal["simclr", "moco", "byol"] = "simclr"
    epochs: int = Field(30, ge=0)
    batch_size: int = Field(256, ge=2)
    lr: float | None = Field(None, gt=0)
    seed: int | list[int] = 0  # pre-training seed; a list runs one extractor per seed
    amp: bool = True  # bf16 autocast for pre-training on CUDA; no effect on CPU
    checkpoint: str | None = None
    name: str | None = None  # label in results; default "<arch>-<method>" or the checkpoint stem

    @field_validator("arch")
    @classmethod
    def _arch(cls, v: str) -> str:
        from ..extractors.archs import ARCHS

        if v not in ARCHS:
            raise ValueError(f"unknown arch {v!r}; choose one of: {', '.join(ARCHS)}")
        return v

    @field_validator("seed")
    @classmethod
    def _seeds(cls, v: int | list[int]) -> int | list[int]:
        if isinstance(v, list) and (not v or len(set(v)) != len(v)):
            raise ValueError("seed must be an integer or a non-empty list of distinct integers")
        return v

    def per_seed(self) -> list[ExtractorConfig]:
        """One config per pre-training seed (the same label: seeds are replicates)."""
        seeds = self.seed if isinstance(self.seed, list) else [self.seed]
        return [self.model_copy(update={"seed": s}) for s in seeds]

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.checkpoint:
            return f"{self.arch}-{Path(self.checkpoint).stem}"
        return f"{self.arch}-{self.method}"


class VictimSettings(Strict):
    solver: Literal["lbfgs", "sgd"] = "lbfgs"
    weight_decay: float = Field(1e-3, gt=0)
    max_iter: int = Field(100, ge=1)
    tol: float = Field(1e-9, gt=0)
    sgd_epochs: int = Field(100, ge=1)
    sgd_lr: float = Field(4.0, gt=0)


class AttackSpec(Strict):
    """An attack and its parameters; ``label`` names it in results (default: ``name``)."""

    name: str
    label: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @property
    def column(self) -> str:
        return self.label or self.name


def expand_grid(
    name: str, label: str | None, params: dict[str, Any], grid: Any
) -> list[dict[str, Any]]:
    """One attack entry per combination of ``grid`` values (cartesian, in declared order).

    Each variant is labelled ``<label or name>[p=v,q=w]`` so results keep them apart.
    """
    if not isinstance(grid, dict) or not grid:
        raise ValueError(
            f"attack {name!r}: grid must map parameters to lists, e.g. {{steps: [10, 50]}}"
        )
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ValueError(
                f"attack {name!r}: grid value of {key!r} must be a non-empty list, e.g. [10, 50]"
            )
        if key in params:
            raise ValueError(f"attack {name!r}: {key!r} is both fixed and in the grid; keep one")
    keys = list(grid)
    out = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        values = dict(zip(keys, combo, strict=True))
        tag = ",".join(f"{k}={v}" for k, v in values.items())
        out.append({"name": name, "label": f"{label or name}[{tag}]", "params": params | values})
    return out


class Config(Strict):
    settings: list[SettingConfig] = Field(
        default_factory=lambda: [
            SettingConfig(name="finetune", source="digits", target="digits"),
            SettingConfig(name="transfer", source="syndigits", target="digits"),
        ]
    )
    extractor: ExtractorConfig | list[ExtractorConfig] = Field(default_factory=ExtractorConfig)
    victim: VictimSettings = Field(default_factory=VictimSettings)
    attacks: list[AttackSpec] = Field(
        default_factory=lambda: [AttackSpec(name=n) for n in DEFAULT_ATTACKS]
    )
    regimes: list[Literal["unconstrained", "box"]] = Field(
        default_factory=lambda: ["unconstrained", "box"]
    )
    linf: float | None = Field(None, gt=0)
    eps: list[float] = Field(default_factory=lambda: [0.03, 0.1, 0.3])
    defenses: list[Any] = Field(default_factory=lambda: ["none"])
    seeds: list[int] = Field(default_factory=lambda: [0])  # attack seeds (see docs/config.md)
    split_seeds: list[int] = Field(default_factory=lambda: [0])  # train/test re-splits
    data_root: str | None = None
    download: bool = True
    device: str = "auto"
    batch_size: int = Field(512, ge=1)
    save_poisons: bool = True  # keep each PoisonSet under OUT/poisons/ for `poisonprobe export`
    bounds: list[Literal["loss", "dpa"]] = Field(default_factory=list)  # certified bounds
    dpa_k: list[int] = Field(default_factory=lambda: [10, 50])  # DPA partition counts

    @field_validator("attacks", mode="before")
    @classmethod
    def _attacks(cls, v: Any) -> Any:
        if not isinstance(v, list):
            raise ValueError("attacks must be a list of names or {name: ..., <param>: ...} maps")
        out = []
        for item in v:
            if isinstance(item, str):
                out.append({"name": item})
            elif isinstance(item, dict):
                item = dict(item)
                if "name" not in item:
                    raise ValueError(f"attack entry {item} has no 'name'")
                name, label = item.pop("name"), item.pop("label", None)
                grid = item.pop("grid", None)
                params = item.pop("params", {})
                if not isinstance(params, dict):
                    raise ValueError(f"attack {name!r}: params must be a map, got {params!r}")
                params = dict(params)
                params.update(item)
                if grid is None:
                    out.append({"name": name, "label": label, "params": params})
                else:
                    out.extend(expand_grid(name, label, params, grid))
            else:
                raise ValueError(f"attack entry {item!r} must be a name or a map")
        return out

    @field_validator("eps")
    @classmethod
    def _eps(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("eps must list at least one budget, e.g. [0.03, 0.1]")
        return [check_eps(e) for e in v]

    @field_validator("seeds", "split_seeds", "settings", "regimes", "defenses", "extractor")
    @classmethod
    def _non_empty(cls, v: list) -> list:
        if not v:
            raise ValueError("must not be empty")
        return v

    @field_validator("seeds", "split_seeds")
    @classmethod
    def _distinct(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("lists the same seed twice; each seed is one replicate")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        return check_device(v)

    @model_validator(mode="after")
    def _check_names(self) -> Config:
        from ..attacks import get_attack
        from ..defenses import parse_defense

        labels = [a.column for a in self.attacks]
        if len(set(labels)) != len(labels):
            raise ValueError("two attacks share a label; give each variant its own 'label'")
        entries = self.extractor if isinstance(self.extractor, list) else [self.extractor]
        ext_labels = [e.label for e in entries]
        for label in ext_labels:
            if ext_labels.count(label) > 1:
                raise ValueError(
                    f"two extractors share the label {label!r}; give each its own 'name' "
                    "(labels key the results)"
                )
        for spec in self.attacks:
            info = get_attack(spec.name)
            info.check_params(spec.params)
            if info.regimes != ("feature",) and not set(info.regimes) & set(self.regimes):
                raise ValueError(
                    f"attack {spec.column!r} runs only in regime(s) {', '.join(info.regimes)} "
                    f"but regimes is {self.regimes}; add one of them or drop the attack"
                )
        for spec in self.defenses:
            parse_defense(spec)
        from ..data import dataset_names
        from ..data.reshape import split_shape_suffix

        known = dataset_names()
        for setting in self.settings:
            for spec in (setting.source, setting.target):
                if split_shape_suffix(spec)[0].partition(":")[0] not in known:
                    raise ValueError(
                        f"setting {setting.name!r}: unknown dataset {spec!r}; "
                        f"choose one of: {', '.join(known)}"
                    )
        if any(self.split_seeds):
            from ..data.base import resplits

            for setting in self.settings:
                if not resplits(setting.target):
                    raise ValueError(
                        f"split_seeds {self.split_seeds}: setting {setting.name!r} probes "
                        f"{setting.target}, which has one fixed train/test split; use "
                        "split_seeds: [0] (re-splitting is for digits)"
                    )
        names = [s.name for s in self.settings]
        if len(set(names)) != len(names):
            raise ValueError("two settings share a name; names key the results")
        self._check_bounds()
        return self

    def _check_bounds(self) -> None:
        """What the certified bounds cannot cover, refused before any work."""
        from ..bounds.feasible import check_modellable
        from ..defenses import parse_defense

        if "dpa" in self.bounds:
            for k in self.dpa_k:
                if k < 2:
                    raise ValueError(f"dpa_k={k} must be >= 2 (parts of the training set)")
        if "loss" not in self.bounds:
            return
        if self.victim.solver != "lbfgs":
            raise ValueError(
                "bounds: loss certifies the exact victim; set victim.solver: lbfgs "
                "(SGD does not reach the minimiser the bound is about) or drop 'loss'"
            )
        for spec in self.defenses:
            check_modellable(parse_defense(spec))

    @property
    def extractors(self) -> list[ExtractorConfig]:
        """The extractors to run, one entry per (configured extractor, pre-training seed)."""
        entries = self.extractor if isinstance(self.extractor, list) else [self.extractor]
        return [one for entry in entries for one in entry.per_seed()]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


_EXTRACTOR_BRANCHES = ("ExtractorConfig", "list[ExtractorConfig]")


def _union_errors(errors: list[dict]) -> list[dict]:
    """``extractor`` (a map or a list of maps) reports both branches it tried, each tagged with
    its type name: keep the branch the input took, or one error if it was neither."""
    whole = {("extractor", branch) for branch in _EXTRACTOR_BRANCHES}
    neither = sum(tuple(e["loc"]) in whole for e in errors) == len(whole)
    out: list[dict] = []
    for e in errors:
        if tuple(e["loc"]) not in whole:
            out.append(e)
        elif neither:
            msg = "must be a map {arch: ..., method: ...} or a list of such maps"
            out.append({**e, "loc": ("extractor",), "msg": msg, "type": "union"})
            neither = False
    return out


def _one_line(err: ValidationError) -> str:
    errors = _union_errors(err.errors())
    first = errors[0]
    loc = tuple(first["loc"])
    if loc[:1] == ("extractor",) and loc[1:2] and loc[1] in _EXTRACTOR_BRANCHES:
        loc = loc[:1] + loc[2:]
    where = ".".join(str(p) for p in loc) or "config"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key; check its spelling against the documented keys (docs/config.md)"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"config error at '{where}': {msg}{more}"


def parse_config(data: dict[str, Any] | None) -> Config:
    """Validate a config mapping, raising a one-line ConfigError."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("the config must be a YAML mapping of keys (settings, attacks, eps, ...)")
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_one_line(err)) from None
    except ConfigError as err:
        raise ConfigError(f"config error: {err}") from None


def load_config(source: str | Path | dict | Config | None = None) -> Config:
    """A Config from a YAML path, a mapping, an existing Config, or None (the default)."""
    if isinstance(source, Config):
        return source
    if source is None or isinstance(source, dict):
        return parse_config(source)
    path = Path(source)
    if path.is_dir():
        raise ConfigError(f"config {path} is a directory; pass the path of a YAML file")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass the path of a YAML file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path} is not valid YAML{where}; fix the syntax") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config {path}: {err}") from None
    if data is None:
        raise ConfigError(
            f"config file {path} is empty; write a YAML mapping (docs/config.md), "
            "or omit CONFIG to run the defaults"
        )
    return parse_config(data)
