"""Every failing command ends in one 'error:' line with exit code 2: no traceback, and no run
folder left behind. Listings of many runs show a damaged one and go on."""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import assert_one_line_error, keel
from make_data import write_image_folder, write_rows


def _nothing(tmp: Path) -> list[str]:
    return []


def _image_folder(tmp: Path) -> list[str]:
    write_image_folder(tmp / "imgs", per_class=4)
    return ["--data", "image_folder", "--set", "data.root=imgs"]


def _empty_texts(tmp: Path) -> list[str]:
    write_rows(tmp / "empty.csv", [{"text": "", "label": i % 2} for i in range(40)])
    return ["--data", "text_csv", "--set", "data.path=empty.csv", "--model", "embedding_bag"]


def _long_texts(tmp: Path) -> list[str]:
    rng, words = random.Random(0), [f"w{i}" for i in range(50)]
    rows = [{"text": " ".join(rng.choices(words, k=100_000)), "label": i % 2} for i in range(12)]
    write_rows(tmp / "long.csv", rows)
    return ["--data", "text_csv", "--set", "data.path=long.csv", "--model", "transformer"]


def _config(text: str) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        (tmp / "c.yaml").write_text(text)
        return ["c.yaml"]

    return make


def _folder_as_config(tmp: Path) -> list[str]:
    (tmp / "configs").mkdir()
    return ["configs"]


TRAIN_FAILURES = {
    "device-form": (_nothing, ["--device", "cuda:99x"], ["train.device", "cuda:99x"]),
    "device-negative": (_nothing, ["--device", "cuda:-1"], ["train.device"]),
    "device-index": (_nothing, ["--device", "cpu:3"], ["train.device", "cpu:3"]),
    "huge-model": (_nothing, ["--set", "model.channels=[100000,100000]"], ["parameters", "GiB"]),
    "huge-images": (_image_folder, ["--set", "data.image.size=20000"], ["GiB", "data.image.size"]),
    "empty-texts": (_empty_texts, [], ["every text", "empty.csv"]),
    "duplicate-key": (_config("train:\n  epochs: 1\n  epochs: 2\n"), [], ["duplicate key 'epochs'", "c.yaml"]),
    "config-folder": (_folder_as_config, [], ["configs", "is a folder"]),
}
SLOW = {  # tokenising 1.2 M words takes a while on a small machine
    "huge-sequences": (
        _long_texts,
        ["--set", "data.text.max_length=100000", "--set", "model.dim=1024"],
        ["train.batch_size", "data.text.max_length", "GiB"],
    ),
}
CASES = [pytest.param(*v, id=k) for k, v in TRAIN_FAILURES.items()]
CASES += [pytest.param(*v, id=k, marks=pytest.mark.slow) for k, v in SLOW.items()]


@pytest.mark.parametrize(("setup", "args", "fragments"), CASES)
def test_a_failing_training_is_one_line_and_leaves_no_run_folder(tmp_path, setup, args, fragments):
    proc = keel("train", *setup(tmp_path), *args, "--epochs", "1", "-q", cwd=tmp_path)
    assert_one_line_error(proc, *fragments)
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(runs.iterdir()), list(runs.iterdir())


def test_export_onto_an_existing_file_is_refused_and_the_file_kept(trained_run, tmp_path):
    target = tmp_path / "model.onnx"
    target.write_text("mine")
    assert_one_line_error(keel("export", str(trained_run), "--out", str(target), cwd=tmp_path), "--out", "is a file")
    assert target.read_text() == "mine"


def _runs_with_damage(trained_run: Path, tmp: Path) -> dict[str, list[Path]]:
    """Two good copies of a run and three damaged ones: summary.json, config.yaml, an alias bomb."""
    runs = tmp / "runs"
    names = ["20990101-000001-good", "20990101-000002-good", "20990101-000003-summary", "20990101-000004-config"]
    names.append("20990101-000005-bomb")
    for name in names:
        shutil.copytree(trained_run, runs / name, ignore=shutil.ignore_patterns("checkpoint", "*.html", "export"))
    (runs / names[2] / "summary.json").write_text('{"test": {"accur')
    (runs / names[3] / "config.yaml").write_text("data: [unclosed\n")
    bomb = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    bomb += [f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi", strict=True)]
    (runs / names[4] / "config.yaml").write_text("\n".join(bomb) + "\n")
    return {"good": [runs / names[0], runs / names[1]], "damaged": [runs / n for n in names[2:]]}


@pytest.mark.parametrize("sort", [None, "accuracy", "val/loss"])
def test_runs_lists_every_run_and_marks_the_damaged_ones(trained_run, tmp_path, sort):
    _runs_with_damage(trained_run, tmp_path)
    proc = keel("runs", *(["--sort", sort] if sort else []), cwd=tmp_path)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout.count("damaged") >= 3 and proc.stdout.count("done") == 2, proc.stdout
    for word in ("summary.json", "config.yaml", "YAML aliases"):
        assert word in proc.stdout.replace("\n", " "), proc.stdout


def test_compare_skips_a_damaged_run_and_refuses_when_fewer_than_two_remain(trained_run, tmp_path):
    folders = _runs_with_damage(trained_run, tmp_path)
    good, damaged = [str(p) for p in folders["good"]], [str(p) for p in folders["damaged"]]
    proc = keel("compare", *good, *damaged, cwd=tmp_path)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(warnings) == 3 and all(w.startswith("warning: skipped damaged run") for w in warnings), proc.stderr
    proc = keel("compare", good[0], damaged[2], cwd=tmp_path)  # the alias bomb: refused, not expanded
    assert_one_line_error(proc, "compare needs two runs", "YAML aliases")


def test_report_skips_a_partial_last_metrics_line_with_one_warning(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("checkpoint", "*.html", "export"))
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"epoch": 7, "val/lo')
    proc = keel("report", str(run), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("warning:") and "metrics.jsonl" in lines[0], proc.stderr
    assert (run / "report.html").is_file()
