"""Loading a run never unpickles and never imports code from the run folder; a tampered run
folder is a RunError, not a crash or a huge allocation."""

from __future__ import annotations

import json
import pickle
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch

from torchkeel.errors import RunError
from torchkeel.experiment import evaluate_run, load_model, load_run_config
from torchkeel.serve.predictor import Predictor
from torchkeel.train import checkpoint as ckpt

SRC = Path(__file__).resolve().parents[1] / "src" / "torchkeel"
# module names a loader might plausibly import; each planted file records being imported
PLANTED = ("model", "models", "custom", "simple_cnn", "mlp", "config", "plugin", "sitecustomize", "__init__")


@pytest.fixture
def run_copy(trained_run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)
    return copy


def _refuse(*args, **kwargs):
    raise AssertionError("something tried to unpickle while loading a run")


class RefusingUnpickler(pickle.Unpickler):  # a class, so that modules may still subclass it
    def __init__(self, *args, **kwargs):
        _refuse()


def test_loading_a_run_never_unpickles(run_copy, monkeypatch):
    monkeypatch.setattr(pickle, "load", _refuse)
    monkeypatch.setattr(pickle, "loads", _refuse)
    monkeypatch.setattr(pickle, "Unpickler", RefusingUnpickler)
    monkeypatch.setattr(torch, "load", _refuse)
    load_model(run_copy)
    Predictor.from_run(run_copy)
    load_run_config(run_copy)
    assert evaluate_run(run_copy)["accuracy"] > 0.9
    for path in ckpt.list_checkpoints(run_copy / "checkpoint"):
        ckpt.read_checkpoint(path)


def test_nothing_is_imported_from_a_run_folder(run_copy, tmp_path):
    marker = tmp_path / "imported"
    for name in PLANTED:
        (run_copy / f"{name}.py").write_text(f"open({str(marker)!r}, 'a').write({name!r})\n")
    (run_copy / "model").mkdir()
    (run_copy / "model" / "__init__.py").write_text(f"open({str(marker)!r}, 'a').write('package')\n")
    load_model(run_copy)
    Predictor.from_run(run_copy)
    evaluate_run(run_copy)
    assert not marker.exists()
    from_run = [m for m in list(sys.modules.values()) if str(run_copy) in str(getattr(m, "__file__", "") or "")]
    assert from_run == []


def test_source_never_unpickles_or_loads_unsafe_yaml():
    """A guard for later changes: pickle only in weights.py (which refuses it), torch.load only
    with weights_only=True, YAML only through safe_load, no eval/exec."""
    for path in SRC.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        where = path.relative_to(SRC)
        assert not re.search(r"(?<![.\w])(eval|exec)\(", text), where  # builtins, not model.eval()
        assert not re.search(r"yaml\.(load|unsafe_load|full_load)\(|yaml\.(Unsafe|Full)?Loader\b", text), where
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, (where, call)
        if path.name != "weights.py":
            assert not re.search(r"\bimport pickle\b|\bpickle\.|allow_pickle=True", text), where


@pytest.mark.parametrize(
    "tamper",
    [
        lambda m: m.update(model={"name": "os.system"}),
        lambda m: m["spec"].update(input_shape=[1, 100_000, 100_000]),  # would be a ~300 TB Linear layer
        lambda m: m["spec"].update(classes=None),
        lambda m: m.pop("spec"),
    ],
)
def test_a_tampered_model_json_is_a_run_error(run_copy, tamper):
    meta_file = run_copy / "model.json"
    meta = json.loads(meta_file.read_text())
    tamper(meta)
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(RunError, match="damaged|disagree"):
        load_model(run_copy)


def test_damaged_model_files_are_run_errors(run_copy):
    weights = run_copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(RunError, match="damaged"):
        load_model(run_copy)
    (run_copy / "model.json").write_text("{not json")
    with pytest.raises(RunError, match="damaged"):
        load_model(run_copy)
