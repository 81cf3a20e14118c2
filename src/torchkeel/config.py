"""The YAML config schema as pydantic models, and loading with overrides.

The defaults of these models *are* the default recipe (``keel train`` with no arguments: digits
and ``simple_cnn``). Every error names the key path, e.g. ``train.optimizer.lr``, and for an
unknown key or name suggests the closest valid one. This module does not import torch, so
``keel --help`` stays fast; names that live in the torch-side registries (datasets, models) are
checked by importing those registries only when a config is validated.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from torchkeel.config_yaml import (  # noqa: F401  (read_yaml, set_path, flatten: re-exported)
    check_bounded,
    flatten,
    parse_override,
    read_yaml,
    set_path,
)
from torchkeel.errors import ConfigError, closest
from torchkeel.recipes import apply_recipe
from torchkeel.search_space import TuneConfig, check_space_keys

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("constant", "step", "cosine", "onecycle")
PRECISIONS = ("fp32", "bf16", "fp16", "auto")  # auto: bf16 where the hardware has it, else fp32
LOGGERS = ("tensorboard", "mlflow")
ATTACKS = ("fgsm", "pgd")
# train.device: auto, or a kind with an optional index (torch.device's form, checked before torch sees it)
DEVICE_FORM = re.compile(r"auto|(cpu|cuda|mps)(:\d{1,4})?")
DEVICE_FORMS = "auto, cpu, cuda, cuda:N (N from 0) or mps"


from torchkeel.config_data import (  # noqa: E402,F401  (re-exported: the schema is one namespace)
    CORPUS_DATASETS,
    FILE_DATASETS,
    FOLDER_DATASETS,
    SERIES_DATASETS,
    AugmentConfig,
    CorpusConfig,
    DataConfig,
    ImageConfig,
    SeriesConfig,
    Strict,
    TableConfig,
    TextConfig,
    _choice,
    check_data_sections,
    corpus_of_pretrained_lm,
    resolve_text_length,
)
from torchkeel.config_train import (  # noqa: E402,F401  (re-exported)
    CheckpointConfig,
    EarlyStoppingConfig,
    FinetuneConfig,
    GanConfig,
    LookaheadConfig,
    MlflowConfig,
    parse_duration,
)


class ModelConfig(BaseModel):
    """``name`` picks the builder; every other key is one of that builder's options."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)
    name: str = "simple_cnn"
    init_from: str | None = Field(
        None, description="start from these weights: a plain PyTorch state dict (.pt/.pth) or .safetensors"
    )

    @field_validator("name")
    @classmethod
    def _known_model(cls, name: str) -> str:
        from torchkeel.models import MODELS

        return _choice("model", name, MODELS)

    @model_validator(mode="after")
    def _known_options(self) -> ModelConfig:
        from torchkeel.models import check_options

        try:
            # write every option out (defaults included) so config.yaml records the whole model
            self.__pydantic_extra__ = check_options(self.name, self.options())
        except ConfigError as e:
            raise ConfigError(f"config: {e}") from None
        return self

    def options(self) -> dict[str, Any]:
        """The builder's keyword arguments (everything but ``name``)."""
        return dict(self.model_extra or {})


class OptimizerConfig(Strict):
    name: str = "adamw"
    lr: float = Field(3e-3, gt=0.0, description="peak learning rate")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="sgd and rmsprop")
    nesterov: bool = False
    weight_decay: float = Field(0.01, ge=0.0, description="decoupled for adamw; never on biases/norms")
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0.0)
    implementation: Literal["auto", "loop", "foreach", "fused"] = Field(
        "auto", description="torch's kernels: auto (torch's choice), loop, foreach (batched) or fused"
    )

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        return _choice("optimizer", name, OPTIMIZERS)


class ScheduleConfig(Strict):
    name: str = "onecycle"
    warmup: float | None = Field(
        None, ge=0.0, lt=1.0, description="fraction of steps with linear warmup (onecycle: 0.25)"
    )
    step_size: int = Field(10, ge=1, description="step: epochs between decays")
    gamma: float = Field(0.1, gt=0.0, le=1.0, description="step: decay factor")
    final_lr: float = Field(0.0, ge=0.0, description="cosine/onecycle: lr at the end, x peak lr")

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        return _choice("schedule", name, SCHEDULES)


