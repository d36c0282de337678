"""Defence registry, spec parsing and the one entry point the runner calls.

A defence is a sanitiser: it sees the victim's training set (clean ∪ poison, never
the poison flags) and returns a keep-mask. Three design points matter:

- **Order independence.** ``apply_defense`` first sorts the points into a canonical
  order that depends only on their content (an exact integer hash of the float bits,
  label and box flag), runs the filters there and maps the mask back. Every float
  reduction then happens in the same order whatever order the runner used, so the
  removed set is bitwise the same under any shuffle (exact duplicates are
  interchangeable: which copy goes depends on the input order, the removed multiset
  does not). Score ties are broken by that canonical position.
- **Removal counts.** ``fraction`` is the share to remove. Score filters remove it
  *per class* by default (``round(fraction * n_c)`` highest scores of each class c,
  halves rounded up), as Steinhardt et al. do: a global ranking would let one wide
  class absorb the whole budget. ``per_class=False`` ranks globally instead.
- **Composition.** A list of defences runs in order, each on what the previous ones
  kept, with its fraction taken of the survivors; the removed set is the union.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..head.config import VictimConfig
from ..head.objective import all_finite


@dataclass
class DefenseInput:
    """The victim's training set as a defender sees it (no poison flags, no test split)."""

    z: torch.Tensor  # (n, d) features of clean ∪ poison, in an order defences must not use
    y: torch.Tensor  # (n,) integer labels
    in_box: torch.Tensor  # (n,) bool: image inside the valid pixel box (True for feature-only)
    n_classes: int
    victim: VictimConfig  # how the victim trains (the loss filter trains the same head)
    seed: int

    def __len__(self) -> int:
        return int(self.z.shape[0])

    def subset(self, idx: torch.Tensor) -> DefenseInput:
        """The points ``idx`` (a composition step sees only the survivors)."""
        return DefenseInput(
            self.z[idx], self.y[idx], self.in_box[idx], self.n_classes, self.victim, self.seed
        )


DefenseFn = Callable[..., torch.Tensor]
Validator = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class DefenseInfo:
    name: str
    fn: DefenseFn
    description: str
    uses_fraction: bool
    validate: Validator | None = None

    def params(self) -> dict[str, inspect.Parameter]:
        """Keyword parameters after ``(inp, fraction)``: each has a default."""
        sig = inspect.signature(self.fn)
        return {k: p for k, p in list(sig.parameters.items())[2:]}


_DEFENSES: dict[str, DefenseInfo] = {}


def register_defense(
    name: str,
    description: str = "",
    *,
    uses_fraction: bool = True,
    validate: Validator | None = None,
) -> Callable[[DefenseFn], DefenseFn]:
    """Register ``fn(inp: DefenseInput, fraction: float, **params) -> keep-mask (n,)``.

    ``uses_fraction=False`` for defences whose removals are fixed by the data
    (``none``, ``input-box``): a config that sets their fraction is refused rather
    than silently ignored. ``validate(params)`` checks parameter values at parse
    time (raise ``ConfigError``), so a bad config fails before any attack runs.
    """

    def deco(fn: DefenseFn) -> DefenseFn:
        doc = description or (inspect.getdoc(fn) or "").split("\n")[0]
        info = DefenseInfo(name, fn, doc, uses_fraction, validate)
        for key, p in info.params().items():
            if p.default is inspect.Parameter.empty or p.kind != p.KEYWORD_ONLY:
                raise TypeError(
                    f"defence {name!r}: parameter {key!r} must be keyword-only with a default"
                )
        _DEFENSES[name] = info
        return fn

    return deco


def get_defense(name: str) -> DefenseInfo:
    if name not in _DEFENSES:
        raise ConfigError(
            f"unknown defence {name!r}; choose one of: {', '.join(sorted(_DEFENSES))}"
        )
    return _DEFENSES[name]


def defense_names() -> dict[str, str]:
    """Registered defences, name -> one-line description, sorted by name."""
    return {name: _DEFENSES[name].description for name in sorted(_DEFENSES)}


# ----------------------------------------------------------------------------- specs


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


@dataclass(frozen=True)
class DefenseStep:
    """One defence with its own fraction (``None``: the runner's default) and parameters.

    Parameters equal to their default are dropped when parsing, so two specs that
    mean the same defence compare (and label) equal.
    """

    name: str
    fraction: float | None = None
    params: tuple[tuple[str, Any], ...] = ()

    @property
    def label(self) -> str:
        parts = [] if self.fraction is None else [f"fraction={_fmt(self.fraction)}"]
        parts += [f"{k}={_fmt(v)}" for k, v in self.params]
        return f"{self.name}({','.join(parts)})" if parts else self.name

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.params)


@dataclass(frozen=True)
class DefenseSpec:
    """A composition of defences applied in order; no steps means ``none``."""

    steps: tuple[DefenseStep, ...] = ()

    @property
    def label(self) -> str:
        return "+".join(s.label for s in self.steps) or "none"

    def __str__(self) -> str:
        return self.label


