"""poisonprobe: indiscriminate data poisoning of linear probes on frozen SSL extractors."""

__version__ = "0.1.0"


def run(config=None, out=None, quiet: bool = False):
    """Run an experiment (YAML path, dict or Config; None = the default) → results DataFrame."""
    from .experiment.runner import run as _run

    return _run(config, out=out, quiet=quiet)


__all__ = ["__version__", "run"]
