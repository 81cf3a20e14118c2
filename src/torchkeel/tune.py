"""``keel tune``: an Optuna study over the keys of a config's ``tune.space``.

- Sampler: TPE (seeded); the first ``startup_trials`` trials are random.
- Pruning: each epoch's ``tune.metric`` is reported to a median pruner, which stops a trial
  whose value is worse than the median of earlier trials at the same epoch (after
  ``startup_trials`` finished trials and ``warmup_epochs`` epochs).
- A trial's score is ``tune.metric`` at its last epoch.
- Storage: SQLite in the study folder unless ``--storage`` gives another database URL, so a
  study interrupted (Ctrl-C, a crash) resumes where it stopped when the command is run again,
  and several machines can work on one study. ``--trials N`` is the number of finished
  (complete or pruned) trials the study aims at, counted over all workers. A worker that dies
  mid-trial stops sending heartbeats; after ``HEARTBEAT_GRACE`` seconds the next worker marks
  that trial failed and queues its parameters again.
- Every trial is an ordinary run folder under ``<study>/runs/`` (a pruned one is left
  incomplete), with ``trial.json`` (parameters, per-epoch values, state) beside its files.
- At the end: ``best.yaml`` (the best trial's config, ready for ``keel train``) and
  ``study.html`` (optimisation history, parameter importances, every trial).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from torchkeel import atomic
from torchkeel.config import RunConfig, set_path, validate_config
from torchkeel.errors import ConfigError, StopRequested, TrainingError, TrainingInterrupted
from torchkeel.search_space import ParamSpace, TuneConfig

HEARTBEAT_SECONDS = 60
HEARTBEAT_GRACE = 180
FINISHED = ("COMPLETE", "PRUNED")


@dataclass
class StudyResult:
    folder: Path
    storage: str
    name: str
    finished: int
    best_value: float | None
    best_params: dict[str, Any]
    best_config: Path | None
    report: Path


def study_location(cfg: RunConfig, storage: str | None = None) -> tuple[str, Path, str]:
    """(study name, study folder, storage URL)."""
    tune = _tune_section(cfg)
    name = tune.study_name or cfg.name or f"{cfg.data.name}-{cfg.model.name}"
    folder = Path(tune.out_dir) / _safe(name)
    url = storage or tune.storage or f"sqlite:///{(folder / 'study.db').resolve()}"
    return name, folder, url


def run_study(
    cfg: RunConfig, console: Console, *, trials: int | None = None, storage: str | None = None
) -> StudyResult:
    try:
        import optuna
    except ImportError:
        raise ConfigError("keel tune needs optuna: pip install 'torchkeel[tune]'") from None

    tune = _tune_section(cfg)
    name, folder, url = study_location(cfg, storage)
    folder.mkdir(parents=True, exist_ok=True)
    study = _open_study(optuna, name, url, tune, cfg.seed)
    target = trials or tune.trials
    finished = _count_finished(study)
    console.print(f"study '{name}' in {folder} ({url}): {finished} of {target} trials finished", highlight=False)
    if finished < target:
        stop = optuna.study.MaxTrialsCallback(
            target, states=tuple(getattr(optuna.trial.TrialState, s) for s in FINISHED)
        )
        try:
            study.optimize(
                lambda trial: _objective(trial, cfg, folder, console),
                n_trials=target - finished,
                callbacks=[stop],
                catch=(TrainingError,),  # a diverged trial fails; the study goes on
            )
        except KeyboardInterrupt:
            console.print("study interrupted: run the same command again to resume it", highlight=False)
            raise
    return _conclude(study, cfg, name, folder, url, console)


def _open_study(optuna: Any, name: str, url: str, tune: TuneConfig, seed: int) -> Any:
    import warnings

    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # we print our own line per trial, failures included
    with warnings.catch_warnings():  # heartbeats are marked experimental; they have been since optuna 2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            storage = RDBStorage(
                url,
                heartbeat_interval=HEARTBEAT_SECONDS,
                grace_period=HEARTBEAT_GRACE,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
            )
        except Exception as e:  # sqlalchemy's errors for a bad URL or an unreachable database
            first_line = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ConfigError(f"study storage '{url}' cannot be opened: {first_line}") from None
    # a resumed study must not replay the random startup trials it already ran
    existing = _trial_count(optuna, storage, name)
    base_seed = tune.seed if tune.seed is not None else seed
    sampler = optuna.samplers.TPESampler(seed=base_seed + existing, n_startup_trials=tune.startup_trials)
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=tune.startup_trials, n_warmup_steps=tune.warmup_epochs + 1)
        if tune.pruner == "median"
        else optuna.pruners.NopPruner()
    )
    direction = "minimize" if tune.minimize() else "maximize"
    study = optuna.create_study(
        study_name=name, storage=storage, sampler=sampler, pruner=pruner, direction=direction, load_if_exists=True
    )
    if study.direction.name.lower() != direction:
        raise ConfigError(
            f"study '{name}' exists with direction {study.direction.name.lower()} but tune.direction "
            f"says {direction}: set tune.study_name to start a new study"
        )
    return study


def _trial_count(optuna: Any, storage: Any, name: str) -> int:
    try:
        return len(optuna.load_study(study_name=name, storage=storage).trials)
    except KeyError:  # no such study yet
        return 0


def _count_finished(study: Any) -> int:
    return sum(t.state.name in FINISHED for t in study.trials)


def sample_config(trial: Any, cfg: RunConfig, space: dict[str, ParamSpace]) -> RunConfig:
    """The trial's config: ``cfg`` without its tune section, each space key set to a sample."""
    raw = cfg.to_dict()
    raw.pop("tune", None)
    for key, dist in space.items():
        set_path(raw, key, suggest(trial, key, dist))
    return validate_config(raw)


