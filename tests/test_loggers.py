"""train.loggers: TensorBoard event files and an MLflow run mirror metrics.jsonl and summary.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from torchkeel.config import validate_config
from torchkeel.errors import ConfigError
from torchkeel.experiment import train


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`keel train` (in process) with both loggers, a robustness check and no report."""
    out = tmp_path_factory.mktemp("logged")
    cfg = validate_config(
        {
            "out_dir": str(out / "runs"),
            "train": {"epochs": 2, "batch_size": 64, "loggers": ["tensorboard", "mlflow"]},
            "eval": {"report": False, "attack": {"method": "fgsm", "eps": [0.05]}},
        }
    )
    return train(cfg, Console(quiet=True), progress=False)


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_tensorboard_has_every_record(logged_run: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logged_run / "tensorboard"))
    events.Reload()
    records = _records(logged_run)
    epochs = [r for r in records if "seconds" in r]
    steps = [r for r in records if "train/batch_loss" in r]
    tags = events.Tags()["scalars"]
    for key in ("train/loss", "val/loss", "val/accuracy", "train/batch_loss", "lr", "test/accuracy"):
        assert key in tags, (key, tags)
    logged = [(e.step, e.value) for e in events.Scalars("val/accuracy")]
    assert logged == [(r["step"], pytest.approx(r["val/accuracy"])) for r in epochs]
    assert [e.step for e in events.Scalars("train/batch_loss")] == [r["step"] for r in steps]
    summary = json.loads((logged_run / "summary.json").read_text())
    assert events.Scalars("test/accuracy")[-1].value == pytest.approx(summary["test"]["accuracy"])


def test_mlflow_run_mirrors_the_run_folder(logged_run: Path):
    from mlflow.tracking import MlflowClient

    ids = json.loads((logged_run / "mlflow.json").read_text())
    assert ids["tracking_uri"] == f"sqlite:///{logged_run.parent.resolve() / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=ids["tracking_uri"])
    run = client.get_run(ids["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["torchkeel.run_folder"] == str(logged_run)
    assert run.data.params["train.batch_size"] == "64" and run.data.params["model.name"] == "simple_cnn"
    epochs = [r for r in _records(logged_run) if "seconds" in r]
    history = client.get_metric_history(ids["run_id"], "val/loss")
    assert [(m.step, m.value) for m in history] == [(r["step"], pytest.approx(r["val/loss"])) for r in epochs]
    summary = json.loads((logged_run / "summary.json").read_text())
    assert run.data.metrics["test/accuracy"] == pytest.approx(summary["test"]["accuracy"])
    artifacts = {a.path for a in client.list_artifacts(ids["run_id"])}
    assert {"summary.json", "config.yaml"} <= artifacts


def test_attack_at_the_end_of_training(logged_run: Path):
    results = json.loads((logged_run / "robustness.json").read_text())["results"]
    assert [(r["method"], r["eps"], r["split"]) for r in results] == [("fgsm", 0.05, "test")]
    assert results[0]["adversarial_accuracy"] < results[0]["clean_accuracy"]


def test_loggers_need_a_run_folder():
    import torchkeel as keel

    data = keel.data.load("digits")
    with pytest.raises(ConfigError, match="needs a run folder"):
        keel.fit(keel.models.build("mlp", data.spec), data, epochs=1, loggers=["tensorboard"], progress=False)
