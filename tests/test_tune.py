"""keel tune: the tune: section, sampling, median pruning through fit's on_epoch hook, an
interrupted study that resumes, and a best config that trains."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import SRC, assert_one_line_error, default_sigint, keel
from rich.console import Console

from torchkeel.config import load_config, validate_config
from torchkeel.errors import ConfigError
from torchkeel.experiment import train
from torchkeel.tune import run_study, sample_config, study_location

SPACE = {
    "train.optimizer.lr": {"log_uniform": [1.0e-4, 1.0e-1]},
    "model.dropout": {"uniform": [0.0, 0.5]},
    "train.batch_size": {"choice": [16, 32, 64]},
    "model.hidden": {"int": [16, 128]},
}


@pytest.mark.parametrize(
    ("tune", "fragment"),
    [
        ({"space": {"model.dropuot": {"uniform": [0, 0.5]}}}, "did you mean 'dropout'"),
        ({"space": {"model.dropout": {"uniform": [0, 1.5]}}}, "'model.dropout' = 1.5"),
        ({"space": {"train.optimzer.lr": {"log_uniform": [1e-3, 1e-1]}}}, "did you mean 'train.optimizer'"),
        ({"space": {"train.optimizer.lr": {"log_uniform": [0, 1e-1]}}}, "low must be above 0"),
        ({"space": {"train.optimizer.lr": {"uniform": [0.1, 0.01]}}}, "low must be below high"),
        ({"space": {"train.optimizer.lr": {"uniform": [0.01, 0.1], "choice": [1]}}}, "exactly one of"),
        ({"space": {}}, "at least one key"),
        ({"space": {"model.dropout": {"uniform": [0, 0.5]}}, "metric": "test/accuracy"}, "per-epoch key"),
    ],
)
def test_tune_section_is_validated(tune, fragment):
    with pytest.raises(ConfigError, match=None) as e:
        validate_config({"tune": tune})
    assert fragment in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("metric", "minimize"),
    [("val/loss", True), ("val/rmse", True), ("val/accuracy", False), ("val/r2", False), ("train/g_loss", True)],
)
def test_auto_direction_comes_from_the_tasks(metric, minimize):
    """A GAN's losses are minimised as every task's lower-is-better metrics are."""
    cfg = validate_config({"tune": {"space": SPACE, "metric": metric}})
    assert cfg.tune.minimize() is minimize


def test_sampled_configs_stay_in_the_space():
    cfg = validate_config({"tune": {"space": SPACE, "metric": "val/accuracy"}})
    params = {"train.optimizer.lr": 0.02, "model.dropout": 0.3, "train.batch_size": 64, "model.hidden": 40}
    trial_cfg = sample_config(optuna.trial.FixedTrial(params), cfg, cfg.tune.space)
    assert trial_cfg.tune is None
    assert (trial_cfg.train.optimizer.lr, trial_cfg.train.batch_size) == (0.02, 64)
    assert trial_cfg.model.options()["dropout"] == 0.3 and trial_cfg.model.options()["hidden"] == 40
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        c = sample_config(study.ask(), cfg, cfg.tune.space)
        assert 1e-4 <= c.train.optimizer.lr <= 1e-1 and c.train.batch_size in (16, 32, 64)
        assert 0 <= c.model.options()["dropout"] <= 0.5 and 16 <= c.model.options()["hidden"] <= 128


def test_median_pruning_stops_a_bad_trial(tmp_path: Path):
    """Trial 0 (good lr) completes; trial 1 (lr 1e-7, learns nothing) is below the median at
    its first epoch and is pruned through fit's on_epoch hook."""
    raw = {
        "train": {"epochs": 2, "batch_size": 64},
        "eval": {"report": False},
        "tune": {
            "space": {"train.optimizer.lr": {"choice": [3.0e-3, 1.0e-7]}},
            "metric": "val/accuracy",
            "startup_trials": 1,
            "warmup_epochs": 0,
            "out_dir": str(tmp_path / "studies"),
        },
    }
    cfg = validate_config(raw)
    name, folder, url = study_location(cfg)
    folder.mkdir(parents=True)
    study = optuna.create_study(study_name=name, storage=url, direction="maximize")
    study.enqueue_trial({"train.optimizer.lr": 3.0e-3})
    study.enqueue_trial({"train.optimizer.lr": 1.0e-7})
    result = run_study(cfg, Console(quiet=True), trials=2)
    states = [t.state.name for t in optuna.load_study(study_name=name, storage=url).trials]
    assert states == ["COMPLETE", "PRUNED"]
    pruned = next((folder / "runs").glob("*-trial0001"))
    info = json.loads((pruned / "trial.json").read_text())
    assert info["state"] == "PRUNED" and len(info["values"]) == 1
    assert not (pruned / "model.safetensors").exists()  # an incomplete run folder
    best = yaml.safe_load(result.best_config.read_text())
    assert best["train"]["optimizer"]["lr"] == 3.0e-3 and "tune" not in best
    page = (folder / "study.html").read_text()  # the optimisation history: the one complete trial's value
    complete = optuna.load_study(study_name=name, storage=url).best_value
    assert page.count('<svg class="chart"') == 1 and f"{cfg.tune.metric}: 0, {complete:.4g}</title>" in page