def suggest(trial: Any, key: str, dist: ParamSpace) -> Any:
    law = dist.law  # which distribution: choice, uniform, log_uniform, int, log_int
    if law == "choice":
        return trial.suggest_categorical(key, dist.choice)
    low, high = getattr(dist, law)
    if law in ("int", "log_int"):
        return trial.suggest_int(key, low, high, log=law == "log_int")
    return trial.suggest_float(key, low, high, log=law == "log_uniform")


def _objective(trial: Any, cfg: RunConfig, folder: Path, console: Console) -> float:
    import optuna

    from torchkeel.experiment import train

    tune = _tune_section(cfg)
    trial_cfg = sample_config(trial, cfg, tune.space)
    trial_cfg.out_dir = str(folder / "runs")
    trial_cfg.name = f"{folder.name}-trial{trial.number:04d}"
    if trial_cfg.train.mlflow.experiment is None:  # with train.loggers: [mlflow], one experiment per study
        trial_cfg.train.mlflow.experiment = folder.name
    values: list[float] = []
    state, shown_state = "FAIL", ""
    try:
        train(trial_cfg, Console(quiet=True), progress=False, on_epoch=_reporter(trial, tune.metric, values))
        state = "COMPLETE"
    except StopRequested as e:  # pruned: the run folder stays, with trial.json
        state = "PRUNED"
        raise optuna.TrialPruned(str(e)) from None
    except KeyboardInterrupt:
        shown_state = "interrupted"  # optuna records it as failed
        raise
    except TrainingInterrupted:  # Ctrl-C/SIGTERM during a trial stops the study, not just the trial
        shown_state = "interrupted"
        raise KeyboardInterrupt from None
    except Exception as e:
        shown_state = f"failed: {e}"
        raise
    finally:
        _record_trial(folder, trial, tune.metric, values, state)
        shown = ", ".join(f"{k.split('.')[-1]} {_short(v)}" for k, v in trial.params.items())
        last = f"{tune.metric} {values[-1]:.4f}" if values else "no epoch finished"
        console.print(f"trial {trial.number}: {shown} -> {last} ({shown_state or state.lower()})", highlight=False)
    return values[-1]


def _reporter(trial: Any, metric: str, values: list[float]):
    """The per-epoch hook given to fit: report the metric, stop the trial when the pruner says so."""

    def on_epoch(record: dict[str, Any]) -> None:
        if metric not in record:
            logged = ", ".join(k for k in record if "/" in k)
            raise ConfigError(f"tune.metric: '{metric}' is not logged by this run; choose one of {logged}")
        values.append(float(record[metric]))
        trial.report(values[-1], step=record["epoch"])
        if trial.should_prune():
            raise StopRequested(f"{metric} {values[-1]:.4f} at epoch {record['epoch']} is below the median")

    return on_epoch


def _record_trial(folder: Path, trial: Any, metric: str, values: list[float], state: str) -> None:
    """trial.json in the trial's run folder (found by its name; trial numbers are unique)."""
    found = sorted((folder / "runs").glob(f"*-trial{trial.number:04d}"))
    if found:
        info = {"number": trial.number, "state": state, "params": trial.params, "metric": metric, "values": values}
        atomic.write_json(found[-1] / "trial.json", info)
        trial.set_user_attr("run_folder", str(found[-1].resolve()))


def _conclude(study: Any, cfg: RunConfig, name: str, folder: Path, url: str, console: Console) -> StudyResult:
    from torchkeel.tune_report import write_study_report

    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    best_path, best_value, best_params = None, None, {}
    if complete:
        best = study.best_trial
        best_value, best_params = best.value, best.params
        best_path = write_best_config(folder, cfg, best, study)
    report = write_study_report(study, folder, _tune_section(cfg))
    return StudyResult(folder, url, name, _count_finished(study), best_value, best_params, best_path, report)


def write_best_config(folder: Path, cfg: RunConfig, best: Any, study: Any) -> Path:
    """best.yaml: the config with the best trial's values, without the tune section."""
    raw = copy.deepcopy(cfg.to_dict())
    raw.pop("tune", None)
    space = _tune_section(cfg).space
    for key, value in best.params.items():
        # the study's database is a file like any other: it may only fill in the keys this
        # config searches, with values from their ranges (a planted model.target would run code)
        if key not in space or not space[key].contains(value):
            raise ConfigError(
                f"study '{study.study_name}': its best trial has {key}={_short(value)}, which this config's "
                "tune.space does not allow; the study's database does not belong to this config"
            )
        set_path(raw, key, value)
    raw["name"] = f"{study.study_name}-best"
    validate_config(raw)  # it must train as it stands
    header = (
        f"# Best of {len(study.trials)} trials of study '{study.study_name}': "
        f"{_tune_section(cfg).metric} {best.value:.4f} (trial {best.number}"
        + (f", run folder {best.user_attrs['run_folder']})" if "run_folder" in best.user_attrs else ")")
        + "\n# Train it: keel train "
        + str(folder / "best.yaml")
        + "\n"
        + "".join(f"#   {k}: {_short(v)}\n" for k, v in best.params.items())
    )
    path = folder / "best.yaml"
    atomic.write_text(path, header + yaml.safe_dump(raw, sort_keys=False))
    return path


def _tune_section(cfg: RunConfig) -> TuneConfig:
    if cfg.tune is None:
        raise ConfigError(
            "this config has no tune: section; add one, e.g. "
            "tune: {space: {train.optimizer.lr: {log_uniform: [1.0e-4, 1.0e-1]}}, metric: val/accuracy}"
        )
    return cfg.tune


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80] or "study"


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else json.dumps(value)
