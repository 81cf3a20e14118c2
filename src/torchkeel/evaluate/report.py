"""report.html: one self-contained page per run (charts inline as SVG, pictures as base64 PNG, no network).

The page is a list of sections. ``SECTIONS`` pairs each section function with the condition
under which it applies: every run has the common ones (run, data, curves); the run's task
names its own by key in ``Task.report_sections`` (confusion matrix, regression plots, the
GAN's sample grids); the data kind's capabilities choose the explanations (saliency for
pixels, integrated gradients for feature vectors, tokens and attention for token ids). A new
task adds a key to its Task, a new model family one entry here. ``write_report`` also records the
test split's tables (confusion matrix, per-class scores, calibration bins) in
``evaluation.json``.
"""

from __future__ import annotations

import html
import string
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import torch
from rich.console import Console
from torch import nn

from torchkeel import atomic
from torchkeel.data.bundle import DataBundle, DataSpec
from torchkeel.data.kinds import DataKind, kind_of
from torchkeel.evaluate import sections as common
from torchkeel.evaluate import sections_models as per_model
from torchkeel.evaluate.analysis import analyse
from torchkeel.evaluate.attack import read_results
from torchkeel.evaluate.report_parts import ReportContext, Section, figure_html
from torchkeel.evaluate.sections_audio import has_frontend, spectrogram_section, transcripts_section
from torchkeel.evaluate.sections_detect import detection_section
from torchkeel.evaluate.sections_lm import language_model_section
from torchkeel.evaluate.sections_segment import segmentation_section
from torchkeel.evaluate.sections_translate import translations_section
from torchkeel.runs import read_json, read_metrics
from torchkeel.tasks import task_of
from torchkeel.train.losses import build_loss, resolve_loss

REPORT_FILE = "report.html"
EVALUATION_FILE = "evaluation.json"


Applies = Callable[[ReportContext], bool]
Render = Callable[[ReportContext], Section]


def _task_adds(key: str) -> Applies:
    """A section the run's task lists in its ``report_sections``."""
    return lambda ctx: key in task_of(ctx.spec).report_sections


def _explained(capability: Callable[[DataKind], bool]) -> Applies:
    """An explanation of a model evaluated on the test split, for inputs of this kind."""
    return lambda ctx: _tested(ctx) and "explain" in task_of(ctx.spec).uses and capability(kind_of(ctx.spec))


def _tested(ctx: ReportContext) -> bool:
    return ctx.analysis is not None


def _float_table(ctx: ReportContext) -> bool:
    # integrated gradients need float features (categorical indices would need their embedding)
    return _explained(lambda kind: kind.features)(ctx) and ctx.data.test.x.is_floating_point()


def _tokens(ctx: ReportContext) -> bool:
    # an ensemble's rows hold several tokenisations side by side: no one token per position
    one_tokenisation = ctx.spec.member_widths is None
    return _explained(lambda kind: kind.token_ids)(ctx) and per_model.has_embedding(ctx.model) and one_tokenisation


def _spectrograms(ctx: ReportContext) -> bool:
    return _explained(lambda kind: kind.waveform)(ctx) and has_frontend(ctx.model) and len(ctx.data.test.x) > 0


def _attention(ctx: ReportContext) -> bool:
    return _tested(ctx) and kind_of(ctx.spec).token_ids and per_model.has_attention(ctx.model)


# in page order: the common sections, the task's (by key) and those of the data's kind
SECTIONS: list[tuple[Applies, Render]] = [
    (lambda ctx: True, common.run_section),
    (lambda ctx: True, common.data_section),
    (lambda ctx: bool(ctx.epochs), common.curves_section),
    (lambda ctx: any("lr" in r for r in ctx.records), common.lr_section),
    (_task_adds("confusion"), common.confusion_section),
    (_task_adds("per-class"), common.per_class_section),
    (_task_adds("wrong"), common.wrong_section),
    (_task_adds("calibration"), common.calibration_section),
    (_task_adds("regression"), common.regression_section),
    (lambda ctx: _tested(ctx) and _task_adds("segmentation")(ctx), segmentation_section),
    (lambda ctx: _tested(ctx) and _task_adds("detection")(ctx), detection_section),
    (_explained(lambda kind: kind.pixels), per_model.saliency_section),
    (_float_table, per_model.attribution_section),
    (_tokens, per_model.token_section),
    (_attention, per_model.attention_section),
    (_spectrograms, spectrogram_section),
    (lambda ctx: _tested(ctx) and _task_adds("transcripts")(ctx), transcripts_section),
    (lambda ctx: _tested(ctx) and _task_adds("translations")(ctx), translations_section),
    (lambda ctx: _task_adds("robustness")(ctx) and bool(ctx.robustness), per_model.robustness_section),
    (_task_adds("gan"), per_model.gan_section),
    (_task_adds("language_model"), language_model_section),
]


