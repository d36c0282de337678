"""The benchmark cases. Each returns a ``Section``: a markdown table, notes, and the summary
lines ``NAME ratio=X`` (baseline time / our time) that ``run.py`` prints at the end."""

from __future__ import annotations

import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from baselines import ReencodingFeatures, double_backprop_gc
from harness import (
    CIFAR_SPEC,
    MEMORY_METHOD,
    cifar_features,
    cifar_smallcnn,
    cifar_subset,
    digits_setting,
    interleaved,
    peak_memory,
    ratio,
    remember_head,
    timed,
)

from poisonprobe.attacks import AttackContext, get_attack
from poisonprobe.attacks.gc.feature import feature_gc
from poisonprobe.attacks.gc.objective import clean_gradient, gc_loss
from poisonprobe.attacks.gradpc import gradpc, radius_scale
from poisonprobe.attacks.poisonability import FeatureBox
from poisonprobe.attacks.targets import evaluate_target
from poisonprobe.attacks.tgda import FollowerProblem, total_gradient_surrogate
from poisonprobe.extractors.cache import FeatureCache, encode_batched
from poisonprobe.head.config import VictimConfig
from poisonprobe.head.curvature import HeadCurvature
from poisonprobe.head.objective import LinearHead
from poisonprobe.head.objective import gradient_norm as victim_gradient_norm
from poisonprobe.head.solvers import newton_solve
from poisonprobe.head.train import train_head


@dataclass(frozen=True)
class Budget:
    """How much work a run may do: ``--quick`` shrinks sizes, ``reps`` sets repetitions."""

    quick: bool
    reps: int
    threads: int | None = None  # passed to the default-run subprocess as OMP_NUM_THREADS


@dataclass
class Section:
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    seconds: float = 0.0


def f3(x: float) -> str:
    """Three significant digits, or a dash for missing values."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.3g}"


def attack_ctx(extractor, train, z, head, eps: float, regime: str, memo: dict) -> AttackContext:
    """The default victim's context on cached features and a fitted clean head."""
    return AttackContext.build(
        extractor, train, eps, regime=regime, z_train=z, clean_head=head, memo=memo
    )


def digits_poison_start(eps: float):
    """The digits finetune setting in float64, its weight decay, and the fixed clean indices
    (seed 0) that ``round(eps·N)`` poisons start from — shared by cases (1) and (3)."""
    prep, cfg = digits_setting("finetune")
    z, y = prep.z_train.double(), prep.target.train.y
    n_p = round(eps * len(y))
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))[:n_p]
    return prep, cfg.victim.weight_decay, z, y, idx


# ------------------------------------------------------------------- (1) feature-space GC


def _pick_lr(run, grid: tuple[float, ...]) -> tuple[float, list[str]]:
    """The baseline's best step size on a grid (untimed): fastest to the threshold, else the
    lowest objective at the cap. Tuning it is what makes the comparison fair."""
    best, best_key, log = grid[0], (math.inf, math.inf), []
    for lr in grid:
        res, sec = timed(lambda lr=lr: run(lr))
        key = (sec if res.reached else math.inf, res.objective)
        log.append(f"{lr:g}: {f'{sec:.2f}s' if res.reached else 'not reached'}")
        if key < best_key:
            best, best_key = lr, key
    return best, log


