"""The ``poisonprobe`` command line (Typer + Rich)."""

from __future__ import annotations

import importlib
import logging
import re
import sys
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .errors import PoisonProbeError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Indiscriminate data poisoning of linear probes on frozen self-supervised extractors.",
    pretty_exceptions_enable=False,
)
console = Console()
# click's exceptions, wherever this typer takes click from (typer >= 0.25 vendors its own copy)
_click_errors = importlib.import_module(typer.BadParameter.__module__)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )


@app.command()
def run(
    config: Path | None = typer.Argument(None, help="YAML config (default: the embedded one)"),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="output folder (default: runs/<config stem>)"
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars or tables"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="log every stage"),
    backend: str = typer.Option(
        "local", "--backend", help="local | ray (one Ray task per setting/extractor/seed)"
    ),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="an existing Ray cluster (default: start a local one)"
    ),
    workers: str = typer.Option(
        "auto",
        "--workers",
        "-j",
        help="local backend: worker processes for the setting/extractor/seed units "
        "(auto: one per unit up to the CPU count; 1: this process only)",
    ),
    add: bool = typer.Option(
        False, "--add", help="OUT holds another config's results: add this one's beside them"
    ),
    pretrain: bool = typer.Option(
        False,
        "--pretrain",
        help="pre-train every extractor with SSL here instead of loading the shipped weights "
        "(same as extractor.pretrain: true)",
    ),
) -> None:
    """Run an experiment; write OUT/results.csv and OUT/report.md."""
    from .experiment.config import load_config, with_pretrain
    from .experiment.runner import default_out
    from .experiment.runner import run as run_experiment

    _setup_logging(verbose)
    out = out if out is not None else default_out(config)
    cfg = load_config(config)
    if pretrain:
        cfg = with_pretrain(cfg)
    df = run_experiment(
        cfg,
        out=out,
        quiet=quiet,
        backend=backend,
        ray_address=ray_address,
        add=add,
        verbose=verbose,
        workers=workers,
    )
    print_summary(df, out, quiet)


def print_summary(df, out: Path, quiet: bool) -> None:
    """After a run: the drop tables (unless quiet), one line on rows that are lower bounds
    (capped or still climbing), one where keeping each cell's strongest seed beats the mean
    (``report.pick``), and where the results went."""
    if not quiet:
        for title, table in drop_tables(df):
            console.print(title, markup=False, highlight=False)
            console.print(table)
    print_notes(df)
    console.print(
        f"wrote {out / 'results.csv'} ({len(df)} rows) and {out / 'report.md'}", soft_wrap=True
    )


def print_notes(df) -> None:
    """The closing notes of a run or a report: rows that are lower bounds, and cells where
    keeping the strongest seed beats the mean (``report.pick``)."""
    from .report.markdown import understated_note
    from .report.pick import pick_note

    for note in (understated_note(df), pick_note(df)):
        if note:
            console.print(note, markup=False, highlight=False, soft_wrap=True)


def drop_tables(df) -> list[tuple[str, Table]]:
    """The drop table split into one (title, Rich table) per (setting, extractor, defence),
    whose columns fold rather than clip, so every number shows at 80 columns."""
    from rich.markup import escape

    from .report.markdown import drop_table, one_image_pt

    tables = []
    full = drop_table(df, "drop")
    for (setting, extractor, defense), part in full.groupby(
        ["setting", "extractor", "defense"], sort=False
    ):
        rows = df[(df["setting"] == setting) & (df["extractor"] == extractor)]
        image = one_image_pt(rows)
        note = f" · 1 test image = {image:.2g} pt" if image is not None else ""
        title = f"drop (pt) · {setting} · {extractor} · defence {defense}{note}"
        table = Table()
        cols = [c for c in part.columns if c not in ("setting", "extractor", "defense")]
        for col in cols:
            justify = "right" if str(col).startswith("eps=") else "left"
            table.add_column(escape(str(col)), overflow="fold", justify=justify)
        for _, row in part[cols].iterrows():
            table.add_row(*[escape(str(v)) for v in row.tolist()])  # labels like a[k=v]
        tables.append((title, table))
    return tables


