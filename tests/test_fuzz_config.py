"""Fuzz the config surface: any YAML-able input is either a valid Config or a one-line
ConfigError — never another exception, never a traceback."""

from __future__ import annotations

from conftest import example_budget
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from poisonprobe.errors import ConfigError
from poisonprobe.experiment.config import Config, parse_config

KEYS = [
    "settings",
    "extractor",
    "victim",
    "attacks",
    "regimes",
    "linf",
    "eps",
    "defenses",
    "seeds",
    "data_root",
    "download",
    "device",
    "batch_size",
    "save_poisons",
    "bogus",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [
            "digits",
            "syndigits",
            "cifar10",
            "label-flip",
            "sphere",
            "none",
            "box",
            "smallcnn",
            "simclr",
            "auto",
            "cpu",
            "",
            "nope",
            "0.1",
            "-1",
        ]
    ),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.sampled_from(
                [
                    "name",
                    "source",
                    "target",
                    "arch",
                    "method",
                    "epochs",
                    "k",
                    "fraction",
                    "label",
                    "mode",
                    "x",
                ]
            ),
            inner,
            max_size=4,
        ),
    ),
    max_leaves=8,
)
configs = st.dictionaries(st.sampled_from(KEYS), values, max_size=5)


@settings(
    max_examples=example_budget(400), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(configs)
def test_any_config_is_valid_or_a_one_line_error(data):
    try:
        cfg = parse_config(data)
    except ConfigError as err:
        msg = str(err)
        assert msg and "\n" not in msg and len(msg) < 400
    else:
        assert isinstance(cfg, Config)
        assert all(0 < e <= 1 for e in cfg.eps)


@settings(max_examples=example_budget(200), deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=4))
def test_eps_lists(eps):
    try:
        cfg = parse_config({"eps": eps})
    except ConfigError as err:
        assert "eps" in str(err)
    else:
        assert all(0 < e <= 1 for e in cfg.eps)
