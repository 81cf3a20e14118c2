"""Export a trained run to ONNX, TorchScript or a ``torch.export`` program, verified.

``export_run(RUN, "onnx")`` writes ``RUN/export/model.onnx`` and, beside it,
``preprocess.json`` (how to turn raw inputs into the model's input: normalisation, class
names, the DataSpec, the tokeniser files when the run has them) and
``sample_inputs.safetensors`` (a few preprocessed inputs with the PyTorch outputs, to check a
deployment against). Before anything is moved into place the exported file is run by its own
runtime on the run's test inputs, at several batch sizes, and must match the PyTorch model
within ``TOLERANCE`` times the outputs' scale (their largest magnitude, at least 1: fp32
rounding grows with the numbers, and a speech model's logits reach 10 or more).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from torchkeel import __version__, atomic
from torchkeel.data.bundle import DataSpec
from torchkeel.data.kinds import kind_of
from torchkeel.errors import ExportError, KeelError, check_choice
from torchkeel.export.formats import FORMATS, DynamicAxes, Runner
from torchkeel.export.quantize import QUANTIZERS, QuantReport, compare
from torchkeel.extras import require
from torchkeel.models.layers import whole_inputs
from torchkeel.tasks import task_of

TOLERANCE = 1e-4  # max |exported - PyTorch| over the outputs, over max(1, max |output|), fp32
QUANTIZE = ("dynamic",)
VERIFY_LIMIT = 1024  # test inputs used to verify
SAMPLES_KEPT = 8  # inputs stored in sample_inputs.safetensors


@dataclass
class ExportResult:
    model_file: Path
    format: str
    runtime: str
    inputs: int
    input_source: str  # "the test split" or why random inputs were used
    batch_sizes: list[int]
    max_abs_diff: float
    dynamic: DynamicAxes
    quantized: QuantReport | None = None
    prompt_lengths: list[int] = field(default_factory=list)  # a language model's prompts checked, in tokens
    output_scale: float = 1.0  # max(1, largest |PyTorch output|): the tolerance scales with it

    @property
    def folder(self) -> Path:
        return self.model_file.parent


def _export_folder(out: Path) -> Path:
    """The folder the export goes to, made if missing; a file there is never replaced."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file; --out takes a folder (the export writes model files into it)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"--out {out}: cannot create the folder ({e.strerror}); give a writable folder") from None
    return out


def export_run(
    run_dir: str | Path,
    fmt: str = "onnx",
    out_dir: str | Path | None = None,
    quantize: str | None = None,
    tolerance: float = TOLERANCE,
    force: bool = False,
    model_code: Any = None,
) -> ExportResult:
    """Export the trained model of ``run_dir`` (default folder: ``run_dir/export``). Other
    formats of the same run share a folder; replacing an earlier export of this format, or
    exporting into another run's export folder, takes ``force``. ``model_code``: a custom
    model's code (see models.rebuild)."""
    from torchkeel.run_model import load_model, run_task

    check_choice("export format", fmt, FORMATS, ExportError)
    if quantize is not None:
        check_choice("quantization", quantize, QUANTIZE, ExportError)
        if fmt not in QUANTIZERS:
            raise ExportError(f"--quantize {quantize} works with --format {' or '.join(QUANTIZERS)}, not {fmt}")
    if fmt == "onnx":
        require("export", "onnx", "onnxscript", "onnxruntime")
    run_dir = Path(run_dir)
    model, spec, meta = load_model(run_dir, "cpu", model_code)
    run_task(spec, "export", run_dir)
    x, y, source = verification_inputs(run_dir, spec)
    out = _export_folder(Path(out_dir) if out_dir is not None else run_dir / "export")
    if task_of(spec).export_as == "encoder_decoder":  # translation: the graphs a decoding loop calls
        return export_encoder_decoder(model, spec, meta, run_dir, out, (fmt, quantize, tolerance, force), x, source)
    _check_destination(out, run_dir, fmt, quantize, force)
    form, dynamic = FORMATS[fmt], dynamic_axes(spec)
    example = x[:2]  # two samples: a batch of one would let the exporter fix the batch size at 1
    if task_of(spec).export_batch is not None:  # a graph that loops over its images (a detector's NMS)
        dynamic, example = {}, x[: task_of(spec).export_batch]
        x = x[:FIXED_BATCH_CHECKED]

    # everything is written to a scratch folder and moved into place only once verified
    with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as scratch:
        file = Path(scratch) / f"model{form.suffix}"
        facts = _save(form.save, model, example, file, dynamic, fmt)
        runner = form.load(file)
        diff, sizes, lengths, scale = verify_export(model, runner, x, spec, fmt, tolerance)
        report = None
        if quantize is not None:
            report = quantized_copy(model, fmt, file, runner, example, dynamic, x, y, spec)
            report.file = out / report.file.name
        for produced in Path(scratch).iterdir():
            os.replace(produced, out / produced.name)

    result = ExportResult(
        out / file.name, fmt, form.runtime(), len(x), source, sizes, diff, dynamic, report, lengths, scale
    )
    write_metadata(out, run_dir, spec, meta, result, facts)
    write_samples(out / "sample_inputs.safetensors", model, x[:SAMPLES_KEPT])
    for tokenizer in sorted(run_dir.glob("tokenizer*.json")):  # the text pipeline's saved tokeniser
        if out.resolve() != run_dir.resolve():  # --out RUN: it is there already
            shutil.copyfile(tokenizer, out / tokenizer.name)
    return result


