"""PNG figures for ``report.md``: accuracy vs eps, poison image grids, feature projections."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from .stats import mean_ci  # noqa: E402


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def plot_accuracy_vs_eps(df: pd.DataFrame, out_dir: Path) -> list[Path]:
    """One figure per (setting, extractor, defence): poisoned accuracy vs eps per attack."""
    paths = []
    for (setting, extractor, defense), g in df.groupby(["setting", "extractor", "defense"]):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        clean = g["clean_acc"].iloc[0]
        ax.axhline(clean * 100, color="black", lw=1, ls="--", label="clean")
        attacks = g[~g["attack"].isin(["none", "bound"])]
        for (attack, regime), ga in attacks.groupby(["attack", "regime"]):
            eps = sorted(ga["eps"].unique())
            cis = [mean_ci(ga.loc[ga["eps"] == e, "poisoned_acc"]) for e in eps]
            ax.errorbar(
                eps,
                [100 * mean for mean, _ in cis],
                yerr=[100 * half for _, half in cis],
                marker="o",
                capsize=3,
                label=f"{attack} [{regime}]",
            )
        ax.set_xscale("log")
        ax.set_xlabel("poison budget eps")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{setting} · {extractor} · defence {defense}")
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        path = out_dir / _safe(f"acc_vs_eps_{setting}_{extractor}_{defense}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_bound_vs_attacks(df: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Per (setting, extractor, defence) with bound rows: every attack's clean-train loss
    (``train_loss``) and the certified upper bound ``bound_loss`` against eps."""
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
            if not loss.empty:
                ls = "--" if attack == "none" else "-"
                ax.plot(loss.index, loss.values, ls=ls, marker="o", label=f"{attack} [{regime}]")
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
) -> Path:
    """Top row: clean start images; bottom row: their poisoned versions (with poison label)."""
    n = min(n, poisons.shape[0])
    fig, axes = plt.subplots(2, n, figsize=(1.3 * n, 3.0), squeeze=False)
    cmap = "gray" if poisons.shape[1] == 1 else None
    for j in range(n):
        axes[0, j].imshow(_to_image(starts[j]), cmap=cmap, vmin=0, vmax=1)
        axes[1, j].imshow(_to_image(poisons[j]), cmap=cmap, vmin=0, vmax=1)
        axes[1, j].set_title(f"y={int(labels[j])}", fontsize=8)
        for i in range(2):
            axes[i, j].axis("off")
    axes[0, 0].set_title("clean", fontsize=8, loc="left")
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
) -> Path:
    """PCA of clean features (by class) with each attack's poisoned features on top."""
    zc = z_clean.detach().cpu().double()
    mean = zc.mean(0)
    _, _, v = torch.pca_lowrank(zc - mean, q=2, center=False)
    proj = (zc - mean) @ v[:, :2]
    n = max(1, len(poisons))
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.2 * rows), squeeze=False)
    for ax, (name, zp) in zip(axes.flat, poisons.items(), strict=False):
        ax.scatter(proj[:, 0], proj[:, 1], c=y_clean.cpu(), cmap="tab10", s=4, alpha=0.4)
        pp = (zp.detach().cpu().double() - mean) @ v[:, :2]
        ax.scatter(pp[:, 0], pp[:, 1], c="red", marker="x", s=12, label="poison")
        ax.set_title(name, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
