"""Scale benchmark: ImageNet-sized probes on synthetic Gaussian-mixture features (no download).

    python benchmarks/scale.py                       # main case + both sweeps (~1 h on 2 cores)
    python benchmarks/scale.py --skip-main           # the sweeps only
    python benchmarks/scale.py --skip-sweeps --tgda-steps 3
    python benchmarks/scale.py --k 100 --d 256 --n 5000 --sweep-n 2000,4000 --sweep-k 10,20

Cases (each in its own child process, so its peak RSS — ``os.wait4``'s ``ru_maxrss`` of that
child — is its own): the clean exact head fit, ``tgda-feature`` at eps 0.03 (to its
convergence rule, or ``--tgda-steps`` leader steps), and the certified loss bound
(``bounds/loss_bound.minimax``, ``--bound-steps`` steps). The main case is k = 1000, d = 2048,
N = 100,000; the sweeps scale N at fixed k and k at fixed N (a few leader steps each) and fit
log-log slopes of the seconds.

Writes a markdown report (``--out``, default ``benchmarks/scale.md``; paste it into
BENCHMARKS.md) and, after a main case, replaces the line ``scale_k1000 seconds=S rss_gib=G``
in ``benchmarks/latest.md``'s summary (``run.py`` rewrites latest.md without it; run this
afterwards). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SUMMARY_KEY = "scale_k1000"


# ----------------------------------------------------------------------------- the child


def gaussian_mixture(k: int, d: int, n: int, seed: int, sep: float = 6.0):
    """``n`` float32 points of a k-class Gaussian mixture in d dimensions: class means (fixed
    by k and d) with expected pairwise distance ``sep`` (in units of the unit noise), balanced
    labels, noise from ``seed``. Generated in chunks: the peak is the (n, d) result itself."""
    import torch

    means = torch.randn(k, d, generator=torch.Generator().manual_seed(12345))
    means *= sep / math.sqrt(2 * d)
    gen = torch.Generator().manual_seed(seed)
    y = torch.randperm(n, generator=gen) % k
    z = torch.empty(n, d)
    for start in range(0, n, 8192):
        stop = min(n, start + 8192)
        z[start:stop] = torch.randn(stop - start, d, generator=gen)
        z[start:stop] += means[y[start:stop]]
    return z, y


def child(spec: dict) -> dict:
    """Run one case in this process; returns seconds per stage and what each reached."""
    import torch

    from poisonprobe.attacks import AttackContext, get_attack
    from poisonprobe.bounds.feasible import FeasibleSet
    from poisonprobe.bounds.loss_bound import minimax
    from poisonprobe.data.base import ImageDataset
    from poisonprobe.domain import InputDomain
    from poisonprobe.head.config import VictimConfig
    from poisonprobe.head.objective import gradient_norm
    from poisonprobe.head.train import train_head

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    k, d, n, eps = spec["k"], spec["d"], spec["n"], spec["eps"]
    out: dict = {"threads": torch.get_num_threads()}
    z, y = gaussian_mixture(k, d, n, seed=0)
    zt, yt = gaussian_mixture(k, d, 10_000, seed=1)  # fresh points of the same mixture
    victim = VictimConfig()
    t0 = time.perf_counter()
    head = train_head(z, y, k, victim)
    out["fit_s"] = time.perf_counter() - t0
    out["fit_grad_norm"] = gradient_norm(head, z.double(), y, victim.weight_decay)
    out["clean_acc"] = head.accuracy(zt, yt)
    if "tgda" in spec["stages"]:
        # feature-space attack: the images are never looked at (a zero-stride placeholder)
        domain = InputDomain(1, 1, 1)
        train = ImageDataset(
            torch.zeros(1, 1, 1, 1).expand(n, 1, 1, 1), y, [str(c) for c in range(k)], domain, "gm"
        )
        ctx = AttackContext.build(
            None, train, eps, regime="feature", victim=victim, z_train=z, clean_head=head
        )
        kwargs = {} if spec.get("tgda_steps") is None else {"max_steps": spec["tgda_steps"]}
        t0 = time.perf_counter()
        ps = get_attack("tgda-feature").fn(ctx, **kwargs)
        out["tgda_s"] = time.perf_counter() - t0
        out["tgda_steps"] = ps.info["attack_steps"]
        out["tgda_converged"] = bool(ps.info["converged"])
        out["tgda_stop"] = ps.info["stop_reason"]
        out["tgda_per_step_s"] = ps.stage_seconds["per_leader_step"]
        out["tgda_val_loss"] = [ps.info["val_loss_init"], ps.info["val_loss"]]
        poisoned = train_head(torch.cat([z, ps.z]), torch.cat([y, ps.y]), k, victim, init=head)
        out["poisoned_acc"] = poisoned.accuracy(zt, yt)
    if "bound" in spec["stages"]:
        n_p = max(1, round(eps * n))
        t0 = time.perf_counter()
        fs = FeasibleSet.box(z, y, k)
        res = minimax(z, y, k, victim.weight_decay, n_p, fs, head, steps=spec["bound_steps"])
        out["bound_s"] = time.perf_counter() - t0
        out["bound_steps"] = res.steps
        out["bound_loss"] = res.bound_loss
        out["bound_clean_loss"] = res.clean_loss
    return out


# ---------------------------------------------------------------------------- the parent


def run_case(spec: dict) -> dict:
    """``spec`` in a fresh interpreter; adds its peak RSS (GiB) and wall time."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent / "src"), *sys.path])}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
        stdout=subprocess.PIPE,
        env=env,
    )
    stdout = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {**spec, "error": f"exit {proc.returncode}", "wall_s": wall}
    out = json.loads(stdout.decode().strip().splitlines()[-1])
    return {**spec, **out, "rss_gib": usage.ru_maxrss / 2**20, "wall_s": wall}  # KiB → GiB


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y on log x."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    num = sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True))
    return num / sum((a - mx) ** 2 for a in lx)


