"""PNG figures for ``report.md``: accuracy vs eps, poison image grids, feature projections."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from .schema import covered_by_bound, json_cell  # noqa: E402
from .stats import mean_ci  # noqa: E402


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


# one (colour, marker) per attack, so 14+ lines stay apart in print and for colour-blind
# readers; the regime is the line style
_COLOURS = plt.get_cmap("tab20").colors[::2] + plt.get_cmap("tab20").colors[1::2]
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*", "h", "p", "d", "8")
_LINESTYLES = {"unconstrained": "-", "box": "--", "feature": ":", "-": "-."}


def attack_styles(attacks: list[str]) -> dict[str, tuple[tuple[float, ...], str]]:
    """A distinct (colour, marker) for each attack (pairs repeat only after 140 attacks)."""
    styles = {}
    for i, name in enumerate(attacks):
        colour = _COLOURS[i % len(_COLOURS)]
        marker = _MARKERS[(i + i // len(_COLOURS)) % len(_MARKERS)]
        styles[name] = (colour, marker)
    return styles


def plot_accuracy_vs_eps(df: pd.DataFrame, out_dir: Path) -> list[Path]:
    """One figure per (setting, extractor, defence): poisoned accuracy vs eps per attack."""
    paths = []
    for (setting, extractor, defense), g in df.groupby(["setting", "extractor", "defense"]):
        fig, ax = plt.subplots(figsize=(8.6, 4.6))
        clean = g["clean_acc"].iloc[0]
        ax.axhline(clean * 100, color="black", lw=1, ls="--", label="clean")
        attacks = g[~g["attack"].isin(["none", "bound"])]
        styles = attack_styles(list(dict.fromkeys(attacks["attack"])))
        for (attack, regime), ga in attacks.groupby(["attack", "regime"], sort=False):
            eps = sorted(ga["eps"].unique())
            cis = [mean_ci(ga.loc[ga["eps"] == e, "poisoned_acc"]) for e in eps]
            colour, marker = styles[attack]
            ax.errorbar(
                eps,
                [100 * mean for mean, _ in cis],
                yerr=[100 * half for _, half in cis],
                color=colour,
                marker=marker,
                ls=_LINESTYLES.get(regime, "-"),
                markersize=6,
                markeredgecolor="black",
                markeredgewidth=0.5,
                capsize=3,
                label=f"{attack} [{regime}]",
            )
        ax.set_xscale("log")
        eps_values = sorted(g["eps"].unique())
        ax.set_xticks(eps_values, [f"{e:g}" for e in eps_values])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("poison budget eps")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{setting} · {extractor} · defence {defense}")
        ax.grid(True, which="major", alpha=0.3)
        # outside the axes: the legend never hides a line
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        fig.tight_layout()
        path = out_dir / _safe(f"acc_vs_eps_{setting}_{extractor}_{defense}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_objective_traces(df: pd.DataFrame, out_dir: Path) -> list[Path]:
    """One figure per setting: each attack's own objective vs step (first seed, no defence,
    largest eps), normalised to its first value, so a reader sees whether it converged.

    Reads ``objective_trace`` / ``objective_trace_stride`` from the ``info`` column
    (``attacks/_optim.Plateau.summary``); rows without a trace are skipped.
    """
    paths = []
    if "info" not in df or df.empty:
        return paths
    rows = df[(df["attack"] != "none") & (df["defense"] == "none")]
    rows = rows[rows["seed"] == rows["seed"].min()] if len(rows) else rows
    for setting, g in rows.groupby("setting", sort=False):
        g = g[g["eps"] == g["eps"].max()]
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        drawn = 0
        for _, r in g.iterrows():
            info = json_cell(r["info"])
            trace = info.get("objective_trace")
            if not trace or len(trace) < 2:
                continue
            stride = int(info.get("objective_trace_stride", 1))
            first = trace[0] if trace[0] and math.isfinite(trace[0]) else 1.0
            steps = [i * stride for i in range(len(trace))]
            mark = "" if info.get("converged", True) else " (cap)"
            ax.plot(steps, [v / first for v in trace], label=f"{r['attack']} [{r['regime']}]{mark}")
            drawn += 1
        if not drawn:
            plt.close(fig)
            continue
        ax.set_xlabel("step")
        ax.set_ylabel("attack objective / its start value")
        ax.set_yscale("log")
        ax.set_title(f"{setting}: attack objectives at eps={g['eps'].max()} (convergence)")
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        path = out_dir / _safe(f"objective_vs_step_{setting}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_bound_vs_attacks(df: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Per (setting, extractor, defence) with bound rows: every attack's clean-train loss
    (``train_loss``) and the certified upper bound ``bound_loss`` against eps; attacks whose
    poisons leave the clean-feature box (not covered by the bound) dotted."""
    paths: list[Path] = []
    if "bound_loss" not in df or "train_loss" not in df or not (df["attack"] == "bound").any():
        return paths
    for (setting, extractor, defense), g in df.groupby(["setting", "extractor", "defense"]):
        bound = g[g["attack"] == "bound"].groupby("eps")["bound_loss"].mean()
        if bound.empty:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        ax.plot(bound.index, bound.values, "k-", lw=2.5, marker="s", label="certified bound")
        for (attack, regime), ga in g[g["attack"] != "bound"].groupby(["attack", "regime"]):
            loss = ga.groupby("eps")["train_loss"].mean().dropna()
            if loss.empty:
                continue
            label, ls = f"{attack} [{regime}]", "--" if attack == "none" else "-"
            if (~covered_by_bound(ga).fillna(True)).any():  # some poisons outside
                label, ls = label + " (outside the box)", ":"
            ax.plot(loss.index, loss.values, ls=ls, marker="o", label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("poison budget eps")
        ax.set_ylabel("clean-train CE of the retrained head")
        ax.set_title(f"{setting} · {extractor} · defence {defense}: attacks vs bound")
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        path = out_dir / _safe(f"bound_vs_eps_{setting}_{extractor}_{defense}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_certified(certified: pd.DataFrame, df: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Per (setting, extractor): DPA certified accuracy vs radius for each k, and each
    attack's poisoned test accuracy (defence none) at radius = its number of poisons."""
    paths = []
    for (setting, extractor), g in certified.groupby(["setting", "extractor"]):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for k, gk in g.groupby("k"):
            ax.step(gk["radius"], gk["certified_acc"] * 100, where="post", label=f"DPA k={k}")
        mine = df[(df["setting"] == setting) & (df["extractor"] == extractor)]
        hit = mine[~mine["attack"].isin(["none", "bound"]) & (mine["defense"] == "none")]
        if not hit.empty:
            ax.scatter(
                hit["n_poison"],
                hit["poisoned_acc"] * 100,
                s=12,
                c="grey",
                label="attacks (head, defence none)",
            )
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlabel("inserted/removed training points (certified radius)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{setting} · {extractor}: DPA certified accuracy")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / _safe(f"certified_{setting}_{extractor}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def _to_image(x: torch.Tensor):
    x = x.detach().cpu().float().clamp(0, 1)
    return x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy()


def save_poison_grid(
    starts: torch.Tensor,
    poisons: torch.Tensor,
    labels: torch.Tensor,
    path: Path,
    title: str,
    n: int = 8,
    start_labels: torch.Tensor | None = None,
    classes: list[str] | None = None,
) -> Path:
    """Top row: clean start images; bottom row: their poisoned versions. Labels sit in the
    gap between the rows (each row's own, below its image), never on an image."""
    n = min(n, poisons.shape[0])
    fig, axes = plt.subplots(2, n, figsize=(1.25 * n + 0.9, 3.4), squeeze=False)
    cmap = "gray" if poisons.shape[1] == 1 else None

    def name(label: torch.Tensor) -> str:
        k = int(label)
        return classes[k] if classes is not None and 0 <= k < len(classes) else str(k)

    for j in range(n):
        axes[0, j].imshow(_to_image(starts[j]), cmap=cmap, vmin=0, vmax=1)
        axes[1, j].imshow(_to_image(poisons[j]), cmap=cmap, vmin=0, vmax=1)
        if start_labels is not None:
            axes[0, j].set_xlabel(f"y={name(start_labels[j])}", fontsize=8, labelpad=2)
        axes[1, j].set_xlabel(f"y={name(labels[j])}", fontsize=8, labelpad=2)
        for i in range(2):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
    axes[0, 0].set_ylabel("clean start", fontsize=8)
    axes[1, 0].set_ylabel("poison", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_feature_projection(
    z_clean: torch.Tensor,
    y_clean: torch.Tensor,
    poisons: dict[str, torch.Tensor],
    path: Path,
    title: str,
    classes: list[str] | None = None,
) -> Path:
    """PCA of clean features (coloured by class, with a class legend) with each attack's
    poisoned features on top (black crosses: no class colour is black)."""
    from matplotlib.lines import Line2D

    zc = z_clean.detach().cpu().double()
    mean = zc.mean(0)
    _, _, v = torch.pca_lowrank(zc - mean, q=2, center=False)
    proj = (zc - mean) @ v[:, :2]
    y = y_clean.detach().cpu().long()
    n_classes = int(y.max()) + 1 if y.numel() else 0
    cmap = plt.get_cmap("tab10" if n_classes <= 10 else "tab20")
    n = max(1, len(poisons))
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols + 1.4, 3.2 * rows), squeeze=False)
    colours = [cmap(int(c) % cmap.N) for c in y]
    for ax, (name, zp) in zip(axes.flat, poisons.items(), strict=False):
        ax.scatter(proj[:, 0], proj[:, 1], c=colours, s=4, alpha=0.5)
        pp = (zp.detach().cpu().double() - mean) @ v[:, :2]
        ax.scatter(pp[:, 0], pp[:, 1], c="black", marker="x", s=10, linewidths=0.7)
        ax.set_title(name, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    handles = [
        Line2D([], [], ls="", marker="o", color=cmap(c % cmap.N), markersize=5,
               label=classes[c] if classes is not None and c < len(classes) else str(c))
        for c in range(n_classes)
    ]  # fmt: skip
    handles.append(Line2D([], [], ls="", marker="x", color="black", label="poison"))
    fig.legend(
        handles=handles,
        title="class",
        fontsize=7,
        title_fontsize=8,
        loc="center right",
        frameon=False,
    )
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1 - 1.2 / (3.4 * cols + 1.4), 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