def _check_fraction(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{what}: fraction={value!r} is not a number; use a share in [0, 1)")
    value = float(value)
    if not 0.0 <= value < 1.0:  # also refuses NaN
        raise ConfigError(
            f"{what}: fraction={value} is outside [0, 1); use a share such as 0.1 "
            "(or omit it to remove the attack's budget eps)"
        )
    return value


def _check_param(info: DefenseInfo, key: Any, value: Any) -> Any:
    """Type-check ``value`` against the parameter's default (YAML gives plain scalars)."""
    allowed = info.params()
    if key not in allowed:
        names = ", ".join((["fraction"] if info.uses_fraction else []) + list(allowed))
        raise ConfigError(
            f"defence {info.name!r} has no parameter {key!r}; allowed: {names or 'none'}"
        )
    default = allowed[key].default
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, int | float) and not isinstance(value, bool),
        str: isinstance(value, str),
    }.get(type(default), False)
    if not ok:
        raise ConfigError(
            f"defence {info.name!r}: {key}={value!r} must be a {type(default).__name__} "
            f"(default {default!r})"
        )
    if isinstance(default, float):
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"defence {info.name!r}: {key}={value} must be finite")
    return value


def _parse_step(item: Any) -> DefenseStep:
    if isinstance(item, str):
        name, raw = item.strip(), {}
    elif isinstance(item, dict):
        raw = dict(item)
        if "name" not in raw:
            raise ConfigError(f"defence entry {item!r} has no 'name'; e.g. {{name: knn, k: 5}}")
        name = raw.pop("name")
        if not isinstance(name, str):
            raise ConfigError(f"defence name {name!r} must be a string, e.g. 'sphere'")
        nested = raw.pop("params", {})
        if not isinstance(nested, dict):
            raise ConfigError(f"defence {name!r}: 'params' must be a map, got {nested!r}")
        for key, value in nested.items():
            if key in raw:
                raise ConfigError(f"defence {name!r}: {key!r} is given twice; give it once")
            raw[key] = value
    else:
        raise ConfigError(
            f"defence entry {item!r} must be a name or a map such as {{name: knn, k: 5}}"
        )
    info = get_defense(name)
    fraction = None
    if "fraction" in raw:
        value = raw.pop("fraction")
        if not info.uses_fraction:
            raise ConfigError(
                f"defence {name!r} removes a fixed set and takes no fraction; drop 'fraction'"
            )
        fraction = _check_fraction(value, f"defence {name!r}")
    params = {key: _check_param(info, key, value) for key, value in raw.items()}
    if info.validate is not None:
        info.validate({**{k: p.default for k, p in info.params().items()}, **params})
    defaults = info.params()
    kept = sorted((k, v) for k, v in params.items() if v != defaults[k].default)
    return DefenseStep(name, fraction, tuple(kept))


def parse_defense(spec: Any) -> DefenseSpec:
    """A config entry -> ``DefenseSpec``.

    Accepts ``"none"``, a name (``"sphere"``, or ``"sphere+knn"`` for a plain
    composition), a map ``{name: knn, fraction: 0.1, k: 5}``, or a list of those
    (applied in order). ``none`` inside a composition is the identity and drops out.
    Every invalid input raises a one-line ``ConfigError``.
    """
    if isinstance(spec, DefenseSpec):
        return spec
    if isinstance(spec, str):
        items: list[Any] = [part for part in spec.split("+")] if spec.strip() else [""]
    elif isinstance(spec, dict):
        items = [spec]
    elif isinstance(spec, list | tuple):
        if not spec:
            raise ConfigError("empty defence list; use 'none' or list defences to compose")
        items = list(spec)
        for item in items:
            if not isinstance(item, str | dict):
                raise ConfigError(
                    f"defence entry {item!r} inside a composition must be a name or a map"
                )
    else:
        raise ConfigError(
            f"defence {spec!r} must be a name, a map {{name: ..., fraction: ...}} or a list"
        )
    steps = tuple(_parse_step(item) for item in items)
    return DefenseSpec(tuple(s for s in steps if s.name != "none"))


# ----------------------------------------------------------------------------- applying


