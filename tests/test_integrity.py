"""Results integrity (#18): a folder never serves rows of another experiment."""

from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch
from torch import nn

from poisonprobe.errors import ConfigError
from poisonprobe.experiment import cell, plan, prepare, runner
from poisonprobe.experiment.config import load_config
from poisonprobe.experiment.results import row_key


@pytest.fixture
def small(tiny_config) -> dict:
    return dict(tiny_config, save_poisons=False)


def test_changed_config_is_refused_and_nothing_is_overwritten(tmp_path, small):
    runner.run(small, out=tmp_path, quiet=True)
    config_before = (tmp_path / "config.yaml").read_text()
    results_before = (tmp_path / "results.csv").read_bytes()
    changed = copy.deepcopy(small)
    changed["victim"] = {"weight_decay": 0.1}
    with pytest.raises(ConfigError, match=r"differs in victim\.weight_decay"):
        runner.run(changed, out=tmp_path, quiet=True)
    assert (tmp_path / "config.yaml").read_text() == config_before
    assert (tmp_path / "results.csv").read_bytes() == results_before


def test_add_keeps_both_experiments_apart(tmp_path, small):
    first = runner.run(small, out=tmp_path, quiet=True)
    changed = copy.deepcopy(small)
    changed["victim"] = {"weight_decay": 0.1}
    both = runner.run(changed, out=tmp_path, quiet=True, add=True)
    assert len(both) == 2 * len(first)
    assert both["cell_id"].is_unique
    assert both["config_id"].nunique() == 2
    keys = [row_key(r) for r in both.to_dict("records")]
    assert all(keys.count(k) == 2 for k in keys)  # the same cells, computed two ways
    new_id = plan.config_id(load_config(changed))
    assert (tmp_path / f"config-{new_id}.yaml").is_file()
    # the old rows are untouched; the new ones used the new weight decay (other accuracies)
    old = both[both["config_id"] != new_id].sort_values("cell_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(
        old.drop(columns=["seconds", "attack_seconds", "stages"]),
        first.sort_values("cell_id")
        .reset_index(drop=True)[old.columns]
        .drop(columns=["seconds", "attack_seconds", "stages"]),
        check_dtype=False,
    )
    assert "config_id" in (tmp_path / "report.md").read_text()


def test_unchanged_rerun_recomputes_nothing(tmp_path, small, monkeypatch):
    first = runner.run(small, out=tmp_path, quiet=True)

    def no_work(*args, **kwargs):
        raise AssertionError("an unchanged rerun retrained a victim")

    monkeypatch.setattr(cell, "evaluate", no_work)
    again = runner.run(small, out=tmp_path, quiet=True)
    pd.testing.assert_frame_equal(first, again)


def test_rows_of_unknown_provenance_are_refused(tmp_path, small):
    runner.run(small, out=tmp_path, quiet=True)
    df = pd.read_csv(tmp_path / "results.csv")
    df["cell_id"] = "written-by-an-older-version"
    df.to_csv(tmp_path / "results.csv", index=False)
    with pytest.raises(ConfigError, match="computed with another setup"):
        runner.run(small, out=tmp_path, quiet=True)


def test_code_version_is_part_of_the_fingerprint(tmp_path, small, monkeypatch):
    runner.run(small, out=tmp_path, quiet=True)
    monkeypatch.setattr(plan, "RESULTS_VERSION", plan.RESULTS_VERSION + 1)
    with pytest.raises(ConfigError, match="another setup"):
        runner.run(small, out=tmp_path, quiet=True)


def test_default_out_folder_is_the_config_stem():
    assert runner.default_out("configs/cifar10-cpu.yaml").as_posix() == "runs/cifar10-cpu"
    assert runner.default_out(None).as_posix() == "runs/default"


def test_extractor_labels_must_be_unique(small):
    cfg = dict(small, extractor=[{"epochs": 1}, {"epochs": 2}])
    with pytest.raises(ConfigError, match="share the label 'smallcnn-simclr'"):
        load_config(cfg)
    load_config(dict(small, extractor=[{"epochs": 1}, {"epochs": 2, "name": "longer"}]))


