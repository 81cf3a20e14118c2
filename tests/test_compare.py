"""keel runs --sort and keel compare over real run folders."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import assert_one_line_error, keel
from PIL import Image
from rich.console import Console

from torchkeel.config import validate_config
from torchkeel.experiment import train


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Two digits runs that differ in learning rate and epochs (no report: not needed here)."""
    cwd = tmp_path_factory.mktemp("compare")
    made = []
    for lr, epochs in ((3e-3, 2), (3e-5, 1)):
        raw = {"out_dir": str(cwd / "runs"), "train": {"epochs": epochs, "batch_size": 128, "optimizer": {"lr": lr}}}
        raw["eval"] = {"report": False}
        made.append(train(validate_config(raw), Console(quiet=True), progress=False))
    return cwd, made[0], made[1]


def _row(table: str, name: str) -> int:
    """The line of ``table`` that lists run ``name`` (two runs made in the same second are
    NAME and NAME-2, so a plain substring search could find the wrong one)."""
    return next(i for i, line in enumerate(table.splitlines()) if name in line.replace("│", " ").split())


def _accuracy(run: Path) -> float:
    return json.loads((run / "summary.json").read_text())["test"]["accuracy"]


def test_runs_sort(two_runs):
    cwd, good, bad = two_runs
    assert _accuracy(good) > _accuracy(bad)
    by_accuracy = keel("runs", "--sort", "accuracy", cwd=cwd, check=True).stdout
    assert _row(by_accuracy, good.name) < _row(by_accuracy, bad.name)
    by_loss = keel("runs", "--sort", "val/loss", cwd=cwd, check=True).stdout  # lower is better: good first
    assert _row(by_loss, good.name) < _row(by_loss, bad.name)
    by_time = keel("runs", "--sort", "train_seconds", cwd=cwd, check=True).stdout
    seconds = {r: json.loads((r / "summary.json").read_text())["train_seconds"] for r in (good, bad)}
    faster, slower = sorted(seconds, key=seconds.get)
    assert _row(by_time, faster.name) < _row(by_time, slower.name)
    assert_one_line_error(keel("runs", "--sort", "acuracy", cwd=cwd), "did you mean 'accuracy'")


def test_runs_sort_puts_the_lowest_frechet_first(tmp_path: Path):
    """GAN runs are ranked by Fréchet distance, where lower is better (the generate task says so)."""
    from torchkeel.evaluate.compare import sort_runs
    from torchkeel.runs import read_run

    infos = []
    for name, frechet in (("worse", 9.0), ("better", 2.0)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text("{}")
        (tmp_path / name / "summary.json").write_text(json.dumps({"test": {"frechet": frechet}}))
        infos.append(read_run(tmp_path / name))
    assert [i.path.name for i in sort_runs(infos, "frechet")] == ["better", "worse"]


def test_compare(two_runs):
    cwd, good, bad = two_runs
    proc = keel("compare", good.name, bad.name, "--plot", "both.png", cwd=cwd, check=True)
    lines = proc.stdout.splitlines()
    assert any("train.optimizer.lr" in line and "0.003" in line for line in lines)
    assert any("train.epochs" in line for line in lines)
    assert not any("train.batch_size" in line for line in lines)  # equal keys are not listed
    accuracy_row = next(line for line in lines if "test/accuracy" in line)
    assert f"{_accuracy(good):.4f}" in accuracy_row and f"{_accuracy(bad):.4f}" in accuracy_row
    with Image.open(cwd / "both.png") as img:
        assert img.format == "PNG" and img.width > 600
    keel("compare", good.name, bad.name, "--plot", "both.svg", cwd=cwd, check=True)
    chart = ET.parse(cwd / "both.svg").getroot()  # the same curves as an SVG chart
    legend = [t.text for t in chart.iter("{http://www.w3.org/2000/svg}text") if t.get("class") == "legend"]
    assert f"{good.name} (val)" in legend and f"{bad.name} (val)" in legend
    assert len(chart.findall(".//{http://www.w3.org/2000/svg}polyline")) >= 4  # two runs, loss and accuracy
    assert_one_line_error(keel("compare", good.name, cwd=cwd), "at least two runs")


def test_help_for_every_new_command(tmp_path: Path):
    top = keel("--help", cwd=tmp_path, check=True).stdout
    for command in ("report", "explain", "lr-find", "tune", "compare"):
        assert command in top
        assert "Usage" in keel(command, "--help", cwd=tmp_path, check=True).stdout
    assert "--attack" in keel("eval", "--help", cwd=tmp_path, check=True).stdout
    assert "--sort" in keel("runs", "--help", cwd=tmp_path, check=True).stdout
