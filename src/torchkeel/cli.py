"""The ``keel`` command: one small function per subcommand (parse -> call the library -> print).

torch is imported inside the commands, never at module level, so ``keel --help`` is instant.
Every KeelError becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import atexit
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from torchkeel import __version__, cli_deploy, cli_evaluate, cli_generate, cli_inspect, phases
from torchkeel.cli_evaluate import ModelCodeOpt, OutDirOpt, RunArg, SetOpt, out
from torchkeel.errors import ConfigError, DataWarning, KeelError, TrainingInterrupted

app = typer.Typer(
    name="keel",
    help="torchkeel: train, evaluate, explain and deploy neural networks on PyTorch.\n\n"
    "Start with `keel train` (digits + simple_cnn, no download needed).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
STARTED = time.perf_counter()  # the command's start, near enough: what --auto's budget counts from
# pipes and logs get wide tables instead of rich's 80-column default
err = Console(stderr=True, soft_wrap=True)

ConfigArg = Annotated[
    Path | None, typer.Argument(help="YAML config; omitted: the default recipe (digits + simple_cnn).")
]  # noqa: UP045 (typer needs Optional)


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
    resume: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            help="Continue an unfinished run (its folder, name or 'latest') from its newest good checkpoint, "
            "with the config saved in it."
        ),
    ] = None,
    model_code: ModelCodeOpt = None,
    print_config: Annotated[bool, typer.Option("--print-config", help="Print the resolved config and exit.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    profile: Annotated[
        bool, typer.Option("--profile", help="Print where the process's time went: imports, data, training, ...")
    ] = False,
    nproc: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(
            min=1,
            help="Processes per node, DistributedDataParallel through torchrun (gloo on CPU, NCCL on CUDA); "
            "train.batch_size stays the global batch.",
            rich_help_panel="Distributed",
        ),
    ] = None,
    nnodes: Annotated[str, typer.Option(help="Nodes: M, or MIN:MAX (elastic).", rich_help_panel="Distributed")] = "1",
    node_rank: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(min=0, help="This node's rank (fixed ranks); omit for elastic.", rich_help_panel="Distributed"),
    ] = None,
    rdzv_endpoint: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="HOST:PORT of the first node, for --nnodes > 1.", rich_help_panel="Distributed"),
    ] = None,
    auto: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            metavar="BUDGET",
            help="Try the data kind's recipes within a time budget (30s, 5m, 1h) and their ensemble, keep "
            "the best on val, test it once; auto/<name>/leaderboard.json; the same command resumes.",
        ),
    ] = None,
) -> None:
    """Train a model: preprocess, design, forward, loss, backward + update, evaluate.

    Writes a run folder (config.yaml, env.json, metrics.jsonl, checkpoint/, model.safetensors,
    model.json, summary.json) under runs/. Ctrl-C or SIGTERM stops after the current step with a
    checkpoint; `keel train --resume RUN` then continues exactly where it stopped.
    """
    if profile:
        phases.start()
    phases.mark("config")
    from torchkeel.config import load_config

    shortcuts = {
        "data.name": data,
        "model.name": model,
        "train.epochs": epochs,
        "train.device": device,
        "seed": seed,
        "out_dir": str(out_dir) if out_dir else None,
    }
    if resume is not None and (config or set_ or any(v is not None for k, v in shortcuts.items() if k != "out_dir")):
        raise ConfigError("--resume continues a run with the config saved in it: drop the config file and other flags")
    if auto is not None:
        if resume is not None or nproc is not None or print_config:
            raise ConfigError(
                "--auto runs its candidates one by one in this process: drop --resume, --nproc and --print-config"
            )
        from torchkeel.auto import run_auto
        from torchkeel.config import load_raw

        run_auto(load_raw(config, set_, shortcuts), auto, out, progress=not quiet, started=STARTED)
        return
    cfg = load_config(config, set_, shortcuts)
    if print_config:
        out.print(cfg.to_yaml(), end="", highlight=False, markup=False)
        return
    if nproc is not None or rdzv_endpoint is not None or node_rank is not None or nnodes != "1":
        from torchkeel.train.launch import LaunchOptions, launch

        if nproc is None:
            raise KeelError("--nnodes, --node-rank and --rdzv-endpoint go with --nproc N (processes per node)")
        options = LaunchOptions(nproc, nnodes, node_rank, rdzv_endpoint)
        launch(cfg, options, resume=resume, progress=not quiet, model_code=model_code)
        return
    phases.mark("imports (torchkeel and the rest)")
    from torchkeel.experiment import train as run_training

    run_dir = run_training(cfg, out, resume=resume, progress=not quiet, model_code=model_code)
    if profile:
        _print_phases(phases.stop(), run_dir)


def _print_phases(rows: list[tuple[str, float]], run_dir: Path) -> None:
    """The phase table on the console, and in the run folder as profile.json."""
    from rich.table import Table

    from torchkeel import atomic

    atomic.write_json(run_dir / "profile.json", {"seconds": dict(rows)})

    total = rows[-1][1]
    table = Table(title="Where the time went (keel train --profile)", title_justify="left")
    table.add_column("phase")
    table.add_column("seconds", justify="right")
    table.add_column("share", justify="right")
    for name, seconds in rows:
        table.add_row(name, f"{seconds:.3f}", f"{seconds / total:.0%}")
    out.print(table)


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
    model_code: ModelCodeOpt = None,
) -> None:
    """Re-evaluate a trained run's model (rebuilt from model.json) on a split of its data.

    With --attack: clean vs. adversarial accuracy, recorded in robustness.json and the report.
    """
    from torchkeel.run_model import evaluate_run, metric_notes
    from torchkeel.runs import resolve_run

    run_dir = resolve_run(run, out_dir)
    if attack is not None:
        _eval_attack(run_dir, split, attack, eps or [0.1], steps, as_json, model_code)
        return
    metrics, notes = evaluate_run(run_dir, split, model_code), metric_notes(run_dir)
    if as_json:
        print(json.dumps({"run": str(run_dir), "split": split, **metrics} | ({"notes": notes} if notes else {})))
        return
    from rich.table import Table

    table = Table(title=f"{run_dir.name} - {split}", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in [*((k, f"{v:.4f}") for k, v in metrics.items()), *notes.items()]:
        table.add_row(k, v)
    out.print(table)


@app.command()
def predict(
    run: RunArg,
    files: Annotated[
        Optional[list[Path]],  # noqa: UP045
        typer.Argument(
            help="Image files (PNG, JPEG, BMP, WEBP); for a table model a CSV/TSV/JSONL/Parquet file of rows; "
            "for a text model text files, one text per line; for a sound model WAV/FLAC/OGG files."
        ),
    ] = None,
    text: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option("--text", "-t", help="A text to classify or translate (text models; repeatable)."),
    ] = None,
    output: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(
            "--output",
            "-o",
            help="Table models: the predictions CSV to write (default: INPUT.predictions.csv). Segmentation: "
            "the mask PNG to write, with NAME.overlay.png beside it; detection: the image with its boxes drawn "
            "(a folder for several images).",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing predictions file.")] = False,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="Classes to show per input.")] = 3,
    threshold: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option("--threshold", min=0.0, max=1.0, help="Detection: the lowest score of a box shown (default 0.3)."),
    ] = None,
    out_dir: OutDirOpt = Path("runs"),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines, one per input.")] = False,
    max_pixels: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(
            "--max-pixels",
            min=1,
            help="Refuse images whose header declares more pixels than this, before decoding them "
            "(default 40 million).",
        ),
    ] = None,
    model_code: ModelCodeOpt = None,
) -> None:
    """Predict classes (top-k, with probabilities), values, transcripts, translations, masks or boxes.

    Table models write the input rows with the predictions added to a CSV file."""
    from torchkeel.cli_predict import predict_tables, print_prediction, write_pictures
    from torchkeel.data.kinds import kind_of
    from torchkeel.runs import resolve_run
    from torchkeel.serve.predictor import Predictor

    run_dir = resolve_run(run, out_dir)
    predictor = Predictor.from_run(run_dir, top_k=top_k, max_pixels=max_pixels, model_cls=model_code)
    if threshold is not None:
        if not predictor.task.boxes:
            raise KeelError(f"--threshold is for detection runs; {run_dir.name} is a {predictor.task.description} run")
        predictor.spec.extra["score_threshold"] = threshold

    files, kind = files or [], kind_of(predictor.spec)
    if not files and not text:
        raise KeelError("give inputs to predict: files" + (" or --text TEXT" if kind.token_ids else ""))
    if text and not kind.token_ids:
        raise KeelError(f"--text is for text models; this one takes {kind.name} data")
    if kind.features:  # table rows: a file of rows in, the rows with predictions out
        predict_tables(predictor, files, output, as_json, force)
        return
    if kind.token_ids:
        results = (predictor.predict_texts(text) if text else []) + (
            predictor.predict_text_files(files) if files else []
        )
    elif kind.waveform:
        results = predictor.predict_audio([str(f) for f in files])
    else:
        results = predictor.predict_images(files)
    for r in results:
        print_prediction(r, as_json)
    if output is not None:  # a segmentation's mask and overlay, a detector's boxes on the picture
        write_pictures(results, output, predictor.spec, force)


_python_showwarning = warnings.showwarning


def _show_warning(message: Warning | str, category: type[Warning], *args: object, **kwargs: object) -> None:
    """torchkeel's own warnings (skipped files, replaced bytes) as one 'warning:' line."""
    if issubclass(category, DataWarning):
        err.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False)
    else:
        _python_showwarning(message, category, *args, **kwargs)


