"""single_thread_if_small: one thread inside for small CPU work, restored afterwards."""

from __future__ import annotations

import pytest
import torch

from poisonprobe.threads import SMALL_WORK, single_thread_if_small


def test_small_work_runs_on_one_thread_and_restores() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with single_thread_if_small(1000):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with single_thread_if_small(SMALL_WORK + 1):
            assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError), single_thread_if_small(10):
            raise RuntimeError("boom")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
