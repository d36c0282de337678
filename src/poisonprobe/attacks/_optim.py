"""What every iterative attack shares: one stopping rule (run until the attack's own
objective stops improving, not for a fixed number of steps) and one Adam on bare tensors.

A fixed step count understates what an attack does whenever its objective is still moving at
the last step (tgda-feature: 20 → 100 leader steps moved a default cell from 13.3 to 19.3 pt).
``Plateau`` watches one scalar per step (the attacker objective, to maximise or minimise) and
stops when the gain still to come is below ``tol`` (relative): the best value's gain over the
last ``window`` steps times ``outlook``, the number of such gains a geometric extrapolation of
the recent gains still promises (1 when gains shrink fast, up to ``MAX_OUTLOOK`` on a steady
climb). Without it a slow, steady climb stopped as soon as one window gained less than ``tol``
(unconstrained tgda on the default: 14–19 pt short at eps 0.1, BENCHMARKS.md). ``max_steps``
is only a safety cap, and hitting it is reported (``converged=False``).
When the objective has not set a new best for ``patience`` steps the optimiser should go back
to its best iterate with a smaller step (``restart_due``): with a constant step size that is
what lets a plateau be a real optimum rather than an oscillation. The converse
(``grow_due``): after ``window`` new bests in a row the step is too timid (the objective
rises steadily, as tgda's unconstrained images do for hundreds of constant steps), so the
optimiser may grow it; together the two make a "bold driver" step size that needs no tuning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import ConfigError


@dataclass(frozen=True)
class StopRule:
    """``tol``: relative gain still to come (``Plateau.outlook`` times the best objective's
    gain over the last ``window`` steps) below which the run has converged; ``max_steps``: the
    safety cap; ``patience``: steps without a new best before a step-size restart (0: never
    restart)."""

    tol: float = 1e-3
    window: int = 10
    max_steps: int = 200
    patience: int = 0

    def check(self, who: str) -> StopRule:
        """One-line ConfigErrors for the user-facing values (before any work)."""
        for key in ("window", "max_steps", "patience"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{who} {key}={value!r} must be an integer")
        if not (isinstance(self.tol, (int, float)) and math.isfinite(self.tol) and self.tol > 0):
            raise ConfigError(f"{who} tol={self.tol!r} must be a number > 0, e.g. 1e-3")
        if self.window < 1:
            raise ConfigError(f"{who} window={self.window} must be >= 1 (steps)")
        if self.max_steps < 1:
            raise ConfigError(f"{who} max_steps={self.max_steps} must be >= 1")
        if self.patience < 0:
            raise ConfigError(f"{who} patience={self.patience} must be >= 0 (0: no restarts)")
        return self


def stop_rule(who: str, tol: float, window: int, max_steps: int, patience: int = 0) -> StopRule:
    """A validated ``StopRule`` (the attacks' keyword arguments, checked up front)."""
    return StopRule(tol=tol, window=window, max_steps=max_steps, patience=patience).check(who)


class Adam:
    """The attacks' one Adam: moment estimates for one bare tensor (poisoned images or
    features), updated in place. With closed-form or batched gradients a step is a handful of
    ops, where ``torch.optim.Adam``'s bookkeeping would cost more than the gradient itself;
    modules' parameters (a generator, a decoder) use ``torch.optim`` instead.

    ``eps``: each caller's own (its results depend on it). ``weights``: the new gradient's
    weight in the two running averages, ``1 - beta`` by default; tgda and kkt pass the decimal
    ``(0.1, 0.001)``, which is not ``1 - 0.9`` in float64's last bit, to keep their results
    bit-identical. Two ways to apply the moments: ``direction`` (the textbook m̂ / (√v̂ + eps),
    a fresh tensor the caller scales, signs and projects) and ``step_`` (PyTorch's form, in
    place). ``reset`` forgets the moments and the bias-correction count (after a restart the
    first step is then almost a sign step).
    """

    def __init__(
        self,
        like: torch.Tensor,
        eps: float,
        betas: tuple[float, float] = (0.9, 0.999),
        weights: tuple[float, float] | None = None,
    ) -> None:
        self.b1, self.b2 = betas
        self.w1, self.w2 = weights if weights is not None else (1 - self.b1, 1 - self.b2)
        self.eps = eps
        self.m = torch.zeros_like(like)
        self.v = torch.zeros_like(like)
        self.t = 0  # steps since the start or the last reset (bias correction)

    def reset(self) -> None:
        """Fresh moments and bias correction (the remedy for steps that keep overshooting)."""
        self.m.zero_()
        self.v.zero_()
        self.t = 0

    def _update(self, grad: torch.Tensor) -> None:
        self.t += 1
        self.m.mul_(self.b1).add_(grad, alpha=self.w1)
        self.v.mul_(self.b2).addcmul_(grad, grad, value=self.w2)

    def direction(self, grad: torch.Tensor) -> torch.Tensor:
        """m̂ / (√v̂ + eps) after taking ``grad`` into the moments: a fresh tensor, computed in
        one buffer beside the denominator (two temporaries the size of the tensor)."""
        self._update(grad)
        denom = torch.div(self.v, 1 - self.b2**self.t).sqrt_().add_(self.eps)
        return torch.div(self.m, 1 - self.b1**self.t).div_(denom)

    def step_(self, param: torch.Tensor, grad: torch.Tensor, lr: float) -> None:
        """``param`` one descent step of ``lr`` along ``grad``, in place, exactly as
        ``torch.optim.Adam`` computes it (eps added to √v before the bias correction of m)."""
        self._update(grad)
        denom = (self.v.sqrt() / math.sqrt(1.0 - self.b2**self.t)).add_(self.eps)
        param.addcdiv_(self.m, denom, value=-lr / (1.0 - self.b1**self.t))


def check_growth(factor: float, who: str) -> float:
    """``lr_growth``: a number >= 1 (1 keeps the step constant between restarts)."""
    if isinstance(factor, bool) or not isinstance(factor, (int, float)):
        raise ConfigError(f"{who} lr_growth={factor!r} must be a number >= 1, e.g. 1.5")
    if not (math.isfinite(factor) and 1 <= factor <= 10):
        raise ConfigError(f"{who} lr_growth={factor} must be in [1, 10] (1: constant step)")
    return float(factor)


MAX_OUTLOOK = 20.0  # most gains-to-come a steady climb is credited with (Plateau.outlook)
STILL_RISING_RATIO = 0.75  # gain_ratio at or above which a stopped run was still climbing


@dataclass
class Plateau:
    """Tracks one objective along the steps of an attack; see the module docstring.

    Call ``record(value)`` once per evaluated iterate (it returns True on a new best), then
    ``done()`` to ask whether to stop, and ``restart_due()`` whether to restart the step.
    """

    rule: StopRule
    maximize: bool = True
    relative_to_start: bool = False  # gains relative to the first value, not the current one
    trace: list[float] = field(default_factory=list)
    best_trace: list[float] = field(default_factory=list)
    best: float = math.nan
    best_step: int = -1
    restarts: int = 0
    grows: int = 0
    converged: bool = False
    reason: str = ""
    _stall: int = 0
    _streak: int = 0  # new bests in a row
    _reached: bool = False  # stopped by ``reach`` (a known optimum), not by the rule

    def _gain(self, new: float, old: float) -> float:
        return new - old if self.maximize else old - new

    def record(self, value: float) -> bool:
        """Add the objective of the current iterate; True when it is a new best."""
        value = float(value)
        self.trace.append(value)
        improved = math.isnan(self.best) or (
            not math.isnan(value) and self._gain(value, self.best) > 0
        )
        if improved:
            self.best, self.best_step, self._stall = value, len(self.trace) - 1, 0
            self._streak += 1
        else:
            self._stall, self._streak = self._stall + 1, 0
        self.best_trace.append(self.best)
        return improved

    @property
    def steps(self) -> int:
        """Iterates evaluated so far."""
        return len(self.trace)

    def relative_gain(self) -> float:
        """Improvement of the best value over the last ``window`` steps, relative to it (or
        to the first value with ``relative_to_start``: for objectives driven towards 0, such
        as a GC residual, whose relative decrease never slows down on a log scale)."""
        w = self.rule.window
        if len(self.best_trace) <= w:
            return math.inf
        old, new = self.best_trace[-1 - w], self.best_trace[-1]
        ref = abs(self.trace[0]) if self.relative_to_start else abs(old)
        return self._gain(new, old) / max(ref, 1e-12)

    def reach(self, reason: str = "goal reached") -> None:
        """The objective reached its known optimum (e.g. a GC residual of zero): converged."""
        self.converged, self.reason, self._reached = True, reason, True

    def done(self) -> bool:
        """True once converged (plateau or ``reach``) or the step cap is hit (not converged)."""
        if self.converged:
            return True
        if self.relative_gain() * self.outlook() < self.rule.tol:
            self.converged = True
            self.reason = "no gain on its start" if self.never_improved() else "plateau"
            return True
        if self.steps >= self.rule.max_steps:
            self.reason = "max_steps"
            return True
        return False

    def outlook(self) -> float:
        """Gains still to come, in units of the last window's: ``r / (1 − r)`` (the tail of a
        geometric series with ``r = gain_ratio``), at least 1 (the last window's own gain:
        runs whose gains shrink fast stop as they always did) and at most ``MAX_OUTLOOK`` (a
        steady climb, ``r`` → 1, stops once a window gains less than ``tol / MAX_OUTLOOK``
        rather than never); 1 before two windows exist."""
        r = self.gain_ratio()
        if math.isnan(r):
            return 1.0
        if r >= 1.0:
            return MAX_OUTLOOK
        return min(max(1.0, r / (1.0 - r)), MAX_OUTLOOK)

    def restart_due(self) -> bool:
        """True (once per stall) after ``patience`` steps without a new best."""
        if self.rule.patience and self._stall >= self.rule.patience:
            self._stall = 0
            self.restarts += 1
            return True
        return False

    def grow_due(self) -> bool:
        """True (once per streak) after ``window`` new bests in a row: a whole window of steady
        rise, so the step may grow (a shorter streak grows it into overshooting too soon)."""
        if self._streak >= self.rule.window:
            self._streak = 0
            self.grows += 1
            return True
        return False

    def gain_ratio(self) -> float:
        """How much the best value's gains shrink per ``window``: the gain over the last span
        divided by the gain over the span before, per window (0 without a recent gain, inf
        when only the last span gained; nan before two windows). The spans are two windows
        long once four windows exist (the square root of their ratio): one window pair is
        noisy, and on the default it read 0.65 on climbs whose two-window ratio was 0.9–1.0.
        A run converging on an optimum shrinks its gains geometrically (ratio ≪ 1); a slow,
        steady climb keeps them (ratio near 1)."""
        w = self.rule.window
        if len(self.best_trace) <= 2 * w:
            return math.nan
        span = 2 * w if len(self.best_trace) > 4 * w else w
        now, mid = self.best_trace[-1], self.best_trace[-1 - span]
        last, before = self._gain(now, mid), self._gain(mid, self.best_trace[-1 - 2 * span])
        if last <= 0:
            return 0.0
        return (last / before) ** (w / span) if before > 0 else math.inf

    def still_rising(self) -> bool:
        """The gains shrink by less than a quarter per window (``gain_ratio`` ≥ 0.75): the run
        stopped on a slow climb (on the cap, or once a window gained less than ``tol`` over
        ``outlook`` ≥ 3), not near an optimum, and more steps would go on climbing; its
        result is a lower bound."""
        return self.gain_ratio() >= STILL_RISING_RATIO

    def never_improved(self) -> bool:
        """No step after the first beat it: the row reports the start, not what the attack
        did (a start that is a local optimum, or a step size that only overshoots). Its
        ``converged`` says the rule stopped it, yet its damage says nothing about the
        attack's, so the report counts such rows with the lower bounds. A start already at
        a known optimum (``reach``) is not one."""
        return self.steps > 1 and self.best_step == 0 and not self._reached

    def summary(self, keep: int = 200) -> dict[str, Any]:
        """The result columns plus the objective trace (thinned to at most ``keep`` points)."""
        stride = max(1, math.ceil(len(self.trace) / keep))
        return {
            "attack_objective": self.best,
            "attack_steps": self.steps,
            "converged": self.converged,
            "restarts": self.restarts,
            "grows": self.grows,
            "stop_reason": self.reason,
            "gain_ratio": self.gain_ratio(),
            "still_rising": self.still_rising(),
            "never_improved": self.never_improved(),
            "objective_trace": [round(v, 8) for v in self.trace[::stride]],
            "objective_trace_stride": stride,
        }
