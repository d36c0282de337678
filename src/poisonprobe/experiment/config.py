"""The experiment config: a validated (pydantic) schema read from YAML.

Every wrong key or value becomes a one-line ``ConfigError`` naming the key and the fix.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ..errors import ConfigError, PoisonProbeError, check_device, check_eps
from ..head.config import DEFAULT_C_GRID

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


# numbers must be YAML numbers: a quoted "0.1" is refused, not converted (ints pass as floats)
Float = StrictFloat
Int = StrictInt
PositiveFloat = Annotated[StrictFloat, Field(gt=0)]

PATH_DATASETS = ("imagefolder", "npz")
"""Dataset spec prefixes whose argument is a path (resolved against the config's folder)."""


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
    image_size: Int | None = Field(None, ge=8, le=1024)  # zoo archs: override the input size
    epochs: Int = Field(30, ge=0)
    batch_size: Int = Field(256, ge=2)
    lr: PositiveFloat | None = None
    seed: Int | list[Int] = 0  # pre-training seed; a list runs one extractor per seed
    amp: StrictBool = True  # bf16 autocast for pre-training on CUDA; no effect on CPU
    # False: load the shipped pre-trained extractor when the recipe is the default's;
    # True: always pre-train with SSL here (cached), never the shipped weights
    pretrain: StrictBool = False
    checkpoint: str | None = None
    name: str | None = None  # label in results; default "<arch>-<method>" or the checkpoint stem

    @field_validator("checkpoint")
    @classmethod
    def _pretrain_or_checkpoint(cls, v: str | None, info: ValidationInfo) -> str | None:
        # a field validator (a model validator would rename the `extractor` union's branches)
        if v and info.data.get("pretrain"):
            raise ValueError("pretrain: true and a checkpoint exclude each other; keep one")
        return v

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

    def pretrain_args(self) -> dict[str, Any]:
        """``get_or_pretrain``'s recipe arguments for this extractor: one place, so the runner
        and ``tools/build_pretrained.py`` (the shipped weights) pre-train the same thing."""
        return {
            "arch": self.arch,
            "method": self.method,
            "epochs": self.epochs,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "amp": self.amp,
        }

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
    """The victim's recipe (``head.config.VictimConfig``); ``C`` is scikit-learn's and replaces
    ``weight_decay`` (``wd = 1 / (N C)``); ``lbfgs-cv`` picks C from ``C_grid``."""

    solver: Literal["lbfgs", "sgd", "lbfgs-cv"] = "lbfgs"
    weight_decay: PositiveFloat = 1e-3
    max_iter: Int = Field(100, ge=1)
    tol: PositiveFloat = 1e-9
    sgd_epochs: Int = Field(100, ge=1)
    sgd_lr: PositiveFloat = 4.0
    C: PositiveFloat | None = None
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
    linf: PositiveFloat | None = None
    eps: list[Float] = Field(default_factory=lambda: [0.03, 0.1, 0.3])
    defenses: list[Any] = Field(default_factory=lambda: ["none"])
    seeds: list[Int] = Field(default_factory=lambda: [0])  # attack seeds (see docs/config.md)
    split_seeds: list[Int] = Field(default_factory=lambda: [0])  # train/test re-splits
    data_root: str | None = None
    download: StrictBool = True
    device: str = "auto"
    batch_size: Int = Field(512, ge=1)
    save_poisons: StrictBool = True  # keep each PoisonSet under OUT/poisons/ for `export`
    bounds: list[Literal["loss", "dpa"]] = Field(default_factory=list)  # certified bounds
    dpa_k: list[Int] = Field(default_factory=lambda: [10, 50])  # DPA partition counts

    @field_validator("eps", "seeds", "split_seeds", "regimes", "settings", mode="before")
    @classmethod
    def _scalar_to_list(cls, v: Any) -> Any:
        """``eps: 0.1`` means ``eps: [0.1]`` (one value where a list is expected)."""
        return v if isinstance(v, (list, tuple)) or v is None else [v]

    @field_validator("defenses", mode="before")
    @classmethod
    def _defense_to_list(cls, v: Any) -> Any:
        # a list here is a list of defences (a chain is a list inside it), so only wrap a name/map
        return [v] if isinstance(v, (str, dict)) else v

    @field_validator("attacks", mode="before")
    @classmethod
    def _attacks(cls, v: Any) -> Any:
        if isinstance(v, (str, dict)):
            v = [v]
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
        from ..attacks import check_embedding_attack, get_attack
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
        from ..data.base import split_shape_suffix
        from ..data.loaders.features import is_features_spec

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

    def summary(self) -> str:
        """The config in one console line (the full YAML goes to ``OUT/config.yaml``)."""
        settings = ", ".join(f"{s.name} ({s.source}→{s.target})" for s in self.settings)
        exts = ", ".join(_extractor_summary(e) for e in self.extractors)
        names = [a.column for a in self.attacks]
        shown = ", ".join(names if len(names) <= 4 else [*names[:3], "…", names[-1]])
        defenses = ", ".join(str(d) if not isinstance(d, str) else d for d in self.defenses)
        return (
            f"config: {settings} · {exts} · victim {self.victim.solver} "
            f"wd={self.victim.weight_decay:g} · {len(names)} attacks ({shown}) · regimes "
            f"{', '.join(self.regimes)} · eps {', '.join(f'{e:g}' for e in self.eps)} · "
            f"defenses {defenses} · seeds {', '.join(map(str, self.seeds))}"
        )


def _extractor_summary(e: ExtractorConfig) -> str:
    if e.checkpoint:
        return f"{e.label} (checkpoint {Path(e.checkpoint).name})"
    how = "SSL pre-training here" if e.pretrain else "shipped weights if the recipe matches"
    return f"{e.label} ({e.epochs} epoch{'' if e.epochs == 1 else 's'}; {how})"


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
    elif first["type"] in ("float_type", "int_type") and isinstance(first.get("input"), str):
        msg = f"{first['input']!r} is a string; write the number without quotes"
    elif first["type"] in ("float_type", "int_type", "bool_type"):
        msg = f"{msg}, got {first.get('input')!r}"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"config error at '{where}': {msg}{more}"


def parse_config(data: dict[str, Any] | None, base_dir: str | Path | None = None) -> Config:
    """Validate a config mapping, raising a one-line ConfigError.

    ``base_dir`` (the config file's folder) anchors relative paths in the config:
    ``data_root``, ``extractor.checkpoint`` and ``imagefolder:``/``npz:`` dataset specs.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("the config must be a YAML mapping of keys (settings, attacks, eps, ...)")
    if base_dir is not None:
        data = resolve_paths(data, Path(base_dir))
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
        data = yaml.load(path.read_text(), Loader=ConfigLoader)  # noqa: S506 (a SafeLoader)
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
    return parse_config(data, base_dir=path.resolve().parent)


class ConfigLoader(yaml.SafeLoader):
    """YAML 1.1's SafeLoader, but ``1e-3`` is a float (PyYAML reads it as the string
    "1e-3", which strict number fields would refuse although the user wrote a number)."""


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _resolve_path(value: Any, base: Path) -> Any:
    if not isinstance(value, str) or not value:
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else base / path)


def resolve_spec(spec: Any, base: Path) -> Any:
    """``imagefolder:rel/dir?train=100@1x8x8`` -> the same spec with an absolute path."""
    if not isinstance(spec, str):
        return spec
    from ..data.base import split_shape_suffix

    try:
        body, shape = split_shape_suffix(spec)
    except PoisonProbeError:
        return spec  # validation reports the bad suffix
    name, colon, arg = body.partition(":")
    if name not in PATH_DATASETS or not colon or not arg:
        return spec
    head, sep, query = arg.rpartition("?")
    if not sep:
        head, query = arg, ""
    suffix = spec[len(body) :]
    return f"{name}:{_resolve_path(head, base)}{sep}{query}{suffix}"


def resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """A copy of a raw config mapping with its relative paths anchored at ``base``."""
    data = dict(data)
    if "data_root" in data:
        data["data_root"] = _resolve_path(data["data_root"], base)
    ext = data.get("extractor")
    if isinstance(ext, dict) and "checkpoint" in ext:
        data["extractor"] = {**ext, "checkpoint": _resolve_path(ext["checkpoint"], base)}
    elif isinstance(ext, list):
        data["extractor"] = [
            {**e, "checkpoint": _resolve_path(e["checkpoint"], base)}
            if isinstance(e, dict) and "checkpoint" in e
            else e
            for e in ext
        ]
    settings = data.get("settings")
    if isinstance(settings, (dict, list)):
        data["settings"] = [
            {k: resolve_spec(v, base) if k in ("source", "target") else v for k, v in s.items()}
            if isinstance(s, dict)
            else s
            for s in (settings if isinstance(settings, list) else [settings])
        ]
    return data


def with_pretrain(cfg: Config) -> Config:
    """The config with ``pretrain: true`` on every pre-trained extractor (``run --pretrain``)."""
    entries = cfg.extractor if isinstance(cfg.extractor, list) else [cfg.extractor]
    exts = [e if e.checkpoint else e.model_copy(update={"pretrain": True}) for e in entries]
    extractor = exts if isinstance(cfg.extractor, list) else exts[0]
    return cfg.model_copy(update={"extractor": extractor})
