"""keel train --auto: candidates per data kind, a budget shared among them, val-only selection
with the test split used once, a leaderboard, Ctrl-C and resume; and train.max_time and the
EndTraining hook it is built on."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SRC, assert_one_line_error, default_sigint, keel
from rich.console import Console
from test_tune import _process_state, _wait_for

from torchkeel.auto import WARMUP_EPOCHS, candidates, prune_reason, rank, run_auto
from torchkeel.config import load_config, validate_config
from torchkeel.data import load
from torchkeel.errors import ConfigError, EndTraining
from torchkeel.models import build
from torchkeel.train.loop import fit

TABLE = {"data": {"name": "breast_cancer"}, "train": {"threads": 1}, "eval": {"report": False}}


def test_candidates_follow_the_data_kind_and_the_users_keys_win():
    text = candidates({"data": {"name": "text_csv", "path": "x.csv"}, "train": {"epochs": 3}})
    assert list(text)[:3] == ["linear_bow", "embedding_bag", "bilstm"]
    assert all(c["train"]["epochs"] == 3 for c in text.values())  # the user's key, in every candidate
    assert {validate_config(c).model.name for c in text.values()} >= {"linear_bow", "embedding_bag", "lstm"}
    assert len(candidates({"data": {"name": "breast_cancer"}})) == 4
    assert {validate_config(c).model.name for c in candidates({"data": {"name": "digits"}}).values()} == {
        "simple_cnn", "lenet5", "resnet"}  # fmt: skip
    named = candidates({"data": {"name": "breast_cancer"}, "model": {"name": "mlp", "hidden": [8]}})
    assert list(named) == ["mlp"]  # a named model: one candidate, the user's


def test_ranking_is_on_val_with_ties_to_the_lower_val_loss():
    entries = [
        {"recipe": "a", "val": 0.9, "val_loss": 0.30},
        {"recipe": "b", "val": 0.95, "val_loss": 0.40},
        {"recipe": "c", "val": 0.95, "val_loss": 0.20},
        {"recipe": "d", "state": "failed"},
    ]
    assert [e["recipe"] for e in rank(entries, lower=False)] == ["c", "b", "a"]
    assert [e["recipe"] for e in rank(entries, lower=True)] == ["a", "c", "b"]


def _curve(accuracies: list[float], seconds: list[float]) -> list[dict[str, float]]:
    return [{"accuracy": a, "loss": 1 - a, "seconds": s} for a, s in zip(accuracies, seconds, strict=True)]


def test_pruning_cuts_a_candidate_behind_pace_and_worse_than_the_median():
    earlier = [_curve([0.8, 0.85, 0.9, 0.9], [1, 1, 1, 1]), _curve([0.7, 0.8, 0.86, 0.9], [1, 1, 1, 1])]
    epochs = WARMUP_EPOCHS + 1
    slow_and_worse = _curve([0.5] * epochs, [10.0] * epochs)  # 30 epochs at 10 s: 300 s, share 60 s
    reason = prune_reason(slow_and_worse, earlier, "accuracy", 30, 60.0)
    assert reason is not None and "median 0.8800" in reason
    assert prune_reason(slow_and_worse[:WARMUP_EPOCHS], earlier, "accuracy", 30, 60.0) is None  # warm-up
    assert prune_reason(slow_and_worse, earlier, "loss", 30, 60.0) is not None  # lower is better: 0.5 > 0.12
    on_par = _curve([0.8, 0.85, 0.9], [10.0] * 3)
    assert prune_reason(on_par, earlier, "accuracy", 30, 60.0) is None  # behind pace but as good: trains on
    assert prune_reason(slow_and_worse, earlier, "accuracy", 5, 60.0) is None  # 5 epochs fit in 60 s
    assert prune_reason(slow_and_worse, [], "accuracy", 30, 60.0) is None  # nothing to compare with


def test_pruning_paces_a_cached_encoder_by_its_last_epoch_not_its_first():
    """A frozen encoder's first epoch computes every text's features (80 s here); the epochs
    after it read them from the cache. It is on pace and trains on, though worse than the
    median at this epoch: the mean epoch (28 s) would have predicted 840 s for 30 epochs."""
    earlier = [_curve([0.9, 0.9, 0.9], [1, 1, 1])]
    cached = _curve([0.5, 0.6, 0.7], [80.0, 2.0, 2.0])
    assert prune_reason(cached, earlier, "accuracy", 30, 150.0) is None  # 84 + 27 * 2 = 138 s <= 150 s
    assert prune_reason(cached, earlier, "accuracy", 30, 120.0) is not None  # 138 s > 120 s


def test_auto_trains_every_candidate_keeps_the_best_on_val_and_tests_it_once(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    start = time.perf_counter()
    result = run_auto(TABLE, "30s", Console(file=out, width=120))
    took = time.perf_counter() - start
    board = json.loads((tmp_path / "auto" / "breast_cancer" / "leaderboard.json").read_text())
    recipes, listed = [e["recipe"] for e in board["entries"]], list(candidates(TABLE))
    assert recipes[: len(listed)] == listed and recipes[len(listed) :] in ([], ["ensemble"])  # the candidates' mean
    assert board["spent_seconds"] <= 30 * 1.1 and took <= 30 * 1.1
    finished = [e for e in board["entries"] if "val" in e]
    assert len(finished) >= 2
    best = max(finished, key=lambda e: e["val"])
    assert (
        result.winner is not None and result.winner["val"] == best["val"] and board["winner"] == result.winner["recipe"]
    )
    for entry in finished:  # only the winner saw the test split
        summary = json.loads((Path(entry["run"]) / "summary.json").read_text())
        assert ("test" in summary) == (entry["recipe"] == board["winner"]) and "accuracy" in summary["val"]
    assert board["test"]["accuracy"] > 0.85 and "roc_auc" in board["test"]  # binary: ROC-AUC too
    assert (tmp_path / "runs" / "latest").resolve() == Path(board["run"]).resolve()
    assert "--auto leaderboard" in out.getvalue() and (tmp_path / "auto" / "breast_cancer" / "leaderboard.md").is_file()
    again = run_auto(TABLE, "30s", Console(file=io.StringIO()))  # finished: nothing is trained again
    assert again.test == result.test
    assert len(list((tmp_path / "runs").glob("*-auto-*"))) == len(finished)


def test_a_budget_below_the_minimum_is_one_line_and_exit_2(tmp_path: Path):
    proc = keel("train", "--data", "breast_cancer", "--auto", "5s", cwd=tmp_path)
    assert_one_line_error(proc, "at least 10s")
    proc = keel("train", "--data", "breast_cancer", "--auto", "soon", cwd=tmp_path)
    assert_one_line_error(proc, "expected a time such as 30s, 5m or 1h")
    assert not (tmp_path / "runs").exists()


def test_auto_interrupted_keeps_its_leaderboard_and_resumes_within_the_budget(tmp_path: Path):
    """Ctrl-C during the first candidate (which nothing earlier can prune): exit 130 with the
    leaderboard so far; the same command again trains what is left, within what is left of the
    same budget."""
    args = [sys.executable, "-m", "torchkeel", "train", "--data", "breast_cancer", "--auto", "24s", "-q",
            "--set", "train.epochs=5000", "--set", "train.early_stopping=null", "--set", "train.threads=1",
            "--set", "eval.report=false"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen(
        args,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    runs_dir = tmp_path / "runs"
    _wait_for(lambda: any(runs_dir.glob("*-auto-mlp-256-128")), proc)
    proc.send_signal(signal.SIGSTOP)
    _wait_for(lambda: _process_state(proc.pid) == "T", proc)
    assert not (next(runs_dir.glob("*-auto-mlp-256-128")) / "summary.json").exists()  # 5000 epochs: still training
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGCONT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, (stdout, stderr)
    assert "run the same command again to resume" in stdout and "Traceback" not in stderr
    board = json.loads((tmp_path / "auto" / "breast_cancer" / "leaderboard.json").read_text())
    assert [e["state"] for e in board["entries"]] == ["interrupted"]
    first_spent = board["spent_seconds"]

    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"resumed with {first_spent:.0f} s" in proc.stdout
    board = json.loads((tmp_path / "auto" / "breast_cancer" / "leaderboard.json").read_text())
    listed = list(candidates({"data": {"name": "breast_cancer"}}))
    assert [e["recipe"] for e in board["entries"]][: len(listed)] == listed
    assert "interrupted" not in [e["state"] for e in board["entries"]] and board["spent_seconds"] <= 24 * 1.1
    assert "accuracy" in board["test"]
    listed = keel("runs", cwd=tmp_path).stdout
    assert "val accuracy" in listed  # the candidates that lost were measured on val only


def test_max_time_ends_training_like_early_stopping(tmp_path: Path):
    # no early stopping (the table recipe's): on a quiet machine iris can stop improving within 1.5 s
    sets = ["train.epochs=100000", "train.max_time=1.5", "train.threads=1", "train.early_stopping=null"]
    cfg = load_config(None, sets, {"data.name": "iris"})
    data = load(cfg.data, cfg.seed)
    run = fit(build(cfg.model, data.spec), data, cfg, progress=False)
    assert run.stopped_early and run.stopped_by == "max_time" and len(run.history) < 100000
    assert run.train_seconds >= 1.5  # it trained up to the limit, then validated the cut epoch
    assert "val/loss" in run.history[-1]


def test_an_on_epoch_hook_ends_training_with_end_training(tmp_path: Path):
    cfg = load_config(None, ["train.epochs=20", "train.threads=1"], {"data.name": "iris"})
    data = load(cfg.data, cfg.seed)

    def hook(record: dict) -> None:
        if record["epoch"] == 3:
            raise EndTraining("enough")

    run = fit(build(cfg.model, data.spec), data, cfg, progress=False, on_epoch=hook, run_dir=tmp_path / "run")
    assert len(run.history) == 3 and run.stopped_early and run.stopped_by == "hook"


def test_max_time_counts_every_session_of_a_resumed_run(tmp_path: Path):
    """A run resumed from its checkpoint gets what is left of train.max_time, not a new one."""
    from torchkeel.train import checkpoint as ckpt

    sets = ["train.threads=1", "model.hidden=[512, 512]"]
    # long enough that what is left of the budget (0.25 s) is less than the first session trained
    first = load_config(None, [*sets, "train.epochs=150"], {"data.name": "wine", "model.name": "mlp"})
    data = load(first.data, first.seed)
    run = fit(build(first.model, data.spec), data, first, progress=False, run_dir=tmp_path / "run")
    trained = ckpt.newest_good_checkpoint(tmp_path / "run" / "checkpoint")
    assert run.train_seconds > 0.5
    again = first.model_copy(deep=True)
    again.train.epochs, again.train.max_time = 100000, run.train_seconds + 0.25
    second = fit(build(first.model, data.spec), data, again, progress=False, resume=trained)
    assert second.stopped_by == "max_time" and len(second.history) > 150
    assert second.train_seconds < run.train_seconds  # a new budget would have trained at least as long


def test_auto_on_a_regression_table_chooses_on_what_val_measures(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = {"data": {"name": "diabetes"}, "train": {"threads": 1, "epochs": 5}, "eval": {"report": False}}
    run_auto(raw, "20s", Console(file=io.StringIO()))
    board = json.loads((tmp_path / "auto" / "diabetes" / "leaderboard.json").read_text())
    assert board["metric"] in ("r2", "loss") and all("val" in e for e in board["entries"])
    assert "r2" in board["test"]


def test_auto_needs_a_val_split(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="val_fraction"):
        run_auto({"data": {"name": "iris", "val_fraction": 0.0}}, "20s", Console(file=io.StringIO()))


@pytest.mark.parametrize("value", ["0", "-3s", "1d", "true"])
def test_max_time_values_are_checked(value: str):
    with pytest.raises(Exception, match="train.max_time"):
        load_config(None, [f"train.max_time={value}"])
