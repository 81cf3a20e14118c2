"""The pieces a report is made of: a Section (title, HTML, figures) and the ReportContext
every section function reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from torchkeel.config import RunConfig
from torchkeel.data.bundle import DataBundle, DataSpec
from torchkeel.evaluate.analysis import Analysis
from torchkeel.train.losses import LossFn


@dataclass
class Figure:
    png: bytes
    caption: str


@dataclass
class Section:
    key: str
    title: str
    body: str = ""  # HTML, already escaped
    figures: list[Figure] = field(default_factory=list)


@dataclass
class ReportContext:
    """Everything a section may read; built once per report."""

    run_dir: Path
    config: RunConfig
    env: dict[str, Any]
    summary: dict[str, Any]
    records: list[dict[str, Any]]  # metrics.jsonl
    model: nn.Module
    spec: DataSpec
    data: DataBundle
    loss_fn: LossFn | None  # None (and analysis None) when the model is not supervised
    analysis: Analysis | None  # the test split, for supervised models
    robustness: list[dict[str, Any]]

    @property
    def epochs(self) -> list[dict[str, Any]]:
        return [r for r in self.records if "seconds" in r]

    @property
    def steps(self) -> list[dict[str, Any]]:
        return [r for r in self.records if "train/batch_loss" in r]

    @property
    def examples(self) -> int:
        return self.config.eval.report_examples
