"""poisonprobe benchmarks: each of our implementations against a naive baseline, same process.

    python benchmarks/run.py [--quick] [--reps N] [--out FILE.md] [--threads N] [--only a,b]

Prints one ``NAME ratio=X`` line per comparison (baseline time / our time) at the end and
writes a markdown report (default ``benchmarks/latest.md``). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # sibling modules, also when run from elsewhere

import torch  # noqa: E402
from cases import CASES, Budget, Section  # noqa: E402
from harness import load_average, machine  # noqa: E402

QUICK_SKIP = ("default",)  # the default run is measured in the full run only


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes, < 5 min on 2 cores")
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 5, quick 3)")
    ap.add_argument("--out", type=Path, default=HERE / "latest.md", help="markdown report")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads in this process (default 1: steady on a shared box; "
        "0 = torch's choice); when given, also OMP_NUM_THREADS of the default-run subprocess",
    )
    ap.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(CASES)}")
    args = ap.parse_args(argv)
    if args.reps is not None and args.reps < 1:
        ap.error("--reps must be >= 1")
    if args.only:
        unknown = set(args.only.split(",")) - set(CASES)
        if unknown:
            ap.error(f"unknown case(s) {sorted(unknown)}; choose from {','.join(CASES)}")
    return args


def table(sec: Section) -> str:
    head = "| " + " | ".join(sec.columns) + " |"
    rule = "|" + "|".join("---" for _ in sec.columns) + "|"
    body = ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in sec.rows]
    return "\n".join([head, rule, *body])


def markdown(sections: list[Section], args, budget: Budget, info: dict, loads, total) -> str:
    mode = "quick" if budget.quick else "full"
    lines = [
        "# poisonprobe benchmarks",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M %Z')}; mode: **{mode}**, {budget.reps} "
        f"repetitions per timing (medians), total {total / 60:.1f} min",
        f"- machine: {info['platform']}; {info['cpu']}; os.cpu_count() = {info['cpu_count']}; "
        f"python {info['python']}, torch {info['torch']}, torch threads {info['torch_threads']}",
        f"- load average (1/5/15 min) at start: {loads[0]}; at end: {loads[1]} "
        "(a shared box: other processes ran too, hence interleaved repetitions)",
        f"- command: `{' '.join(['python benchmarks/run.py', *sys.argv[1:]])}`",
        "",
        "## Summary (ratio = baseline time / our time)",
        "",
        "```",
        *[line for sec in sections for line in sec.lines],
        "```",
    ]
    for sec in sections:
        lines += ["", f"## {sec.title}", "", f"_{sec.seconds:.0f} s_", "", table(sec)]
        if sec.notes:
            lines += [""] + [f"- {n}" for n in sec.notes]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    threads = 1 if args.threads is None else args.threads
    if threads > 0:
        torch.set_num_threads(threads)
    reps = args.reps or (3 if args.quick else 5)
    budget = Budget(quick=args.quick, reps=reps, threads=args.threads or None)
    names = args.only.split(",") if args.only else list(CASES)
    if args.quick:
        names = [n for n in names if n not in QUICK_SKIP]
    info, load0, t_all = machine(), load_average(), time.perf_counter()
    sections: list[Section] = []
    failed = False
    for name in names:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            sec = CASES[name](budget)
        except Exception as err:  # one broken case must not hide the others' numbers
            traceback.print_exc()
            sec = Section(f"{name}: FAILED", ["error"], [[f"{type(err).__name__}: {err}"]])
            sec.lines.append(f"{name} FAILED ({type(err).__name__}: {err})")
            failed = True
        sec.seconds = time.perf_counter() - t0
        print(f"[bench] {name} done in {sec.seconds:.0f} s", file=sys.stderr, flush=True)
        for line in sec.lines:
            print(f"[bench]   {line}", file=sys.stderr, flush=True)
        sections.append(sec)
    total = time.perf_counter() - t_all
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(sections, args, budget, info, (load0, load_average()), total))
    print(f"wrote {args.out} ({total / 60:.1f} min)")
    for sec in sections:
        for line in sec.lines:
            print(line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