_HASH_ROWS = 4096
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads bit patterns so the row hash is not just a weighted sum."""
    x = x ^ (x >> np.uint64(30))
    x = x * _MIX1
    x = x ^ (x >> np.uint64(27))
    x = x * _MIX2
    return x ^ (x >> np.uint64(31))


def canonical_order(z: torch.Tensor, y: torch.Tensor, in_box: torch.Tensor) -> torch.Tensor:
    """A permutation that sorts points by a hash of their content alone.

    The hash is exact uint64 arithmetic (wrapping, commutative), so it does not
    depend on where a row sits; distinct rows collide with probability ~n²/2⁶⁴.
    """
    zc = (z.detach().to("cpu", torch.float64) + 0.0).contiguous()  # +0.0 folds -0.0 into 0.0
    bits = zc.numpy().view(np.uint64)
    extra = np.stack(
        [
            y.detach().cpu().long().numpy().astype(np.uint64),
            in_box.detach().cpu().numpy().astype(np.uint64),
        ],
        axis=1,
    )
    weights = np.random.default_rng(20240611).integers(
        0, 2**63, size=bits.shape[1] + 2, dtype=np.uint64, endpoint=False
    ) * np.uint64(2) + np.uint64(1)  # odd multipliers
    h = np.empty(bits.shape[0], dtype=np.uint64)
    for start in range(0, bits.shape[0], _HASH_ROWS):
        rows = np.concatenate(
            [bits[start : start + _HASH_ROWS], extra[start : start + _HASH_ROWS]], axis=1
        )
        h[start : start + _HASH_ROWS] = (_mix(rows) * weights).sum(axis=1, dtype=np.uint64)
    return torch.from_numpy(np.argsort(_mix(h), kind="stable"))


def _check_input(inp: DefenseInput) -> None:
    z, y, box = inp.z, inp.y, inp.in_box
    if z.ndim != 2 or y.shape != (z.shape[0],) or box.shape != (z.shape[0],):
        raise DataError(
            f"defence input: expected z (n, d), y (n,), in_box (n,), got {tuple(z.shape)}, "
            f"{tuple(y.shape)}, {tuple(box.shape)}; pass one row per training point"
        )
    if box.dtype != torch.bool:
        raise DataError("defence input: in_box must be a bool tensor (True = valid image)")
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise DataError("defence input: labels must be integers (hard labels)")
    if z.shape[0] and (int(y.min()) < 0 or int(y.max()) >= inp.n_classes):
        raise DataError(f"defence input: labels outside [0, {inp.n_classes}); check n_classes")
    if not all_finite(z):
        raise DataError("defence input: features contain NaN or inf; check the extractor")


def apply_defense(
    spec: DefenseSpec | Any, inp: DefenseInput, default_fraction: float
) -> torch.Tensor:
    """Keep-mask (n,) over ``inp``'s points after the spec's defences, in order.

    ``default_fraction`` (the attack's budget eps) is the share removed by steps
    that set no fraction of their own.
    """
    spec = parse_defense(spec)
    _check_input(inp)
    n, device = len(inp), inp.z.device
    if not spec.steps or n == 0:
        return torch.ones(n, dtype=torch.bool, device=device)
    perm = canonical_order(inp.z, inp.y, inp.in_box).to(device)
    canon = DefenseInput(
        inp.z[perm],
        inp.y.to(device)[perm].long(),
        inp.in_box.to(device)[perm],
        inp.n_classes,
        inp.victim,
        inp.seed,
    )
    keep = torch.ones(n, dtype=torch.bool, device=device)
    for step in spec.steps:
        info = get_defense(step.name)
        fraction = step.fraction
        if fraction is None:
            fraction = (
                _check_fraction(default_fraction, f"defence {step.name!r} (default = eps)")
                if info.uses_fraction
                else 0.0
            )
        idx = keep.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        mask = info.fn(canon.subset(idx), fraction, **step.kwargs)
        if mask.shape != idx.shape or mask.dtype != torch.bool:
            raise TypeError(
                f"defence {step.name!r} returned {mask.dtype} {tuple(mask.shape)}, "
                f"expected a bool mask of shape {tuple(idx.shape)}"
            )
        keep[idx[~mask.to(device)]] = False
    out = torch.empty_like(keep)
    out[perm] = keep
    return out


# ----------------------------------------------------------------------------- helpers


def removal_count(fraction: float, n: int) -> int:
    """``round(fraction * n)`` with halves rounded up (never more than n)."""
    return min(n, int(math.floor(fraction * n + 0.5)))


def remove_top(
    scores: tuple[torch.Tensor, ...],
    y: torch.Tensor,
    n_classes: int,
    fraction: float,
    per_class: bool = True,
) -> torch.Tensor:
    """Keep-mask removing the highest-scoring points, per class or globally.

    ``scores`` are compared lexicographically (first is primary; later ones break
    its ties, e.g. k-NN's discrete disagreement); remaining ties go to the lower
    (canonical) index, so the choice never depends on the caller's order.
    """
    n = int(y.shape[0])
    order = torch.arange(n, device=y.device)
    for s in reversed(scores):
        _, o = torch.sort(s[order], descending=True, stable=True)
        order = order[o]
    keep = torch.ones(n, dtype=torch.bool, device=y.device)
    if not per_class:
        keep[order[: removal_count(fraction, n)]] = False
        return keep
    y_sorted = y[order]
    for c in range(n_classes):
        members = order[y_sorted == c]
        keep[members[: removal_count(fraction, int(members.numel()))]] = False
    return keep