class TrainConfig(Strict):
    epochs: int = Field(12, ge=1)
    batch_size: int = Field(32, ge=1)
    accumulate: int = Field(1, ge=1, description="batches summed into one optimiser step (batch x accumulate)")
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    loss: str = "auto"
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    grad_clip: float | None = Field(None, gt=0.0, description="max global gradient norm")
    early_stopping: EarlyStoppingConfig | None = None
    precision: str = "fp32"
    compile: bool = False
    channels_last: bool = False
    device: str = "auto"
    threads: Annotated[int, Field(ge=1)] | Literal["auto"] | None = Field(
        "auto", description="CPU threads for torch; auto: 1 for a small step, else torch's (train/threads.py)"
    )
    allocator: Literal["retain", "system"] = Field(
        "retain", description="retain: glibc keeps freed blocks for reuse (fewer page faults per step); system: as is"
    )
    log_every: int = Field(10, ge=1, description="steps between progress updates (host syncs)")
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    finetune: FinetuneConfig | None = Field(None, description="after training: unfreeze all, train on at lower lr")
    gan: GanConfig | None = Field(None, description="GAN models: the GAN loop's settings")
    on_nan: Literal["stop", "skip"] = Field(
        "stop", description="non-finite loss or gradient: stop (last good checkpoint kept) or skip the step"
    )
    deterministic: bool = Field(
        False, description="deterministic kernels (torch.use_deterministic_algorithms, cuDNN): exact GPU resume"
    )
    loggers: list[str] = Field([], description="copies of the metrics for: tensorboard, mlflow")
    lookahead: LookaheadConfig | None = Field(None, description="lookahead EMA of the weights (airbench)")
    mlflow: MlflowConfig = Field(default_factory=lambda: MlflowConfig())
    max_time: float | None = Field(
        None,
        description="training time limit (90, 30s, 5m, 1h): the epoch in progress ends there, is validated, "
        "and the run ends as early stopping ends it",
    )

    @field_validator("max_time", mode="before")
    @classmethod
    def _duration(cls, value: object) -> float | None:
        return None if value is None else parse_duration(value, "train.max_time")  # type: ignore[arg-type]

    @field_validator("loggers")
    @classmethod
    def _known_loggers(cls, names: list[str]) -> list[str]:
        return [_choice("logger", n, LOGGERS) for n in names]

    @field_validator("loss")
    @classmethod
    def _known_loss(cls, name: str) -> str:
        from torchkeel.tasks import all_losses  # every registered task's losses

        return _choice("loss", name, all_losses())

    @field_validator("precision")
    @classmethod
    def _known_precision(cls, name: str) -> str:
        return _choice("precision", name, PRECISIONS)

    @field_validator("device")
    @classmethod
    def _known_device(cls, name: str) -> str:
        if not DEVICE_FORM.fullmatch(name):
            raise ValueError(f"unknown device {name[:40]!r}; use {DEVICE_FORMS}")
        return name


class AttackConfig(Strict):
    method: str = Field("fgsm", description="fgsm | pgd")
    eps: list[float] = Field([0.1], description="L-inf budgets in pixel units ([0, 1] images)")
    steps: int = Field(10, ge=1, description="pgd: iterations")

    @field_validator("method")
    @classmethod
    def _known(cls, name: str) -> str:
        return _choice("attack", name, ATTACKS)

    @field_validator("eps")
    @classmethod
    def _in_range(cls, eps: list[float]) -> list[float]:
        if not eps or any(not 0.0 <= e <= 1.0 for e in eps):
            raise ValueError(f"eps must be one or more values in [0, 1] (got {eps})")
        return eps


class EvalConfig(Strict):
    metrics: list[str] = ["accuracy", "f1"]
    batch_size: int = Field(1024, ge=1)
    top_k: int = Field(3, ge=1, description="classes shown by predict")
    report: bool = Field(True, description="write report.html at the end of keel train")
    report_examples: int = Field(8, ge=1, le=64, description="examples per report section")
    attack: AttackConfig | None = Field(None, description="robustness check at the end of training")
    tta: Literal["none", "flip", "flip_translate"] = Field(
        "none", description="test-time augmentation of images: logits averaged over mirrored (and shifted) copies"
    )

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, names: list[str]) -> list[str]:
        from torchkeel.tasks import all_metrics  # every registered task's metrics

        return [_choice("metric", n, all_metrics()) for n in names]


