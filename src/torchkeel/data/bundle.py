"""DataBundle (train/val/test tensors) and DataSpec (everything predict needs later)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch


@dataclass
class DataSpec:
    """What a model and a predictor need to know about the data, JSON-serialisable.

    ``mean``/``std`` normalise inputs that were first scaled to [0, 1] (images: per channel;
    tables: per feature). ``task`` names the kind of problem, a key of ``tasks.TASKS``
    (classification, binary, regression, forecast, generate), which owns what differs.
    """

    name: str
    kind: str  # "image" | "table" | "text" | "series"
    task: str
    input_shape: tuple[int, ...]  # one sample, e.g. (1, 8, 8) = (C, H, W)
    classes: list[str] | None = None
    targets: int = 1  # regression outputs
    mean: list[float] | None = None
    std: list[float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # vocabulary, column stats, ...

    @property
    def num_classes(self) -> int:
        return len(self.classes or [])

    @property
    def output_size(self) -> int:
        """The model's output width, as the task defines it."""
        from torchkeel.tasks import task_of

        return task_of(self).output_size(self)

    @property
    def member_widths(self) -> list[int] | None:
        """An ensemble's text rows hold each member's ids in a fixed span of columns: their
        widths (``extra["widths"]``). None for one tokenisation, whose rows may be cut anywhere."""
        widths = self.extra.get("widths")
        return [int(w) for w in widths] if widths is not None else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataSpec:
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        d["input_shape"] = tuple(d["input_shape"])
        return cls(**d)


@dataclass
class Split:
    """Inputs ``x`` (N, *input_shape) and targets ``y``, as the task defines them: a tensor
    (int64 (N,) class indices, float32 (N,) for binary, float32 (N, targets) for regression),
    sliced on the device as it is; or a ``data.ragged.Ragged`` of one variable-size target per
    sample, gathered per batch and collated by the task."""

    x: torch.Tensor
    y: Any  # torch.Tensor | Ragged
    sources: list[str] | None = None  # where each sample came from (a file), for messages

    def __len__(self) -> int:
        return len(self.x)

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device), self.sources)


@dataclass
class DataBundle:
    spec: DataSpec
    train: Split
    val: Split | None
    test: Split

    def splits(self) -> dict[str, Split]:
        named = {"train": self.train, "val": self.val, "test": self.test}
        return {k: v for k, v in named.items() if v is not None}

    def summary(self) -> str:
        sizes = " / ".join(f"{len(s):,} {k}" for k, s in self.splits().items())
        from torchkeel.data.kinds import kind_of

        kind = kind_of(self.spec)
        shape = "x".join(str(d) for d in self.spec.input_shape)
        if kind.token_ids:
            shape = f"{shape} token ids (vocabulary {self.spec.extra.get('vocab_size', '?'):,})"
        elif kind.features:
            shape = f"{shape} features"
        what = f"{self.spec.num_classes} classes" if self.spec.classes else self.spec.task
        return f"{self.spec.name}: {sizes}; input {shape}; {what}"
