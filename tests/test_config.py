"""Config validation: every wrong key or value is a one-line ConfigError."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from poisonprobe.errors import ConfigError
from poisonprobe.experiment.config import Config, load_config, parse_config

REPO = Path(__file__).resolve().parents[1]


def test_default_config_file_equals_builtin_default():
    shipped = load_config(REPO / "configs" / "default.yaml")
    assert shipped == Config()


def test_issue_schema_example_is_accepted():
    cfg = parse_config(
        {
            "settings": [
                {"name": "finetune", "source": "digits", "target": "digits"},
                {"name": "transfer", "source": "syndigits", "target": "digits"},
            ],
            "extractor": {"arch": "smallcnn", "method": "simclr", "epochs": 30, "checkpoint": None},
            "attacks": [
                "label-flip",
                {"name": "label-flip", "label": "lf-random", "mode": "random"},
            ],
            "eps": [0.03, 0.1, 0.3],
            "defenses": ["none"],
            "seeds": [0],
        }
    )
    assert [a.column for a in cfg.attacks] == ["label-flip", "lf-random"]
    assert cfg.attacks[1].params == {"mode": "random"}


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"epz": [0.1]}, "epz"),
        ({"eps": [0.0]}, "eps"),
        ({"eps": [1.5]}, "outside (0, 1]"),
        ({"eps": ["x"]}, "eps"),
        ({"eps": []}, "eps"),
        ({"seeds": []}, "seeds"),
        ({"attacks": ["no-such-attack"]}, "unknown attack"),
        ({"attacks": [{"name": "label-flip", "bogus": 1}]}, "no parameter 'bogus'"),
        ({"attacks": ["label-flip", "label-flip"]}, "share a label"),
        ({"extractor": {"arch": "vgg"}}, "unknown arch"),
        ({"extractor": {"epochs": -1}}, "epochs"),
        ({"extractor": {"method": "dino"}}, "method"),
        ({"victim": {"weight_decay": 0}}, "weight_decay"),
        ({"regimes": ["none"]}, "regimes"),
        ({"device": "tpu"}, "device"),
        ({"defenses": ["no-such-defense"]}, "defen"),
        ({"settings": [{"name": "a", "source": "digits"}]}, "target"),
    ],
)
def test_bad_values_give_one_line_errors(data, needle):
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    message = str(info.value)
    assert "\n" not in message
    assert needle.lower() in message.lower()


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("eps: [0.1\nseeds: 0:")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(scalar)


def test_round_trip_yaml():
    cfg = Config()
    again = parse_config(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg


def test_attack_grid_expands_in_declared_order():
    cfg = parse_config(
        {
            "attacks": [
                "label-flip",
                {
                    "name": "gc-input",
                    "optimizer": "adam",
                    "grid": {"max_steps": [5, 9], "radius": [0.1, 0.2]},
                },
                {"name": "label-flip", "label": "lf", "grid": {"mode": ["random"]}},
            ]
        }
    )
    assert [a.column for a in cfg.attacks] == [
        "label-flip",
        "gc-input[max_steps=5,radius=0.1]",
        "gc-input[max_steps=5,radius=0.2]",
        "gc-input[max_steps=9,radius=0.1]",
        "gc-input[max_steps=9,radius=0.2]",
        "lf[mode=random]",
    ]
    assert cfg.attacks[3].params == {"optimizer": "adam", "max_steps": 9, "radius": 0.1}
    assert cfg.attacks[5].params == {"mode": "random"}
    assert parse_config(yaml.safe_load(cfg.to_yaml())) == cfg  # the expanded form round-trips


@pytest.mark.parametrize(
    ("grid", "needle"),
    [
        ({"max_steps": 5}, "non-empty list"),
        ({"max_steps": []}, "non-empty list"),
        ([5, 9], "grid must map"),
        ({}, "grid must map"),
        ({"bogus": [1, 2]}, "no parameter 'bogus'"),
        ({"optimizer": ["sgd"]}, "both fixed and in the grid"),
        ({"max_steps": [5, 5]}, "share a label"),
    ],
)
def test_bad_attack_grid_is_one_line(grid, needle):
    entry = {"name": "gc-input", "optimizer": "adam", "grid": grid}
    with pytest.raises(ConfigError) as info:
        parse_config({"attacks": [entry]})
    assert "\n" not in str(info.value) and needle in str(info.value)


def test_sweep_config_is_the_default_over_three_seeds():
    sweep = load_config(REPO / "configs" / "sweep.yaml")
    assert sweep.seeds == [0, 1, 2]
    assert sweep.model_copy(update={"seeds": [0]}) == Config()


def _positive_params() -> list[tuple[str, str, object]]:
    """(attack, parameter, default) for every numeric parameter with a positive default."""
    from poisonprobe.attacks import attack_names, get_attack

    out = []
    for name in attack_names():
        for key, param in get_attack(name).params().items():
            value = param.default
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
                out.append((name, key, value))
    return out


@pytest.mark.parametrize("attack,key,default", _positive_params())
def test_a_negative_step_size_count_or_tolerance_is_refused_at_parse_time(attack, key, default):
    """Every positive-default number: -1 stops at load (one line naming it), the default
    itself loads (the rule refuses no value an attack ships with)."""
    base = {"settings": [{"name": "s", "source": "digits", "target": "digits"}]}
    load_config(dict(base, attacks=[{"name": attack, key: default}]))
    with pytest.raises(ConfigError) as info:
        load_config(dict(base, attacks=[{"name": attack, key: -1}]))
    assert f"{key}=-1" in str(info.value) and "\n" not in str(info.value)


def _choice_params() -> list[tuple[str, str]]:
    """(attack, parameter) for every parameter whose default is a name (a string)."""
    from poisonprobe.attacks import attack_names, get_attack

    return [
        (name, key)
        for name in attack_names()
        for key, param in get_attack(name).params().items()
        if isinstance(param.default, str)
    ]


@pytest.mark.parametrize("attack,key", _choice_params())
def test_an_unknown_name_is_refused_at_parse_time(attack, key):
    """labels, optimizer, follower, leader, source, defense, ...: an unknown value stops at
    load in one line naming it, not when the attack runs (possibly after pre-training)."""
    base = {"settings": [{"name": "s", "source": "digits", "target": "digits"}]}
    with pytest.raises(ConfigError) as info:
        load_config(dict(base, attacks=[{"name": attack, key: "bogus"}]))
    assert "bogus" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("attack", ["tgda", "gc-input"])
def test_an_optional_step_size_is_checked_when_given(attack):
    """``lr: null`` means the attack's own default; a given lr must be > 0, at load."""
    base = {"settings": [{"name": "s", "source": "digits", "target": "digits"}]}
    load_config(dict(base, attacks=[{"name": attack, "lr": None}]))
    with pytest.raises(ConfigError, match="lr=-0.1"):
        load_config(dict(base, attacks=[{"name": attack, "lr": -0.1}]))
