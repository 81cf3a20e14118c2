"""The ``tune:`` section of a config: which keys a study searches, and how it scores trials.

```yaml
tune:
  space:
    train.optimizer.lr: {log_uniform: [1.0e-4, 1.0e-1]}
    model.dropout: {uniform: [0.0, 0.5]}
    train.batch_size: {choice: [64, 128, 256]}
  metric: val/accuracy
  direction: maximize
```

Validated here without importing optuna (``keel --help`` and config loading stay fast); the
study itself runs in :mod:`torchkeel.tune`. Every key of ``space`` must be a key the config
accepts: the config validator sets each key to each end of its range (or each choice) and
validates the result.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DISTRIBUTIONS = ("uniform", "log_uniform", "int", "log_int", "choice")
Scalar = float | int | str | bool | None


class ParamSpace(BaseModel):
    """One searched key: exactly one of the distributions below."""

    model_config = ConfigDict(extra="forbid")
    uniform: tuple[float, float] | None = Field(None, description="[low, high] float")
    log_uniform: tuple[float, float] | None = Field(None, description="[low, high] float, sampled in log space")
    # builtins.int: inside this class body `int` names the field
    int: tuple[builtins.int, builtins.int] | None = Field(None, description="[low, high] integer, both included")
    log_int: tuple[builtins.int, builtins.int] | None = Field(None, description="[low, high] integer, log space")
    choice: list[Scalar] | None = Field(None, description="one of these values")

    @model_validator(mode="after")
    def _one_distribution(self) -> ParamSpace:
        given = [name for name in DISTRIBUTIONS if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(DISTRIBUTIONS)} (got {', '.join(given) or 'none'})")
        law = given[0]
        if law == "choice":
            if not self.choice:
                raise ValueError("choice needs at least one value")
            return self
        low, high = getattr(self, law)
        if not low < high:
            raise ValueError(f"{law}: low must be below high (got [{low}, {high}])")
        if law.startswith("log") and low <= 0:
            raise ValueError(f"{law}: low must be above 0 (got {low})")
        return self

    def contains(self, value: Any) -> bool:
        """Whether ``value`` could have been drawn from this distribution."""
        if self.law == "choice":
            return any(type(value) is type(c) and value == c for c in self.choice)
        low, high = getattr(self, self.law)
        integer = self.law in ("int", "log_int")
        number = isinstance(value, builtins.int if integer else (builtins.int, float)) and not isinstance(value, bool)
        return number and low <= value <= high

    @property
    def law(self) -> str:
        return next(name for name in DISTRIBUTIONS if getattr(self, name) is not None)

    def extremes(self) -> list[Any]:
        """The values to check against the config: every choice, or both ends of a range."""
        return list(self.choice) if self.law == "choice" else list(getattr(self, self.law))


class TuneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    space: dict[str, ParamSpace] = Field(description="dotted config key -> distribution")
    metric: str = Field("val/loss", description="per-epoch key of metrics.jsonl to optimise, e.g. val/accuracy")
    direction: Literal["auto", "maximize", "minimize"] = Field(
        "auto",
        description="auto: minimize what a task marks lower-is-better (loss, rmse, frechet...), maximize the rest",
    )
    trials: int = Field(20, ge=1, description="finished trials the study aims at (keel tune --trials)")
    pruner: Literal["median", "none"] = Field("median", description="stop trials worse than the median")
    startup_trials: int = Field(
        5, ge=0, description="trials sampled at random, and never pruned, before TPE and pruning start"
    )
    warmup_epochs: int = Field(1, ge=0, description="epochs a trial always trains before it can be pruned")
    study_name: str | None = Field(None, description="default: the config's name, else <data>-<model>")
    storage: str | None = Field(None, description="database URL; default sqlite in the study folder")
    out_dir: str = Field("studies", description="folder holding study folders")
    seed: int | None = Field(None, description="sampler seed; default: the config's seed")

    @field_validator("space")
    @classmethod
    def _not_empty(cls, space: dict[str, ParamSpace]) -> dict[str, ParamSpace]:
        if not space:
            raise ValueError("name at least one key to search, e.g. train.optimizer.lr: {log_uniform: [1e-4, 1e-1]}")
        if "seed" in space or any(key.startswith("tune.") for key in space):
            raise ValueError("the search space cannot contain 'seed' or 'tune.*' keys")
        return space

    @field_validator("metric")
    @classmethod
    def _per_epoch(cls, metric: str) -> str:
        if not metric.startswith(("val/", "train/")):
            raise ValueError("metric must be a per-epoch key such as val/accuracy or val/loss")
        return metric

    def minimize(self) -> bool:
        if self.direction != "auto":
            return self.direction == "minimize"
        from torchkeel.tasks import lower_is_better

        return lower_is_better(self.metric)


def check_space_keys(raw: dict[str, Any], space: dict[str, ParamSpace], validate: Callable[[dict], Any]) -> None:
    """Raise ConfigError naming the first space key the config does not accept: an unknown
    key, or a range end or choice the key refuses (e.g. dropout 1.5). ``validate``: the config
    schema's validate_config (passed in: config imports this module)."""
    import copy

    from torchkeel.config_yaml import set_path
    from torchkeel.errors import ConfigError

    base = {k: v for k, v in raw.items() if k != "tune"}
    for key, dist in space.items():
        for value in dist.extremes():
            trial = copy.deepcopy(base)
            set_path(trial, key, value)
            try:
                validate(trial)
            except ConfigError as e:
                # a ConfigError passes through pydantic unchanged, so the message stays one line
                raise ConfigError(
                    f"config: tune.space '{key}' = {value!r}: {str(e).removeprefix('config: ')}"
                ) from None
