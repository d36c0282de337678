"""Certified bounds: how much could ANY attacker do to this probe?

``loss_bound``: the Steinhardt-Koh-Liang upper bound on the clean training loss under any
feasible poison set (and the minimax loop whose worst points are the ``min-max`` attack);
``dpa``: Deep Partition Aggregation certificates; ``feasible``: the feasible poison sets.
"""

from .dpa import certified_accuracy, certify, partition, votes
from .feasible import FeasibleSet, check_modellable, max_linear, oracle_feasible_set
from .loss_bound import MinimaxResult, clean_loss, minimax, shared_minimax

__all__ = [
    "FeasibleSet",
    "MinimaxResult",
    "certified_accuracy",
    "certify",
    "check_modellable",
    "clean_loss",
    "max_linear",
    "minimax",
    "oracle_feasible_set",
    "partition",
    "shared_minimax",
    "votes",
]