def _eval_attack(
    run_dir: Path, split: str, method: str, eps: list[float], steps: int, as_json: bool, model_code: str | None
) -> None:
    from torchkeel.config import ATTACKS
    from torchkeel.errors import ConfigError, check_choice
    from torchkeel.evaluate.workflow import attack_run

    check_choice("attack", method, ATTACKS)
    if any(not 0.0 <= e <= 1.0 for e in eps):
        raise ConfigError(f"--eps must be in [0, 1] (pixel units), got {', '.join(f'{e:g}' for e in eps)}")
    results = attack_run(run_dir, method, eps, steps, split, model_code)
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


# data and run inspection commands (cli_inspect.py), registered explicitly
app.command("data")(cli_inspect.data)
app.command("runs")(cli_inspect.runs)


# evaluate-and-tune commands (cli_evaluate.py), registered explicitly
app.command("report")(cli_evaluate.report)
app.command("explain")(cli_evaluate.explain)
app.command("lr-find")(cli_evaluate.lr_find)
app.command("tune")(cli_evaluate.tune)
app.command("compare")(cli_evaluate.compare)


# model, GAN-sample, export and serve commands (cli_deploy.py), registered explicitly
app.command("models")(cli_deploy.models)
app.command("sample")(cli_deploy.sample)
app.command("export")(cli_deploy.export_)
app.command("serve")(cli_deploy.serve_)
app.command("generate")(cli_generate.generate)  # language models (cli_generate.py)