class RunConfig(Strict):
    name: str | None = Field(None, description="run name; default <data>-<model>")
    seed: int = 0
    out_dir: str = Field("runs", description="folder holding run folders")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    tune: TuneConfig | None = Field(None, description="hyper-parameter search for keel tune")

    @model_validator(mode="after")
    def _known_data_set(self) -> RunConfig:
        from torchkeel.data import check_dataset  # the data registry; data/ imports only config_data

        try:
            check_dataset(self.data.name)
        except ConfigError as e:
            raise ConfigError(f"config: {e}") from None
        return self

    @model_validator(mode="after")
    def _tune_keys_exist(self) -> RunConfig:
        if self.tune is not None:
            check_space_keys(self.to_dict(), self.tune.space, validate_config)
        return self

    @model_validator(mode="after")
    def _sections_fit_the_model(self) -> RunConfig:
        # sections that only some models or data sets use are errors elsewhere, not ignored
        from torchkeel.models import MODEL_TASKS

        gan = self.model.name in MODEL_TASKS  # models that are not trained by fit() (the GAN)
        if self.train.gan is not None and not gan:
            raise ConfigError(
                f"config: train.gan is for GAN models ({', '.join(MODEL_TASKS)}), not '{self.model.name}'"
            )
        if self.train.finetune is not None and gan:
            raise ConfigError("config: train.finetune is for supervised models; a GAN trains by train.gan")
        check_data_sections(self.data)
        resolve_text_length(self.data, self.model.name)
        return self

    @model_validator(mode="after")
    def _pretrained_models_tokenise_their_data(self) -> RunConfig:
        # the encoder's embeddings only mean something for its own token ids: naming the model
        # makes the data use its tokeniser (torchkeel.models.pretrained, models.pretrained_lm)
        if self.model.name == "pretrained_lm":
            corpus_of_pretrained_lm(self.data, self.model.options().get("source"))
        if self.model.name != "pretrained_text":
            return self
        text, encoder = self.data.text, self.model.options().get("encoder")
        if text.encoder not in (None, encoder):
            raise ConfigError(f"config: data.text.encoder '{text.encoder}' differs from model.encoder '{encoder}'")
        if text.ngrams > 1:
            raise ConfigError("config: data.text.ngrams is for word tokenisers; pretrained_text uses its encoder's")
        text.tokenizer, text.encoder = "pretrained", encoder
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    shortcuts: dict[str, Any] | None = None,
) -> RunConfig:
    """Config from a YAML file (or the defaults), then ``key.path=value`` overrides, then
    shortcut flags (``{"data.name": "mnist", ...}``; a changed model name drops the old
    model's options), then, when no model is named, the data kind's default recipe under it all
    (``torchkeel.recipes``). Raises ConfigError naming the key on any problem."""
    return validate_config(apply_recipe(load_raw(path, overrides, shortcuts)))


def load_raw(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    shortcuts: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What :func:`load_config` validates, before any recipe is put under it."""
    raw = read_yaml(path) if path is not None else {}
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE (e.g. train.optimizer.lr=0.01), got {item[:80]!r}")
        set_path(raw, key.strip(), parse_override(key.strip(), value))
    for key, value in (shortcuts or {}).items():
        if value is None:
            continue
        model = raw.get("model")
        if key == "model.name" and isinstance(model, dict) and model.get("name", value) != value:
            raw["model"] = {}
        set_path(raw, key, value)
    check_bounded(raw, Path("--set"))
    return raw


def validate_config(raw: dict[str, Any]) -> RunConfig:
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(describe_error(e)) from None


def describe_error(error: ValidationError) -> str:
    """One line for the first problem pydantic found, with its dotted key path."""
    first = error.errors()[0]
    loc = [repr(str(p))[1:-1] for p in first["loc"]]  # escaped: a key may hold a newline
    path = ".".join(loc) or "config"
    if first["type"] == "extra_forbidden":
        hint = closest(loc[-1], _fields_at(loc[:-1]))
        suggestion = f"; did you mean '{'.'.join([*loc[:-1], hint])}'?" if hint else ""
        return f"config: unknown key '{path}'{suggestion}"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "value_error" and message.startswith(("unknown", "model ")):
        return f"config: {path}: {message}"
    got = first.get("input")
    shown = f" (got {got!r})" if not isinstance(got, dict | list) else ""
    return f"config: {path}: {message}{shown}"


def _fields_at(loc: list[str]) -> list[str]:
    model: Any = RunConfig
    for key in loc:
        field = model.model_fields.get(key)
        if field is None:
            return []
        model = field.annotation
        # unwrap `X | None`
        for arg in getattr(model, "__args__", ()):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                model = arg
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
    return list(model.model_fields)