def export_encoder_decoder(
    model: torch.nn.Module,
    spec: DataSpec,
    meta: dict[str, Any],
    run_dir: Path,
    out: Path,
    options: tuple[str, str | None, float, bool],
    x: torch.Tensor,
    source: str,
) -> ExportResult:
    """encoder.onnx and decoder_step.onnx (export/seq2seq.py), verified by greedy decoding."""
    from torchkeel.export.seq2seq import save_graphs, verify_graphs

    fmt, quantize, tolerance, force = options
    if fmt != "onnx" or quantize is not None:
        raise ExportError("a translation run exports to ONNX only (--format onnx), without --quantize")
    for name in ("encoder.onnx", "decoder_step.onnx"):
        atomic.check_output(out / name, "--out", inputs=[run_dir / "model.safetensors"], force=force)
    with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as scratch:
        files = _save(lambda m, e, p, d: save_graphs(m, e, p), model, x[:2], Path(scratch), {}, fmt)
        checked = verify_graphs(model, files, x, tolerance)
        for produced in Path(scratch).iterdir():
            os.replace(produced, out / produced.name)
    dynamic = {0: "batch", 1: "length"}
    result = ExportResult(out / "encoder.onnx", fmt, FORMATS[fmt].runtime(), checked["sentences"], source,
                          [checked["sentences"]], checked["max_abs_diff"], dynamic, None, [],
                          checked["output_scale"])  # fmt: skip
    loop = {
        "bos": 2,
        "eos": 3,
        "pad": 0,
        "max_tokens": "1.5 x source tokens + 10",
        "detokenise": "tokenizer in spec.extra",
    }
    facts = {"graphs": ["encoder.onnx", "decoder_step.onnx"], "decoding": loop}
    write_metadata(out, run_dir, spec, meta, result, facts)
    source_ids, translations = checked["samples"]  # PyTorch's greedy translations of test sentences
    tensors = {"input": source_ids[:SAMPLES_KEPT].contiguous(), "output": translations[:SAMPLES_KEPT].contiguous()}
    atomic.write_bytes(out / "sample_inputs.safetensors", safetensors.torch.save(tensors))
    return result


def _check_destination(out: Path, run_dir: Path, fmt: str, quantize: str | None, force: bool) -> None:
    """Without ``force``, refuse to replace an earlier export of this format in ``out``, or to
    mix this run into the export of another run; never write over the run's own files."""
    from torchkeel.runs import RUN_INPUTS

    suffix = FORMATS[fmt].suffix
    for name in [f"model{suffix}"] + ([f"model.int8{suffix}"] if quantize else []):
        atomic.check_output(out / name, "--out", inputs=[run_dir / n for n in RUN_INPUTS], force=force)
    other = _previous_export(out).get("source_run", run_dir.name)
    if other != run_dir.name and not force:
        raise ExportError(
            f"--out {out} holds the export of another run, {other}: choose another folder, or add --force to replace it"
        )


