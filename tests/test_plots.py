"""The figures read well: a distinct colour+marker per attack, grid labels off the images,
and a class legend on the feature projection."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import pytest
import torch

from poisonprobe.report import plots


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions build (they close them after saving)."""
    kept = []
    close = plt.close
    monkeypatch.setattr(plots.plt, "close", lambda fig: kept.append(fig))
    yield kept
    for fig in kept:
        close(fig)


def test_attack_styles_are_distinct():
    names = [f"a{i}" for i in range(40)]
    styles = plots.attack_styles(names)
    assert len(set(styles.values())) == 40
    first = [styles[n][0] for n in names[:20]]
    assert len(set(first)) == 20  # 20 attacks get 20 different colours


def test_accuracy_plot_has_distinct_lines(tmp_path, figures):
    rows = []
    attacks = [f"attack{i}" for i in range(10)]
    for i, attack in enumerate(attacks):
        regimes = ["unconstrained", "box"] if i < 4 else ["box"]  # 14 lines, as the default
        for regime in regimes:
            for eps in (0.03, 0.1, 0.3):
                rows.append(
                    {
                        "setting": "s",
                        "extractor": "e",
                        "defense": "none",
                        "attack": attack,
                        "regime": regime,
                        "eps": eps,
                        "clean_acc": 0.98,
                        "poisoned_acc": 0.9 - i / 100,
                    }
                )
    (path,) = plots.plot_accuracy_vs_eps(pd.DataFrame(rows), tmp_path)
    assert path.is_file()
    (fig,) = figures
    lines = [c.lines[0] for c in fig.axes[0].containers]  # each errorbar's data line
    looks = {(ln.get_color(), ln.get_marker(), ln.get_linestyle()) for ln in lines}
    assert len(lines) == 14 and len(looks) == 14
    by_attack = {}
    for ln in lines:
        by_attack.setdefault((str(ln.get_color()), ln.get_marker()), set()).add(ln.get_linestyle())
    assert len(by_attack) == 10  # one colour+marker per attack, regimes by line style


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_grid_labels_do_not_cover_images(tmp_path, figures):
    x = torch.rand(8, 1, 8, 8)
    plots.save_poison_grid(
        x,
        x.flip(-1),
        torch.arange(8) % 10,
        tmp_path / "g.png",
        "title",
        start_labels=torch.arange(8),
        classes=[str(i) for i in range(10)],
    )
    (fig,) = figures
    fig.canvas.draw()  # the layout as saved
    renderer = fig.canvas.get_renderer()
    images = [ax.images[0].get_window_extent(renderer) for ax in fig.axes]
    assert len(images) == 16
    labels = [
        t.get_window_extent(renderer)
        for ax in fig.axes
        for t in (ax.xaxis.label, ax.yaxis.label, ax.title)
        if t.get_text()
    ]
    assert len(labels) == 16 + 2  # a label under every image, plus the two row names
    for box in labels:
        assert not any(_overlap(box, img) for img in images)


def test_feature_projection_has_a_class_legend(tmp_path, figures):
    z = torch.randn(60, 5)
    y = torch.arange(60) % 3
    plots.save_feature_projection(
        z, y, {"tgda [box]": torch.randn(6, 5)}, tmp_path / "f.png", "t", classes=["a", "b", "c"]
    )
    (fig,) = figures
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["a", "b", "c", "poison"]
