"""Copies of a run's metrics for the tools people already use (``train.loggers``).

The run folder (metrics.jsonl, summary.json) stays the source of truth; these only mirror it:
- ``tensorboard``: event files in ``<run>/tensorboard/`` through ``torch.utils.tensorboard``
  (extra ``tensorboard``); view with ``tensorboard --logdir runs``.
- ``mlflow``: one MLflow run per torchkeel run, params = the flattened config, metrics per
  logged step and epoch, test metrics and the report as artifacts at the end (extra
  ``mlflow``). Default store: SQLite at ``<out_dir>/mlflow.db`` (MLflow 3 refuses its old
  file store); ``train.mlflow.tracking_uri`` takes any tracking URI. The MLflow run id is kept
  in ``<run>/mlflow.json`` so a resumed run continues the same MLflow run.
Each library is imported only when its logger is asked for.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from torchkeel import atomic
from torchkeel.config import RunConfig, flatten
from torchkeel.errors import ConfigError

MLFLOW_ID_FILE = "mlflow.json"


class Loggers:
    """The configured loggers as one object; with none configured every call does nothing."""

    def __init__(self, loggers: list[Any], logged_step: int = 0):
        self.loggers = loggers
        self.logged_step = logged_step  # step records up to this step were already sent

    def log_epoch(self, record: dict[str, Any], steps: list[dict[str, Any]]) -> None:
        """The epoch's record (train/*, val/*, lr) and the step records not yet sent."""
        new_steps = [s for s in steps if s["step"] > self.logged_step]
        self.logged_step = record["step"]
        for logger in self.loggers:
            for s in new_steps:
                logger.log(_scalars(s), s["step"])
            logger.log(_scalars(record), record["step"])

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()


def open_loggers(cfg: RunConfig, run_dir: Path | None, logged_step: int = 0) -> Loggers:
    """The loggers of ``train.loggers``; ``logged_step``: a resumed run sent steps up to here."""
    names = cfg.train.loggers
    if names and run_dir is None:
        raise ConfigError("train.loggers needs a run folder: pass fit(..., run_dir=...) or train with `keel train`")
    return Loggers([_OPEN[name](cfg, run_dir) for name in names], logged_step)


def log_summary(cfg: RunConfig, run_dir: Path, summary: dict[str, Any], files: list[Path]) -> None:
    """At the end of ``keel train``: test metrics (and, for MLflow, ``files`` as artifacts)."""
    step = _final_step(run_dir)
    test = {f"test/{k}": float(v) for k, v in summary.get("test", {}).items()}
    for name in cfg.train.loggers:
        logger = _OPEN[name](cfg, run_dir)
        logger.log(test, step)
        logger.finish(files)


class TensorBoardLogger:
    def __init__(self, cfg: RunConfig, run_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "train.loggers: tensorboard needs its package: pip install 'torchkeel[tensorboard]'"
            ) from None
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        self.writer.add_text("config", f"```yaml\n{cfg.to_yaml()}```")

    def log(self, scalars: dict[str, float], step: int) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, step)

    def finish(self, files: list[Path]) -> None:
        self.close()

    def close(self) -> None:
        self.writer.close()


class MlflowLogger:
    def __init__(self, cfg: RunConfig, run_dir: Path):
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ConfigError("train.loggers: mlflow needs its package: pip install 'torchkeel[mlflow]'") from None
        # MLflow announces each schema migration of a new SQLite store at INFO level
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        out_dir = run_dir.parent.resolve()
        uri = cfg.train.mlflow.tracking_uri or f"sqlite:///{out_dir / 'mlflow.db'}"
        self.client = MlflowClient(tracking_uri=uri)
        id_file = run_dir / MLFLOW_ID_FILE
        if id_file.is_file():  # resumed run, or the end-of-run summary
            self.run_id = json.loads(id_file.read_text(encoding="utf-8"))["run_id"]
            return
        experiment = self._experiment(
            cfg.train.mlflow.experiment or cfg.name or run_dir.name.split("-", 2)[-1], out_dir
        )
        run = self.client.create_run(experiment, run_name=run_dir.name, tags={"torchkeel.run_folder": str(run_dir)})
        self.run_id = run.info.run_id
        atomic.write_json(id_file, {"tracking_uri": uri, "run_id": self.run_id})
        self._log_params(cfg.to_dict())

    def _experiment(self, name: str, out_dir: Path) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        # artifacts beside the runs, not in an ./mlruns of whatever folder keel ran in
        return self.client.create_experiment(name, artifact_location=(out_dir / "mlartifacts").as_uri())

    def _log_params(self, config: dict[str, Any]) -> None:
        from mlflow.entities import Param

        params = [Param(k, str(v)[:6000]) for k, v in flatten(config).items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[start : start + 100])

    def log(self, scalars: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in scalars.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def finish(self, files: list[Path]) -> None:
        for path in files:
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, "FINISHED")

    def close(self) -> None:
        pass  # the run stays open for the test metrics logged by ``log_summary``


_OPEN = {"tensorboard": TensorBoardLogger, "mlflow": MlflowLogger}


def _scalars(record: dict[str, Any]) -> dict[str, float]:
    """The metric values of a metrics.jsonl record (``step`` and ``epoch`` are the x axis)."""
    return {k: float(v) for k, v in record.items() if k not in ("step", "epoch") and isinstance(v, int | float)}


def _final_step(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return 0
    steps = [json.loads(line).get("step", 0) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return max(steps, default=0)
