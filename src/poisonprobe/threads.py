"""Run small CPU problems on one thread.

The head solvers (L-BFGS, Newton-CG) and the feature-space attacks do thousands of tiny
vector operations. With more than one intra-op thread each of them pays a thread wake-up, and
when the cores are shared (two runs on a laptop, a CI box, Ray workers) a descheduled worker
stalls every barrier: a 330x512 head took 82-144 s on 2 threads next to two busy processes,
and 1.4 s on one. Large matrix products still get every thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

SMALL_WORK = 4_000_000  # elements of the data matrix below which one thread is faster


@contextmanager
def single_thread_if_small(elements: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """One intra-op thread while inside, when the data is small and on the CPU."""
    before = torch.get_num_threads()
    if torch.device(device).type != "cpu" or elements > SMALL_WORK or before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