def test_a_regime_the_config_did_not_ask_for_is_refused(small):
    with pytest.raises(ConfigError, match="label-flip.*runs only in regime"):
        load_config(dict(small, regimes=["unconstrained"], attacks=["label-flip"]))
    cfg = load_config(dict(small, regimes=["unconstrained"], attacks=["gc-input", "ft-ideal"]))
    regimes = {spec.name: cell.attack_regimes(spec, cfg) for spec in cfg.attacks}
    assert regimes == {"gc-input": ["unconstrained"], "ft-ideal": ["feature"]}


def test_sgd_victim_unpoisoned_rows_drop_exactly_zero(tmp_path, small):
    cfg = dict(small, victim={"solver": "sgd", "sgd_epochs": 3}, seeds=[0, 1])
    df = runner.run(cfg, out=tmp_path, quiet=True)
    clean = df[df["attack"] == "none"]
    assert len(clean) == 2 and (clean["drop"] == 0).all()
    assert (clean["poisoned_acc"] == clean["clean_acc"]).all()


class _BatchNormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(4)
        self.feature_dim = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(x.flatten(1)[:, :4]))


def test_attack_context_puts_the_extractor_in_eval_mode(small):
    from poisonprobe.attacks import AttackContext
    from poisonprobe.data import load_dataset
    from poisonprobe.head.objective import LinearHead

    data = load_dataset("digits").train
    net = _BatchNormNet().train()
    stats = net.bn.running_mean.clone()
    ctx = AttackContext.build(
        net,
        data,
        0.1,
        victim=prepare.victim_config(load_config(small)),
        z_train=torch.zeros(len(data), 4),
        clean_head=LinearHead(torch.zeros(10, 4, dtype=torch.float64), torch.zeros(10)),
    )
    assert not net.training
    one = ctx.encode(data.x[:1])
    batch = ctx.encode(data.x[:8])
    assert torch.equal(one[0], batch[0])  # eval BN: a point's features ignore its batch
    assert torch.equal(net.bn.running_mean, stats)


def test_split_seeds_resplit_digits_and_refuse_fixed_splits(tmp_path, small):
    from poisonprobe.data import load_dataset

    a, b = load_dataset("digits", seed=0), load_dataset("digits", seed=1)
    assert len(a.train) == len(b.train) and a.train.fingerprint() != b.train.fingerprint()
    assert torch.equal(load_dataset("digits", seed=1).test.y, b.test.y)
    transfer = {"name": "t", "source": "digits", "target": "syndigits:200?test=50"}
    with pytest.raises(ConfigError, match="one fixed train/test split"):
        load_config(dict(small, settings=[transfer], split_seeds=[0, 1]))
    df = runner.run(dict(small, split_seeds=[0, 1]), out=tmp_path, quiet=True)
    assert sorted(df["split_seed"].unique()) == [0, 1]
    per_split = df[df["attack"] == "none"].groupby("split_seed")["clean_acc"].first()
    assert per_split[0] != per_split[1]  # another test set, another clean accuracy


def test_shared_stages_are_billed_to_every_attack_that_uses_them(tmp_path, small):
    cfg = dict(small, attacks=["ft-ideal", "ft-feasible"], eps=[0.1])
    df = runner.run(cfg, out=tmp_path, quiet=True).set_index("attack")
    ideal, feasible = df.loc["ft-ideal"], df.loc["ft-feasible"]
    # ft-ideal computed FT stages 1-2 (inside its own time); ft-feasible reused them: both
    # rows say what the shared stages cost, none claims the work was free
    assert ideal["shared_seconds"] > 0 and feasible["shared_seconds"] > 0
    assert feasible["shared_seconds"] >= ideal["shared_seconds"] * 0.99
    assert ideal["attack_seconds"] >= ideal["shared_seconds"]


def test_shared_work_memo_counts_each_use():
    from poisonprobe.shared_work import SharedWork, shared

    memo, calls = SharedWork(), []
    assert shared(memo, "k", lambda: calls.append(1) or 7) == 7
    assert shared(memo, "k", lambda: calls.append(1) or 8) == 7 and calls == [1]
    spent = memo.take_used()
    assert spent == memo.seconds["k"] and memo.take_used() == 0.0
    plain: dict = {}
    assert shared(plain, "k", lambda: 3) == 3 and plain == {"k": 3}
