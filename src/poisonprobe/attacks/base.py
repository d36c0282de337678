"""What every attack receives (``AttackContext``) and returns (``PoisonSet``).

Attacks never train the victim themselves for evaluation and never write files:
the runner injects the ``PoisonSet``, applies defences and retrains the head.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeVar

import torch
from torch import nn

from ..data.base import ImageDataset
from ..data.loaders.features import embedding_domain, is_embedding_domain
from ..domain import InputDomain
from ..errors import ConfigError, check_eps
from ..extractors.zoo import passthrough_extractor
from ..head.config import VictimConfig
from ..head.objective import LinearHead
from ..head.train import resolve_victim, train_head
from ..shared_work import SharedWork
from ._optim import StopRule

T = TypeVar("T")

REGIMES = ("unconstrained", "box")
"""Input-space regimes: ``unconstrained`` = no countermeasure, ``box`` = valid pixels (+ L∞)."""


def clip_linf_(x: torch.Tensor, center: torch.Tensor, radius: float) -> torch.Tensor:
    """Clip ``x`` into the L∞ ball of ``radius`` around ``center``, in place.

    Same values as ``max(min(x, center + radius), center - radius)`` with one ``center``-sized
    temporary instead of four (15k CIFAR poisons are ~180 MB per copy).
    """
    bound = center + radius
    torch.minimum(x, bound, out=x)
    torch.sub(center, radius, out=bound)
    return torch.maximum(x, bound, out=x)


@dataclass(frozen=True)
class ThreatModel:
    """Budget and input constraints of one attack run (foolbox-style: domain in, eps in)."""

    eps: float
    domain: InputDomain
    regime: str = "box"
    linf: float | None = None  # optional L∞ radius around each poison's clean start image

    def __post_init__(self) -> None:
        check_eps(self.eps)
        if self.regime not in (*REGIMES, "feature"):
            raise ConfigError(f"regime {self.regime!r} is unknown; use one of {REGIMES}")
        if self.linf is not None and not self.linf > 0:
            raise ConfigError(f"linf={self.linf} must be > 0 (or null for no L∞ ball)")

    def n_poison(self, n_clean: int) -> int:
        """``n_p = round(eps * N)``, at least one point."""
        return max(1, int(round(self.eps * n_clean)))

    def project(self, x: torch.Tensor, start: torch.Tensor | None = None) -> torch.Tensor:
        """Apply this regime's constraint to candidate poisons (no-op when unconstrained)."""
        if self.regime != "box":
            return x
        if self.linf is not None and start is not None:
            x = torch.max(torch.min(x, start + self.linf), start - self.linf)
        return self.domain.project(x)

    def project_(self, x: torch.Tensor, start: torch.Tensor | None = None) -> torch.Tensor:
        """``project`` written into ``x`` itself (same values, bit for bit).

        At CIFAR scale a poison set is ~180 MB (15k images); the out-of-place version makes
        three such temporaries per step, which set the attacks' peak memory.
        """
        if self.regime != "box":
            return x
        if self.linf is not None and start is not None:
            clip_linf_(x, start, self.linf)
        return x.clamp_(self.domain.low, self.domain.high)


def identity_progress(items: Iterable[T], description: str = "", total: int | None = None):
    return items


