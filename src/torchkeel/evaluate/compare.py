"""``keel runs --sort METRIC`` and ``keel compare RUN RUN...``: runs side by side."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torchkeel import atomic
from torchkeel.config import flatten
from torchkeel.errors import ConfigError, DataWarning, RunError, unknown_choice
from torchkeel.runs import RunInfo, read_metrics, read_run
from torchkeel.tasks import lower_is_better

SMALLER_FIRST = ("train_seconds",)  # summary numbers where less is better; metrics ask the tasks


def run_value(info: RunInfo, metric: str) -> float | None:
    """A run's value of ``metric``: a test metric (``accuracy`` or ``test/accuracy``), the last
    epoch's ``val/...`` or ``train/...`` value, or a number of summary.json (``train_seconds``)."""
    if info.damage is not None:
        return None
    if metric.startswith(("val/", "train/")):
        epochs = [r[metric] for r in read_metrics(info.path) if _is_number(r.get(metric))]
        return float(epochs[-1]) if epochs else None
    name = metric.removeprefix("test/")
    value = info.summary.get("test", {}).get(name, info.summary.get(name))
    return float(value) if _is_number(value) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def sortable_metrics(infos: list[RunInfo]) -> list[str]:
    names = set()
    for info in infos:
        names |= set(info.summary.get("test", {}))
        names |= {k for k, v in info.summary.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    return sorted(names)


def sort_runs(infos: list[RunInfo], metric: str) -> list[RunInfo]:
    """Best first (lowest for loss-like metrics and time); runs without the metric last."""
    if all(run_value(i, metric) is None for i in infos):
        raise ConfigError("--sort: " + unknown_choice("metric", metric, sortable_metrics(infos) or ["accuracy"]))
    lower = lower_is_better(metric) or metric.split("/")[-1] in SMALLER_FIRST
    sign = 1.0 if lower else -1.0

    def key(info: RunInfo) -> tuple[int, float]:
        value = run_value(info, metric)
        missing = value is None or math.isnan(value)
        return (1, 0.0) if missing else (0, sign * value)

    return sorted(infos, key=key)


@dataclass
class Comparison:
    runs: list[str]
    config_diff: list[tuple[str, list[Any]]]  # keys whose values differ
    metrics: list[tuple[str, list[float | None]]]
    curves: Path | None


def compare_runs(run_dirs: list[Path], curves_png: Path | None, force: bool = False) -> Comparison:
    """The runs side by side; ``curves_png`` (the overlaid curves) is refused when it exists
    and ``force`` is not given, or when it is one of the runs' files."""
    infos = usable_runs([read_run(p) for p in run_dirs])
    if curves_png is not None:
        inputs = [i.path / name for i in infos for name in ("metrics.jsonl", "summary.json", "config.yaml")]
        atomic.check_output(curves_png, "--plot", inputs=inputs, force=force)
    names = [i.path.name for i in infos]
    flat = [flatten(i.config) for i in infos]
    keys = sorted(set().union(*flat))
    diff = [(k, [f.get(k) for f in flat]) for k in keys if len({repr(f.get(k)) for f in flat}) > 1]
    metric_names = sorted({k for i in infos for k in i.summary.get("test", {})}, key=lambda m: (m != "loss", m))
    rows = [(f"test/{m}", [run_value(i, m) for i in infos]) for m in metric_names]
    last_epoch = sorted({k for i in infos for r in read_metrics(i.path) for k in r if k.startswith("val/")})
    rows += [(k, [run_value(i, k) for i in infos]) for k in last_epoch]
    rows += [
        (k, [run_value(i, k) for i in infos]) for k in ("epochs", "train_seconds", "samples_per_second", "parameters")
    ]
    curves = None
    if curves_png is not None:
        atomic.write_bytes(curves_png, overlay_curves(infos, svg=curves_png.suffix.lower() == ".svg"))
        curves = curves_png
    return Comparison(names, diff, rows, curves)


def usable_runs(infos: list[RunInfo]) -> list[RunInfo]:
    """The runs that are not damaged, at least two; each damaged one is named in a warning."""
    usable, damaged = [i for i in infos if i.damage is None], [i for i in infos if i.damage is not None]
    if len(usable) < 2:
        raise RunError(f"compare needs two runs that can be read; skipped {damaged[0].path.name}: {damaged[0].damage}")
    for info in damaged:
        warnings.warn(f"skipped damaged run {info.path.name}: {info.damage}", DataWarning, stacklevel=3)
    return usable


def overlay_curves(infos: list[RunInfo], svg: bool = False) -> bytes:
    """One panel per per-epoch metric (val, else train), one line per run: a PNG, or an SVG."""
    from torchkeel.evaluate.charts import line_panels
    from torchkeel.evaluate.plots import line_panels_png

    per_run = {i.path.name: [r for r in read_metrics(i.path) if "seconds" in r] for i in infos}
    metrics = sorted({k.split("/", 1)[1] for recs in per_run.values() for r in recs for k in r if "/" in k})
    panels: dict[str, dict[str, tuple[list, list]]] = {}
    for metric in sorted(metrics, key=lambda m: (m != "loss", m)):
        series = {}
        for name, recs in per_run.items():
            key = f"val/{metric}" if any(f"val/{metric}" in r for r in recs) else f"train/{metric}"
            points = [(r["epoch"], r[key]) for r in recs if _is_number(r.get(key)) and _is_number(r.get("epoch"))]
            if points:
                series[f"{name} ({key.split('/')[0]})"] = ([p[0] for p in points], [p[1] for p in points])
        if series:
            panels[metric] = series
    if not panels:
        raise ConfigError("none of these runs has per-epoch records in metrics.jsonl to plot")
    return line_panels(panels, "epoch").encode() if svg else line_panels_png(panels, "epoch")
