"""The ``keel`` command: one small function per subcommand (parse -> call the library -> print).

torch is imported inside the commands, never at module level, so ``keel --help`` is instant.
Every KeelError becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

from torchkeel import __version__, cli_evaluate
from torchkeel.errors import KeelError

app = typer.Typer(
    name="keel",
    help="torchkeel: train, evaluate, explain and deploy neural networks on PyTorch.\n\n"
    "Start with `keel train` (digits + simple_cnn, no download needed).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
# pipes and logs get wide tables instead of rich's 80-column default
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, soft_wrap=True)

ConfigArg = Annotated[
    Path | None, typer.Argument(help="YAML config; omitted: the default recipe (digits + simple_cnn).")
]  # noqa: UP045 (typer needs Optional)
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", "-s", help="Override a key: --set train.optimizer.lr=0.01 (repeatable).")
]  # noqa: UP045
OutDirOpt = Annotated[Path, typer.Option("--out-dir", help="Folder holding the run folders.")]
RunArg = Annotated[str, typer.Argument(help="Run folder, run name, or 'latest'.")]


def _version(value: bool) -> None:
    if value:
        out.print(f"torchkeel {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    pass


@app.command()
def train(
    config: ConfigArg = None,
    set_: SetOpt = None,
    data: Annotated[Optional[str], typer.Option(help="Data set name (data.name).")] = None,  # noqa: UP045
    model: Annotated[Optional[str], typer.Option(help="Model name (model.name).")] = None,  # noqa: UP045
    epochs: Annotated[Optional[int], typer.Option(help="Epochs (train.epochs).")] = None,  # noqa: UP045
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda, cuda:1, mps (train.device).")] = None,  # noqa: UP045
    seed: Annotated[Optional[int], typer.Option(help="Random seed (seed).")] = None,  # noqa: UP045
    out_dir: Annotated[Optional[Path], typer.Option("--out-dir", help="Folder for run folders (out_dir).")] = None,  # noqa: UP045
    resume: Annotated[Optional[str], typer.Option(help="Continue an unfinished run: its folder or 'latest'.")] = None,  # noqa: UP045
    print_config: Annotated[bool, typer.Option("--print-config", help="Print the resolved config and exit.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Train a model: preprocess, design, forward, loss, backward + update, evaluate.

    Writes a run folder (config.yaml, env.json, metrics.jsonl, checkpoint/, model.safetensors,
    model.json, summary.json) under runs/.
    """
    from torchkeel.config import load_config

    shortcuts = {
        "data.name": data,
        "model.name": model,
        "train.epochs": epochs,
        "train.device": device,
        "seed": seed,
        "out_dir": str(out_dir) if out_dir else None,
    }
    cfg = load_config(config, set_, shortcuts)
    if print_config:
        out.print(cfg.to_yaml(), end="", highlight=False, markup=False)
        return
    from torchkeel.experiment import train as run_training

    run_training(cfg, out, resume=resume, progress=not quiet)


