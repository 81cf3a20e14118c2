"""The ``keel`` command: one small function per subcommand (parse -> call the library -> print).

torch is imported inside the commands, never at module level, so ``keel --help`` is instant.
Every KeelError becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from torchkeel import __version__
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
    if nproc is not None or rdzv_endpoint is not None or node_rank is not None or nnodes != "1":
        from torchkeel.train.launch import LaunchOptions, launch

        if nproc is None:
            raise KeelError("--nnodes, --node-rank and --rdzv-endpoint go with --nproc N (processes per node)")
        launch(cfg, LaunchOptions(nproc, nnodes, node_rank, rdzv_endpoint), resume=resume, progress=not quiet)
        return
    from torchkeel.experiment import train as run_training

    run_training(cfg, out, resume=resume, progress=not quiet)


@app.command("eval")
def eval_(
    run: RunArg = "latest",
    split: Annotated[str, typer.Option(help="Split to evaluate: test, val or train.")] = "test",
    out_dir: OutDirOpt = Path("runs"),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Re-evaluate a trained run's model (rebuilt from model.json) on a split of its data."""
    from torchkeel.experiment import evaluate_run
    from torchkeel.runs import resolve_run

    run_dir = resolve_run(run, out_dir)
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
def runs_(out_dir: OutDirOpt = Path("runs")) -> None:
    """List runs with their data, model, key test metric and time."""
    from rich.table import Table

    from torchkeel.runs import find_runs, read_run

    found = find_runs(out_dir)
    if not found:
        out.print(f"no runs in {out_dir}/ yet: train one with `keel train`")
        return
    table = Table(title=f"runs in {out_dir}/", title_justify="left")
    for col in ("run", "status", "data", "model", "test metric", "epochs", "train time"):
        table.add_column(col, justify="right" if col in ("epochs", "train time") else "left")
    for path in found:
        info = read_run(path)
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
        )
    out.print(table)


@app.command("export")
def export_(
    run: RunArg = "latest",
    format_: Annotated[
        str, typer.Option("--format", "-f", help="onnx, torchscript or exported-program (torch.export, .pt2).")
    ] = "onnx",
    quantize: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="'dynamic': also write an int8 copy (Linear/LSTM weights) and compare the two."),
    ] = None,
    dest: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("--out", help="Folder for the exported files (default: RUN/export)."),
    ] = None,
    out_dir: OutDirOpt = Path("runs"),
) -> None:
    """Export a trained model with its preprocessing metadata, verified against PyTorch.

    Writes model.onnx / model.pt / model.pt2, preprocess.json (normalisation, classes, DataSpec,
    tokeniser) and sample_inputs.safetensors. The export is run by its own runtime (onnxruntime
    for ONNX) on the run's test inputs and must match the PyTorch outputs within 1e-4.
    """
    from torchkeel.export import export_run
    from torchkeel.export.report import quant_table, summary_lines
    from torchkeel.runs import resolve_run

    result = export_run(resolve_run(run, out_dir), format_, dest, quantize)
    for line in summary_lines(result):
        out.print(line, highlight=False)
    if result.quantized is not None:
        out.print(quant_table(result.quantized))


@app.command("serve")
def serve_(
    run: RunArg = "latest",
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Server processes, each with its own copy of the model.")] = 1,
    threads: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(min=1, help="torch threads per process (default: the cores divided among the workers)."),
    ] = None,
    max_batch: Annotated[int, typer.Option(min=1, help="Most inputs run in one forward pass.")] = 32,
    max_wait_ms: Annotated[
        float, typer.Option(min=0.0, help="How long a request waits for others to batch with.")
    ] = 2.0,
    max_body_mb: Annotated[float, typer.Option(min=0.001, help="Largest request body accepted (MiB).")] = 8.0,
    out_dir: OutDirOpt = Path("runs"),
) -> None:
    """Serve a trained model over HTTP: a web page at /, POST /predict, /health, /info, /docs.

    Concurrent requests are batched together (dynamic batching); inference runs under
    torch.inference_mode. Stop with Ctrl-C.
    """
    from torchkeel.extras import require
    from torchkeel.runs import resolve_run

    run_dir = resolve_run(run, out_dir)  # before importing torch: a wrong name fails at once
    require("serve", "fastapi", "uvicorn", "multipart")
    from torchkeel.serve.app import check_servable, serve

    check_servable(run_dir)
    shown = f"[{host}]" if ":" in host else host
    out.print(f"serving {run_dir.name} at http://{shown}:{port}/ (web page), /predict, /docs", highlight=False)
    serve(
        run_dir,
        host,
        port,
        workers,
        threads=threads,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        max_body_mb=max_body_mb,
    )


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
