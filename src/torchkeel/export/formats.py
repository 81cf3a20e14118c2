"""The export formats: how each one is written, and how it is run back to verify it.

Every entry of ``FORMATS`` saves an eval-mode CPU model with a dynamic batch dimension (and a
dynamic sequence length for text) and loads the file again as a function from a batch of
inputs to a batch of outputs, run by the runtime a deployment would use: onnxruntime for ONNX,
libtorch's TorchScript interpreter, and the ``torch.export`` program.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

# run(x) -> y on CPU tensors: (N, *input_shape) -> (N, outputs)
Runner = Callable[[torch.Tensor], torch.Tensor]
# axis -> name of the dimensions that stay free in the exported graph, e.g. {0: "batch"}
DynamicAxes = dict[int, str]

# ONNX files above this size keep their weights in a side file (protobuf's limit is 2 GiB)
ONNX_INLINE_LIMIT = 1 << 30


@dataclass(frozen=True)
class Format:
    suffix: str
    save: Callable[[nn.Module, torch.Tensor, Path, DynamicAxes], dict[str, Any]]  # returns facts for the metadata
    load: Callable[[Path], Runner]
    runtime: Callable[[], str]  # what runs it, with its version, for the report


def save_onnx(model: nn.Module, example: torch.Tensor, path: Path, dynamic: DynamicAxes) -> dict[str, Any]:
    """Through the ``torch.export``-based exporter (the default since torch 2.9)."""
    import onnx

    if getattr(model, "onnx_exporter", "dynamo") == "torchscript":
        return _save_onnx_traced(model, example, path)
    dims = dimensions(model, dynamic)
    large = sum(p.numel() * p.element_size() for p in model.parameters()) > ONNX_INLINE_LIMIT
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=FutureWarning)  # raised by torch internals, not our call
        warnings.simplefilter("ignore", category=DeprecationWarning)
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=True,
            verbose=False,
            input_names=["input"],
            output_names=["output"],
            dynamic_shapes=(dims,),
            external_data=large,
        )
    opset = next((o.version for o in onnx.load(str(path), load_external_data=False).opset_import if not o.domain), None)
    return {"opset": opset}


def _save_onnx_traced(model: nn.Module, example: torch.Tensor, path: Path) -> dict[str, Any]:
    """Through the TorchScript-based exporter, for a model whose outputs' size depends on the
    data (a detector's boxes after NMS), which ``torch.export`` cannot trace; the batch is
    fixed at the example's (the post-processing loops over the images), opset 17."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation of this exporter, tracer warnings on data-dependent loops
        torch.onnx.export(
            model, (example,), str(path), dynamo=False, opset_version=17, input_names=["input"], output_names=["output"]
        )
    return {"opset": 17, "exporter": "torchscript (fixed batch)"}


def dimensions(model: nn.Module, dynamic: DynamicAxes) -> dict[int, Any]:
    """``torch.export`` dimensions of the free axes; a language model's sequence length is
    bounded by its context (``block_size``, the rows of its position table)."""
    limit = getattr(model, "block_size", None)
    return {
        axis: torch.export.Dim(name, min=1, max=limit if name == "length" and isinstance(limit, int) else None)
        for axis, name in dynamic.items()
    }


def load_onnx(path: Path) -> Runner:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {name: x.contiguous().numpy()})[0])

    return run


def save_torchscript(model: nn.Module, example: torch.Tensor, path: Path, dynamic: DynamicAxes) -> dict[str, Any]:
    """Scripted (keeps Python control flow); traced when scripting cannot compile the model.
    TorchScript is deprecated in favour of torch.export but is still what libtorch (C++)
    and older deployments load, hence the silenced FutureWarnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=FutureWarning)
        try:
            module, method = torch.jit.script(model), "script"
        except Exception:  # noqa: BLE001 - any Python construct TorchScript cannot compile
            module, method = torch.jit.trace(model, example), "trace"
        torch.jit.save(module, str(path))
    return {"method": method}


def load_torchscript(path: Path) -> Runner:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=FutureWarning)
        module = torch.jit.load(str(path), map_location="cpu")
    return _no_grad(module)


def save_exported_program(model: nn.Module, example: torch.Tensor, path: Path, dynamic: DynamicAxes) -> dict[str, Any]:
    dims = dimensions(model, dynamic)
    program = torch.export.export(model, (example,), dynamic_shapes=(dims,))
    # torch.export.save would store the example inputs with torch.save (a pickle); without
    # them the archive holds raw weight bytes and JSON only (samples go to safetensors instead)
    program.example_inputs = None
    torch.export.save(program, str(path))
    return {}


def load_exported_program(path: Path) -> Runner:
    return _no_grad(torch.export.load(str(path)).module())


def _no_grad(module: Callable[[torch.Tensor], torch.Tensor]) -> Runner:
    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return module(x)

    return run


def _onnxruntime() -> str:
    import onnxruntime

    return f"onnxruntime {onnxruntime.__version__}"


def _torch() -> str:
    return f"torch {torch.__version__}"


FORMATS: dict[str, Format] = {
    "onnx": Format(".onnx", save_onnx, load_onnx, _onnxruntime),
    "torchscript": Format(".pt", save_torchscript, load_torchscript, _torch),
    "exported-program": Format(".pt2", save_exported_program, load_exported_program, _torch),
}