@dataclass
class AttackContext:
    """Everything an attack may use. The test split is deliberately absent."""

    extractor: nn.Module | None  # frozen, eval mode; maps images in the box to features
    # (None only for feature-space attacks on precomputed z_train, see ``build``)
    train: ImageDataset  # the clean downstream training set D_c
    z_train: torch.Tensor  # cached features of D_c (float32, on ``device``)
    clean_head: LinearHead  # the victim's head trained on D_c
    victim: VictimConfig
    threat: ThreatModel
    seed: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    # work shared across the attacks of one (setting, extractor, seed), billed once
    memo: dict[str, Any] = field(default_factory=SharedWork)
    progress: Callable[..., Iterable] = identity_progress
    batch_size: int = 512

    def __post_init__(self) -> None:
        # BatchNorm/Dropout in train mode would make an attack see other features than the
        # victim's cache holds (and change running statistics): attacks see the eval network
        if self.extractor is not None:
            self.extractor.eval()

    @property
    def n_clean(self) -> int:
        return len(self.train)

    @property
    def n_poison(self) -> int:
        return self.threat.n_poison(self.n_clean)

    @property
    def n_classes(self) -> int:
        return self.train.n_classes

    def generator(self, salt: str = "") -> torch.Generator:
        """A CPU generator seeded by (seed, eps, salt): same inputs, same poisons."""
        key = f"{self.seed}|{self.threat.eps}|{self.threat.regime}|{salt}"
        return torch.Generator().manual_seed(_stable_hash(key))

    def result_key(self, attack: str, params: dict[str, Any]) -> tuple:
        """The memo key of the poisons ``attack`` with ``params`` makes in this context: a
        feature-space attack's row and FT's inversion source (``source: tgda-feature``) are
        one computation, done once per unit (same seed, eps and regime: same poisons)."""
        threat = self.threat
        knobs = repr(sorted(params.items()))
        return ("attack", attack, knobs, id(self.z_train), self.seed, threat.eps, threat.regime)

    def encode(self, x: torch.Tensor, grad: bool = False) -> torch.Tensor:
        """Features of images ``x`` in batches (with autograd when ``grad``)."""
        outs = []
        with torch.set_grad_enabled(grad):
            for start in range(0, x.shape[0], self.batch_size):
                outs.append(self.extractor(x[start : start + self.batch_size].to(self.device)))
        return torch.cat(outs) if outs else x.new_zeros((0, self.z_train.shape[1]))

    def iterate(self, n: int, description: str) -> Iterator[int]:
        """``range(n)`` with a progress bar (quiet runs get none)."""
        return iter(self.progress(range(n), description=description, total=n))

    @classmethod
    def build(
        cls,
        extractor: nn.Module | None,
        train: ImageDataset,
        eps: float,
        regime: str = "box",
        linf: float | None = None,
        victim: VictimConfig | None = None,
        seed: int = 0,
        device: torch.device | str = "cpu",
        z_train: torch.Tensor | None = None,
        clean_head: LinearHead | None = None,
        memo: dict[str, Any] | None = None,
        progress: Callable[..., Iterable] = identity_progress,
        batch_size: int = 512,
    ) -> AttackContext:
        """A context from an extractor, the clean training set and a budget.

        Encodes ``train`` and fits the clean head unless given (``z_train``, ``clean_head``).
        ``victim`` is the recipe the victim fits with; attacks plan against it on the
        poisoned set's size, with the ``C`` that ``lbfgs-cv`` picks on the clean data.
        ``extractor=None`` with precomputed ``z_train``: a context for feature-space attacks
        that never look at images (``train`` then only supplies labels and classes).
        """
        from ..extractors.cache import encode_batched

        device = torch.device(device)
        victim = victim or VictimConfig()
        if z_train is None:
            if extractor is None:
                raise ConfigError(
                    "AttackContext.build without an extractor needs z_train (the features of "
                    "train); pass one of them"
                )
            z_train = encode_batched(extractor, train.x, batch_size, progress)
        z_train = z_train.to(device)
        y = train.y.to(device)
        clean = resolve_victim(z_train, y, train.n_classes, victim, seed)
        if clean_head is None:
            clean_head = train_head(z_train, y, train.n_classes, clean, seed=seed)
        threat = ThreatModel(eps=eps, domain=train.domain, regime=regime, linf=linf)
        return cls(
            extractor=extractor,
            train=train,
            z_train=z_train,
            clean_head=clean_head,
            victim=clean.for_n(len(train) + threat.n_poison(len(train))),
            threat=threat,
            seed=seed,
            device=device,
            memo=SharedWork() if memo is None else memo,
            progress=progress,
            batch_size=batch_size,
        )


class PoisonKind(str, Enum):
    """How the runner puts poisons into the victim's training set."""

    IMAGES = "injected images"  # x is added to the training set (encoded by the extractor)
    FEATURES = "injected features"  # z is added directly (feature-space attacks, no images)
    REPLACEMENTS = "replacements"  # x replaces the clean points replace_idx (perturbations)


@dataclass(kw_only=True)
class PoisonSet:
    """The attack's output.

    - ``kind``: a ``PoisonKind``, how the runner puts the poisons in (stated by the attack,
      checked against the fields below);
    - ``x``: poisoned images (n_p, C, H, W), or ``None`` for pure feature-space poisons;
    - ``z``: features to inject directly (feature-space upper bounds);
    - ``replace_idx``: for perturbation attacks (EMN), the indices of clean training
      points that these poisons *replace* instead of being added;
    - ``base_idx``: clean points the poisons started from (for image grids);
    - ``info``: extra result columns (``target_head_acc``, ``gc_objective``, ``eps_needed``...);
    - ``stage_seconds``: wall time per stage.
    """

    kind: PoisonKind
    y: torch.Tensor
    x: torch.Tensor | None = None
    z: torch.Tensor | None = None
    replace_idx: torch.Tensor | None = None
    base_idx: torch.Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.kind, PoisonKind):
            raise TypeError(f"PoisonSet.kind={self.kind!r} must be a PoisonKind")
        needs = {
            PoisonKind.IMAGES: self.x is not None and self.z is None and self.replace_idx is None,
            PoisonKind.FEATURES: self.z is not None and self.replace_idx is None,
            PoisonKind.REPLACEMENTS: self.x is not None
            and self.z is None
            and self.replace_idx is not None,
        }
        if not needs[self.kind]:
            raise ValueError(f"PoisonSet of kind {self.kind.value!r} has the wrong fields set")
        n = int(self.y.shape[0])
        for name in ("x", "z", "replace_idx", "base_idx"):
            value = getattr(self, name)
            if value is not None and int(value.shape[0]) != n:
                raise ValueError(f"PoisonSet.{name} has {value.shape[0]} rows, labels have {n}")

    def __len__(self) -> int:
        return int(self.y.shape[0])


