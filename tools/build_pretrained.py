"""Build the pre-trained extractors the package ships (src/poisonprobe/pretrained/).

Pre-trains exactly what the embedded default config pre-trains (every setting's source x
every extractor), on the CPU with 2 intra-op threads (the README's numbers come from 2
threads), writes each as ``.safetensors`` and records its sha256 and pre-training spec in
``manifest.json``. Run it after any change to the pre-training recipe or the default config:

    PYTHONPATH=src python tools/build_pretrained.py

It checks that the written file reloads to the very weights it trained (state-dict digest).
"""

from __future__ import annotations

import json
import platform
import sys
import tempfile
from pathlib import Path

import torch

from poisonprobe.data import load_dataset
from poisonprobe.experiment.config import load_config
from poisonprobe.extractors.cache import extractor_digest
from poisonprobe.extractors.checkpoints import checkpoint_sha256, load_extractor, save_extractor
from poisonprobe.extractors.pretrain import PretrainConfig, get_or_pretrain, pretrain_spec
from poisonprobe.extractors.shipped import MANIFEST, PRETRAINED_DIR

THREADS = 2


def main(out_dir: Path = PRETRAINED_DIR) -> None:
    torch.set_num_threads(THREADS)
    cfg = load_config(None)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries, seen = [], set()
    with tempfile.TemporaryDirectory() as cache:
        for setting in cfg.settings:
            for ext_cfg in cfg.extractors:
                if ext_cfg.checkpoint or (setting.source, ext_cfg.label) in seen:
                    continue
                seen.add((setting.source, ext_cfg.label))
                source = load_dataset(setting.source, cfg.data_root, download=False)
                torch.manual_seed(0)  # as runner.run does before any extractor
                ext, _, _ = get_or_pretrain(
                    source.train,
                    **ext_cfg.pretrain_args(),
                    device="cpu",
                    cache_dir=cache,
                    shipped=False,
                )
                recipe = PretrainConfig(
                    method=ext_cfg.method,
                    epochs=ext_cfg.epochs,
                    batch_size=ext_cfg.batch_size,
                    lr=ext_cfg.lr,
                )
                spec = pretrain_spec(source.train, ext_cfg.arch, recipe, ext_cfg.seed)
                name = f"{ext_cfg.label}-e{ext_cfg.epochs}-s{ext_cfg.seed}-{setting.source}"
                path = out_dir / f"{name}.safetensors"
                save_extractor(ext, path, {"dataset": source.train.name, "spec": spec})
                digest = extractor_digest(ext)
                back = load_extractor(path, ext_cfg.arch, source.domain)
                if extractor_digest(back) != digest:
                    sys.exit(f"{path} does not reload to the trained weights")
                entries.append(
                    {
                        "file": path.name,
                        "sha256": checkpoint_sha256(path),
                        "weights_digest": digest,
                        "spec": spec,
                        "built_with": {
                            "torch": torch.__version__,
                            "threads": THREADS,
                            "device": "cpu",
                            "python": platform.python_version(),
                            "machine": platform.machine(),
                        },
                    }
                )
                print(f"{path.name}: {path.stat().st_size} bytes, sha256 {entries[-1]['sha256']}")
    (out_dir / MANIFEST).write_text(json.dumps({"extractors": entries}, indent=2) + "\n")


if __name__ == "__main__":
    main()