def case_feature_gc(b: Budget) -> Section:
    sec = Section(
        "(1) Feature-space GC: time to reach the same objective",
        [
            "target",
            "method",
            "median s",
            "min–max s",
            "steps",
            "objective reached (rel. to start)",
            "ratio (baseline / this)",
        ],
    )
    eps = 0.1
    prep, wd, z, y, idx = digits_poison_start(eps)
    n, n_p = len(y), len(idx)
    z0, y0 = prep.z_train[idx], y[idx]
    head0 = prep.clean_head.to(dtype=torch.float64)
    box = FeatureBox.from_features(prep.z_train)
    cap = 2000 if b.quick else 5000
    grid = (10.0, 30.0, 100.0, 300.0) if b.quick else (3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)
    for name, rel in (("feature_gc", 0.01), ("feature_gc_hard", 0.02)):
        target = gradpc(head0, z, y, rel * radius_scale(head0, "l2"), "l2", 30)
        info = evaluate_target(target, z, y, wd, box, "gradpc-l2", rel)
        start = float(gc_loss(target, clean_gradient(target, z, y, wd), z0.double(), y0, wd))
        thr = 1e-3 * start
        label = (
            f"GradPC r={rel} (train acc {info.train_acc:.3f}, eps_needed "
            f"{info.eps_needed:.3f} ≤ eps {eps})"
        )

        def ours(labels: str, target=target, thr=thr):
            # like for like with fixed labels: no plateau stop, the baseline's step cap, so
            # both stop exactly when the objective is below the threshold
            same = {"rel_tol": 0.0, "steps": cap} if labels == "init" else {}

            def run():  # clean part inside the timed region, as for the baseline
                clean = clean_gradient(target, z, y, wd)
                return feature_gc(target, clean, z0, y0, wd, labels=labels, tol=thr, **same)

            return run

        def base_lr(lr: float, target=target, thr=thr):
            return double_backprop_gc(target, z, y, z0, y0, wd, lr, cap, thr)

        lr, log = _pick_lr(base_lr, grid)
        s = interleaved(
            {
                "base": lambda lr=lr, f=base_lr: f(lr),
                "ours": ours("optimal"),
                "ours_init": ours("init"),
            },
            b.reps,
        )
        clean = clean_gradient(target, z, y, wd)
        base_obj = float(gc_loss(target, clean, s["base"].result.z.double(), y0, wd)) / start
        reached_base = s["base"].result.reached
        rows = [
            (
                f"predecessor: double backprop + GD, cosine lr={lr:g} (best of grid), cap {cap}",
                s["base"],
                s["base"].result.steps,
                base_obj,
                reached_base,
            ),
        ]
        for key, what in (
            ("ours", "poisonprobe feature_gc (FT default: Adam, labels=optimal, 300 steps)"),
            (
                "ours_init",
                f"poisonprobe feature_gc, labels=init, no plateau stop, cap {cap} (like for like)",
            ),
        ):
            res = s[key].result
            rows.append((what, s[key], res.steps_run, res.objective / start, res.objective < thr))
        for what, smp, steps, obj, reached in rows:
            r = ratio(s["base"].median, smp.median) if smp is not s["base"] and reached else None
            prefix = "≥ " if (r is not None and not reached_base) else ""
            sec.rows.append(
                [
                    label,
                    what,
                    f3(smp.median),
                    smp.spread(),
                    str(steps),
                    f"{obj:.2e}" + ("" if reached else " (not reached)"),
                    "-" if r is None else prefix + f3(r),
                ]
            )
        if name == "feature_gc":  # the like-for-like headline: same labels, same stop
            r = ratio(s["base"].median, s["ours_init"].median)
            reached = s["ours_init"].result.objective < thr and reached_base
            verdict = f"ratio={r:.3g}" if reached else "ratio=n/a (a side missed the threshold)"
            sec.lines.insert(
                0,
                f"gc_same_labels {verdict} [both keep the poisons' starting labels, both stop "
                f"at objective < 1e-3×start; GradPC r={rel}]",
            )
        for suffix, key in (("", "ours"), ("_init_labels", "ours_init")):
            r = ratio(s["base"].median, s[key].median)
            if s[key].result.objective >= thr:
                verdict = "ratio=n/a (poisonprobe did not reach the threshold in its steps)"
            elif reached_base:
                verdict = f"ratio={r:.3g}"
            else:
                verdict = f"ratio>={r:.3g} (lower bound: baseline not there after {cap} steps)"
            sec.lines.append(f"{name}{suffix} {verdict} [GradPC r={rel}, threshold 1e-3×start]")
        sec.notes.append(f"r={rel}: baseline lr grid (time to threshold) — " + "; ".join(log))
    sec.notes.insert(
        0,
        f"Digits finetune features (N={n}, d={z.shape[1]}, k=10), eps={eps} → {n_p} poisons "
        "started from random clean points with their labels; same GradPC target (L2 radius r "
        "relative to the clean head, 30 steps) and start for all. Threshold: 1e-3 × the "
        "starting objective ||R||²/||R_clean||². Baseline: float32, clean gradient computed "
        "once, lr tuned on a grid. Times include computing the clean gradient.",
    )
    return sec