@app.command("eval")
def eval_(
    run: RunArg = "latest",
    split: Annotated[str, typer.Option(help="Split to evaluate: test, val or train.")] = "test",
    out_dir: OutDirOpt = Path("runs"),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    attack: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Accuracy under adversarial attack: fgsm or pgd (image classifiers)."),
    ] = None,
    eps: Annotated[
        Optional[list[float]],  # noqa: UP045
        typer.Option(help="Attack budget per pixel, in [0, 1] pixel units (repeatable; default 0.1)."),
    ] = None,
    steps: Annotated[int, typer.Option(min=1, help="PGD iterations.")] = 10,
) -> None:
    """Re-evaluate a trained run's model (rebuilt from model.json) on a split of its data.

    With --attack: clean vs. adversarial accuracy, recorded in robustness.json and the report.
    """
    from torchkeel.experiment import evaluate_run
    from torchkeel.runs import resolve_run

    run_dir = resolve_run(run, out_dir)
    if attack is not None:
        _eval_attack(run_dir, split, attack, eps or [0.1], steps, as_json)
        return
    metrics = evaluate_run(run_dir, split)
    if as_json:
        print(json.dumps({"run": str(run_dir), "split": split, **metrics}))
        return
    from rich.table import Table

    table = Table(title=f"{run_dir.name} - {split}", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        table.add_row(k, f"{v:.4f}")
    out.print(table)


@app.command()
def predict(
    run: RunArg,
    files: Annotated[list[Path], typer.Argument(help="Image files (PNG, JPEG, BMP, WEBP).")],
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="Classes to show per input.")] = 3,
    out_dir: OutDirOpt = Path("runs"),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines, one per input.")] = False,
) -> None:
    """Predict the top-k classes (with probabilities) for input files."""
    from torchkeel.runs import resolve_run
    from torchkeel.serve.predictor import Predictor

    predictor = Predictor.from_run(resolve_run(run, out_dir), top_k=top_k)
    results = predictor.predict_images(files)
    for r in results:
        if as_json:
            print(json.dumps(r.to_dict()))
        elif r.value is not None:
            out.print(f"{r.source}: {', '.join(f'{v:.4f}' for v in r.value)}", highlight=False)
        else:
            tops = "  ".join(f"{c} {p:.1%}" for c, p in r.top)
            note = f"  ({r.note})" if r.note else ""
            out.print(f"{r.source}: {tops}{note}", highlight=False)


@app.command("runs")
def runs_(
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
        path = info.path
        test = info.summary.get("test", {})
        key = next((k for k in ("accuracy", "r2", "rmse", "loss") if k in test), None)
        table.add_row(
            path.name,
            info.status,
            str(info.config.get("data", {}).get("name", "?")),
            str(info.config.get("model", {}).get("name", "?")),
            f"{key} {test[key]:.4f}" if key else "-",
            str(info.summary.get("epochs", "-")),
            f"{info.summary['train_seconds']:.1f} s" if "train_seconds" in info.summary else "-",
            *([_sort_value(info, sort)] if sort is not None else []),
        )
    out.print(table)


def _sort_value(info: Any, metric: str) -> str:
    from torchkeel.evaluate.compare import run_value

    value = run_value(info, metric)
    return "-" if value is None else f"{value:.4f}"


def _eval_attack(run_dir: Path, split: str, method: str, eps: list[float], steps: int, as_json: bool) -> None:
    from torchkeel.config import ATTACKS
    from torchkeel.errors import ConfigError, check_choice
    from torchkeel.evaluate.workflow import attack_run

    check_choice("attack", method, ATTACKS)
    if any(not 0.0 <= e <= 1.0 for e in eps):
        raise ConfigError(f"--eps must be in [0, 1] (pixel units), got {', '.join(f'{e:g}' for e in eps)}")
    results = attack_run(run_dir, method, eps, steps, split)
    if as_json:
        for r in results:
            print(json.dumps({"run": str(run_dir), "split": split, **r}))
        return
    from rich.table import Table

    table = Table(title=f"{run_dir.name} - {split} under {method}", title_justify="left")
    for col in ("eps", "clean accuracy", "adversarial accuracy"):
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(f"{r['eps']:g}", f"{r['clean_accuracy']:.4f}", f"{r['adversarial_accuracy']:.4f}")
    out.print(table)
    out.print(f"recorded in {run_dir / 'robustness.json'} and the report", highlight=False)


# evaluate-and-tune commands (cli_evaluate.py), registered explicitly
app.command("report")(cli_evaluate.report)
app.command("explain")(cli_evaluate.explain)
app.command("lr-find")(cli_evaluate.lr_find)
app.command("tune")(cli_evaluate.tune)
app.command("compare")(cli_evaluate.compare)


def main() -> None:
    """Entry point: KeelError -> one line on stderr, exit 2; Ctrl-C -> exit 130."""
    try:
        app()
    except KeelError as e:
        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