def main() -> None:
    """Entry point: KeelError -> one line on stderr, exit 2; Ctrl-C -> exit 130. Training stopped
    by SIGINT/SIGTERM exits 130/143 after saying how to resume."""
    warnings.showwarning = _show_warning
    atexit.unregister(_leave_objects_to_the_os)  # once, however often a session calls main
    atexit.register(_leave_objects_to_the_os)  # at the interpreter's exit, not when main returns
    try:
        app()
    except TrainingInterrupted as e:
        err.print(f"[bold yellow]stopped:[/] {escape(str(e))}", highlight=False)
        sys.exit(e.exit_code)
    except KeelError as e:
        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except (MemoryError, RuntimeError) as e:  # a backstop: the estimates (torchkeel.memory) come first
        from torchkeel.memory import allocation_message, is_allocation_error

        if not is_allocation_error(e):
            raise
        err.print(f"[bold red]error:[/] {escape(allocation_message(e, 'running'))}", highlight=False)
        sys.exit(2)


def _leave_objects_to_the_os() -> None:
    """The process is exiting: keep the interpreter's exit from garbage-collecting every object
    torch and the run made. Those last collections cost 0.6-0.75 s of wall time after `import
    torch` on a 2-core host (`python -c "import torch"` 3.3-3.6 s, 2.7-2.8 s with this;
    benchmarks/RESULTS.md), for memory the OS takes back anyway. ``gc.freeze`` moves the
    objects out of the collector's sight (as Instagram's servers skip the exit-time collection,
    "Dismissing Python Garbage Collection at Instagram", 2017). It runs as an atexit handler,
    so only when the interpreter shuts down (a session that calls ``main`` and goes on keeps
    its collector); module teardown and the flushing of open files still run, and every file
    of a run is written and closed before this point (atomic.py)."""
    import gc

    gc.disable()
    gc.freeze()
