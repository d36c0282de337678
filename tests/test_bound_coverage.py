"""What the certified loss bound covers: poisons whose features lie in the clean-feature box.
Each attack row records the share of its poisons inside (``info["in_feature_box"]``), and the
report compares the bound only with attacks whose poisons all lie inside: an unconstrained
image attack above the bound is outside its set, not a counterexample."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from conftest import results_row

from poisonprobe.experiment.cell import TrainingSet, in_feature_box_share
from poisonprobe.report.markdown import bound_table


def test_the_share_counts_poisons_inside_the_clean_feature_box_boundary_included():
    z = torch.tensor([[0.0, 1.0], [2.0, 3.0], [1.0, 2.0]])
    y = torch.tensor([0, 1, 1])
    train = SimpleNamespace(y=y, n_classes=2)
    prep = SimpleNamespace(z_train=z, target=SimpleNamespace(train=train))
    poisons = torch.tensor(
        [
            [1.0, 2.5],  # inside
            [2.0, 1.0],  # on the box's corner: inside
            [2.1, 2.0],  # above the first coordinate's clean maximum
            [1.0, -0.5],  # below the second's minimum
        ]
    )
    ts = TrainingSet(
        z=torch.cat([z, poisons]),
        y=torch.cat([y, torch.tensor([0, 1, 0, 1])]),
        in_box=torch.ones(7, dtype=torch.bool),
        is_poison=torch.tensor([False] * 3 + [True] * 4),
    )
    assert in_feature_box_share(prep, ts) == pytest.approx(0.5)
    clean_only = TrainingSet(z, y, torch.ones(3, dtype=torch.bool), torch.zeros(3, dtype=bool))
    assert math.isnan(in_feature_box_share(prep, clean_only))  # no poisons: no share


def _cell(attack, regime, loss, share=None, seed=0) -> dict:
    info = {} if share is None else {"in_feature_box": share}
    return results_row(
        attack=attack, regime=regime, seed=seed, train_loss=loss, info=json.dumps(info)
    )


def _bound() -> dict:
    return results_row(
        attack="bound", regime="feature", train_loss=0.03, bound_loss=1.5, bound_error=1.0
    )


def test_the_report_compares_the_bound_with_covered_attacks_only():
    df = pd.DataFrame(
        [
            _bound(),
            _cell("tgda", "unconstrained", 2.4, share=0.0),  # above the bound: outside it
            _cell("tgda-feature", "feature", 0.80, share=1.0, seed=0),
            _cell("tgda-feature", "feature", 0.90, share=1.0, seed=1),  # its best seed
            _cell("label-flip", "box", 0.10, share=1.0),
            _cell("tgda", "box", 0.95, share=0.25),  # valid images, features outside
        ]
    )
    row = bound_table(df).iloc[0]
    assert row["best attack"] == "tgda-feature [feature]"
    assert row["its loss"] == "0.900"
    assert row["bound_loss"] == "1.500"
    assert row["outside the box"] == "tgda [unconstrained] 2.400"


def test_older_files_without_the_measurement_compare_every_attack():
    df = pd.DataFrame(
        [_bound(), _cell("tgda", "unconstrained", 2.4), _cell("label-flip", "box", 0.1)]
    )
    table = bound_table(df)
    assert table.iloc[0]["best attack"] == "tgda [unconstrained]"
    assert "outside the box" not in table.columns
    only_covered = pd.DataFrame([_bound(), _cell("label-flip", "box", 0.1, share=1.0)])
    assert bound_table(only_covered).iloc[0]["outside the box"] == "–"