AttackFn = Callable[..., PoisonSet]


@dataclass(frozen=True)
class AttackInfo:
    name: str
    fn: AttackFn
    regimes: tuple[str, ...]  # regimes it runs in; ("feature",) for feature-injection attacks
    description: str
    validate: Callable[[dict[str, Any]], None] | None = None  # value checks, before any work
    on_embeddings: bool = False  # runs on precomputed embeddings (no pixels, no network)

    def params(self) -> dict[str, inspect.Parameter]:
        sig = inspect.signature(self.fn)
        return {k: p for k, p in sig.parameters.items() if k != "ctx"}

    def check_params(self, params: dict[str, Any]) -> None:
        allowed = self.params()
        for key in params:
            if key not in allowed:
                raise ConfigError(
                    f"attack {self.name!r} has no parameter {key!r}; "
                    f"allowed: {', '.join(allowed) or 'none'}"
                )
        hints = _param_types(self.fn, allowed)
        for key, value in params.items():
            if key in hints:
                _check_value(self.name, key, value, hints[key], allowed[key].default)
        _check_stop_rule(self.name, params, allowed)
        _check_sign(self.name, params, allowed)
        if self.validate is not None:
            self.validate({k: params.get(k, p.default) for k, p in allowed.items()})


def _check_stop_rule(
    attack: str, params: dict[str, Any], allowed: dict[str, inspect.Parameter]
) -> None:
    """The plateau rule's values (``tol``, ``window``, ``max_steps``, and ``patience`` where
    the attack has it) in range, up front: the one parse-time path for every attack."""
    keys = ("tol", "window", "max_steps")
    if not all(k in allowed for k in keys):
        return
    keys += ("patience",) if "patience" in allowed else ()
    if not any(k in params for k in keys):
        return
    values = {k: params.get(k, allowed[k].default) for k in keys}
    StopRule(**values).check(f"attack {attack!r}:")


ZERO_ALLOWED = frozenset({"patience", "goal", "stop_error"})
"""Parameters with a positive default for which 0 means "off" (no restarts, no early stop)."""


def _check_sign(attack: str, params: dict[str, Any], allowed: dict[str, inspect.Parameter]) -> None:
    """A number whose default is positive (a step size, a step count, a radius, a tolerance)
    must stay positive (``ZERO_ALLOWED``: >= 0): a negative step count or learning rate would
    otherwise run without error and return garbage, or fail only after pre-training."""
    for key, value in params.items():
        default = allowed[key].default
        numeric = (int, float)
        if isinstance(value, bool) or isinstance(default, bool):
            continue
        if not (isinstance(value, numeric) and isinstance(default, numeric) and default > 0):
            continue
        if key in ZERO_ALLOWED and value < 0:
            raise ConfigError(f"attack {attack!r}: {key}={value} must be >= 0 (0: off)")
        if key not in ZERO_ALLOWED and not value > 0:
            raise ConfigError(
                f"attack {attack!r}: {key}={value} must be > 0 (the default is {default})"
            )


def _param_types(fn: Callable, params: dict[str, inspect.Parameter]) -> dict[str, Any]:
    """The parameters' annotations as types (those that resolve in the attack's module).

    Read from the signature (string annotations, ``from __future__``), resolved in the module
    of the function, or of the ``__call__`` of a callable attack object (the FT variants).
    """
    fn = inspect.unwrap(fn)
    namespace = getattr(fn, "__globals__", None) or getattr(type(fn).__call__, "__globals__", {})
    hints: dict[str, Any] = {}
    for key, param in params.items():
        hint = param.annotation
        if isinstance(hint, str):
            try:
                hint = eval(hint, namespace)  # our own annotation text, as get_type_hints does
            except Exception:
                continue
        if hint is not inspect.Parameter.empty:
            hints[key] = hint
    return hints


def _check_value(attack: str, key: str, value: Any, hint: Any, default: Any) -> None:
    """Refuse a parameter value of the wrong type (or a NaN/inf float) before any work."""
    from pydantic import ConfigDict, TypeAdapter, ValidationError

    strict = ConfigDict(strict=True, allow_inf_nan=False)
    try:
        TypeAdapter(hint, config=strict).validate_python(value)
    except ValidationError as err:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise ConfigError(
            f"attack {attack!r}: {key}={shown} is invalid ({err.errors()[0]['msg']}); "
            f"the default is {default!r}"
        ) from None