# ----------------------------------------------------------------- (2) L-BFGS head vs SGD


def case_victim(b: Budget) -> Section:
    n = 10_000 if b.quick else 50_000
    epochs = 100  # the recipe's epochs in both modes: head_default_tol compares with them
    sec = Section(
        f"(2) Exact L-BFGS head vs SGD probe recipe (CIFAR-10, N={n}, d=512, k=10)",
        ["solver", "median s", "min–max s", "‖∇F‖ reached", "test acc", "ratio (SGD / this)"],
    )
    cf = cifar_features()
    idx = cf.order[:n]
    z, y = cf.z_train[idx], cf.splits.train.y[idx]
    zt, yt = cf.z_test, cf.splits.test.y
    wd = VictimConfig().weight_decay
    sgd = VictimConfig(solver="sgd", sgd_epochs=epochs)
    loose = VictimConfig(tol=1e-5)
    cores = os.cpu_count() or 1

    def all_cores():  # the library's own choice for a problem this large (SGD stays on 1)
        before = torch.get_num_threads()
        torch.set_num_threads(cores)
        try:
            return train_head(z, y, 10, loose)
        finally:
            torch.set_num_threads(before)

    s = interleaved(
        {
            "exact": lambda: train_head(z, y, 10, VictimConfig()),
            "loose": lambda: train_head(z, y, 10, loose),
            "loose_mt": all_cores,
            "sgd": lambda: train_head(z, y, 10, sgd),
        },
        b.reps,
    )
    remember_head(n, s["exact"].result)
    zd = z.double()
    acc_s = s["sgd"].result.accuracy(zt, yt)
    labels = {
        "loose": "ours, tol 1e-5 (float32 preconditioned L-BFGS, stops at tol)",
        "exact": "ours, default tol 1e-9 (+ float64 Newton polish)",
        "loose_mt": f"ours, tol 1e-5, {cores} threads (SGD: 1 thread, its fastest)",
        "sgd": f"SGD recipe: {epochs} epochs, batch 256, momentum 0.9, cosine lr, float32",
    }
    what = f"N={n}, {epochs} epochs"
    if b.quick:
        what += " — quick mode, not the N=50,000 target"
    for key in ("loose", "exact", "loose_mt", "sgd"):
        head = s[key].result
        acc = head.accuracy(zt, yt)
        r = ratio(s["sgd"].median, s[key].median)
        norm = victim_gradient_norm(head, zd, y, wd)
        sec.rows.append(
            [
                labels[key],
                f3(s[key].median),
                s[key].spread(),
                f"{norm:.1e}",
                f"{acc:.4f}",
                "-" if key == "sgd" else f3(r),
            ]
        )
        if key != "sgd":
            name, how = {
                "loose": ("lbfgs_vs_sgd", "tol 1e-5"),
                "exact": ("lbfgs_exact_vs_sgd", "tol 1e-9"),
                "loose_mt": ("lbfgs_vs_sgd_all_cores", f"tol 1e-5, {cores} threads"),
            }[key]
            delta = 100.0 * (acc - acc_s)
            sec.lines.append(f"{name} ratio={r:.3g} acc_delta={delta:+.2f}pt ({how}, {what})")
            if key == "exact":  # the like-for-like headline: the victim's default tol
                sec.lines.insert(
                    0,
                    f"head_default_tol ratio={r:.3g} [exact head at the default tol "
                    f"{VictimConfig().tol:g} vs SGD {epochs} epochs, {what}]",
                )
    sec.notes.append(
        "Features: a fixed Gaussian random projection 3072→512 + ReLU of the normalised "
        f"CIFAR-10 pixels (`{CIFAR_SPEC}`, 50k train / 10k test). All solvers minimise mean "
        f"CE + wd/2·||W||² (wd={wd}); acc_delta = ours − SGD test accuracy in points; "
        "||∇F|| measured in float64. Cold fits this large run `head_lbfgs` (Kronecker-"
        "preconditioned L-BFGS on float32 features stored transposed); tol 1e-5 is already "
        "far below SGD's ||∇F|| and gives the same test accuracy as 1e-9."
    )
    return sec


