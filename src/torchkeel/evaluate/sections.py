"""Report sections every run can have: the run, its data, curves, and the test results."""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from torchkeel.data.kinds import kind_of
from torchkeel.data.table_encoder import TableEncoder
from torchkeel.evaluate import charts, plots
from torchkeel.evaluate.explain import pixels
from torchkeel.evaluate.report_parts import Figure, ReportContext, Section
from torchkeel.tasks import task_of

# ---- small HTML helpers


def fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 100:
            return f"{value:,.1f}"
        return f"{value:.4g}" if value and abs(value) < 1e-3 else f"{value:.4f}"
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return str(value)


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{fmt(v)}</td>' if isinstance(v, int | float) else f"<td>{html.escape(fmt(v))}</td>"
            for v in row
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def key_values(pairs: dict[str, Any]) -> str:
    return table(["", ""], pairs.items()).replace("<thead><tr><th></th><th></th></tr></thead>", "")


def class_names(ctx: ReportContext) -> list[str]:
    return ctx.spec.classes or [str(i) for i in range(max(2, ctx.spec.output_size))]


# ---- the run and its data


def run_section(ctx: ReportContext) -> Section:
    """Test metrics, time and throughput, environment and the resolved config."""
    s = ctx.summary
    timing = {
        "epochs": s.get("epochs", len(ctx.epochs)),
        "stopped early": s.get("stopped_early", False),
        "training time (s)": s.get("train_seconds", float("nan")),
        "mean epoch time (s)": float(np.mean([r["seconds"] for r in ctx.epochs])) if ctx.epochs else float("nan"),
        "throughput (train samples/s)": s.get("samples_per_second", float("nan")),
        "parameters": s.get("parameters", sum(p.numel() for p in ctx.model.parameters())),
    }
    env = {k: (" ".join(v) if isinstance(v, list) else v) for k, v in ctx.env.items()}
    env["seed"] = ctx.config.seed
    test = ""
    if ctx.analysis is not None:
        test = f"<div><h3>Test metrics ({ctx.analysis.size:,} examples)</h3>{key_values(ctx.analysis.metrics)}</div>"
    body = (
        f"<div class='grid'>{test}"
        f"<div><h3>Time and throughput</h3>{key_values(timing)}</div>"
        f"<div><h3>Environment</h3>{key_values(env)}</div></div>"
        f"<details><summary>Config (config.yaml)</summary><pre>{html.escape(ctx.config.to_yaml())}</pre></details>"
    )
    return Section("run", "Run", body)


def data_section(ctx: ReportContext) -> Section:
    spec, splits = ctx.spec, ctx.data.splits()
    pixels_in, class_targets = kind_of(spec).pixels, task_of(spec).class_targets
    info = {
        "data set": spec.name,
        "kind / task": f"{spec.kind} / {spec.task}",
        "input shape": " x ".join(str(d) for d in spec.input_shape),
        "splits": " / ".join(f"{len(v):,} {k}" for k, v in splits.items()),
    }
    if spec.classes:
        info["classes"] = (
            f"{len(spec.classes)}: {', '.join(spec.classes[:20])}{' ...' if len(spec.classes) > 20 else ''}"
        )
    if spec.mean is not None and pixels_in:
        info["normalisation (train mean / std)"] = (
            f"{fmt([round(m, 3) for m in spec.mean])} / {fmt([round(v, 3) for v in spec.std])}"
        )
    figures = []
    if class_targets:
        names = class_names(ctx)
        counts = {k: np.bincount(v.y.long().numpy(), minlength=len(names)).tolist() for k, v in splits.items()}
        figures.append(Figure(charts.bars(names, counts, "Examples per class", ylabel="examples"), "class balance"))
    elif task_of(spec).boxes:  # y: a Ragged of (n, 6) rows per image, the class first
        names = class_names(ctx)
        counts = {
            k: np.bincount(v.y.values[:, 0].long().numpy(), minlength=len(names)).tolist() for k, v in splits.items()
        }
        figures.append(Figure(charts.bars(names, counts, "Boxes per class", ylabel="boxes"), "boxes per class"))
    elif isinstance(getattr(ctx.data.train, "y", None), torch.Tensor):  # not a corpus's next tokens
        values = {k: v.y.reshape(len(v), -1)[:, 0].float().numpy() for k, v in splits.items()}
        figures.append(Figure(charts.histogram(values, "Target (first output) per split", "target"), "targets"))
    if pixels_in:
        x = ctx.data.train.x[:16]
        images = plots.to_display(pixels(x, spec).numpy())
        labels = [class_names(ctx)[int(y)] for y in ctx.data.train.y[:16]] if class_targets else [""] * len(x)
        figures.append(
            Figure(plots.image_grid(images, labels), "first training images (after normalisation is undone)")
        )
    return Section("data", "Data", key_values(info), figures)