def write_report(
    run_dir: Path,
    *,
    model: nn.Module | None = None,
    data: DataBundle | None = None,
    device: str | torch.device = "cpu",
    console: Console | None = None,
) -> Path:
    """Write ``run_dir/report.html`` (and evaluation.json). ``model`` and ``data`` default to
    the run's saved model and its data rebuilt from config.yaml (what ``keel report`` does)."""
    ctx = build_context(run_dir, model=model, data=data, device=device)
    if ctx.analysis is not None:
        atomic.write_json(run_dir / EVALUATION_FILE, ctx.analysis.to_json())
    sections = []
    for applies, render in SECTIONS:
        if applies(ctx):
            sections.append(_render_safely(render, ctx, console))
    path = run_dir / REPORT_FILE
    atomic.write_text(path, render_html(ctx, sections))
    return path


def build_context(
    run_dir: Path, *, model: nn.Module | None, data: DataBundle | None, device: str | torch.device
) -> ReportContext:
    from torchkeel.run_model import load_model, load_run_config, prepare_data

    cfg = load_run_config(run_dir)
    if model is None:
        model, spec, _ = load_model(run_dir, device)
    else:
        spec = data.spec if data is not None else _saved_spec(run_dir)
    data = data if data is not None else prepare_data(cfg)
    # the test-split sections are for supervised models; a GAN run passes its generator and
    # gets the sections that read its files (sample grids, Fréchet curve)
    analysis, loss_fn = None, None
    if task_of(spec).accumulator is not None:  # a task that is evaluated on a test split
        loss_fn = build_loss(resolve_loss(cfg.train.loss, spec), spec=spec)  # no label smoothing: as evaluated
        analysis = analyse(
            model,
            data.test,
            spec,
            loss_fn,
            examples=cfg.eval.report_examples,
            batch_size=cfg.eval.batch_size,
            seed=cfg.seed,
        )
    return ReportContext(
        run_dir=run_dir,
        config=cfg,
        env=read_json(run_dir / "env.json"),
        summary=read_json(run_dir / "summary.json"),
        records=read_metrics(run_dir),
        model=model.eval(),
        spec=spec,
        data=data,
        loss_fn=loss_fn,
        analysis=analysis,
        robustness=read_results(run_dir),
    )


def _saved_spec(run_dir: Path) -> DataSpec:
    return DataSpec.from_dict(read_json(run_dir / "model.json")["spec"])


def _render_safely(render: Render, ctx: ReportContext, console: Console | None) -> Section:
    """A section that fails shows its error in the page (and on the console) instead of
    losing the whole report of a finished run."""
    try:
        return render(ctx)
    except Exception as e:  # noqa: BLE001 (reported, not swallowed)
        name = render.__name__.removesuffix("_section")
        if console is not None:
            console.print(f"[yellow]report: section '{name}' failed: {type(e).__name__}: {e}[/]", highlight=False)
        problem = html.escape(f"{type(e).__name__}: {e}")
        body = f'<p class="error">This section could not be drawn: {problem}</p>'
        return Section(name, name.replace("_", " ").title(), body)


def render_html(ctx: ReportContext, sections: list[Section]) -> str:
    page = resources.files("torchkeel.evaluate").joinpath("templates/report.html").read_text(encoding="utf-8")
    title = f"torchkeel report: {ctx.run_dir.name}"
    subtitle = f"{ctx.spec.name} / {ctx.config.model.name} / {ctx.spec.task}"
    if ctx.analysis is not None:
        test = ctx.analysis.metrics
        shown = ("accuracy", "r2", "f1", task_of(ctx.spec).key_metric)
        subtitle += "; test " + ", ".join(f"{k} {v:.4f}" for k, v in test.items() if k in shown)
    nav = " ".join(f'<a href="#{s.key}">{html.escape(s.title)}</a>' for s in sections)
    body = "\n".join(_section_html(s) for s in sections)
    fields = {"title": html.escape(title), "subtitle": html.escape(subtitle), "nav": nav, "sections": body}
    return string.Template(page).substitute(fields)


def _section_html(section: Section) -> str:
    kind = "figure" if section.figures else "text"
    figures = "".join(
        f"<figure>{figure_html(f.image, f.caption)}<figcaption>{html.escape(f.caption)}</figcaption></figure>"
        for f in section.figures
    )
    return (
        f'<section id="{section.key}" data-kind="{kind}">'
        f"<h2>{html.escape(section.title)}</h2>{section.body}{figures}</section>"
    )
