"""The processes backend: units run in parallel worker processes on this machine.

The default's small problems run on one thread each (``threads.single_thread_if_small``),
so one process leaves the other cores idle; a worker per (setting, extractor, seed) unit,
each with ``cores // workers`` threads, uses them. Workers send each row through a queue as
its cell finishes and only the driver appends to ``results.csv`` (atomic, resumable: an
interrupted run keeps every row that reached the driver). A worker's error ends the run
with that error (a ``PoisonProbeError`` stays one line); a worker that dies (killed, out of
memory) ends it with a one-line ``ResourceError`` instead of a hang.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ...errors import ConfigError, ResourceError
from ...progress import Reporter
from ..cell import RunScope
from ..results import ResultsStore
from .worker import UnitJob, pending_units, run_unit

_rows: Any = None  # the worker process's end of the row queue (set by _init_worker)


def check_workers(workers: int | str) -> int | str:
    """``workers``: a count >= 1 or ``auto``; a one-line error otherwise (before any work)."""
    if workers == "auto":
        return workers
    if isinstance(workers, str) and workers.isdigit():
        workers = int(workers)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers={workers!r} must be an integer >= 1 or 'auto'")
    return workers


MIN_CELLS_PER_UNIT = 16
"""``auto`` runs units in parallel only from this many rows per unit: a worker costs a few
seconds of imports and preparation, which a handful of cells does not pay back."""


def resolve_workers(workers: int | str, n_units: int, n_cells: int, device: Any) -> int:
    """``auto``: one worker per unit up to the CPU count on the CPU; one process on a GPU
    (the units would share one card), for one unit, or for small units."""
    if workers != "auto":
        return int(workers)
    if str(device).startswith("cuda") or n_units <= 1 or n_cells < MIN_CELLS_PER_UNIT * n_units:
        return 1
    return max(1, min(n_units, os.cpu_count() or 1))


def _init_worker(rows: Any) -> None:
    global _rows
    _rows = rows
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    """End this worker when the driver is gone (killed without a chance to stop its pool):
    an orphan would otherwise keep computing rows nobody will write."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _forward(row: dict[str, Any]) -> None:
    _rows.put(row)


def _work(cfg_data: dict[str, Any], job: UnitJob, *where: Any) -> int:
    """Run one unit in a worker; its rows went through the queue; return how many."""
    return len(run_unit(cfg_data, job, *where, forward=_forward))


def run_processes(scope: RunScope, preps: list, workers: int) -> None:
    """Run the pending units on ``workers`` spawned processes; append rows as they land."""
    units = pending_units(scope, preps)
    if not units:
        return
    for unit in units:
        scope.reporter.advance(len(unit.done))  # cells resumed from the folder
    threads = max(1, (os.cpu_count() or 1) // workers)
    where = (str(scope.out_dir.resolve()), os.getcwd(), threads, scope.run_id)
    cfg_data = scope.cfg.model_dump(mode="json")
    run_jobs(cfg_data, units, where, workers, scope.store, scope.reporter)


def run_jobs(
    cfg_data: dict[str, Any],
    units: list[UnitJob],
    where: tuple,
    workers: int,
    store: ResultsStore,
    reporter: Reporter,
    work: Callable[..., int] = _work,
) -> None:
    """The pool: ``units`` on ``workers`` spawned processes, each row appended as it lands;
    the first worker error is re-raised here and the other workers are stopped. A worker that
    dies without an error (killed, out of memory) ends the run with a one-line
    ``ResourceError``; the rows that reached the driver stay, so rerunning resumes."""
    context = mp.get_context("spawn")  # a fresh interpreter: no forked torch thread pools
    rows = context.Queue()
    pool = ProcessPoolExecutor(workers, context, initializer=_init_worker, initargs=(rows,))
    try:
        jobs = [pool.submit(work, cfg_data, unit, *where) for unit in units]
        reporter.describe(f"{len(units)} units on {workers} worker processes")
        expected, received = None, 0
        while expected is None or received < expected:
            try:
                row = rows.get(timeout=0.2)
            except queue.Empty:
                failed = next((j for j in jobs if j.done() and j.exception() is not None), None)
                if failed is not None:
                    _reraise(failed.exception())
                if all(job.done() for job in jobs):
                    expected = sum(job.result() for job in jobs)
                continue
            store.append(row)
            reporter.advance()
            received += 1
    finally:
        _stop(pool)


def _reraise(err: BaseException | None) -> None:
    """A worker's own error as it is; a pool broken by a dead worker as a one-line error."""
    if isinstance(err, BrokenProcessPool):
        raise ResourceError(
            "a worker process died without an error (killed, or out of memory); the rows "
            "written so far are kept: rerun the same command to resume, with --workers 1 "
            "if memory is short"
        ) from None
    raise err  # type: ignore[misc]


def _stop(pool: ProcessPoolExecutor) -> None:
    """Shut the pool down now: queued units are cancelled and running workers terminated
    (after an error their rows would be computed for nobody)."""
    processes = list(getattr(pool, "_processes", {}).values())  # no public handle to them
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=5)
