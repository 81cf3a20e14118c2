"""The pieces a report is made of: a Section (title, HTML, figures) and the ReportContext
every section function reads."""

from __future__ import annotations

import base64
import html
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
    """A chart as SVG markup (evaluate/charts.py) or a picture as PNG bytes, under a caption."""

    image: bytes | str
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


def figure_html(image: bytes | str, alt: str) -> str:
    """An SVG chart inline, a PNG as a data: URI (the page stays one self-contained file)."""
    if isinstance(image, str):
        return image
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(image).decode()}">'
