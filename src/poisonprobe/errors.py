"""User-facing errors: one line that names the problem and the fix, never a traceback."""

from __future__ import annotations

import re


class PoisonProbeError(Exception):
    """An error caused by the user's input (config, data, checkpoint, CLI).

    The CLI prints ``str(err)`` as a single line and exits with code 2, so the
    message must say what is wrong *and* how to fix it.
    """


class ConfigError(PoisonProbeError):
    """A config file or value is invalid."""


class DataError(PoisonProbeError):
    """A dataset is missing, malformed or contains invalid values."""


class CheckpointError(PoisonProbeError):
    """A checkpoint cannot be read safely or does not fit the architecture."""


class ResourceError(PoisonProbeError):
    """The run would exceed memory/disk, or a path is not writable."""


def check_eps(eps: float) -> float:
    """Validate a poisoning budget: a fraction in (0, 1]."""
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise ConfigError(
            f"eps={eps!r} is not a number; use a fraction in (0, 1], e.g. 0.03"
        ) from None
    if not (0.0 < value <= 1.0):
        raise ConfigError(f"eps={value} is outside (0, 1]; use a fraction such as 0.03 or 0.1")
    return value


def error_gist(err: BaseException) -> str:
    """The gist of a library error for a one-line message: its first sentence, capped.

    torch's and pandas' messages run on for a paragraph; ours must stay on one line.
    """
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__).split(". ")[0][:120]


def check_device(name: object) -> str:
    """Validate a device name: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    if not isinstance(name, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", name):
        raise ConfigError(f"device {name!r} is unknown; use auto, cpu, cuda or cuda:N")
    return name
