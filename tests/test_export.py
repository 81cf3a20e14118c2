"""Export: every format run back by its own runtime against the PyTorch model, dynamic
batch, metadata beside the model, quantisation before/after, errors."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from conftest import assert_one_line_error, keel

from torchkeel.errors import ExportError
from torchkeel.experiment import load_model, load_run_config, prepare_data
from torchkeel.export import TOLERANCE, export_run


@pytest.fixture(scope="module")
def reference(trained_run: Path):
    """The PyTorch model and its test inputs, rebuilt independently of the exporter."""
    model, spec, _ = load_model(trained_run)
    test = prepare_data(load_run_config(trained_run)).test
    return model, spec, test


def _torch_outputs(model, x):
    with torch.inference_mode():
        return model(x).numpy()


def test_onnx_runs_in_onnxruntime_with_a_dynamic_batch(trained_run: Path, tmp_path: Path, reference):
    import onnx
    import onnxruntime as ort

    model, spec, test = reference
    result = export_run(trained_run, "onnx", tmp_path)
    assert result.model_file == tmp_path / "model.onnx" and result.max_abs_diff < TOLERANCE
    assert result.inputs == len(test) and result.input_source == "the test split"

    graph = onnx.load(str(result.model_file)).graph
    batch_dim = graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value  # symbolic, not fixed
    session = ort.InferenceSession(str(result.model_file), providers=["CPUExecutionProvider"])
    for n in (1, 7, len(test)):
        x = test.x[:n]
        got = session.run(None, {"input": x.numpy()})[0]
        assert got.shape == (n, 10)
        assert np.abs(got - _torch_outputs(model, x)).max() < TOLERANCE

    meta = json.loads((tmp_path / "preprocess.json").read_text())
    assert meta["classes"] == spec.classes and meta["task"] == "classification"
    assert meta["preprocess"]["normalise"]["mean"] == spec.mean and meta["preprocess"]["normalise"]["std"] == spec.std
    assert meta["preprocess"]["invert_if_light_background"] is True
    assert meta["input"]["shape"] == ["batch", 1, 8, 8]
    assert meta["models"]["model.onnx"]["max_abs_diff"] == result.max_abs_diff
    samples = safetensors.torch.load_file(str(tmp_path / "sample_inputs.safetensors"))
    np.testing.assert_allclose(samples["output"].numpy(), _torch_outputs(model, samples["input"]), atol=1e-6)
    assert not list(tmp_path.glob(".export-*"))  # the scratch folder is gone


@pytest.mark.parametrize("fmt", ["torchscript", "exported-program"])
def test_torch_formats_load_back(trained_run: Path, tmp_path: Path, reference, fmt: str):
    model, _, test = reference
    result = export_run(trained_run, fmt, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        if fmt == "torchscript":
            loaded = torch.jit.load(str(result.model_file))
        else:
            loaded = torch.export.load(str(result.model_file)).module()
    for n in (1, 5, 64):
        with torch.inference_mode():
            got = loaded(test.x[:n]).numpy()
        assert np.abs(got - _torch_outputs(model, test.x[:n])).max() < TOLERANCE
    second = json.loads((tmp_path / "preprocess.json").read_text())["models"]
    assert list(second) == [result.model_file.name]


def test_quantize_dynamic_onnx_through_the_cli(trained_run: Path, tmp_path: Path, reference):
    import onnxruntime as ort

    model, _, test = reference
    proc = keel(
        "export", str(trained_run), "--format", "onnx", "--quantize", "dynamic", "--out", str(tmp_path), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    for text in ("verified with onnxruntime", "test accuracy", "latency, batch 1", "fp32", "int8"):
        assert text in proc.stdout, text
    int8 = tmp_path / "model.int8.onnx"
    assert int8.stat().st_size < (tmp_path / "model.onnx").stat().st_size
    session = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
    ops = {node.op_type for node in __import__("onnx").load(str(int8)).graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeLinear"}  # really int8
    quantized_acc = (session.run(None, {"input": test.x.numpy()})[0].argmax(1) == test.y.numpy()).mean()
    fp32_acc = (_torch_outputs(model, test.x).argmax(1) == test.y.numpy()).mean()
    assert abs(quantized_acc - fp32_acc) < 0.03
    row = next(line for line in proc.stdout.splitlines() if "test accuracy" in line)
    assert f"{quantized_acc:.4f}" in row and f"{fp32_acc:.4f}" in row


def test_quantize_dynamic_torchscript(trained_run: Path, tmp_path: Path):
    result = export_run(trained_run, "torchscript", tmp_path, quantize="dynamic")
    report = result.quantized
    assert report is not None and report.file.is_file() and report.metric == "accuracy"
    assert abs(report.before - report.after) < 0.03 and 0 < report.max_abs_diff < 1.0
    assert set(report.latency_ms) == {1, 256} and report.size_bytes[1] < report.size_bytes[0]


def test_a_mismatch_beyond_the_tolerance_writes_nothing(trained_run: Path, tmp_path: Path):
    with pytest.raises(ExportError, match="differs from the PyTorch model"):
        export_run(trained_run, "onnx", tmp_path, tolerance=0.0)  # onnxruntime is never bit-exact
    assert list(tmp_path.iterdir()) == []


def test_without_the_data_it_verifies_on_random_inputs(trained_run: Path, tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("checkpoint", "export"))
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("name: digits", "name: not-here", 1))
    result = export_run(run, "exported-program")
    assert result.inputs == 64 and "test data unavailable" in result.input_source
    assert result.max_abs_diff < TOLERANCE


def test_bad_export_options(trained_run: Path, tmp_path: Path):
    proc = keel("export", str(trained_run), "--format", "onx", "--out", str(tmp_path / "x"), cwd=tmp_path)
    assert_one_line_error(proc, "did you mean 'onnx'")
    with pytest.raises(ExportError, match="onnx or torchscript"):
        export_run(trained_run, "exported-program", tmp_path / "x", quantize="dynamic")
    with pytest.raises(ExportError, match="unknown quantization 'static'"):
        export_run(trained_run, "onnx", tmp_path / "x", quantize="static")
    assert not (tmp_path / "x").exists()


def test_token_ids_export_with_free_batch_and_length(tmp_path: Path):
    """Text models take (batch, length) token ids: both dimensions stay free in ONNX."""
    import onnxruntime as ort
    from torch import nn

    from torchkeel.data.bundle import DataSpec
    from torchkeel.export import dynamic_axes
    from torchkeel.export.formats import FORMATS

    class MeanOfEmbeddings(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.head = nn.Embedding(50, 8, padding_idx=0), nn.Linear(8, 3)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (B, L) -> (B, 3)
            mask = (ids != 0).unsqueeze(-1).float()
            return self.head((self.embed(ids) * mask).sum(1) / mask.sum(1).clamp_min(1))

    torch.manual_seed(0)
    model = MeanOfEmbeddings().eval()
    spec = DataSpec("toy", "text", "classification", (12,), classes=["a", "b", "c"])
    assert dynamic_axes(spec) == {0: "batch", 1: "length"}
    path = tmp_path / "text.onnx"
    FORMATS["onnx"].save(model, torch.randint(1, 50, (2, 12)), path, dynamic_axes(spec))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in ((1, 5), (4, 12), (3, 30)):
        ids = torch.randint(0, 50, shape)
        expected = _torch_outputs(model, ids)
        assert np.abs(session.run(None, {"input": ids.numpy()})[0] - expected).max() < TOLERANCE
