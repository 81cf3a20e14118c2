"""The CLI end to end in subprocesses: train, run folder, predict, eval, runs, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, keel
from PIL import Image


def test_train_writes_the_run_folder(trained_run: Path):
    for name in ("config.yaml", "env.json", "metrics.jsonl", "model.safetensors", "model.json", "summary.json"):
        assert (trained_run / name).is_file(), name
    assert list((trained_run / "checkpoint").glob("*.safetensors"))
    summary = json.loads((trained_run / "summary.json").read_text())
    assert summary["test"]["accuracy"] >= 0.95 and summary["epochs"] == 6
    records = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    assert sum("val/accuracy" in r for r in records) == 6
    env = json.loads((trained_run / "env.json").read_text())
    assert {"torch", "python", "device", "command"} <= set(env)
    meta = json.loads((trained_run / "model.json").read_text())
    assert meta["model"]["name"] == "simple_cnn" and meta["spec"]["input_shape"] == [1, 8, 8]
    # no pickle anywhere in the run folder
    for f in trained_run.rglob("*"):
        if f.is_file():
            assert not f.read_bytes()[:2].startswith(b"\x80"), f


def test_train_narrates_the_six_steps(tmp_path: Path):
    proc = keel("train", "--epochs", "1", "--set", "train.batch_size=256", cwd=tmp_path, check=True)
    for step in ("[1/6] Preprocess", "[2/6] Design", "[3-5/6] Train", "[6/6] Evaluate", "test accuracy", "run folder"):
        assert step in proc.stdout, step
    assert "epoch   1/1" in proc.stdout and "val accuracy" in proc.stdout


def _digit_png(tmp_path: Path, index: int, invert: bool = False) -> tuple[Path, int]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = (digits.images[index] / 16.0 * 255).astype(np.uint8)
    if invert:
        pixels = 255 - pixels
    path = tmp_path / f"digit{index}{'-inv' if invert else ''}.png"
    Image.fromarray(pixels, mode="L").resize((64, 64), Image.Resampling.NEAREST).save(path)
    return path, int(digits.target[index])


def test_predict_png(trained_run: Path, tmp_path: Path):
    files = [_digit_png(tmp_path, i) for i in (0, 1, 2, 3)]
    proc = keel("predict", str(trained_run), *(str(p) for p, _ in files), "--json", cwd=tmp_path, check=True)
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(results) == 4 and all(len(r["top"]) == 3 for r in results)
    for r in results:
        probs = [t["probability"] for t in r["top"]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
    correct = sum(r["top"][0]["class"] == str(label) for r, (_, label) in zip(results, files, strict=True))
    assert correct >= 3
    plain = keel("predict", str(trained_run), str(files[0][0]), "-k", "2", cwd=tmp_path, check=True)
    assert "%" in plain.stdout


def test_predict_inverts_dark_ink_on_light_paper(trained_run: Path, tmp_path: Path):
    path, label = _digit_png(tmp_path, 0, invert=True)
    proc = keel("predict", str(trained_run), str(path), "--json", cwd=tmp_path, check=True)
    result = json.loads(proc.stdout)
    assert result["top"][0]["class"] == str(label) and "inverted" in result["note"]


def test_eval_rebuilds_from_model_json(trained_run: Path, tmp_path: Path):
    proc = keel("eval", str(trained_run), "--json", cwd=tmp_path, check=True)
    result = json.loads(proc.stdout)
    summary = json.loads((trained_run / "summary.json").read_text())
    assert result["accuracy"] == pytest.approx(summary["test"]["accuracy"])
    assert result["loss"] == pytest.approx(summary["test"]["loss"], rel=1e-5)


def test_runs_table_and_latest(trained_run: Path):
    cwd = trained_run.parent.parent
    proc = keel("runs", cwd=cwd, check=True)
    assert trained_run.name[:15] in proc.stdout and "digits" in proc.stdout and "accuracy" in proc.stdout
    latest = keel("eval", "latest", "--json", cwd=cwd, check=True)
    assert json.loads(latest.stdout)["run"] == str(trained_run)


def test_print_config_is_the_resolved_config(tmp_path: Path):
    proc = keel(
        "train",
        "--print-config",
        "--epochs",
        "3",
        "--model",
        "mlp",
        "--set",
        "model.hidden=[16]",
        cwd=tmp_path,
        check=True,
    )
    import yaml

    cfg = yaml.safe_load(proc.stdout)
    assert cfg["train"]["epochs"] == 3 and cfg["model"] == {
        "name": "mlp",
        "init_from": None,
        "hidden": [16],
        "activation": "relu",
        "dropout": 0.0,
        "batch_norm": False,
    }
    assert not (tmp_path / "runs").exists()


def test_help_for_every_command(tmp_path: Path):
    top = keel("--help", cwd=tmp_path, check=True)
    for command in ("train", "eval", "predict", "runs"):
        assert command in top.stdout
        sub = keel(command, "--help", cwd=tmp_path, check=True)
        assert "Usage" in sub.stdout


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["train", "--data", "digts"], ["did you mean 'digits'"]),
        (["train", "--model", "simple_cn"], ["did you mean 'simple_cnn'"]),
        (["train", "--set", "train.optimizer.name=adm"], ["did you mean 'adam'"]),
        (["train", "--set", "train.optimzer.lr=0.1"], ["unknown key", "train.optimizer"]),
        (["train", "--epochs", "-1"], ["train.epochs"]),
        (["train", "--set", "train.optimizer.lr=0"], ["train.optimizer.lr"]),
        (["train", "--set", "train.optimizer.lr=-0.1"], ["train.optimizer.lr"]),
        (["train", "missing.yaml"], ["config file not found"]),
        (["train", "--device", "cuda"], ["train.device"]),
        (["eval", "no-such-run"], ["run folder not found"]),
        (["predict", "no-such-run", "x.png"], ["run folder not found"]),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path: Path, args, fragments):
    proc = keel(*args, cwd=tmp_path)
    assert_one_line_error(proc, *fragments)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_predict_bad_files(trained_run: Path, tmp_path: Path):
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    assert_one_line_error(keel("predict", str(trained_run), str(text), cwd=tmp_path), "not a readable image")
    assert_one_line_error(keel("predict", str(trained_run), str(tmp_path / "gone.png"), cwd=tmp_path), "no such file")


def test_unfinished_run_is_reported(tmp_path: Path, trained_run: Path):
    import shutil

    broken = tmp_path / "runs" / "20000101-000000-broken"
    shutil.copytree(trained_run, broken)
    (broken / "model.safetensors").unlink()
    (broken / "summary.json").unlink()
    assert_one_line_error(keel("eval", str(broken), cwd=tmp_path), "did not finish", "--resume")
    assert "incomplete" in keel("runs", cwd=tmp_path, check=True).stdout
