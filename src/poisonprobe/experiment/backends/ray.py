"""The Ray backend: one task per (setting, extractor, seed), rows written by the driver.

The worker body and the driver's bookkeeping are ``worker.py``'s (shared with the
processes backend).

Workers share the extractor and feature caches (``$XDG_CACHE_HOME``) and the output folder
(poison files, figures) through the file system, so the cluster needs a shared one; a
local Ray instance always has it. Only the driver touches ``results.csv``: workers return
their rows and the driver appends them through the one ``ResultsStore`` (atomic, resumable).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

from ...errors import ConfigError, PoisonProbeError
from ..cell import RunScope
from .worker import pending_units, run_unit

log = logging.getLogger("poisonprobe")

SHARED_ENV = ("XDG_CACHE_HOME", "POISONPROBE_DATA")
"""Environment variables the workers need to find the caches and datasets the driver uses."""


def import_ray() -> Any:
    """The ``ray`` module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError('ray is not installed; pip install "poisonprobe[ray]"') from None
    return ray


def run_ray(scope: RunScope, preps: list, address: str | None = None) -> None:
    """Fan the (setting, extractor, seed) units out as Ray tasks; append rows as they land.

    Uses an already initialised Ray, else connects to ``address``, else starts a local
    instance with every CPU (and shuts down only what it started).
    """
    ray = import_ray()
    cfg, store, reporter = scope.cfg, scope.store, scope.reporter
    units = pending_units(scope, preps)
    if not units:
        return
    started = _init_ray(ray, address)
    pending: dict[Any, tuple] = {}
    try:
        gpu = torch.device(scope.device).type == "cuda"
        env = {k: os.environ[k] for k in SHARED_ENV if k in os.environ}
        cpus = _cpus_per_task(ray, len(units))
        task = ray.remote(run_unit).options(
            num_cpus=cpus, num_gpus=1 if gpu else 0, runtime_env={"env_vars": env}
        )
        cfg_data = cfg.model_dump(mode="json")
        where = (str(scope.out_dir.resolve()), os.getcwd(), cpus, scope.run_id)
        for unit in units:
            pending[task.remote(cfg_data, unit, *where)] = unit
        reporter.describe(f"ray: 0/{len(units)} units done")
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            unit = pending.pop(ready[0])
            for row in _get(ray, ready[0]):
                store.append(row)
            reporter.advance(unit.n_cells)
            reporter.describe(f"ray: {len(units) - len(pending)}/{len(units)} units done")
            log.info(
                "ray unit %s/%s seed %d: %d new rows",
                cfg.settings[unit.setting_index].name,
                cfg.extractors[unit.ext_index].label,
                unit.seed,
                unit.n_cells - len(unit.done),
            )
    except BaseException:
        for ref in pending:  # a failed unit or Ctrl-C: stop the rest (resume picks them up)
            ray.cancel(ref)
        raise
    finally:
        if started:
            ray.shutdown()


def _init_ray(ray: Any, address: str | None) -> bool:
    """Initialise Ray unless it already is; True when this call started it."""
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            # Ray turns token authentication on for a new local instance and warns that it
            # did unless the mode is set explicitly: set the same mode explicitly (a user's
            # RAY_AUTH_MODE wins), so the run says nothing about it
            os.environ.setdefault("RAY_AUTH_MODE", "token")
            ray.init(num_cpus=os.cpu_count() or 1, **kwargs)
    except ConnectionError as err:
        raise ConfigError(
            f"cannot connect to Ray at {address!r} ({err}); check --ray-address"
        ) from None
    return True


def _cpus_per_task(ray: Any, n_units: int) -> int:
    """Spread the cluster's CPUs over the units (torch threads follow), within one node."""
    total = int(ray.cluster_resources().get("CPU", 1))
    node = max((int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n["Alive"]), default=1)
    return max(1, min(node, total // max(n_units, 1)))


def _get(ray: Any, ref: Any) -> list[dict[str, Any]]:
    """A task's rows; a user error inside a worker surfaces as its own one-line error."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        cause = getattr(err, "cause", None)
        if isinstance(cause, PoisonProbeError):
            raise cause from None
        raise
