"""How much the start draw decides what unconstrained tgda reaches, whether a short probe
tells the draws apart, and whether starting from a larger budget's poisons helps
(BENCHMARKS.md, "Several starts for tgda").

    python benchmarks/tgda_draws.py [--draws 6 --steps 600 --eps 0.03 --jobs 2]
    python benchmarks/tgda_draws.py --draws 3 --steps 0 --from-eps 0.1
    python benchmarks/tgda_draws.py --draws 3 --steps 0 --start influence-top stratified

Draw ``s`` is what seed ``s`` starts from (base images and confusable labels) on the embedded
default's extractor and split. Each draw runs in its own one-thread child process, exactly
``--steps`` leader steps (``tol`` far below reach), or with ``--steps 0`` until tgda's own stop
rule ends it (its defaults: what the default run does). The table shows the attacker objective
(clean-train CE of the retrained head) at steps 60 and 120 (the objective trace's entry there,
``--steps`` > 0 only), its best at the end (``attack_objective``) and, with ``--steps 0``, the
steps run; the best draw per row in bold.

``--from-eps E``: each draw also runs tgda at eps ``E`` (same seed, same step rule) and then,
from a random subset of those poisons (``n_p`` of them, images and labels; the subset drawn by
a generator seeded with the draw), at ``--eps``: "reuse across eps" as a start. Both rows are
printed, the fresh draw's first.

``--start CHOICE ...``: each draw also runs tgda from a chosen start instead of the random one
(``start_choices.py``: by first-order influence, or stratified by class), one row per choice
after the fresh draw's. With ``--steps 0`` every row also shows the test-accuracy drop (pt) of
the victim retrained on the poisons (the runner's ``evaluate``). Not part of the test suite.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness import one_thread_children
from start_choices import CHOICES

HERE = Path(__file__).resolve().parent
MARKS = (60, 120)  # probe lengths shown beside the last step

CHILD = r"""
import json, sys
sys.path.insert(0, {bench!r})
import torch
torch.set_num_threads(1)
from harness import digits_setting, test_drop, unconstrained_context
from start_choices import chosen_start
from poisonprobe.attacks import get_attack
import poisonprobe.attacks.tgda as tgda_module
prep, cfg = digits_setting({setting!r})
rule = dict(max_steps={steps}, tol=1e-12) if {steps} else {{}}

def context(eps):
    return unconstrained_context(prep, eps, {draw})

def summary(ps):
    trace, stride = ps.info["objective_trace"], ps.info["objective_trace_stride"]
    marks = [trace[n // stride] for n in {marks}] if {steps} else []
    drop = [] if {steps} else [test_drop(prep, cfg, ps, {eps}, {draw})]
    return marks + drop + [ps.info["attack_objective"], ps.info["attack_steps"]]

def from_start(start):
    tgda_module.init_poisons = lambda *args, **kwargs: start
    return summary(get_attack("tgda").fn(ctx, **rule))

ctx = context({eps})
out = [summary(get_attack("tgda").fn(ctx, **rule))]
if {from_eps}:
    big = get_attack("tgda").fn(context({from_eps}), **rule)
    pick = torch.Generator().manual_seed({draw})
    sel = torch.randperm(len(big.y), generator=pick)[: ctx.n_poison]
    out.append(from_start((big.base_idx[sel], big.x[sel].clone(), big.y[sel].clone())))
for choice in {starts}:
    out.append(from_start(chosen_start(ctx, choice, {draw})))
print(json.dumps(out))
"""


def child_code(setting: str, draw: int, args: argparse.Namespace) -> str:
    """One draw's child: per start (fresh, from ``--from-eps``'s poisons, each ``--start``)
    it prints the objective at each mark (or the drop), the best at the end and the steps."""
    return CHILD.format(
        bench=str(HERE),
        setting=setting,
        eps=args.eps,
        draw=draw,
        steps=args.steps,
        marks=MARKS,
        from_eps=args.from_eps or 0,
        starts=list(args.start),
    )


def table_rows(results: dict, args: argparse.Namespace) -> list[str]:
    """Markdown rows: per setting and start, the marks, the final objective and the steps."""
    draws = range(args.draws)
    starts = ["", f", from eps {args.from_eps}"] if args.from_eps else [""]
    starts += [f", {choice}" for choice in args.start]
    labels = [f"{m} steps" for m in MARKS] + [f"{args.steps} steps"] if args.steps else ["drop pt"]
    lines = []
    for setting in ("finetune", "transfer"):
        for j, start in enumerate(starts):
            values = [[results[(setting, d)][j][i] for d in draws] for i in range(len(labels))]
            named = list(zip(labels, values, strict=True))
            if not args.steps:
                named.append(("final", [results[(setting, d)][j][-2] for d in draws]))
            for label, row in named:
                digits = 1 if label == "drop pt" else 3
                top = max(row)
                cells = [f"**{v:.{digits}f}**" if v == top else f"{v:.{digits}f}" for v in row]
                lines.append(f"| {setting}{start}, {label} | " + " | ".join(cells) + " |")
            if not args.steps:
                steps = [str(results[(setting, d)][j][-1]) for d in draws]
                lines.append(f"| {setting}{start}, steps | " + " | ".join(steps) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--draws", type=int, default=6)
    parser.add_argument("--steps", type=int, default=600, help="0: tgda's own stop rule")
    parser.add_argument("--eps", type=float, default=0.03)
    parser.add_argument("--from-eps", type=float, default=None, help="also start from its poisons")
    parser.add_argument(
        "--start", nargs="*", default=[], choices=CHOICES, help="also from these chosen starts"
    )
    parser.add_argument("--jobs", type=int, default=2, help="child processes at a time")
    args = parser.parse_args()
    jobs = [(s, d) for s in ("finetune", "transfer") for d in range(args.draws)]
    results = one_thread_children({job: child_code(*job, args) for job in jobs}, args.jobs)
    print("| setting | " + " | ".join(f"draw {d}" for d in range(args.draws)) + " |")
    print("|---" * (args.draws + 1) + "|")
    print("\n".join(table_rows(results, args)))


if __name__ == "__main__":
    main()
