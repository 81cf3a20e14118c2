"""The `keel models`, `keel sample`, `keel export` and `keel serve` commands, registered in
cli.py. Like every command they parse, call the library and print, importing torch only
when they run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.markup import escape

from torchkeel.cli_evaluate import ModelCodeOpt, OutDirOpt, RunArg, out
from torchkeel.errors import KeelError

if TYPE_CHECKING:
    from torchkeel.data.bundle import DataSpec


def models(
    data: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Also build every model that takes this data set and show its parameter count."),
    ] = None,
) -> None:
    """List the models: name, the kinds of data they take, a one-line description.

    Set options under `model:` in a config (`keel train --print-config --model NAME` shows them all).
    """
    from rich.table import Table

    from torchkeel.models import ACCEPTS, MODELS, describe

    spec = None
    if data is not None:
        from torchkeel.config import DataConfig
        from torchkeel.data import load

        try:
            spec = load(DataConfig(name=data)).spec
        except ValueError as e:  # pydantic's error for an unknown data set name
            raise KeelError(f"--data: {e.errors()[0]['msg'].removeprefix('Value error, ')}") from None
    title = "models" + (f" for {spec.name} ({spec.kind}, input {tuple(spec.input_shape)})" if spec else "")
    table = Table(title=title, title_justify="left")
    table.add_column("model")
    table.add_column("takes")
    if spec is not None:
        table.add_column("parameters", justify="right")
    table.add_column("description")
    for name in MODELS:
        row = [name, ", ".join(ACCEPTS[name])]
        if spec is not None:
            row.append(_parameter_count(name, spec))
        table.add_row(*row, escape(describe(name)))
    out.print(table)


def _parameter_count(name: str, spec: DataSpec) -> str:
    from torchkeel.models import ACCEPTS, build, count_parameters

    if spec.kind not in ACCEPTS[name]:
        return "-"
    if name == "custom":
        return "yours"
    try:
        return f"{count_parameters(build(name, spec)):,}"
    except KeelError:
        return "n/a"  # e.g. images too small for the model


def sample(
    run: RunArg = "latest",
    n: Annotated[int, typer.Option("--n", min=1, max=4096, help="Number of samples.")] = 64,
    out_file: Annotated[Path, typer.Option("--out", help="PNG file to write the grid to.")] = Path("samples.png"),
    seed: Annotated[int, typer.Option(help="Seed of the noise: the same seed gives the same grid.")] = 0,
    label: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(help="Class index to generate (class-conditional GANs; default: classes in turn)."),
    ] = None,
    nrow: Annotated[int, typer.Option(min=1, help="Images per row of the grid.")] = 8,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out file.")] = False,
    out_dir: OutDirOpt = Path("runs"),
) -> None:
    """Draw samples from a trained GAN run and save them as one PNG grid."""
    from torchkeel import atomic
    from torchkeel.runs import RUN_INPUTS, resolve_run
    from torchkeel.train.gan_sample import sample_png

    run_dir = resolve_run(run, out_dir)
    atomic.check_output(out_file, "--out", inputs=[run_dir / name for name in RUN_INPUTS], force=force)
    png = sample_png(run_dir, n, seed=seed, label=label, nrow=nrow)
    atomic.write_bytes(out_file, png)
    out.print(f"{n} samples -> {out_file}", highlight=False)


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
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier export of this format.")] = False,
    out_dir: OutDirOpt = Path("runs"),
    model_code: ModelCodeOpt = None,
) -> None:
    """Export a trained model with its preprocessing metadata, verified against PyTorch.

    Writes model.onnx / model.pt / model.pt2, preprocess.json (normalisation, classes, DataSpec,
    tokeniser) and sample_inputs.safetensors. The export is run by its own runtime (onnxruntime
    for ONNX) on the run's test inputs and must match the PyTorch outputs within 1e-4.
    """
    from torchkeel.export import export_run
    from torchkeel.export.report import quant_table, summary_lines
    from torchkeel.runs import resolve_run

    result = export_run(resolve_run(run, out_dir), format_, dest, quantize, force=force, model_code=model_code)
    for line in summary_lines(result):
        out.print(line, highlight=False)
    if result.quantized is not None:
        out.print(quant_table(result.quantized))


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
    read_timeout: Annotated[
        float,
        typer.Option(
            min=0.01, help="Seconds a request's headers, and then its body, may take to arrive (then 408 or closed)."
        ),
    ] = 30.0,
    out_dir: OutDirOpt = Path("runs"),
    model_code: ModelCodeOpt = None,
) -> None:
    """Serve a trained model over HTTP: a web page at /, POST /predict, /health, /info, /docs.

    A language model answers POST /generate and /generate/stream (server-sent events) instead.

    Concurrent requests are batched together (dynamic batching); inference runs under
    torch.inference_mode. Limits: --max-body-mb, --read-timeout, JSON nested at most 32 deep.
    Stop with Ctrl-C.
    """
    from torchkeel.extras import require
    from torchkeel.runs import resolve_run

    run_dir = resolve_run(run, out_dir)  # before importing torch: a wrong name fails at once
    require("serve", "fastapi", "uvicorn", "multipart")
    from torchkeel.serve.app import check_servable
    from torchkeel.serve.server import listen, serve

    sock = listen(host, port)  # a port in use fails here, before the model loads
    endpoints = check_servable(run_dir, model_code)
    shown = f"[{host}]" if ":" in host else host
    out.print(f"serving {run_dir.name} at http://{shown}:{port}/ (web page), {', '.join(endpoints)}", highlight=False)
    serve(
        run_dir,
        sock,
        workers,
        read_timeout,
        threads=threads,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        max_body_mb=max_body_mb,
        model_code=model_code,
    )
