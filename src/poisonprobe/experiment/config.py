"""The experiment config: a validated (pydantic) schema read from YAML.

Every wrong key or value becomes a one-line ``ConfigError`` naming the key and the fix.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ..errors import ConfigError, check_device, check_eps
from ..victim import DEFAULT_C_GRID

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
    """A downstream setting: pre-train the extractor on ``source``, probe on ``target``.

    A ``features:PATH`` target (precomputed embeddings) needs no source: it is its own.
    """

    name: str
    source: str | None = None
    target: str

    @model_validator(mode="after")
    def _source(self) -> SettingConfig:
        from ..data.loaders.features import is_features_spec

        if is_features_spec(self.target):
            if self.source not in (None, self.target):
                raise ValueError(
                    f"setting {self.name!r}: target {self.target} holds embeddings, so there is "
                    "no extractor to pre-train on a source; drop 'source'"
                )
            object.__setattr__(self, "source", self.target)
        elif self.source is None:
            raise ValueError(
                f"setting {self.name!r} needs a source (the extractor's pre-training data); "
                "only a features:PATH target may omit it"
            )
        elif is_features_spec(self.source):
            raise ValueError(
                f"setting {self.name!r}: source {self.source} holds embeddings, which cannot "
                "pre-train an extractor; use it as the target"
            )
        return self

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v or "," in v:
            raise ValueError("setting name must be non-empty and contain no comma")
        return v


class ExtractorConfig(Strict):
    """Which extractor, and how to pre-train it when no checkpoint is given.

    A zoo ``arch`` (``torchvision:NAME``, ``timm:NAME``, ``open_clip:NAME``, ``hf:REPO``) is
    used frozen as given with ``weights`` (``default``, a weight name/tag, or null = random).
    """

    arch: str = "smallcnn"
    method: Literal["simclr", "moco", "byol"] | None = Field(None, validate_default=True)
    weights: str | bool | None = "default"  # zoo archs only
    image_size: int | None = Field(None, ge=8, le=1024)  # zoo archs: override the input size
    epochs: int = Field(30, ge=0)
    batch_size: int = Field(256, ge=2)
    lr: float | None = Field(None, gt=0)
    seed: int = 0
    amp: bool = True  # bf16 autocast for pre-training on CUDA; no effect on CPU
    checkpoint: str | None = None
    name: str | None = None  # label in results; default "<arch>-<method>" or the checkpoint stem

    @field_validator("arch")
    @classmethod
    def _arch(cls, v: str) -> str:
        from ..extractors.archs import ARCHS
        from ..extractors.zoo import is_zoo_arch

        if v not in ARCHS and not is_zoo_arch(v):
            raise ValueError(
                f"unknown arch {v!r}; choose one of: {', '.join(ARCHS)}, or a zoo model "
                "torchvision:NAME, timm:NAME, open_clip:NAME, hf:REPO"
            )
        return v

    # field validators, not a model validator: one would rename the union branch that
    # _union_errors reads ("function-after[...]" instead of "ExtractorConfig")
    @field_validator("method")
    @classmethod
    def _method(cls, v: str | None, info: ValidationInfo) -> str | None:
        from ..extractors.zoo import is_zoo_arch

        arch = info.data.get("arch")
        if arch is None:
            return v
        if not is_zoo_arch(arch):
            return v or "simclr"
        if v is not None:
            raise ValueError(
                f"{arch} is used frozen as given; SSL pre-training of zoo models is not "
                "supported, drop 'method'"
            )
        return v

    @field_validator("weights", "image_size")
    @classmethod
    def _zoo_only(cls, v: Any, info: ValidationInfo) -> Any:
        from ..extractors.zoo import DEFAULT_WEIGHTS, is_zoo_arch

        arch = info.data.get("arch")
        default = DEFAULT_WEIGHTS if info.field_name == "weights" else None
        if arch is not None and not is_zoo_arch(arch) and v != default:
            raise ValueError(
                f"weights and image_size are for zoo models (torchvision:NAME, ...), "
                f"not {arch}; drop them (use checkpoint: for our archs)"
            )
        return v

    @field_validator("checkpoint")
    @classmethod
    def _checkpoint(cls, v: str | None, info: ValidationInfo) -> str | None:
        from ..extractors.zoo import is_zoo_arch

        arch = info.data.get("arch")
        if v and arch is not None and is_zoo_arch(arch):
            raise ValueError(
                f"{arch} loads its weights through 'weights'; drop 'checkpoint' "
                "(checkpoint files are for smallcnn/resnet18/resnet50)"
            )
        return v

    @property
    def is_zoo(self) -> bool:
        from ..extractors.zoo import is_zoo_arch

        return is_zoo_arch(self.arch)

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.is_zoo:
            if self.weights is None or self.weights is False:
                return f"{self.arch}-random"
            return self.arch if self.weights in ("default", True) else f"{self.arch}-{self.weights}"
        if self.checkpoint:
            return f"{self.arch}-{Path(self.checkpoint).stem}"
        return f"{self.arch}-{self.method}"


class VictimSettings(Strict):
    """The victim's recipe (``victim.VictimConfig``); ``C`` is scikit-learn's and replaces
    ``weight_decay`` (``wd = 1 / (N C)``); ``lbfgs-cv`` picks C from ``C_grid``."""

    solver: Literal["lbfgs", "sgd", "lbfgs-cv"] = "lbfgs"
    weight_decay: float = Field(1e-3, gt=0)
    max_iter: int = Field(100, ge=1)
    tol: float = Field(1e-9, gt=0)
    sgd_epochs: int = Field(100, ge=1)
    sgd_lr: float = Field(4.0, gt=0)
    C: float | None = Field(None, gt=0)
    C_grid: list[float] = Field(default_factory=lambda: list(DEFAULT_C_GRID), min_length=1)
    val_fraction: float = Field(0.2, gt=0, lt=1)

    @field_validator("C_grid")
    @classmethod
    def _grid(cls, v: list[float]) -> list[float]:
        if not all(c > 0 for c in v):
            raise ValueError("C_grid must list positive C values, e.g. [0.01, 0.1, 1, 10]")
        return v

    @model_validator(mode="after")
    def _recipe(self) -> VictimSettings:
        # compared with the defaults, not "given": a saved config.yaml spells every key
        default = VictimSettings.model_fields
        if self.C is not None and self.weight_decay != default["weight_decay"].default:
            raise ValueError("give C or weight_decay, not both (wd = 1 / (N C))")
        if self.solver == "lbfgs-cv" and self.C is not None:
            raise ValueError("lbfgs-cv picks C from C_grid; drop C or use solver lbfgs")
        cv_keys = self.C_grid != list(DEFAULT_C_GRID) or self.val_fraction != 0.2
        if self.solver != "lbfgs-cv" and cv_keys:
            raise ValueError("C_grid and val_fraction are lbfgs-cv's; set solver: lbfgs-cv")
        return self


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
    seeds: list[int] = Field(default_factory=lambda: [0])
    data_root: str | None = None
    download: bool = True
    device: str = "auto"
    batch_size: int = Field(512, ge=1)
    save_poisons: bool = True  # keep each PoisonSet under OUT/poisons/ for `poisonprobe export`

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

    @field_validator("seeds", "settings", "regimes", "defenses", "extractor")
    @classmethod
    def _non_empty(cls, v: list) -> list:
        if not v:
            raise ValueError("must not be empty")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        return check_device(v)

    @model_validator(mode="after")
    def _check_names(self) -> Config:
        from ..attacks import check_embedding_attack, get_attack
        from ..defenses import parse_defense

        labels = [a.column for a in self.attacks]
        if len(set(labels)) != len(labels):
            raise ValueError("two attacks share a label; give each variant its own 'label'")
        for spec in self.attacks:
            get_attack(spec.name).check_params(spec.params)
        for spec in self.defenses:
            parse_defense(spec)
        from ..data import dataset_names
        from ..data.loaders.features import is_features_spec
        from ..data.reshape import split_shape_suffix

        known = dataset_names()
        for setting in self.settings:
            if is_features_spec(setting.target):
                for spec in self.attacks:
                    check_embedding_attack(spec.name, f"setting {setting.name!r}")
            for spec in (setting.source, setting.target):
                if split_shape_suffix(spec)[0].partition(":")[0] not in known:
                    raise ValueError(
                        f"setting {setting.name!r}: unknown dataset {spec!r}; "
                        f"choose one of: {', '.join(known)}"
                    )
        names = [s.name for s in self.settings]
        if len(set(names)) != len(names):
            raise ValueError("two settings share a name; names key the results")
        return self

    @property
    def extractors(self) -> list[ExtractorConfig]:
        return self.extractor if isinstance(self.extractor, list) else [self.extractor]

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