@app.command()
def certify(
    config: Path | None = typer.Argument(None, help="YAML config (default: the embedded one)"),
    out: Path = typer.Option(Path("runs/certify"), "--out", "-o", help="output folder"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="log every stage"),
) -> None:
    """Only the certified bounds (bounds: [loss, dpa]; both if the config lists none)."""
    from .experiment.certify_cmd import certify_only
    from .report.markdown import bound_table, markdown_table
    from .report.schema import read_results

    _setup_logging(verbose)
    out_dir = certify_only(config, out=out, quiet=quiet)
    table = bound_table(read_results(out_dir / "results.csv"))
    if not table.empty:
        attacks = ["best attack", "its loss", "outside the box"]  # certify runs none
        console.print(markdown_table(table.drop(columns=attacks, errors="ignore")))
    console.print(f"wrote {out_dir / 'results.csv'}, {out_dir / 'report.md'}")


@app.command()
def datasets() -> None:
    """List the datasets that configs may name."""
    from .data import dataset_names

    table = Table("name", "description")
    for name, desc in dataset_names().items():
        table.add_row(name, desc)
    console.print(table)


@app.command()
def attacks() -> None:
    """List the registered attacks, their regimes and parameters."""
    from rich.markup import escape

    from .attacks.base import attack_names, get_attack

    table = Table(show_lines=True)
    for col in ("name", "regimes", "parameters (defaults)", "description"):
        table.add_column(col, overflow="fold")  # fold long values, never clip them
    for name in attack_names():
        info = get_attack(name)
        params = "\n".join(f"{k}={p.default!r}" for k, p in info.params().items())
        table.add_row(name, "\n".join(info.regimes), escape(params), escape(info.description))
    console.print(table)


@app.command()
def defenses() -> None:
    """List the registered defences."""
    from .defenses import defense_names

    table = Table("name", "description")
    for name, desc in defense_names().items():
        table.add_row(name, desc)
    console.print(table)