def curves_section(ctx: ReportContext) -> Section:
    """Loss and every per-epoch metric, train beside val."""
    epochs = ctx.epochs
    xs = [r["epoch"] for r in epochs]
    names = sorted({k.split("/", 1)[1] for r in epochs for k in r if "/" in k}, key=lambda m: (m != "loss", m))
    panels = {}
    for metric in names:
        series = {}
        for part in ("train", "val"):
            key = f"{part}/{metric}"
            if any(key in r for r in epochs):
                series[part] = ([r["epoch"] for r in epochs if key in r], [r[key] for r in epochs if key in r])
        panels[metric] = series
    caption = f"{len(xs)} epochs; values per epoch from metrics.jsonl"
    return Section("curves", "Learning curves", "", [Figure(charts.line_panels(panels, "epoch"), caption)])


def lr_section(ctx: ReportContext) -> Section:
    steps = [r for r in ctx.records if "lr" in r and "train/batch_loss" in r] or [r for r in ctx.records if "lr" in r]
    panels = {"learning rate": {"lr": ([r["step"] for r in steps], [r["lr"] for r in steps])}}
    if any("train/batch_loss" in r for r in steps):
        panels["batch loss"] = {"train": ([r["step"] for r in steps], [r["train/batch_loss"] for r in steps])}
    t = ctx.config.train
    caption = f"{t.optimizer.name}, peak lr {t.optimizer.lr:g}, schedule {t.schedule.name}; every {t.log_every} steps"
    figure = charts.line_panels(panels, "optimiser step", markers=False)
    return Section("lr", "Learning-rate schedule", "", [Figure(figure, caption)])


# ---- classification


def confusion_section(ctx: ReportContext) -> Section:
    d = ctx.analysis.details
    cm = np.array(d["confusion_matrix"])
    figure = charts.heatmap(cm, d["classes"], f"Confusion matrix, test ({int(cm.sum()):,} examples)")
    return Section("confusion", "Confusion matrix", "", [Figure(figure, "rows: true class; columns: predicted")])


def per_class_section(ctx: ReportContext) -> Section:
    rows = ctx.analysis.details["per_class"]
    body = table(
        ["class", "precision", "recall", "F1", "support"],
        [(r["class"], r["precision"], r["recall"], r["f1"], r["support"]) for r in rows],
    )
    shown = sorted(rows, key=lambda r: r["f1"])[:40]  # the worst classes when there are many
    series = {m: [r[m] for r in shown] for m in ("precision", "recall", "f1")}
    figure = charts.bars([r["class"] for r in shown], series, "Per-class scores (test)", horizontal=len(shown) > 12)
    caption = "all classes" if len(shown) == len(rows) else f"the {len(shown)} classes with the lowest F1"
    return Section("per-class", "Per-class scores", body, [Figure(figure, caption)])


def wrong_section(ctx: ReportContext) -> Section:
    """The most confidently wrong test predictions, and confidence of right vs wrong ones."""
    wrong, names = ctx.analysis.wrong, class_names(ctx)
    rel = ctx.analysis.details["reliability"]
    count, correct = np.array(rel["count"]), np.array(rel["correct"])
    edges = [f"{i / rel['bins']:.2f}" for i in range(rel["bins"])]
    series = {"right": correct.tolist(), "wrong": (count - correct).tolist()}
    figures = [Figure(charts.bars(edges, series, "Test predictions by confidence", ylabel="examples"), "bin start")]
    if wrong is None:
        return Section("wrong", "Most confidently wrong", "<p>No wrong predictions on the test split.</p>", figures)
    titles = [
        f"true {names[t]}\npred {names[p]} {c:.0%}"
        for t, p, c in zip(wrong.true, wrong.pred, wrong.confidence, strict=True)
    ]
    body = ""
    if kind_of(ctx.spec).pixels:
        images = plots.to_display(pixels(wrong.x, ctx.spec).numpy())
        caption = f"the {len(titles)} wrong test predictions made with the highest confidence"
        figures.insert(0, Figure(plots.image_grid(images, titles), caption))
    else:
        body = table(["true", "predicted", "confidence", "input"], _rows_as_text(ctx, wrong.x, wrong))
    return Section("wrong", "Most confidently wrong", body, figures)


