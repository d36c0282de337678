"""Write a copy of a run config with every attack's step caps doubled (issue #15's check).

    python tools/double_caps.py configs/default.yaml runs/caps-x2.yaml [--factor 2]

Each attack keeps its name (no ``label``), so the rows of the two runs line up by
(setting, attack, regime, eps, defence, seed); their ``cell_id`` differs (the params do), so
write them to different ``--out`` folders and compare with ``tools/compare_runs.py``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from poisonprobe.attacks.base import get_attack

CAP_PARAMS = ("max_steps", "decoder_steps", "match_steps", "gradpc_steps", "target_steps", "steps")


def doubled(entry: str | dict, factor: int) -> dict:
    """The attack entry with each cap parameter it has set to ``factor`` × its value."""
    spec = {"name": entry} if isinstance(entry, str) else dict(entry)
    params = get_attack(spec["name"]).params()
    for key in CAP_PARAMS:
        if key in params:
            spec[key] = factor * int(spec.get(key, params[key].default))
    return spec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--factor", type=int, default=2)
    args = ap.parse_args()
    cfg = yaml.safe_load(args.config.read_text())
    cfg["attacks"] = [doubled(a, args.factor) for a in cfg["attacks"]]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(yaml.safe_dump(cfg, sort_keys=False))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