# ----------------------------------------------------------------- (3) TGDA leader step


def case_tgda(b: Budget) -> Section:
    sec = Section(
        "(3) TGDA leader step: exact head Hessian vs CG on Hessian-vector products",
        [
            "d",
            "params",
            "auto picks",
            "exact s",
            "CG to equal result s",
            "CG iters",
            "rel. diff of directions",
            "CG 16 it. s (rel. diff)",
            "ratio (CG / exact)",
        ],
    )
    prep, wd, zc_full, yc, idx = digits_poison_start(0.1)
    n, n_p = len(yc), len(idx)
    yp = (yc[idx] + 1) % 10
    order = zc_full.var(0).argsort(descending=True)
    tol = 1e-6
    for d in (16, 64, zc_full.shape[1]):
        cols = order[:d].sort().values
        zc = zc_full[:, cols]
        zp = zc[idx].clone()
        z_all, y_all = torch.cat([zc, zp]), torch.cat([yc, yp])
        f64 = torch.float64
        zero = LinearHead(torch.zeros(10, d, dtype=f64), torch.zeros(10, dtype=f64))
        head = newton_solve(zero, z_all, y_all, wd, tol=1e-10)
        auto = "exact" if HeadCurvature(head, z_all, wd).auto_exact() else "cg"

        def step(hessian: str, iters: int, zc=zc, zp=zp, head=head):
            victim = VictimConfig(weight_decay=wd)
            prob = FollowerProblem(zc, yc, zc, yc, 10, victim, hessian, iters)

            def run():
                zz = zp.clone().requires_grad_(True)
                s = total_gradient_surrogate(head, prob, zz, yp, {})
                (g,) = torch.autograd.grad(s, zz)
                return g

            return run

        count = {"n": 0}
        hvp = HeadCurvature.hvp

        def counting(self, u, hvp=hvp, count=count):
            count["n"] += 1
            return hvp(self, u)

        HeadCurvature.hvp = counting
        try:
            step("cg", 1000)()
        finally:
            HeadCurvature.hvp = hvp
        s = interleaved(
            {"exact": step("exact", 16), "cg": step("cg", 1000), "cg16": step("cg", 16)}, b.reps
        )
        ge = s["exact"].result
        diff = float((s["cg"].result - ge).norm() / ge.norm())
        diff16 = float((s["cg16"].result - ge).norm() / ge.norm())
        assert diff <= tol, f"d={d}: CG and exact leader directions differ by {diff:.2e} > {tol}"
        r = ratio(s["cg"].median, s["exact"].median)
        sec.rows.append(
            [
                str(d),
                str(10 * d + 10),
                auto,
                f3(s["exact"].median),
                f3(s["cg"].median),
                str(count["n"]),
                f"{diff:.1e}",
                f"{f3(s['cg16'].median)} ({diff16:.1e})",
                f3(r),
            ]
        )
        name = "tgda_leader_step" if d == zc_full.shape[1] else f"tgda_leader_step_d{d}"
        sec.lines.append(f"{name} ratio={r:.3g} agree={diff:.1e} (CG/exact, tol {tol:g})")
    sec.notes.append(
        f"Digits finetune features (N={n}) + {n_p} feature poisons (shifted labels), follower "
        "solved exactly; one leader step = `tgda.total_gradient_surrogate` + its gradient "
        "w.r.t. the poison features (both Hessian options of tgda.py: `hessian='exact'` vs "
        "`'cg'` with preconditioned CG; 'equal result' = CG run to its 1e-10 residual "
        f"tolerance, directions asserted equal to {tol:g} relative). d < 256: the d "
        "highest-variance feature columns. The predecessor's 16 CG iterations are shown for "
        "reference; they do not give an equal result."
    )
    return sec


