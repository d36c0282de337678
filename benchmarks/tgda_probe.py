"""How long must tgda's probe of several starts be to pick the draw that ends best?
(BENCHMARKS.md, "Several starts for tgda").

    python benchmarks/tgda_probe.py [--eps 0.03 --seeds 3 --starts 3 --jobs 2]

For each default setting and seed: unconstrained tgda with ``--starts`` draws, every draw run
to its own end (``start_steps`` = ``max_steps``, the rest of tgda's defaults), in a one-thread
child process. Every draw's best-so-far objective per step (at the leader's follower
tolerance) is kept, so any probe length ``L`` can be replayed afterwards: ``L`` steps of every
draw, the best at step ``L`` runs on to its end. For each ``L`` the table shows in how many
cells that choice is the draw that ends best, the mean and largest shortfall of its end
objective from the best end, and the leader steps it costs against one draw (draw 0, what
``starts: 1`` runs). Not part of the test suite.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness import one_thread_children

HERE = Path(__file__).resolve().parent
PROBES = (60, 120, 250, 500, 1000, 2000)

CHILD = r"""
import json, sys
sys.path.insert(0, {bench!r})
import torch
torch.set_num_threads(1)
from harness import digits_setting, unconstrained_context
from poisonprobe.attacks import get_attack
import poisonprobe.attacks.tgda as tgda_module
prep, _ = digits_setting({setting!r})
ctx = unconstrained_context(prep, {eps}, {seed})
kept = []
info_of = tgda_module._climb_info
def keep_climbs(climbs, *args):
    kept.extend(climbs)
    return info_of(climbs, *args)
tgda_module._climb_info = keep_climbs
get_attack("tgda").fn(ctx, starts={starts}, start_steps=10**9)
print(json.dumps([climb.plateau.best_trace for climb in kept]))
"""


def child_code(setting: str, seed: int, args: argparse.Namespace) -> str:
    """One (setting, seed)'s child: it prints every draw's best-so-far objective per step."""
    return CHILD.format(
        bench=str(HERE), setting=setting, eps=args.eps, seed=seed, starts=args.starts
    )


def replay(traces: list[list[float]], probe: int) -> tuple[int, float, int]:
    """(chosen draw, its end objective, leader steps) of a ``probe``-step probe."""
    at = [t[min(probe, len(t)) - 1] for t in traces]
    chosen = max(range(len(traces)), key=at.__getitem__)
    steps = sum(min(probe, len(t)) for t in traces)
    steps += len(traces[chosen]) - min(probe, len(traces[chosen]))
    return chosen, traces[chosen][-1], steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--eps", type=float, default=0.03)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2, help="child processes at a time")
    args = parser.parse_args()
    jobs = [(s, seed) for s in ("finetune", "transfer") for seed in range(args.seeds)]
    cells = one_thread_children({job: child_code(*job, args) for job in jobs}, args.jobs)
    print("| setting, seed | each draw's end objective (steps) |")
    print("|---|---|")
    for (setting, seed), traces in cells.items():
        ends = " / ".join(f"{t[-1]:.3f} ({len(t)})" for t in traces)
        print(f"| {setting}, {seed} | {ends} |")
    print()
    cols = ["probe steps", "picks the best end", "shortfall from the best end: mean / largest"]
    print("| " + " | ".join([*cols, "steps vs one draw"]) + " |")
    print("|---|---|---|---|")
    one = sum(len(traces[0]) for traces in cells.values())
    for probe in PROBES:
        picks = [replay(traces, probe) for traces in cells.values()]
        best = [max(t[-1] for t in traces) for traces in cells.values()]
        hits = sum(end == top for (_, end, _), top in zip(picks, best, strict=True))
        short = [top - end for (_, end, _), top in zip(picks, best, strict=True)]
        steps = sum(s for _, _, s in picks)
        gap = f"{sum(short) / len(short):.3f} / {max(short):.3f}"
        print(f"| {probe} | {hits}/{len(best)} | {gap} | {steps / one:.2f}× |")


if __name__ == "__main__":
    main()
