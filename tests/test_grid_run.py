"""Full grid expansion: every axis of the config multiplies into exactly the rows written."""

from __future__ import annotations

from poisonprobe.defenses import parse_defense
from poisonprobe.experiment.config import load_config
from poisonprobe.experiment.results import row_key
from poisonprobe.experiment.runner import _count_cells, run


def test_count_multiplies_every_axis(tiny_config):
    cfg = load_config(
        dict(
            tiny_config,
            settings=[
                {"name": "a", "source": "digits", "target": "digits"},
                {"name": "b", "source": "syndigits", "target": "digits"},
            ],
            extractor=[{"epochs": 1, "seed": [0, 1]}, {"epochs": 0, "name": "random-init"}],
            split_seeds=[0, 5],
            attacks=[
                "label-flip",  # box only
                {"name": "gc-input", "grid": {"max_steps": [5, 9]}},  # unconstrained and box
                "ft-ideal",  # feature
            ],
            eps=[0.03, 0.1, 0.3],
            defenses=["none", "sphere"],
            seeds=[0, 1, 2],
        )
    )
    defenses = [parse_defense(d) for d in cfg.defenses]
    assert [e.label for e in cfg.extractors] == ["smallcnn-simclr"] * 2 + ["random-init"]
    assert [e.seed for e in cfg.extractors] == [0, 1, 0]
    # settings · split seeds · extractors (incl. pre-training seeds) · seeds · runs · eps · defs
    cells = 2 * 2 * 3 * 3 * (1 + 1 + 2 * 2 + 1) * 3 * 2
    assert _count_cells(cfg, defenses) == cells


def test_cells_counted_equal_rows_written(tmp_path, tiny_config):
    cfg = load_config(
        dict(
            tiny_config,
            settings=[
                {"name": "a", "source": "digits", "target": "digits"},
                {"name": "b", "source": "digits", "target": "digits"},
            ],
            extractor=[{"epochs": 1}, {"epochs": 0, "name": "random-init"}],
            attacks=[{"name": "label-flip", "grid": {"mode": ["confusable", "random"]}}],
            seeds=[0, 1],
            save_poisons=False,
        )
    )
    defenses = [parse_defense(d) for d in cfg.defenses]
    # 2 settings × 2 extractors × 2 seeds × (clean + 2 grid variants) × 1 eps × 1 defence
    assert _count_cells(cfg, defenses) == 24

    df = run(cfg, out=tmp_path, quiet=True)
    assert len(df) == 24
    assert set(df["attack"]) == {"none", "label-flip[mode=confusable]", "label-flip[mode=random]"}
    # every row is its own cell: distinct keys, distinct fingerprints
    assert len({row_key(r) for r in df.to_dict("records")}) == len(df) == df["cell_id"].nunique()


def test_count_includes_bound_rows(tiny_config):
    cfg = load_config(dict(tiny_config, bounds=["loss"], eps=[0.03, 0.1]))
    defenses = [parse_defense(d) for d in cfg.defenses]
    # per eps: clean + bound + label-flip (box) + random-noise (box)
    assert _count_cells(cfg, defenses) == 4 * 2
