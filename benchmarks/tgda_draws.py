"""How much the start draw decides what unconstrained tgda reaches, and whether a short probe
tells the draws apart (BENCHMARKS.md, "Several starts for tgda").

    python benchmarks/tgda_draws.py [--draws 6 --steps 600 --eps 0.03 --jobs 2]

Draw ``s`` is what seed ``s`` starts from (base images and confusable labels) on the embedded
default's extractor and split. Each draw runs exactly ``--steps`` leader steps (``tol`` far
below reach) in its own one-thread child process; the table shows its attacker objective
(clean-train CE of the retrained head) at steps 60 and 120 (the objective trace's entry there)
and its best after ``--steps`` steps (``attack_objective``), the best draw per row in bold.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
MARKS = (60, 120)  # probe lengths shown beside the last step

CHILD = r"""
import json, sys
sys.path.insert(0, {bench!r})
import torch
torch.set_num_threads(1)
from harness import digits_setting
from poisonprobe.attacks import AttackContext, get_attack
prep, _ = digits_setting({setting!r})
ctx = AttackContext.build(prep.extractor, prep.target.train, {eps}, regime="unconstrained",
                          victim=prep.clean_victim, z_train=prep.z_train, seed={draw},
                          clean_head=prep.clean_head, memo={{}})
ps = get_attack("tgda").fn(ctx, max_steps={steps}, tol=1e-12)
trace, stride = ps.info["objective_trace"], ps.info["objective_trace_stride"]
print(json.dumps([trace[n // stride] for n in {marks}] + [ps.info["attack_objective"]]))
"""


def run_draw(setting: str, draw: int, args: argparse.Namespace) -> list[float]:
    """The objective at each mark and the best at the end, for one draw in a fresh process."""
    code = CHILD.format(
        bench=str(HERE), setting=setting, eps=args.eps, draw=draw, steps=args.steps, marks=MARKS
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--draws", type=int, default=6)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--eps", type=float, default=0.03)
    parser.add_argument("--jobs", type=int, default=2, help="child processes at a time")
    args = parser.parse_args()
    jobs = [(s, d) for s in ("finetune", "transfer") for d in range(args.draws)]
    with ThreadPoolExecutor(args.jobs) as pool:
        results = dict(zip(jobs, pool.map(lambda job: run_draw(*job, args), jobs), strict=True))
    draws = range(args.draws)
    print("| setting | " + " | ".join(f"draw {d}" for d in draws) + " |")
    print("|---" * (args.draws + 1) + "|")
    for setting in ("finetune", "transfer"):
        for i, mark in enumerate([*MARKS, args.steps]):
            row = [results[(setting, d)][i] for d in draws]
            cells = [f"**{v:.3f}**" if v == max(row) else f"{v:.3f}" for v in row]
            print(f"| {setting}, {mark} steps | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
