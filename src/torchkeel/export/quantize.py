"""Dynamic int8 quantisation of an exported model, and its cost/benefit measured.

"Dynamic": weights of Linear (MatMul/Gemm) and LSTM layers are stored as int8, activations
are quantised on the fly per batch, so no calibration data is needed. Convolutions stay fp32
(dynamic quantisation does not speed them up on CPUs). ONNX models go through onnxruntime's
quantiser, TorchScript models through ``torch.ao.quantization.quantize_dynamic``.
"""

from __future__ import annotations

import copy
import logging
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchkeel.data.bundle import DataSpec
from torchkeel.export.formats import DynamicAxes, Runner, save_torchscript
from torchkeel.tasks import task_of


def quantize_onnx(
    model: nn.Module, fp32_file: Path, out_file: Path, example: torch.Tensor, dynamic: DynamicAxes
) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # shape inference + graph clean-up first, as onnxruntime's quantisation guide asks
    prepared = out_file.with_name(out_file.stem + ".prepared.onnx")
    try:
        quant_pre_process(str(fp32_file), str(prepared))
    except (TypeError, ValueError, KeyError, AttributeError):  # onnxruntime's symbolic shape inference
        # gives up on some graphs (a CTC model's per-clip Gather): ONNX's own shape inference alone
        quant_pre_process(str(fp32_file), str(prepared), skip_symbolic_shape=True)
    quiet = logging.getLogger()  # the quantiser logs advice on the root logger
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        quantize_dynamic(
            str(prepared), str(out_file), op_types_to_quantize=["MatMul", "Gemm", "LSTM"], weight_type=QuantType.QInt8
        )
    finally:
        quiet.setLevel(level)
        prepared.unlink(missing_ok=True)


def quantize_torchscript(
    model: nn.Module, fp32_file: Path, out_file: Path, example: torch.Tensor, dynamic: DynamicAxes
) -> None:
    with warnings.catch_warnings():
        # torch.ao's quantised tensors are deprecated in favour of torchao, which is not a
        # dependency here; they still run and TorchScript still saves them
        warnings.simplefilter("ignore", category=UserWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        quantized = torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(model), {nn.Linear, nn.LSTM}, dtype=torch.qint8
        )
    save_torchscript(quantized, example, out_file, dynamic)


# export format -> quantiser; torch.export cannot yet capture torch.ao's packed int8 weights
QUANTIZERS: dict[str, Callable[[nn.Module, Path, Path, torch.Tensor, DynamicAxes], None]] = {
    "onnx": quantize_onnx,
    "torchscript": quantize_torchscript,
}


@dataclass
class QuantReport:
    """fp32 against int8, both run by the export's own runtime."""

    file: Path
    metric: str | None  # "accuracy" or "rmse"; None without labelled inputs
    before: float | None
    after: float | None
    max_abs_diff: float
    latency_ms: dict[int, tuple[float, float]] = field(default_factory=dict)  # batch -> (fp32, int8) medians
    size_bytes: tuple[int, int] = (0, 0)


def compare(
    fp32: Runner, int8: Runner, x: torch.Tensor, y: torch.Tensor | None, spec: DataSpec, rounds: int = 30
) -> tuple[tuple[str | None, float | None, float | None], float, dict[int, tuple[float, float]]]:
    """Task metric before/after, max |fp32 - int8| of the outputs, and median latencies for a
    batch of one and a full batch, the two models timed alternately so load affects both."""
    out32, out8 = _outputs(fp32, x), _outputs(int8, x)
    diff = (out32 - out8).abs().max().item()
    metric = _metric(spec, out32, y), _metric(spec, out8, y)
    name = None if y is None else _metric_name(spec, y)
    latency = {}
    for batch, repeats in ((1, rounds), (min(len(x), 256), max(3, rounds // 6))):
        xb = x[:batch]
        times: dict[str, list[float]] = {"fp32": [], "int8": []}
        for run in (fp32, int8):  # warm-up: first calls allocate and pick kernels
            run(xb)
        for _ in range(repeats):
            for key, run in (("fp32", fp32), ("int8", int8)):
                t0 = time.perf_counter()
                run(xb)
                times[key].append((time.perf_counter() - t0) * 1e3)
        latency[batch] = (statistics.median(times["fp32"]), statistics.median(times["int8"]))
    return (name, metric[0], metric[1]), diff, latency


def _outputs(run: Runner, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    return torch.cat([run(x[s : s + batch]).float() for s in range(0, len(x), batch)])


def _metric_name(spec: DataSpec, y: Any) -> str:
    if not isinstance(y, torch.Tensor):  # ragged targets (transcripts): the task's own key metric
        return task_of(spec).key_metric
    return "accuracy" if task_of(spec).predict_index is not None else "rmse"


def _metric(spec: DataSpec, out: torch.Tensor, y: Any) -> float | None:
    if y is None:
        return None
    if not isinstance(y, torch.Tensor):
        from torchkeel.evaluate.metrics import MetricAccumulator

        name = _metric_name(spec, y)
        acc = MetricAccumulator(spec, [name], out.device)
        acc.update(out, y)
        return acc.compute()[name]
    predict_index = task_of(spec).predict_index
    if predict_index is None:  # values: root mean squared error
        return (out - y.view_as(out).float()).pow(2).mean().sqrt().item()
    return (predict_index(out) == y.long()).float().mean().item()
