"""Leader steps of tgda on the default, this checkout against another one (e.g. an older commit).

    git worktree add --detach /tmp/pp-base 7f911b2
    python benchmarks/leader_ab.py --base /tmp/pp-base [--steps 150 --eps 0.1 --reps 2]

Runs ``tgda`` (unconstrained, finetune setting of the embedded default, a fixed number of
leader steps: ``max_steps`` = ``tol``-free budget, so both sides do the same number of steps)
in a child process per side, alternating base / this checkout ``--reps`` times, each on one
thread. Prints per-leader-step medians, the Hessian-vector products each side spent and the
ratio base / this (> 1: this checkout is faster). The two sides' poisons differ in round-off
(float32 products summed in another order), so their trajectories drift apart slowly; the
attack objective after the last step is printed for both. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = r"""
import json, sys, time
sys.path.insert(0, {bench!r})
import torch
torch.set_num_threads(1)
from harness import digits_setting
from poisonprobe.attacks import AttackContext, get_attack
from poisonprobe.head.curvature import HeadCurvature
prep, cfg = digits_setting("finetune")
ctx = AttackContext.build(prep.extractor, prep.target.train, {eps}, regime="unconstrained",
                          victim=prep.clean_victim, z_train=prep.z_train,
                          clean_head=prep.clean_head, memo={{}})
count = [0]
name = "hvp_matrix" if hasattr(HeadCurvature, "hvp_matrix") else "hvp"  # CG's product
hvp = getattr(HeadCurvature, name)
def counting(self, u):
    count[0] += 1
    return hvp(self, u)
setattr(HeadCurvature, name, counting)
t0 = time.perf_counter()
ps = get_attack("tgda").fn(ctx, max_steps={steps}, tol=1e-12, patience=10**6)
seconds = time.perf_counter() - t0
print(json.dumps({{"seconds": seconds, "steps": ps.info["attack_steps"], "hvps": count[0],
                   "objective": ps.info["attack_objective"]}}))
"""


def run_side(src: Path, bench: Path, args: argparse.Namespace) -> dict:
    code = CHILD.format(bench=str(bench), eps=args.eps, steps=args.steps)
    env = {"PYTHONPATH": str(src), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="the other checkout's root")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()
    sides = {"base": args.base.resolve(), "this": HERE.parent}
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    for _ in range(args.reps):
        for name, root in sides.items():
            runs[name].append(run_side(root / "src", root / "benchmarks", args))
    per_step = {
        name: statistics.median(r["seconds"] / r["steps"] for r in rs) for name, rs in runs.items()
    }
    print("| side | ms per leader step (median) | leader steps | HVPs | objective |")
    print("|---|---|---|---|---|")
    for name, rs in runs.items():
        r = rs[0]
        print(
            f"| {name} | {1e3 * per_step[name]:.0f} | {r['steps']} | {r['hvps']} "
            f"| {r['objective']:.4f} |"
        )
    print(f"leader_step_ab ratio={per_step['base'] / per_step['this']:.3g} (base / this)")


if __name__ == "__main__":
    main()