def load_average() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def g(x, fmt: str = ".3g") -> str:
    return "-" if x is None else format(x, fmt)


def row(r: dict) -> str:
    if "error" in r:
        return f"| {r['k']} | {r['d']} | {r['n']} | {r['error']} | | | | | | |"
    tg = "-"
    if "tgda_s" in r:
        conv = "converged" if r["tgda_converged"] else f"not converged ({r['tgda_stop']})"
        tg = f"{r['tgda_s']:.0f} s, {r['tgda_steps']} steps × {r['tgda_per_step_s']:.1f} s; {conv}"
    bound = "-"
    if "bound_s" in r:
        bound = f"{r['bound_s']:.0f} s ({r['bound_steps']} steps, U={r['bound_loss']:.3f})"
    acc = f"{r['clean_acc']:.3f}"
    if "poisoned_acc" in r:
        acc += f" → {r['poisoned_acc']:.3f}"
    return (
        f"| {r['k']} | {r['d']} | {r['n']} | {r['fit_s']:.1f} ({r['fit_grad_norm']:.0e}) | {tg} "
        f"| {bound} | {acc} | {r['rss_gib']:.2f} | {r['wall_s']:.0f} | {r['load']} |"
    )


HEADER = (
    "| k | d | N | clean fit s (‖∇F‖) | tgda-feature eps 0.03 | loss bound | test acc "
    "(clean → poisoned) | peak RSS GiB | child wall s | load 1/5/15 at end |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


def update_latest(latest: Path, line: str) -> None:
    """Put ``line`` into latest.md's summary block, replacing an older scale line."""
    if not latest.exists():
        return
    text = latest.read_text().splitlines()
    text = [t for t in text if not t.startswith(SUMMARY_KEY + " ")]
    if "```" in text:
        end = text.index("```", text.index("```") + 1)
        text.insert(end, line)
    latest.write_text("\n".join(text) + "\n")


def measured(spec: dict, label: str) -> dict:
    """One case in its own process, with the load average when it ended; logged to stderr."""
    print(f"[scale] {label} ...", file=sys.stderr, flush=True)
    r = run_case(spec)
    r["load"] = load_average()
    print(f"[scale]   {r}", file=sys.stderr, flush=True)
    return r


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--d", type=int, default=2048)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--eps", type=float, default=0.03)
    ap.add_argument("--tgda-steps", type=int, default=None, help="cap (default: converge)")
    ap.add_argument("--bound-steps", type=int, default=300)
    ap.add_argument("--sweep-d", type=int, default=512)
    ap.add_argument("--sweep-n", default="10000,30000,100000", help="N values at k=--sweep-nk")
    ap.add_argument("--sweep-nk", type=int, default=100)
    ap.add_argument("--sweep-k", default="10,100,1000", help="k values at N=--sweep-kn")
    ap.add_argument("--sweep-kn", type=int, default=10_000)
    ap.add_argument("--sweep-tgda-steps", type=int, default=3)
    ap.add_argument(
        "--main-stages", default="tgda,bound", help="main-case children: tgda, bound or both"
    )
    ap.add_argument("--skip-main", action="store_true")
    ap.add_argument("--skip-sweeps", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's choice)")
    ap.add_argument("--out", type=Path, default=HERE / "scale.md")
    ap.add_argument("--latest", type=Path, default=HERE / "latest.md")
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))), flush=True)
        return 0
    base = {"eps": args.eps, "threads": args.threads, "bound_steps": args.bound_steps}
    lines = [
        "## Scale: synthetic Gaussian-mixture probes (`benchmarks/scale.py`)",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M %Z')}; os.cpu_count() = {os.cpu_count()}; "
        f"load average at start {load_average()} (a shared box: timings under load)",
        f"- command: `python benchmarks/scale.py {' '.join(sys.argv[1:])}`",
        "- features: k Gaussian classes, unit noise, means ~6 noise units apart, float32; "
        "victim: the default exact head (wd 1e-3, tol 1e-9); each case in its own process "
        "(peak RSS = its ru_maxrss); test acc on 10k fresh points of the same mixture.",
        "",
    ]
    summary: list[str] = []
    if not args.skip_main:
        main_rows = []
        for stages in [[st] for st in args.main_stages.split(",")]:
            spec = {**base, "k": args.k, "d": args.d, "n": args.n, "stages": stages}
            spec["tgda_steps"] = args.tgda_steps
            main_rows.append(measured(spec, f"main {stages}"))
        fit = main_rows[0]
        lines += [f"### Main case: k={args.k}, d={args.d}, N={args.n}", "", HEADER]
        lines += [row(r) for r in main_rows]
        if "error" not in fit and "tgda_s" in fit:
            total = fit["fit_s"] + fit.get("tgda_s", 0.0)
            done = "converged" if fit.get("tgda_converged") else "NOT converged"
            line = (
                f"{SUMMARY_KEY} seconds={total:.0f} rss_gib={fit['rss_gib']:.2f} "
                f"[clean fit + tgda-feature eps {args.eps} ({fit.get('tgda_steps')} leader steps, "
                f"{done}); k={args.k}, d={args.d}, N={args.n}; targets ≤ 1200 s, ≤ 8 GiB]"
            )
            summary.append(line)
            if (args.k, args.d, args.n) == (1000, 2048, 100_000):
                update_latest(args.latest, line)
        lines += [
            "",
            "- One row per child: the clean fit, then tgda-feature (its child's RSS covers "
            "both) or the loss bound over the box (no defence).",
            "",
        ]
    if not args.skip_sweeps:
        sweeps = (
            ("N", [int(v) for v in args.sweep_n.split(",")], args.sweep_nk, "n", "k"),
            ("k", [int(v) for v in args.sweep_k.split(",")], args.sweep_kn, "k", "n"),
        )
        for name, values, fixed, key, other in sweeps:
            rows = []
            for v in values:
                spec = {**base, key: v, other: fixed, "d": args.sweep_d, "stages": ["tgda"]}
                spec["tgda_steps"] = args.sweep_tgda_steps
                rows.append(measured(spec, f"sweep {name}={v}"))
            ok = [r for r in rows if "error" not in r]
            lines += [f"### Scaling in {name} ({other}={fixed}, d={args.sweep_d})", "", HEADER]
            lines += [row(r) for r in rows]
            if len(ok) >= 2:
                xs = [r[key] for r in ok]
                s_fit = slope(xs, [r["fit_s"] for r in ok])
                s_step = slope(xs, [r["tgda_per_step_s"] for r in ok])
                s_rss = slope(xs, [r["rss_gib"] for r in ok])
                text = (
                    f"scale_slope_{name} fit={s_fit:.2f} tgda_step={s_step:.2f} "
                    f"rss={s_rss:.2f} [log-log, {name} in {xs}]"
                )
                summary.append(text)
                lines += ["", f"- log-log slopes: {text}"]
            lines += [""]
    lines[3:3] = ["", "```", *summary, "```"]
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    print("\n".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
