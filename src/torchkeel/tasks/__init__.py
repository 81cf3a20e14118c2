"""Tasks by name: ``TASKS`` (a plain dict) and ``task_of(spec)``.

A DataSpec names its task (``spec.task``, saved in every run's model.json); the rest of
torchkeel asks that task object and never compares task names (tests/test_architecture.py).
"""

from __future__ import annotations

from typing import Any

from torchkeel.errors import RunError
from torchkeel.tasks.base import Task
from torchkeel.tasks.classify import BINARY, MULTICLASS
from torchkeel.tasks.detect import DETECTION
from torchkeel.tasks.forecast import FORECAST
from torchkeel.tasks.generate import GENERATE
from torchkeel.tasks.language_model import LANGUAGE_MODEL
from torchkeel.tasks.recognise import SPEECH
from torchkeel.tasks.regress import REGRESS
from torchkeel.tasks.segment import SEGMENTATION
from torchkeel.tasks.translate import TRANSLATION

TASKS: dict[str, Task] = {
    "classification": MULTICLASS,
    "binary": BINARY,
    "regression": REGRESS,
    "forecast": FORECAST,
    "generate": GENERATE,
    "language_model": LANGUAGE_MODEL,
    "speech_recognition": SPEECH,
    "translation": TRANSLATION,
    "segmentation": SEGMENTATION,
    "detection": DETECTION,
}


def task_of(spec: Any) -> Task:
    """The task of a DataSpec (or of a task name)."""
    name = spec if isinstance(spec, str) else spec.task
    if name not in TASKS:
        raise RunError(
            f"unknown task '{name}' (tasks: {', '.join(TASKS)}): the run was made by another version of "
            "torchkeel; retrain it with this one"
        )
    return TASKS[name]


def lower_is_better(metric: str) -> bool:
    """Whether smaller values of ``metric`` (``val/rmse``, ``frechet``) are better, for any task:
    early stopping's and tune's "auto" direction, and sorting runs."""
    name = metric.split("/")[-1]
    return any(name in task.lower_is_better for task in TASKS.values())


def all_metrics() -> tuple[str, ...]:
    """Every metric some task computes (the config's valid ``eval.metrics``)."""
    return tuple(dict.fromkeys(m for task in TASKS.values() for m in task.metrics))


def all_losses() -> tuple[str, ...]:
    return ("auto", *dict.fromkeys(loss for task in TASKS.values() for loss in task.losses))


__all__ = ["TASKS", "Task", "all_losses", "all_metrics", "lower_is_better", "task_of"]