@app.command()
def pretrain(
    dataset: str = typer.Option("digits", help="dataset to pre-train on (its train split)"),
    arch: str = typer.Option("smallcnn", help="smallcnn | resnet18 | resnet50"),
    method: str = typer.Option("simclr", help="simclr | moco | byol"),
    epochs: int = typer.Option(30, min=0),
    batch_size: int = typer.Option(256, min=2),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto"),
    data_root: Path | None = typer.Option(None, help="where datasets live"),
    out: Path | None = typer.Option(None, help="also save the checkpoint here"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Pre-train an extractor with SSL (cached) and report its linear-probe accuracy."""
    from pydantic import ValidationError

    from .data import load_dataset
    from .errors import ConfigError
    from .experiment.config import ExtractorConfig
    from .experiment.prepare import obtain_extractor, resolve_device
    from .extractors.cache import FeatureCache
    from .extractors.checkpoints import save_extractor
    from .head.train import train_head
    from .progress import Reporter

    try:
        ext_cfg = ExtractorConfig(
            arch=arch, method=method, epochs=epochs, batch_size=batch_size, seed=seed, pretrain=True
        )
    except ValidationError as err:
        first = err.errors()[0]
        option = "--" + str(first["loc"][0] if first["loc"] else "arch").replace("_", "-")
        raise ConfigError(f"{option}: {first['msg'].removeprefix('Value error, ')}") from None
    splits = load_dataset(dataset, data_root)
    reporter = Reporter(quiet=quiet)
    dev = resolve_device(device)
    ext, path, _, _ = obtain_extractor(ext_cfg, splits, dev, reporter)
    cache = FeatureCache()
    z_tr = cache.encode(ext, splits.train, progress=reporter.track)
    z_te = cache.encode(ext, splits.test, progress=reporter.track)
    head = train_head(z_tr, splits.train.y.to(z_tr.device), splits.train.n_classes)
    acc = head.accuracy(z_te, splits.test.y.to(z_te.device))
    if out is not None:
        save_extractor(
            ext,
            out,
            {"arch": arch, "method": method, "epochs": epochs, "dataset": dataset, "seed": seed},
        )
        path = out
    console.print(f"checkpoint {path}; linear-probe test accuracy on {dataset}: {acc:.4f}")


@app.command()
def report(out: Path = typer.Argument(..., help="a run folder holding results.csv")) -> None:
    """Rewrite OUT/report.md from OUT/results.csv (and print the run's closing notes)."""
    from .errors import ConfigError
    from .experiment.runner import finish_report
    from .report.schema import read_results

    if not (out / "results.csv").is_file():
        raise ConfigError(f"{out}/results.csv not found; pass the --out folder of a run")
    path = finish_report(out)
    print_notes(read_results(out / "results.csv"))
    console.print(f"wrote {path}")


# long: a typer command: its 12 options are the signature, the body is 40 lines
@app.command()
def export(
    out: Path = typer.Argument(..., help="a run folder"),
    attack: str = typer.Option(..., help="attack label as in results.csv"),
    eps: float = typer.Option(..., help="budget as in results.csv"),
    setting: str | None = typer.Option(None, help="needed when the run has several settings"),
    extractor: str | None = typer.Option(None, help="needed when the run has several"),
    regime: str | None = typer.Option(None, help="needed when the attack ran in several"),
    seed: int | None = typer.Option(None, help="needed when the run has several seeds"),
    extractor_seed: int | None = typer.Option(None, help="needed when it has several"),
    split_seed: int | None = typer.Option(None, help="needed when it has several"),
    config_id: str | None = typer.Option(None, help="needed when OUT holds several configs"),
    fmt: str = typer.Option("npz", "--format", help="npz | imagefolder"),
    dest: Path | None = typer.Option(None, help="default: OUT/export/<cell>[.npz]"),
) -> None:
    """Write the poisoned training set of one cell (and the clean test split), for any other
    training code; both formats read back as npz:/imagefolder: datasets."""
    from .data import load_dataset
    from .errors import ConfigError
    from .experiment.config import load_config
    from .experiment.export import (
        load_poisons,
        out_of_box,
        poison_file,
        poisoned_training_set,
        select_cell,
        write_imagefolder,
        write_npz,
    )
    from .experiment.results import replicate
    from .report.schema import read_results

    if fmt not in ("npz", "imagefolder"):
        raise ConfigError(f"--format {fmt!r} is unknown; use npz or imagefolder")
    if not (out / "results.csv").is_file():
        raise ConfigError(f"{out}/results.csv not found; pass the --out folder of a run")
    cfg = load_config(out / "config.yaml")
    df = read_results(out / "results.csv")
    row = select_cell(
        df,
        attack,
        eps,
        out,
        setting=setting,
        extractor=extractor,
        regime=regime,
        seed=seed,
        extractor_seed=extractor_seed,
        split_seed=split_seed,
        config_id=config_id,
    )
    target = next((s.target for s in cfg.settings if s.name == row["setting"]), None)
    if target is None:
        raise ConfigError(
            f"setting {row['setting']!r} of {out}/results.csv is missing from {out}/config.yaml; "
            "restore the run's config.yaml"
        )
    path = poison_file(out, row.to_dict())
    poisons = load_poisons(path)
    split_seed = replicate(row.get("split_seed"))
    splits = load_dataset(target, cfg.data_root, split_seed, download=cfg.download)
    clean = splits.train
    x, y, flag = poisoned_training_set(clean.x, clean.y, poisons)
    stem = path.stem
    if fmt == "npz":
        written = write_npz(
            dest or out / "export" / f"{stem}.npz", x, y, flag, clean.classes, splits.test
        )
    else:
        written = write_imagefolder(
            dest or out / "export" / stem, x, y, flag, clean.classes, splits.test
        )
    console.print(
        f"wrote {written}: {len(y)} training points, {int(flag.sum())} poisoned", soft_wrap=True
    )
    outside = out_of_box(x[flag])
    if outside:
        console.print(
            f"note: {outside} poison image(s) have pixels outside [0, 1] (regime "
            f"{row['regime']}); the images are clipped to [0, 1]"
            + (" (x_train_raw keeps the raw values)" if fmt == "npz" else "")
        )


def _fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: MESSAGE`` on stderr as one literal line (no markup, no wrap) and exit."""
    line = re.sub(r"\s*[\r\n]+\s*", " ", message).strip() or "unknown error"
    Console(stderr=True).print(
        Text.assemble(("error:", "red"), " ", line), highlight=False, soft_wrap=True
    )
    sys.exit(code)


def main() -> None:
    """Entry point: user errors print one line and exit 2, never a traceback."""
    try:
        code = app(standalone_mode=False)
    except _click_errors.ClickException as err:  # unknown option, bad value, missing argument
        if type(err).__name__ == "NoArgsIsHelpError":
            sys.exit(2)  # no command given: typer has already printed the help
        _fail(err.format_message())
    except typer.Abort:
        _fail("aborted", 1)
    except PoisonProbeError as err:
        _fail(str(err))
    except KeyboardInterrupt:
        code = 130
    if code == 130:  # typer turns Ctrl-C into exit code 130
        Console(stderr=True).print("interrupted; rerun the same command to resume")
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
