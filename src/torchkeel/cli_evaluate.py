"""The evaluate-and-tune commands of ``keel``: report, explain, lr-find, tune, compare.

Plain functions registered on the app in cli.py (``app.command("report")(report)``); like
every command they parse, call the library and print, importing torch only when they run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)

RunArg = Annotated[str, typer.Argument(help="Run folder, run name, or 'latest'.")]
OutDirOpt = Annotated[Path, typer.Option("--out-dir", help="Folder holding the run folders.")]
ModelCodeOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(
        "--model-code",
        help="For a run of your own model (model: custom): its code, e.g. mypkg.nets:Net or nets.py:Net. "
        "Loading a run never imports code the run folder names; name it here if you trust it.",
    ),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace output files that already exist.")]
SetOpt = Annotated[
    Optional[list[str]],  # noqa: UP045 (typer needs Optional)
    typer.Option("--set", "-s", help="Override a key: --set train.optimizer.lr=0.01 (repeatable)."),
]


def report(run: RunArg = "latest", out_dir: OutDirOpt = Path("runs"), model_code: ModelCodeOpt = None) -> None:
    """Rebuild a run's report.html: config, data, environment, curves, confusion matrix,
    per-class scores, wrong predictions, calibration, saliency / attributions, robustness.

    One self-contained file (images inline): open it in any browser, offline.
    """
    from torchkeel.evaluate.workflow import report_run
    from torchkeel.runs import resolve_run

    path = report_run(resolve_run(run, out_dir), console=out, model_code=model_code)
    out.print(f"report: {path}", highlight=False)


def explain(
    run: RunArg,
    files: Annotated[list[Path], typer.Argument(help="Image files (PNG, JPEG, BMP, WEBP).")],
    output: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("--out", "-o", help="Folder for the images (default: the run's explain/ folder)."),
    ] = None,
    out_dir: OutDirOpt = Path("runs"),
    model_code: ModelCodeOpt = None,
    force: ForceOpt = False,
) -> None:
    """Write saliency and Grad-CAM images showing which pixels drove each prediction."""
    from torchkeel import atomic
    from torchkeel.evaluate.workflow import explain_run
    from torchkeel.runs import resolve_run

    run_dir = resolve_run(run, out_dir)
    folder = output or run_dir / "explain"
    for file in files:  # refused before anything is computed: an input, or an existing image without --force
        if folder.is_dir():
            atomic.check_output(folder / f"{file.stem}.explain.png", "--out", inputs=files, force=force)
    for path, label, prob in explain_run(run_dir, files, output, model_code):
        out.print(f"{path}: predicted {label} ({prob:.1%})", highlight=False)


def lr_find(
    config: Annotated[Optional[Path], typer.Argument(help="YAML config; omitted: the default recipe.")] = None,  # noqa: UP045
    set_: SetOpt = None,
    start_lr: Annotated[float, typer.Option("--start-lr", min=0.0, help="First learning rate.")] = 1e-7,
    end_lr: Annotated[float, typer.Option("--end-lr", min=0.0, help="Last learning rate.")] = 10.0,
    steps: Annotated[int, typer.Option(min=5, help="Mini-batches at most (stops early on divergence).")] = 100,
    plot: Annotated[Path, typer.Option(help="Where to write the plot (PNG); its data goes beside it as JSON.")] = Path(
        "lr-find.png"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    force: ForceOpt = False,
) -> None:
    """Learning-rate range test: an exponential ramp of the config's optimiser's learning rate,
    stopped when the smoothed loss diverges; suggests the lr at the loss minimum / 10.

    The model and optimiser are restored afterwards; nothing is trained for real.
    """
    from torchkeel import atomic
    from torchkeel.config import load_config
    from torchkeel.models import build
    from torchkeel.run_model import prepare_data
    from torchkeel.train import lr_find as finder
    from torchkeel.train import runtime

    cfg = load_config(config, set_)
    inputs = [config] if config is not None else []
    for path in (plot, plot.with_suffix(".json")):
        atomic.check_output(path, "--plot", inputs=inputs, force=force)
    data = prepare_data(cfg)
    runtime.seed_everything(cfg.seed)
    model = build(cfg.model, data.spec)
    result = finder.lr_find(model, data, cfg, start_lr=start_lr, end_lr=end_lr, steps=steps)
    atomic.write_bytes(plot, finder.plot(result))  # checked before the range test ran
    atomic.write_json(plot.with_suffix(".json"), result.to_dict())
    if as_json:
        print(json.dumps({k: v for k, v in result.to_dict().items() if k not in ("lrs", "losses", "smoothed")}))
        return
    end = "stopped when the loss diverged" if result.diverged else f"{len(result.lrs)} steps"
    out.print(
        f"lr-find ({cfg.train.optimizer.name}, {end}): loss lowest at lr {result.min_loss_lr:.2e}, "
        f"steepest at {result.steepest_lr:.2e}\n"
        f"suggested lr {result.suggestion:.2e}  ->  --set train.optimizer.lr={result.suggestion:.2g}\n"
        f"plot: {plot}",
        highlight=False,
    )


def tune(
    config: Annotated[Path, typer.Argument(help="YAML config with a tune: section (the search space).")],
    trials: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(min=1, help="Finished trials the study aims at, resumed ones included (default tune.trials)."),
    ] = None,
    storage: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Optuna database URL shared by workers (default: sqlite in the study folder)."),
    ] = None,
    set_: SetOpt = None,
) -> None:
    """Hyper-parameter search with Optuna (TPE sampler, median pruning per epoch).

    Run it again to resume an interrupted study; every trial is a run folder under
    studies/<name>/runs/; writes studies/<name>/best.yaml and study.html.
    """
    from torchkeel.config import load_config
    from torchkeel.tune import run_study

    cfg = load_config(config, set_)
    result = run_study(cfg, out, trials=trials, storage=storage)
    if result.best_config is None:
        out.print(f"no trial finished yet; study report {result.report}", highlight=False)
        return
    shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.best_params.items())
    out.print(
        f"best {cfg.tune.metric} {result.best_value:.4f} with {shown}\n"
        f"best config: {result.best_config}  (train it: keel train {result.best_config})\n"
        f"study report: {result.report}",
        highlight=False,
    )


def compare(
    runs: Annotated[list[str], typer.Argument(help="Two or more run folders or names.")],
    plot: Annotated[
        Path, typer.Option(help="Where to write the overlaid learning curves (PNG; SVG when the name ends in .svg).")
    ] = Path("compare.png"),
    out_dir: OutDirOpt = Path("runs"),
    force: ForceOpt = False,
) -> None:
    """Compare runs: the config keys that differ, metrics side by side, curves in one PNG."""
    from torchkeel.errors import ConfigError
    from torchkeel.evaluate.compare import compare_runs
    from torchkeel.runs import resolve_run

    if len(runs) < 2:
        raise ConfigError("compare needs at least two runs")
    result = compare_runs([resolve_run(r, out_dir) for r in runs], plot, force)
    table = Table(title="config keys that differ", title_justify="left")
    for col in ["key", *result.runs]:
        table.add_column(col)
    for key, values in result.config_diff:
        table.add_row(key, *[json.dumps(v) for v in values])
    out.print(table if result.config_diff else "configs are identical")
    metrics = Table(title="metrics", title_justify="left")
    for col in ["metric", *result.runs]:
        metrics.add_column(col, justify="left" if col == "metric" else "right")
    for key, values in result.metrics:
        metrics.add_row(key, *[_number(key, v) for v in values])
    out.print(metrics)
    out.print(f"curves: {result.curves}", highlight=False)


def _number(key: str, value: float | None) -> str:
    if value is None:
        return "-"
    if key in ("epochs", "parameters") or abs(value) >= 1e4:
        return f"{value:,.0f}"
    return f"{value:.4f}"