# ----------------------------------------------------------------- (4) feature cache


def case_cache(b: Budget) -> Section:
    sec = Section(
        "(4) Feature cache vs re-encoding (digits finetune, eps 0.1)",
        [
            "features from",
            "run median s",
            "min–max s",
            "encode median s",
            "encode share",
            "ratio (re-encode / cached)",
        ],
    )
    prep, _ = digits_setting("finetune")
    ext, train = prep.extractor, prep.target.train
    attacks = ("ft-feasible",) if b.quick else ("ft-feasible", "tgda-feature")
    tmp = Path(tempfile.mkdtemp(prefix="pp-bench-cache-"))
    try:
        FeatureCache(tmp).encode(ext, train)  # warm the on-disk cache once

        enc: dict[str, list[float]] = {"cache": [], "reencode": []}

        def run(source: str):
            def go():
                # a fresh process would hash weights and images again: drop the memos
                train._fingerprint = None
                ext.__dict__.pop("_poisonprobe_digest", None)
                t0 = time.perf_counter()
                feats = FeatureCache(tmp) if source == "cache" else ReencodingFeatures()
                z = feats.encode(ext, train)
                enc[source].append(time.perf_counter() - t0)
                memo: dict = {}
                for name in attacks:
                    info = get_attack(name)
                    info.fn(attack_ctx(ext, train, z, prep.clean_head, 0.1, info.regimes[0], memo))

            return go

        s = interleaved({"cache": run("cache"), "reencode": run("reencode")}, b.reps)
        e_c, e_r = statistics.median(enc["cache"]), statistics.median(enc["reencode"])
        share = e_c / s["cache"].median
        r = ratio(s["reencode"].median, s["cache"].median)
        sec.rows += [
            [
                "warm feature cache (new FeatureCache, disk hit)",
                f3(s["cache"].median),
                s["cache"].spread(),
                f3(e_c),
                f"{100 * share:.2f} %",
                f3(r),
            ],
            [
                "re-encoding the training set",
                f3(s["reencode"].median),
                s["reencode"].spread(),
                f3(e_r),
                f"{100 * e_r / s['reencode'].median:.2f} %",
                "-",
            ],
        ]
        sec.lines.append(
            f"feature_cache ratio={r:.3g} encode_share={100 * share:.2f}% "
            f"(feature step alone: ratio={ratio(e_r, e_c):.3g})"
        )
        sec.notes.append(
            "Each run: obtain the training features (cache lookup incl. hashing weights and "
            f"images, or a full extractor pass), then run {' + '.join(attacks)} with a fresh "
            "memo. Encode "
            "columns: the feature step's own time inside those runs."
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return sec


# ----------------------------------------------------------------- (5) scaling


def case_scaling(b: Budget) -> Section:
    sec = Section(
        "(5) Scaling: wall time and peak memory vs N and eps (CIFAR-10 random-projection "
        "features, d=512)",
        [
            "attack",
            "N",
            "eps",
            "poisons",
            "wall s",
            "peak RSS growth MiB",
            "stages s",
            "GC objective",
        ],
    )
    if b.quick:
        n_sweep, n_eps, gc_max = (2000, 5000), 2000, 5000
    else:
        # 25k is left out to fit ~25 min: the 50k cell alone takes ~6 min on one core
        n_sweep, n_eps, gc_max = (5000, 10_000, 50_000), 5000, 10_000
    cells = [(n, 0.1) for n in n_sweep] + [(n_eps, e) for e in (0.03, 0.3)]
    cf = cifar_features()
    exact_all = True
    ft_times: dict[tuple[int, float], float] = {}
    for n, eps in sorted(cells):
        train, z, head = cifar_subset(n)
        memo: dict = {}
        for name, regime in (("ft-feasible", "feature"), ("gc-input", "box")):
            if name == "gc-input" and n > gc_max:
                continue
            ctx = attack_ctx(cf.extractor, train, z, head, eps, regime, memo)
            fn = get_attack(name).fn
            ps, seconds, mib, exact = peak_memory(lambda fn=fn, ctx=ctx: fn(ctx))
            exact_all &= exact
            if name == "ft-feasible":
                ft_times[(n, eps)] = seconds
            stages = ", ".join(
                f"{k} {v:.1f}"
                for k, v in ps.stage_seconds.items()
                if k in ("stage1", "stage2", "target", "optimise")
            )
            sec.rows.append(
                [
                    name,
                    str(n),
                    str(eps),
                    str(len(ps)),
                    f3(seconds),
                    f"{mib:.0f}",
                    stages,
                    f"{ps.info.get('gc_objective', float('nan')):.2e}",
                ]
            )
    sec.notes += [
        "One run per cell (the big cells take minutes on 2 cores); memory: "
        + MEMORY_METHOD
        + ("" if exact_all else " — reset unavailable here: ru_maxrss deltas, lower bounds")
        + ".",
        "gc-input runs after ft-feasible in the same cell and shares its FT stages 1–2 through "
        "`ctx.memo` (as in `poisonprobe run`), so its time is its own image optimisation (20 "
        f"steps through the extractor); it is run up to N={gc_max}.",
        "The clean head of each N is trained before the cell and not counted.",
    ]
    sec.lines += [
        f"scaling_ft_feasible N={n} eps={e} seconds={t:.3g}" for (n, e), t in ft_times.items()
    ]
    return sec


# ------------------------------------------------ (6a) FT stages 1–2 vs one extraction pass


def case_ft_vs_extract(b: Budget) -> Section:
    sec = Section(
        "(6a) FT stages 1–2 vs one clean feature-extraction pass (target: FT ≤ 2× extraction)",
        [
            "data",
            "extraction pass s",
            "FT stages 1–2 s",
            "FT / extraction",
            "ratio (extraction / FT)",
        ],
    )

    def measure(label: str, key: str, ext, train, z, head, reps: int) -> None:
        def ft():  # a fresh memo: nothing shared with an earlier call
            ctx = attack_ctx(ext, train, z, head, 0.1, "feature", {})
            return get_attack("ft-feasible").fn(ctx)

        s = interleaved({"extract": lambda: encode_batched(ext, train.x), "ft": ft}, reps)
        r = ratio(s["extract"].median, s["ft"].median)
        row = [label, f3(s["extract"].median), f3(s["ft"].median), f3(1 / r), f3(r)]
        sec.rows.append(row)
        verdict = "met" if r >= 0.5 else "NOT met"
        sec.lines.append(
            f"ft_vs_extract_{key} ratio={r:.3g} (FT/extraction = {1 / r:.3g}×: {verdict})"
        )

    for setting in ("finetune",) if b.quick else ("finetune", "transfer"):
        prep, _ = digits_setting(setting)
        train = prep.target.train
        label = f"digits {setting} (N={len(train)}, 8×8, smallcnn d={prep.z_train.shape[1]})"
        measure(label, setting, prep.extractor, train, prep.z_train, prep.clean_head, b.reps)
    pretrain_note = ""
    if not b.quick:
        cx = cifar_smallcnn()
        cf = cifar_features()
        for n, reps in ((5000, b.reps), (50_000, min(b.reps, 3))):
            train = cf.splits.train.subset(cf.order[:n])
            z = encode_batched(cx.extractor, train.x)  # untimed: the features FT works on
            head = train_head(z, train.y, train.n_classes, VictimConfig())
            label = f"CIFAR-10 N={n} (3×32×32, smallcnn SimCLR d={z.shape[1]})"
            measure(label, f"cifar10_{n}", cx.extractor, train, z, head, reps)
        pretrain_note = (
            " CIFAR-10 rows: the real extractor of `configs/cifar10-cpu.yaml` (smallcnn SimCLR, "
            "5 epochs on a stratified 5,000-image subset; "
            + (
                "from the pre-training cache"
                if cx.cached
                else f"pre-trained here in {cx.pretrain_seconds:.0f} s, not timed"
            )
            + "), its real features of N training images, the exact clean head; "
            f"medians of {b.reps} (N=5,000) and {min(b.reps, 3)} (N=50,000) interleaved runs."
        )
    sec.notes.append(
        "Extraction pass = encoding the clean training set once (no cache, the library's "
        "batch size); FT stages 1–2 = one `ft-feasible` call at eps 0.1 with a fresh memo "
        "(target search + feature GC + verification retrains), the work the FT variants "
        "share. Ratio ≥ 0.5 meets the target." + pretrain_note
    )
    sec.notes.append(
        "Stages 1–2 have a fixed part that does not grow with N (dozens of exact head solves "
        "and poisonability checks on a k×d head) and a part linear in N; the extraction pass "
        "is linear in N with a per-image cost set by the network and image size — so the "
        "ratio improves with N and with the extractor's size. On the 8×8 digits the whole "
        "pass is shorter than stage 2's own optimiser (300 Adam steps on each of two "
        "constraint sets) or one exact verification retrain, so the target cannot be met "
        "there; it is met at CIFAR-10 scale (see BENCHMARKS.md)."
    )
    return sec


# ------------------------------------------------ (6b) default run, warm cache


def _cache_files() -> set[str]:
    from poisonprobe.extractors.pretrain import default_cache_dir

    root = default_cache_dir()
    return {str(p) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def case_default_run(b: Budget) -> Section:
    sec = Section(
        "(6b) Default run (`poisonprobe run --quiet`) with a warm cache (target ≤ 180 s)",
        ["run", "wall s", "cache state"],
    )
    env = dict(os.environ)
    if b.threads:
        env["OMP_NUM_THREADS"] = str(b.threads)
    exe = shutil.which("poisonprobe")
    cmd = [exe] if exe else [sys.executable, "-m", "poisonprobe.cli"]
    tmp = Path(tempfile.mkdtemp(prefix="pp-bench-run-"))
    try:
        warm_s = None
        for i in (1, 2):
            before = _cache_files()
            t0 = time.perf_counter()
            subprocess.run(
                [*cmd, "run", "--quiet", "--out", str(tmp / f"run{i}")],
                check=True,
                env=env,
                stdout=subprocess.DEVNULL,
            )
            wall = time.perf_counter() - t0
            new = _cache_files() - before
            state = f"cold ({len(new)} files cached)" if new else "warm (cache unchanged)"
            sec.rows.append([f"#{i}", f3(wall), state])
            if not new:
                warm_s = wall
                break
        if warm_s is None:
            warm_s = wall
        ok = "met" if warm_s <= 180 else "NOT met"
        sec.lines.append(f"default_run_warm seconds={warm_s:.3g} (target ≤ 180: {ok})")
        sec.notes.append(
            "A second run is made only when the first one had to fill the cache "
            "(pre-training or encoding); a fresh --out folder each time, so nothing resumes."
            + (
                f" OMP_NUM_THREADS={b.threads}."
                if b.threads
                else " Run as users run it: torch's default threads (no OMP_NUM_THREADS)."
            )
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return sec


CASES = {
    "gc": case_feature_gc,
    "victim": case_victim,
    "tgda": case_tgda,
    "cache": case_cache,
    "scaling": case_scaling,
    "ft": case_ft_vs_extract,
    "default": case_default_run,
}
