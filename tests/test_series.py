"""Series data (windows, chronological splits, CSV columns) and forecasting with recurrent nets."""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

import torchkeel as keel
from torchkeel.config import DataConfig
from torchkeel.data.series import last_value_baseline
from torchkeel.errors import ConfigError, DataError


def _csv(path: Path, rows: list[list], header: list[str]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_sine_series_windows_follow_the_data_contract():
    data = keel.data.load({"name": "sine_series", "series": {"window": 20, "horizon": 3}})
    spec = data.spec
    assert spec.kind == "series" and spec.task == "forecast"
    assert spec.input_shape == (20, 1) and spec.output_size == 3
    for split in data.splits().values():
        assert split.x.dtype == torch.float32 and split.x.shape[1:] == (20, 1)
        assert split.y.shape == (len(split), 3)
    # train statistics only: the train windows' inputs are standardised
    assert abs(data.train.x.mean().item()) < 0.05 and abs(data.train.x.std().item() - 1) < 0.05
    # the same series for every run; only the run's seed differs
    again = keel.data.load({"name": "sine_series", "series": {"window": 20, "horizon": 3}}, seed=5)
    assert torch.equal(again.test.x, data.test.x)


def test_windows_are_cut_in_time_order_without_leaking_the_future(tmp_path):
    # the value at step t is t itself, so every window shows where it was cut
    path = _csv(tmp_path / "steps.csv", [[t, 2 * t] for t in range(200)], ["step", "double"])
    cfg = {"name": "series_csv", "val_fraction": 0.1, "test_fraction": 0.2}
    cfg["series"] = {"path": str(path), "target": "step", "window": 8, "horizon": 2}
    data = keel.data.load(cfg)
    std, mean = data.spec.std[0], data.spec.mean[0]

    def steps(t: torch.Tensor) -> torch.Tensor:
        return (t * std + mean).round()

    x, y = steps(data.train.x[..., 0]), steps(data.train.y)
    assert torch.equal(x[:, 1:] - x[:, :-1], torch.ones_like(x[:, 1:]))  # consecutive steps
    assert torch.equal(y[:, 0], x[:, -1] + 1)  # the forecast starts right after the window
    train_end, val_end = 140, 160  # train 70%, val 10%, test 20% of 200 steps
    assert steps(data.train.y)[:, 0].max() < train_end
    assert steps(data.val.y)[:, 0].min() == train_end and steps(data.val.y)[:, 0].max() < val_end
    assert steps(data.test.y)[:, 0].min() == val_end
    assert mean == pytest.approx(np.arange(train_end).mean())  # statistics of the train part only


def test_csv_feature_columns(tmp_path):
    rows = [[t, np.sin(t / 5), np.cos(t / 5)] for t in range(120)]
    path = _csv(tmp_path / "multi.csv", rows, ["t", "a", "b"])
    series = {"path": str(path), "target": "a", "features": ["b", "t"], "window": 10}
    data = keel.data.load({"name": "series_csv", "series": series})
    assert data.spec.input_shape == (10, 3) and data.spec.extra["columns"] == ["a", "b", "t"]
    assert data.spec.name == "multi"


@pytest.mark.parametrize(
    ("content", "series", "fragment"),
    [
        ("x,y\n1,2\n", {"target": "z"}, "no column 'z' (columns: x, y)"),
        ("x\n1\n2\nabc\n", {"target": "x"}, "line 4: column 'x' is 'abc', not a number"),
        ("x,y\n1,2\n,3\n", {"target": "x", "features": ["y"]}, "line 3: column 'x' is '', not a number"),
        ("x\n" + "1\n" * 12, {"target": "x", "window": 8}, "too few"),
        ("x\n1\nnan\n", {"target": "x"}, "nan or inf"),
    ],
)
def test_csv_errors_name_the_problem(tmp_path, content, series, fragment):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError) as info:
        keel.data.load({"name": "series_csv", "series": {"path": str(path), **series}})
    assert fragment in str(info.value)


def test_csv_needs_a_path_and_target(tmp_path):
    with pytest.raises(DataError, match="data.series.path"):
        keel.data.load({"name": "series_csv"})
    with pytest.raises(DataError, match="no such file"):
        keel.data.load({"name": "series_csv", "series": {"path": str(tmp_path / "nope.csv"), "target": "x"}})
    with pytest.raises(Exception, match="greater than or equal to 2"):
        DataConfig(name="sine_series", series={"window": 1})


@pytest.mark.parametrize("name", ["gru", "lstm"])
def test_forecasting_beats_the_last_value(name):
    data = keel.data.load({"name": "sine_series", "series": {"window": 32, "horizon": 2}})
    torch.manual_seed(0)
    model = keel.models.build({"name": name, "hidden": 32}, data.spec)
    run = keel.fit(model, data, epochs=6, batch_size=64, threads=1, progress=False, metrics=["mse"])
    test = run.evaluate("test")
    baseline = torch.mean((last_value_baseline(data.test.x, 2) - data.test.y) ** 2).item()
    assert test["mse"] < 0.6 * baseline, (test, baseline)


def test_text_models_refuse_series_they_cannot_take():
    data = keel.data.load("sine_series")
    with pytest.raises(ConfigError, match="model 'transformer' takes text data"):
        keel.models.build("transformer", data.spec)