def _tune_config(tmp_path: Path) -> Path:
    raw = {
        "name": "digits-small",
        "train": {"epochs": 1, "batch_size": 16},
        "eval": {"report": False},  # the report has its own tests; the trials stay quick
        "tune": {
            "space": {"train.optimizer.lr": {"log_uniform": [1.0e-3, 1.0e-2]}, "model.dropout": {"uniform": [0, 0.3]}},
            "metric": "val/accuracy",
        },
    }
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _interrupt_during_a_trial(proc: subprocess.Popen, runs_dir: Path, first: int, last: int) -> None:
    """Ctrl-C while trial ``first`` or a later one is running, never after the study's end. The
    process is paused (SIGSTOP) while the test looks: when the newest trial's folder has no
    summary.json yet, that trial is still inside training, so the SIGINT sent before SIGCONT
    lands in it however loaded the machine is."""
    for number in range(first, last + 1):
        _wait_for(lambda n=number: any(runs_dir.glob(f"*-trial{n:04d}")), proc)
        proc.send_signal(signal.SIGSTOP)
        _wait_for(lambda: _process_state(proc.pid) == "T", proc)
        unfinished = not (next(runs_dir.glob(f"*-trial{number:04d}")) / "summary.json").exists()
        if unfinished:
            proc.send_signal(signal.SIGINT)  # pending while stopped, delivered on SIGCONT
        proc.send_signal(signal.SIGCONT)
        if unfinished:
            return
    raise AssertionError("every trial finished before the test could interrupt one")


def _process_state(pid: int) -> str:
    """The state letter of /proc/PID/stat (T: stopped)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"keel tune ended early: {proc.communicate()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for keel tune")
        time.sleep(0.05)


def test_tune_runs_resumes_after_interruption_and_its_best_config_trains(tmp_path: Path):
    config = _tune_config(tmp_path)
    runs_dir = tmp_path / "studies" / "digits-small" / "runs"
    env = {
        **os.environ,
        "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "torchkeel", "tune", str(config), "--trials", "3"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    _interrupt_during_a_trial(proc, runs_dir, first=1, last=2)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, (stdout, stderr)
    assert "run the same command again to resume" in stdout and "Traceback" not in stderr, (stdout, stderr)
    first = next(runs_dir.glob("*-trial0000"))
    assert json.loads((first / "trial.json").read_text())["state"] == "COMPLETE"
    first_weights = (first / "model.safetensors").stat().st_mtime_ns

    resumed = keel("tune", str(config), "--trials", "3", cwd=tmp_path, check=True)
    assert "1 of 3 trials finished" in resumed.stdout or "2 of 3 trials finished" in resumed.stdout
    study = optuna.load_study(study_name="digits-small", storage=f"sqlite:///{runs_dir.parent / 'study.db'}")
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 3 and set(states) <= {"COMPLETE", "FAIL"}, states
    assert (first / "model.safetensors").stat().st_mtime_ns == first_weights  # not trained again
    for t in study.trials:
        if t.state.name == "COMPLETE":  # every finished trial is a normal run folder
            folder = Path(t.user_attrs["run_folder"])
            files = {p.name for p in folder.iterdir()}
            assert {"config.yaml", "metrics.jsonl", "model.safetensors", "summary.json"} <= files

    best = runs_dir.parent / "best.yaml"
    best_cfg = load_config(best, [f"out_dir={tmp_path / 'best-runs'}"])
    assert best_cfg.train.optimizer.lr == pytest.approx(study.best_params["train.optimizer.lr"])
    trained = train(best_cfg, Console(quiet=True), progress=False)  # what `keel train best.yaml` runs
    assert json.loads((trained / "summary.json").read_text())["test"]["accuracy"] > 0.5


def test_tune_without_a_tune_section_is_one_line(tmp_path: Path):
    (tmp_path / "plain.yaml").write_text("train: {epochs: 1}\n")
    assert_one_line_error(keel("tune", "plain.yaml", cwd=tmp_path), "no tune: section")
