"""A run folder is data, never code: whatever its model.json or config.yaml names, loading the
run for any command imports, calls and instantiates nothing of it. A custom model loads only
from code the user names at load time (--model-code / model_cls), and it must match."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import assert_one_line_error, keel

from torchkeel.config import load_config
from torchkeel.errors import ConfigError, RunError
from torchkeel.experiment import load_model
from torchkeel.serve.predictor import Predictor
from torchkeel.tune import write_best_config


def _plant(run: Path, model: dict) -> None:
    """Replace the run's model in model.json and config.yaml with ``model``."""
    meta = json.loads((run / "model.json").read_text())
    meta["model"] = model
    (run / "model.json").write_text(json.dumps(meta))
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["model"] = model
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))


def _payloads(tmp: Path, marker: Path) -> dict[str, dict]:
    script = tmp / "evil.py"
    script.write_text(f"open({str(marker)!r}, 'w').write('imported')\nimport torch\nNet = torch.nn.Linear\n")
    return {
        "a callable": {"name": "custom", "target": "subprocess:run", "kwargs": {"args": ["touch", str(marker)]}},
        "a script": {"name": "custom", "target": f"{script}:Net", "kwargs": {}},
    }


def _hostile_copy(trained_run: Path, tmp_path: Path, payload: str) -> tuple[Path, Path]:
    """(a copy of the digits run whose model names ``payload``, the marker it would write)."""
    marker = tmp_path / "MARKER"
    run = tmp_path / "runs" / trained_run.name
    shutil.copytree(trained_run, run)
    _plant(run, _payloads(tmp_path, marker)[payload])
    return run, marker


@pytest.fixture
def hostile_run(trained_run: Path, tmp_path: Path) -> tuple[Path, Path]:
    return _hostile_copy(trained_run, tmp_path, "a callable")


@pytest.mark.parametrize("payload", ["a callable", "a script"])
def test_loading_a_hostile_run_in_python_runs_nothing(payload, trained_run, tmp_path):
    run, marker = _hostile_copy(trained_run, tmp_path, payload)
    with pytest.raises(RunError, match="--model-code"):
        load_model(run)
    with pytest.raises(RunError, match="--model-code"):
        Predictor.from_run(run)
    assert not marker.exists()


def _png(folder: Path) -> Path:
    from PIL import Image

    path = folder / "digit.png"
    Image.new("L", (8, 8), 128).save(path)
    return path


# every command that reads a run folder; those that load its model must refuse it in one line
LOADING = {
    "eval": lambda run, tmp: ["eval", str(run)],
    "eval --attack": lambda run, tmp: ["eval", str(run), "--attack", "fgsm"],
    "predict": lambda run, tmp: ["predict", str(run), str(_png(tmp))],
    "report": lambda run, tmp: ["report", str(run)],
    "explain": lambda run, tmp: ["explain", str(run), str(_png(tmp))],
    "export": lambda run, tmp: ["export", str(run), "--format", "torchscript"],
    "serve": lambda run, tmp: ["serve", str(run), "--port", "0"],
}
LISTING = {
    "runs": lambda run, tmp: ["runs", "--out-dir", str(run.parent)],
    "compare": lambda run, tmp: ["compare", str(run), str(run), "--plot", str(tmp / "c.png")],
}


@pytest.mark.parametrize("command", list(LOADING))
def test_no_command_that_loads_a_run_runs_its_code(command, hostile_run, tmp_path):
    run, marker = hostile_run
    proc = keel(*LOADING[command](run, tmp_path), cwd=tmp_path, timeout=120)
    assert_one_line_error(proc, "--model-code")
    assert not marker.exists()


def test_a_run_naming_a_script_runs_nothing_either(trained_run, tmp_path):
    run, marker = _hostile_copy(trained_run, tmp_path, "a script")
    assert_one_line_error(keel("predict", str(run), str(_png(tmp_path)), cwd=tmp_path), "--model-code")
    assert not marker.exists()


@pytest.mark.parametrize("command", list(LISTING))
def test_listing_a_hostile_run_runs_nothing(command, hostile_run, tmp_path):
    run, marker = hostile_run
    proc = keel(*LISTING[command](run, tmp_path), cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists()


def test_resuming_a_hostile_run_runs_nothing(hostile_run, tmp_path):
    run, marker = hostile_run
    (run / "summary.json").unlink()  # unfinished: --resume reads its config.yaml
    proc = keel("train", "--resume", str(run), cwd=tmp_path, timeout=120)
    assert_one_line_error(proc, "--model-code")
    assert not marker.exists()


def test_a_study_database_cannot_plant_keys_in_best_yaml(tmp_path):
    """The study's trials come from a database file: only the searched keys, in range, may
    reach best.yaml (which the user then trains)."""
    cfg = load_config(None, ["tune.space={train.optimizer.lr: {log_uniform: [1.0e-4, 1.0e-1]}}"])
    study = SimpleNamespace(study_name="s", trials=[])
    good = SimpleNamespace(params={"train.optimizer.lr": 0.01}, value=0.9, number=0, user_attrs={})
    assert yaml.safe_load(write_best_config(tmp_path, cfg, good, study).read_text())["train"]["optimizer"]["lr"] == 0.01
    for params in ({"model.target": "subprocess:run"}, {"train.optimizer.lr": 5.0}, {"train.optimizer.lr": "x"}):
        bad = SimpleNamespace(params=params, value=0.9, number=1, user_attrs={})
        with pytest.raises(ConfigError, match="does not allow"):
            write_best_config(tmp_path, cfg, bad, study)


NET = """
import torch
from torch import nn

class TinyNet(nn.Module):
    def __init__(self, spec, width: int = 8):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, spec.output_size))

    def forward(self, x):
        return self.net(x)

class OtherNet(TinyNet):
    pass
"""


@pytest.fixture(scope="module")
def custom_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("custom")
    (folder / "my_net.py").write_text(NET)
    (folder / "c.yaml").write_text("model: {name: custom, target: my_net.py:TinyNet}\ntrain: {epochs: 1, threads: 1}\n")
    keel("train", "c.yaml", "-q", cwd=folder, check=True)
    return (folder / "runs" / "latest").resolve()


def test_a_custom_run_loads_with_the_code_the_user_names(custom_run):
    folder = custom_run.parents[1]
    ok = keel("eval", "latest", "--json", "--model-code", "my_net.py:TinyNet", cwd=folder, check=True)
    assert json.loads(ok.stdout)["accuracy"] > 0
    assert_one_line_error(keel("eval", "latest", cwd=folder), "--model-code my_net.py:TinyNet")
    assert_one_line_error(keel("eval", "latest", "--model-code", "my_net.py:OtherNet", cwd=folder), "not 'my_net.py")


def test_a_custom_run_loads_in_python_with_its_class(custom_run, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("my_net", custom_run.parents[1] / "my_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    predictor = Predictor.from_run(custom_run, model_cls=module.TinyNet)
    assert predictor.spec.num_classes == 10
    with pytest.raises(RunError, match="trained with model code 'my_net.py:TinyNet', not 'my_net.*:OtherNet'"):
        Predictor.from_run(custom_run, model_cls=module.OtherNet)


def test_model_code_for_a_built_in_model_is_refused(trained_run):
    with pytest.raises(RunError, match="built-in 'simple_cnn'"):
        load_model(trained_run, model_code="my_net.py:TinyNet")