_ATTACKS: dict[str, AttackInfo] = {}


def register_attack(
    name: str,
    regimes: tuple[str, ...] = ("box",),
    description: str = "",
    validate: Callable[[dict[str, Any]], None] | None = None,
    on_embeddings: bool | None = None,
) -> Callable[[AttackFn], AttackFn]:
    """Register ``fn(ctx, **params) -> PoisonSet`` under ``name``.

    ``regimes``: ``("unconstrained", "box")`` for input-space attacks that can run
    with or without the pixel-box countermeasure; ``("box",)`` for attacks whose
    poisons are always valid images; ``("feature",)`` for feature injection.
    ``on_embeddings``: whether it runs on precomputed embeddings (``features:PATH``, no
    images and no network); default: feature-injection attacks only.
    """

    def deco(fn: AttackFn) -> AttackFn:
        doc = description or (inspect.getdoc(fn) or "").split("\n")[0]
        embeds = tuple(regimes) == ("feature",) if on_embeddings is None else on_embeddings
        _ATTACKS[name] = AttackInfo(
            name, fn, tuple(regimes), doc, validate=validate, on_embeddings=embeds
        )
        return fn

    return deco


def check_embedding_attack(name: str, where: str) -> None:
    """Refuse an attack that needs images or the network on precomputed embeddings."""
    info = get_attack(name)
    if not info.on_embeddings:
        usable = ", ".join(n for n in attack_names() if get_attack(n).on_embeddings)
        raise ConfigError(
            f"{where}: attack {name!r} perturbs images through the extractor, but embeddings "
            f"have neither; use a feature-space attack ({usable})"
        )


def get_attack(name: str) -> AttackInfo:
    if name not in _ATTACKS:
        raise ConfigError(f"unknown attack {name!r}; choose one of: {', '.join(sorted(_ATTACKS))}")
    return _ATTACKS[name]


def attack_names() -> list[str]:
    return sorted(_ATTACKS)


def _stable_hash(text: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:7], "little")


def default_regime(info: AttackInfo) -> str:
    """``feature`` for feature injection, else ``box`` (valid images) where supported."""
    return "box" if "box" in info.regimes else info.regimes[0]


def _as_dataset(
    train: tuple[torch.Tensor, torch.Tensor], extractor: nn.Module | None
) -> ImageDataset:
    """``(x, y)`` as a dataset: images in the extractor's domain, or (N, d) embeddings."""
    x, y = (torch.as_tensor(t) for t in train)
    y = y.long()
    if extractor is None:
        if x.ndim != 2:
            raise ConfigError(
                f"train x has shape {tuple(x.shape)}: without an extractor give (N, d) "
                "embeddings, or pass extractor= for images"
            )
        domain = embedding_domain(int(x.shape[1]))
        x = x.float()[:, :, None, None]
    elif hasattr(extractor, "domain"):
        domain = extractor.domain
    else:
        raise ConfigError(
            "extractor has no .domain (pixel box and shape); build it with "
            "poisonprobe.extractors (build_extractor, load_extractor, zoo.build_zoo_extractor)"
        )
    classes = [str(i) for i in range(int(y.max()) + 1)] if len(y) else []
    return ImageDataset(x.float(), y, classes, domain, "train")


def attack(
    name: str,
    extractor: nn.Module | None = None,
    train: ImageDataset | tuple[torch.Tensor, torch.Tensor] | None = None,
    eps: float = 0.1,
    regime: str | None = None,
    victim: VictimConfig | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    **params: Any,
) -> PoisonSet:
    """Run one attack: ``attack("ft-ideal", extractor=ext, train=(x, y), eps=0.1)``.

    ``train`` is an ``ImageDataset`` or ``(x, y)``: images in ``extractor.domain``'s box, or
    with ``extractor=None`` precomputed embeddings ``(N, d)`` (feature-space attacks only).
    ``params`` are the attack's own (checked like a config's).
    """
    info = get_attack(name)
    info.check_params(params)
    if train is None:
        raise ConfigError("attack() needs train=(x, y) or an ImageDataset")
    if not isinstance(train, ImageDataset):
        train = _as_dataset(train, extractor)
    if extractor is None:
        if not is_embedding_domain(train.domain):
            raise ConfigError(
                f"train holds {train.domain.shape} images: pass the extractor= that reads them "
                "(only (N, d) embeddings need none)"
            )
        check_embedding_attack(name, "attack() on embeddings")
        extractor = passthrough_extractor(train.domain)
    ctx = AttackContext.build(
        extractor,
        train,
        eps,
        regime=regime or default_regime(info),
        victim=victim,
        seed=seed,
        device=device,
    )
    return info.fn(ctx, **params)