def _previous_export(out: Path) -> dict[str, Any]:
    """The preprocess.json an earlier export left in ``out`` ({} when none or unreadable)."""
    try:
        doc = json.loads((out / "preprocess.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def quantized_copy(
    model: torch.nn.Module,
    fmt: str,
    file: Path,
    fp32: Runner,
    example: torch.Tensor,
    dynamic: DynamicAxes,
    x: torch.Tensor,
    y: torch.Tensor | None,
    spec: DataSpec,
) -> QuantReport:
    """model.int8.* beside ``file``, compared with the fp32 export in the same runtime."""
    int8_file = file.with_name(f"model.int8{FORMATS[fmt].suffix}")
    _save(lambda m, e, p, d: QUANTIZERS[fmt](m, file, p, e, d) or {}, model, example, int8_file, dynamic, fmt)
    (name, before, after), diff, latency = compare(fp32, FORMATS[fmt].load(int8_file), x, y, spec)
    sizes = (file.stat().st_size, int8_file.stat().st_size)
    return QuantReport(int8_file, name, before, after, diff, latency, sizes)


def _save(save: Any, model: torch.nn.Module, example: torch.Tensor, file: Path, dynamic: DynamicAxes, fmt: str) -> Any:
    try:
        return save(model, example, file, dynamic)
    except KeelError:
        raise
    except Exception as e:  # noqa: BLE001 - exporters raise many types; the user needs the one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f"cannot export this model to {fmt}: {first[:300]}") from None


FIXED_BATCH_CHECKED = 16  # inputs verified one batch at a time when the graph's batch is fixed


def dynamic_axes(spec: DataSpec) -> DynamicAxes:
    """The batch is always free; so is the sequence length of token ids, but for an ensemble's
    rows, whose members' ids sit in fixed columns (spec.member_widths)."""
    return {0: "batch", 1: "length"} if kind_of(spec).token_ids and spec.member_widths is None else {0: "batch"}


def verification_inputs(run_dir: Path, spec: DataSpec) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """The run's test split rebuilt from its config and seed; when the data set's files are not
    on this machine, seeded random inputs of the right shape and type (no labels)."""
    from torchkeel.run_model import load_run_config, prepare_data

    try:
        test = prepare_data(load_run_config(run_dir), spec).test  # a text set reuses the run's tokeniser
        n = min(len(test), VERIFY_LIMIT)
        return test.x[:n].cpu(), test.y[:n].to("cpu"), "the test split"  # y: a tensor or a Ragged
    except KeelError as e:
        reason = f"random inputs (test data unavailable: {e})"
    g = torch.Generator().manual_seed(0)
    n = 64
    if kind_of(spec).token_ids:
        vocab = int(spec.extra.get("vocab_size", 2))
        x = torch.randint(2, max(vocab, 3), (n, *spec.input_shape), generator=g)
    else:
        x = torch.randn(n, *spec.input_shape, generator=g)  # inputs are standardised
    return x, None, reason


def verify_export(
    model: torch.nn.Module, run: Runner, x: torch.Tensor, spec: DataSpec, fmt: str, tolerance: float
) -> tuple[float, list[int], list[int], float]:
    """(max |exported - PyTorch|, batch sizes, prompt lengths checked, output scale); an
    ExportError beyond ``tolerance`` times the scale. A language model is also checked on real
    prompts at other lengths."""
    diff, sizes, scale = verify(model, run, x, task_of(spec).export_batch or 256)
    if not diff < tolerance * scale:
        raise ExportError(
            f"the {fmt} export differs from the PyTorch model by up to {diff:.2e} "
            f"(limit {tolerance:.0e} x {scale:.3g}, the outputs' scale); nothing was written"
        )
    if "generate" not in task_of(spec).uses:
        return diff, sizes, [], scale
    from torchkeel.export.lm import verify_prompts

    prompt_diff, lengths = verify_prompts(model, run, spec, tolerance)
    return max(diff, prompt_diff), sizes, lengths, scale


@torch.inference_mode()
def verify(model: torch.nn.Module, run: Runner, x: torch.Tensor, batch: int = 256) -> tuple[float, list[int], float]:
    """Max |exported - PyTorch| over ``x`` in batches of ``batch`` and the remainder, plus a
    batch of one (a batch dimension baked in at export time fails here); the sizes; and the
    outputs' scale, max(1, max |PyTorch output|)."""
    worst, sizes, scale = 0.0, [], 1.0
    chunks = [x[s : s + batch] for s in range(0, len(x), batch)] + [x[:1]] * (batch > 1)
    for chunk in chunks:
        with whole_inputs():  # as the exported graph takes it (no eager-only trimming)
            expected = model(chunk).float()
        got = run(chunk).float()
        if got.shape != expected.shape:
            raise ExportError(f"the export gives outputs of shape {tuple(got.shape)}, expected {tuple(expected.shape)}")
        worst = max(worst, (got - expected).abs().max().item())
        scale = max(scale, expected.abs().max().item())
        sizes.append(len(chunk))
    return worst, sizes, scale


def write_metadata(
    out: Path, run_dir: Path, spec: DataSpec, meta: dict[str, Any], result: ExportResult, facts: dict[str, Any]
) -> None:
    """preprocess.json: the same preprocessing for every format; ``models`` lists each file
    exported to this folder with how it was verified."""
    path, previous = out / "preprocess.json", _previous_export(out)
    models = previous.get("models", {}) if previous.get("source_run") == run_dir.name else {}
    models[result.model_file.name] = {
        "format": result.format,
        **facts,
        "verified_with": result.runtime,
        "verified_inputs": result.inputs,
        "verified_on": result.input_source,
        "max_abs_diff": result.max_abs_diff,
        "output_scale": result.output_scale,
    }
    if result.quantized is not None:
        models[result.quantized.file.name] = {"format": result.format, "quantized": "dynamic int8 (Linear, LSTM)"}
    text = kind_of(spec).token_ids
    doc = {
        "format": "torchkeel-export-1",
        "torchkeel": __version__,
        "torch": torch.__version__,
        "source_run": run_dir.name,
        "kind": spec.kind,
        "task": spec.task,
        "classes": spec.classes,
        "input": {
            "name": "input",
            "shape": ["batch", "length"] if text else ["batch", *spec.input_shape],
            "dtype": "int64" if text else "float32",
        },
        "output": {"name": "output", "shape": output_shape(spec), "meaning": task_of(spec).export_output},
        "preprocess": preprocess_steps(spec),
        "tokenizer_files": sorted(p.name for p in run_dir.glob("tokenizer*.json")),
        "spec": spec.to_dict(),
        "model": meta["model"],
        "models": models,
    }
    atomic.write_json(path, doc)


def output_shape(spec: DataSpec) -> list[Any]:
    """A language model answers at every position: (batch, length, vocab); the rest (batch, outputs)."""
    if "generate" in task_of(spec).uses:
        return ["batch", "length", spec.output_size]
    if task_of(spec).export_batch is not None:  # a detector: its rows of box, score, class
        return [task_of(spec).export_batch, "detections", 6]
    return ["batch", spec.output_size]


def preprocess_steps(spec: DataSpec) -> dict[str, Any]:
    """What ``serve.predictor`` does to a raw input, spelled out for other runtimes."""
    if kind_of(spec).pixels:
        c, h, w = spec.input_shape
        return {
            "decode": "grey (L)" if c == 1 else "RGB",
            "resize": {"height": h, "width": w, "filter": "bilinear"},
            "scale": "pixel / 255 -> [0, 1], layout (C, H, W)",
            "invert_if_light_background": spec.extra.get("background") == "dark",
            "normalise": {"mean": spec.mean, "std": spec.std, "per": "channel", "formula": "(x - mean) / std"},
        }
    steps: dict[str, Any] = {"see": "spec.extra (vocabulary, column statistics) and tokenizer_files"}
    if spec.mean is not None:
        steps["normalise"] = {"mean": spec.mean, "std": spec.std, "per": "feature", "formula": "(x - mean) / std"}
    return steps


@torch.inference_mode()
def write_samples(path: Path, model: torch.nn.Module, x: torch.Tensor) -> None:
    with whole_inputs(), torch.inference_mode():  # the output the exported graph gives for this input
        output = model(x).float().contiguous()
    tensors = {"input": x.contiguous(), "output": output}
    atomic.write_bytes(path, safetensors.torch.save(tensors, metadata={"torchkeel": __version__}))


__all__ = ["FORMATS", "QUANTIZE", "TOLERANCE", "ExportResult", "export_run"]
