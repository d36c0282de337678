"""The field's probe recipes: scikit-learn's C, and lbfgs-cv (C picked on a validation split)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import PredefinedSplit

from poisonprobe.errors import ConfigError
from poisonprobe.experiment.config import parse_config
from poisonprobe.head.config import VictimConfig
from poisonprobe.head.cv import stratified_validation
from poisonprobe.head.train import resolve_victim, train_head

GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 10.0)


def blobs(seed: int = 0, n: int = 120, d: int = 20, k: int = 3):
    """Noisy high-dimensional classes: the best C is neither end of the grid."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 0.5, (k, d))
    y = np.arange(n) % k
    x = centres[y] + rng.normal(0, 1, (n, d))
    return x, y


@pytest.mark.parametrize("c", [0.01, 1.0, 30.0])
def test_c_gives_scikit_learns_head(c):
    x, y = blobs()
    head = train_head(torch.tensor(x), torch.tensor(y), 3, VictimConfig(C=c, tol=1e-10))
    sk = LogisticRegression(C=c, tol=1e-12, max_iter=100_000).fit(x, y)
    np.testing.assert_allclose(head.weight.numpy(), sk.coef_, atol=1e-5)
    # the intercept is not penalised (here or there): softmax fixes it only up to a constant
    b, b_sk = head.bias.numpy(), sk.intercept_
    np.testing.assert_allclose(b - b.mean(), b_sk - b_sk.mean(), atol=1e-5)


def test_c_becomes_weight_decay_per_fit_size():
    cfg = VictimConfig(C=0.5)
    assert cfg.for_n(200).weight_decay == pytest.approx(1 / (200 * 0.5))
    assert cfg.for_n(220).weight_decay == pytest.approx(1 / (220 * 0.5))  # poisons added
    assert VictimConfig(weight_decay=0.01).for_n(200).weight_decay == 0.01


@pytest.mark.filterwarnings("ignore::FutureWarning")  # scikit-learn's changing defaults
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lbfgs_cv_picks_logistic_regression_cvs_c(seed):
    x, y = blobs(seed)
    zt, yt = torch.tensor(x), torch.tensor(y)
    cfg = VictimConfig(solver="lbfgs-cv", C_grid=GRID, val_fraction=0.25, tol=1e-10)
    val = stratified_validation(yt, 0.25, seed).numpy()
    split = PredefinedSplit(np.where(val, 0, -1))
    sk = LogisticRegressionCV(
        Cs=list(GRID), cv=split, scoring="accuracy", tol=1e-12, max_iter=100_000
    ).fit(x, y)
    picked = resolve_victim(zt, yt, 3, cfg, seed)
    assert picked.C == pytest.approx(sk.C_[0])
    assert picked.solver == "lbfgs-cv" and picked.label == f"lbfgs-cv C={sk.C_[0]:g}"
    assert len(set(sk.scores_[0][0])) > 1  # the grid's accuracies differ: the pick means something
    head = train_head(zt, yt, 3, picked)  # refit on all of it with the picked C
    np.testing.assert_allclose(head.weight.numpy(), sk.coef_, atol=1e-5)


def test_validation_split_is_stratified_and_seeded():
    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    val = stratified_validation(y, 0.2, 0)
    assert [int(val[y == c].sum()) for c in range(3)] == [10, 6, 4]
    assert torch.equal(val, stratified_validation(y, 0.2, 0))
    assert not torch.equal(val, stratified_validation(y, 0.2, 1))


def test_runner_records_recipe_and_plans_with_clean_c(tmp_path):
    from poisonprobe.experiment.runner import run

    x, y = blobs(0, n=150)
    xt, yt = blobs(1, n=60)
    np.savez(tmp_path / "e.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    cfg = {
        "settings": [{"name": "e", "target": f"features:{tmp_path / 'e.npz'}"}],
        "victim": {"solver": "lbfgs-cv", "C_grid": list(GRID)},
        "attacks": ["label-flip"],
        "eps": [0.1],
    }
    df = run(cfg, out=tmp_path / "out", quiet=True)
    clean = resolve_victim(
        torch.tensor(x), torch.tensor(y), 3, VictimConfig(**{"solver": "lbfgs-cv", "C_grid": GRID})
    )
    none = df[df["attack"] == "none"].iloc[0]
    assert none["victim"] == clean.label
    assert df["victim"].str.startswith("lbfgs-cv C=").all()


@pytest.mark.parametrize(
    ("victim", "needle"),
    [
        ({"C": 1.0, "weight_decay": 0.01}, "not both"),
        ({"solver": "lbfgs-cv", "C": 1.0}, "drop C"),
        ({"C_grid": [0.1, 1]}, "set solver: lbfgs-cv"),
        ({"solver": "lbfgs-cv", "C_grid": [0.1, -1]}, "positive"),
        ({"solver": "lbfgs-cv", "val_fraction": 1.0}, "val_fraction"),
        ({"C": 0}, "C"),
    ],
)
def test_bad_recipes_refused(victim, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_config({"victim": victim})
