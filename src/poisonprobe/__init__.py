"""poisonprobe: indiscriminate data poisoning of linear probes on frozen SSL extractors."""

from ._version import __version__


def run(config=None, out=None, quiet: bool = False, backend: str = "local", ray_address=None):
    """Run an experiment (YAML path, dict or Config; None = the default) → results DataFrame.

    ``backend="ray"`` spreads (setting, extractor, seed) units over Ray (``ray_address``:
    an existing cluster; default a local instance); the rows are the local backend's.
    """
    from .experiment.runner import run as _run  # lazy: keeps `import poisonprobe` light

    return _run(config, out=out, quiet=quiet, backend=backend, ray_address=ray_address)


def attack(name: str, extractor=None, train=None, eps: float = 0.1, **kwargs):
    """Run one attack → ``PoisonSet`` (see ``poisonprobe.attacks.base.attack``)::

    poison = poisonprobe.attack("ft-ideal", extractor=ext, train=(x, y), eps=0.1)
    """
    from .attacks.base import attack as _attack  # lazy, as above

    return _attack(name, extractor=extractor, train=train, eps=eps, **kwargs)


__all__ = ["__version__", "attack", "run"]
