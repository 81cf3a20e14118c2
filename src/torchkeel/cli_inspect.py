"""The `keel data` and `keel runs` commands (look at a data set; list the run folders),
registered in cli.py. Like every command they parse, call the library and print, importing
torch only when they run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from torchkeel.cli_evaluate import OutDirOpt, SetOpt, out


def data(
    name_or_config: Annotated[
        str,
        typer.Argument(help="A data set name (digits, mnist, iris, csv, ...) or a YAML config (its data: section)."),
    ] = "digits",
    set_: SetOpt = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed of the split (seed).")] = None,  # noqa: UP045
    grid: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("--grid", help="Images: the PNG grid of samples to write (default: NAME-samples.png)."),
    ] = None,
    no_grid: Annotated[bool, typer.Option("--no-grid", help="Images: do not write the grid of samples.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Load a data set and show it: split sizes, classes with counts, input shape or vocabulary size,
    normalisation statistics; for images also write a PNG grid of training samples with their labels.

    Examples: `keel data mnist --set data.root=../data`, `keel data configs/credit.yaml`,
    `keel data csv --set data.path=rows.csv --set data.target=label`.
    """
    from torchkeel.config import load_config

    is_config = name_or_config.endswith((".yaml", ".yml")) or Path(name_or_config).is_file()
    shortcuts = {"data.name": None if is_config else name_or_config, "seed": seed}
    cfg = load_config(name_or_config if is_config else None, set_, shortcuts)
    from torchkeel.data import load
    from torchkeel.data.corpus import with_cache
    from torchkeel.data.describe import describe, render, write_sample_grid
    from torchkeel.data.kinds import kind_of

    bundle = load(with_cache(cfg.data, cfg.out_dir), cfg.seed)  # a corpus is encoded beside the runs
    info = describe(bundle)
    if kind_of(bundle.spec).pixels and not no_grid:
        info["grid"] = str(write_sample_grid(bundle, grid or Path(f"{bundle.spec.name}-samples.png"), cfg.seed))
    if as_json:
        print(json.dumps(info))
        return
    for item in render(info):
        out.print(item, highlight=False)
    if "grid" in info:
        out.print(f"samples: {info['grid']}", highlight=False)


def runs(
    out_dir: OutDirOpt = Path("runs"),
    sort: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Best first by a metric: accuracy (test), val/loss (last epoch), train_seconds, ..."),
    ] = None,
) -> None:
    """List runs with their data, model, key test metric and time."""
    from rich.table import Table

    from torchkeel.runs import find_runs, read_run

    found = find_runs(out_dir)
    if not found:
        out.print(f"no runs in {out_dir}/ yet: train one with `keel train`")
        return
    infos = [read_run(path) for path in found]
    if sort is not None:
        from torchkeel.evaluate.compare import sort_runs

        infos = sort_runs(infos, sort)
    table = Table(title=f"runs in {out_dir}/", title_justify="left")
    for col in ("run", "status", "data", "model", "test metric", "epochs", "train time"):
        table.add_column(col, justify="right" if col in ("epochs", "train time") else "left")
    if sort is not None:
        table.add_column(sort, justify="right")
    for info in infos:
        table.add_row(*_run_row(info), *([_sort_value(info, sort)] if sort is not None else []))
    out.print(table)


def _run_row(info: Any) -> list[str]:
    """One row of `keel runs`; a damaged run says what is wrong in place of its metrics."""
    if info.damage is not None:
        return [info.path.name, "damaged", "-", "-", info.damage, "-", "-"]
    test, summary = info.summary.get("test", {}), info.summary
    keys = [summary.get("key_metric"), "accuracy", "r2", "rmse", "frechet", "loss"]  # older runs: the first found
    key = next((k for k in keys if isinstance(k, str) and _is_number(test.get(k))), None)
    shown = f"{key} {test[key]:.4f}" if key else "-"
    val = summary.get("val", {})  # a keel train --auto candidate: measured on val only
    if key is None and isinstance(val, dict) and _is_number(val.get(summary.get("key_metric"))):
        shown = f"val {summary['key_metric']} {val[summary['key_metric']]:.4f}"
    # two classes: the ranking quality too; a language model: bits per character, which compares
    # runs whatever their tokenisers (a loss is per token, and tokens differ)
    for extra in ("roc_auc", "bits_per_char"):
        if key != extra and _is_number(test.get(extra)):
            shown += f", {extra} {test[extra]:.4f}"
    seconds = summary.get("train_seconds")
    return [
        info.path.name,
        info.status,
        _section_name(info.config, "data"),
        _section_name(info.config, "model"),
        shown,
        str(summary.get("epochs", "-")),
        f"{seconds:.1f} s" if _is_number(seconds) else "-",
    ]


def _section_name(config: dict[str, Any], section: str) -> str:
    value = config.get(section)
    return str(value.get("name", "?")) if isinstance(value, dict) else "?"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _sort_value(info: Any, metric: str) -> str:
    from torchkeel.evaluate.compare import run_value

    value = run_value(info, metric)
    return "-" if value is None else f"{value:.4f}"