def vocabulary(spec: Any) -> list[str] | None:
    """Token strings by id: a word tokeniser's list, or a subword model's token -> id table
    (an ensemble's: its first member's, whose ids come first in each row)."""
    if "vocab" in spec.extra:
        return spec.extra["vocab"]
    saved = spec.extra.get("tokenizer") or {}
    while saved.get("type") in ("ngram", "concat"):  # hashed n-gram ids come after the base tokeniser's
        saved = saved["base"] if saved["type"] == "ngram" else saved["parts"][0]["tokenizer"]
    if isinstance(saved.get("vocab"), list):
        return saved["vocab"]
    table = (saved.get("tokenizer") or {}).get("model", {}).get("vocab")
    if isinstance(table, dict):  # Hugging Face BPE / WordPiece
        vocab = [""] * (max(table.values(), default=-1) + 1)
        for token, i in table.items():
            vocab[i] = token
        return vocab
    return None


def _rows_as_text(ctx: ReportContext, x: torch.Tensor, wrong: Any) -> list[tuple]:
    names = class_names(ctx)
    vocab = vocabulary(ctx.spec)
    width = (ctx.spec.member_widths or [None])[0]  # an ensemble's row: its first member's ids
    token_ids = kind_of(ctx.spec).token_ids
    table = ctx.spec.extra.get("table")
    columns = TableEncoder.from_dict(table["encoder"]).inverse(x) if table and "encoder" in table else None
    features = ctx.spec.extra.get("feature_names")
    rows = []
    for i in range(len(x)):
        if token_ids:
            ids = [int(t) for t in x[i, :width] if int(t) != 0]
            if vocab:  # the words; hashed n-gram ids (past the vocabulary) are left out
                ids = [t for t in ids if t < len(vocab)]
            text = " ".join(vocab[t] if vocab else str(t) for t in ids[:60])
        elif kind_of(ctx.spec).waveform:  # a clip: its duration (its spectrogram is in its own section)
            text = f"a clip of {float(x[i, 1].sum()) / ctx.spec.extra['sample_rate']:.2f} s"
        elif columns is not None:  # a table row as the user's columns and values, not standardised numbers
            text = ", ".join(f"{k}={v}" for k, v in list(columns[i].items())[:24])
        elif features:  # named features without an encoder: the names with the values the model saw
            pairs = list(zip(features, x[i].flatten().tolist(), strict=False))[:24]
            text = ", ".join(f"{k}={v:.3g}" for k, v in pairs)
        else:
            text = ", ".join(f"{v:.3g}" for v in x[i].flatten()[:16].tolist())
        rows.append((names[wrong.true[i]], names[wrong.pred[i]], wrong.confidence[i], text))
    return rows


def calibration_section(ctx: ReportContext) -> Section:
    d = ctx.analysis.details
    rel = d["reliability"]
    figure = charts.reliability(np.array(rel["count"]), np.array(rel["confidence"]), np.array(rel["correct"]), d["ece"])
    figures = [Figure(figure, "accuracy against confidence per bin; the gap is the calibration error")]
    if "roc_curve" in d:
        roc = d["roc_curve"]
        chance = ([0, 1], [0, 1])
        panels = {f"ROC (AUC {d['roc_auc']:.4f})": {"model": (roc["fpr"], roc["tpr"]), "chance": chance}}
        caption = f"binary: ROC-AUC {d['roc_auc']:.4f}, average precision (PR-AUC) {d['pr_auc']:.4f}"
        figures.append(Figure(charts.line_panels(panels, "false-positive rate", markers=False), caption))
    return Section("calibration", "Calibration", "", figures)


# ---- regression


def regression_section(ctx: ReportContext) -> Section:
    pred, true = ctx.analysis.points
    figures = []
    for target in range(min(pred.shape[1], 4)):
        title = f"Predicted vs true (output {target})" if pred.shape[1] > 1 else "Predicted vs true"
        png = charts.scatter_and_residuals(pred[:, target].numpy(), true[:, target].numpy(), title)
        figures.append(Figure(png, f"{len(pred):,} test points (at most 5,000, drawn at random)"))
    return Section("regression", "Regression", key_values(ctx.analysis.metrics), figures)
