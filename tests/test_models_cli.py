"""`keel models`, and the user's own module trained through `keel train`."""

import json
import re
from pathlib import Path

import pytest
from conftest import assert_one_line_error, keel

from torchkeel.config import load_config
from torchkeel.data import load
from torchkeel.errors import ConfigError
from torchkeel.models import ACCEPTS, MODELS, build, count_parameters, describe


def _rows(stdout: str) -> dict[str, list[str]]:
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line)[1:-1]]
        if cells and cells[0] in MODELS:
            rows[cells[0]] = cells
    return rows


def test_keel_models_lists_every_model(tmp_path):
    proc = keel("models", cwd=tmp_path, check=True)
    rows = _rows(proc.stdout)
    assert set(rows) == set(MODELS)
    for name, cells in rows.items():
        assert cells[1] == ", ".join(ACCEPTS[name])
        assert cells[2] == describe(name)


def test_keel_models_with_data_counts_parameters(tmp_path):
    proc = keel("models", "--data", "digits", cwd=tmp_path, check=True)
    assert "digits (image, input (1, 8, 8))" in proc.stdout
    rows = _rows(proc.stdout)
    spec = load("digits").spec
    for name in ("mlp", "lenet5", "resnet", "vit", "dcgan"):
        assert rows[name][2] == f"{count_parameters(build(name, spec)):,}", name
    assert rows["lstm"][2] == "-" and rows["custom"][2] == "yours"
    assert_one_line_error(keel("models", "--data", "digts", cwd=tmp_path), "did you mean 'digits'")


NET = """
import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, spec, width: int = 8):
        super().__init__()
        c, h, w = spec.input_shape
        self.net = nn.Sequential(nn.Conv2d(c, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                                 nn.Flatten(), nn.Linear(4 * width, spec.output_size))

    def forward(self, x):
        return self.net(x)
"""


# ~27 s: the default run trains a custom module through the CLI and loads it with --model-code in
# tests/test_run_trust.py (custom_run)
@pytest.mark.slow
def test_keel_train_a_custom_module_then_predict(tmp_path: Path):
    (tmp_path / "my_net.py").write_text(NET)
    config = tmp_path / "custom.yaml"
    config.write_text(
        "model: {name: custom, target: my_net.py:TinyNet, kwargs: {width: 12}}\ntrain: {epochs: 2, threads: 1}\n"
    )
    keel("train", str(config), "-q", cwd=tmp_path, check=True)
    run = (tmp_path / "runs" / "latest").resolve()
    meta = json.loads((run / "model.json").read_text())
    assert meta["model"] == {"name": "custom", "target": "my_net.py:TinyNet", "kwargs": {"width": 12}}
    summary = json.loads((run / "summary.json").read_text())
    assert summary["parameters"] == 12 * 9 + 12 + 48 * 10 + 10
    assert_one_line_error(keel("eval", "latest", cwd=tmp_path), "--model-code my_net.py:TinyNet")
    proc = keel("eval", "latest", "--json", "--model-code", "my_net.py:TinyNet", cwd=tmp_path, check=True)
    assert json.loads(proc.stdout)["accuracy"] == summary["test"]["accuracy"]


def test_custom_errors_on_the_command_line(tmp_path: Path):
    proc = keel("train", "--model", "custom", "--set", "model.target=nowhere.py:Net", cwd=tmp_path)
    assert_one_line_error(proc, "file not found")
    with pytest.raises(ConfigError, match="needs option 'target'"):
        load_config(None, shortcuts={"model.name": "custom"})


def test_the_custom_config_trains_its_example_module(tmp_path, monkeypatch):
    from rich.console import Console

    from torchkeel.experiment import train

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)  # the config's target path is relative to the project root
    cfg = load_config(root / "configs" / "digits-custom.yaml", ["train.epochs=2", "train.threads=1"])
    cfg.out_dir = str(tmp_path)
    run = train(cfg, Console(quiet=True), progress=False)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test"]["accuracy"] > 0.6 and summary["parameters"] == 13130
