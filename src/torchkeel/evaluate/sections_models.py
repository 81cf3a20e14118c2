"""Report sections chosen by the kind of model: interpretability, robustness, text, GAN.

Contracts with model families built elsewhere (a section appears when its run has them):
- Transformer text models: a method ``attention_weights(x)`` or ``attention_maps(x)`` returning
  a Tensor (B, heads, T, T) or a list of those (one per layer; the last is shown), rows summing
  to 1 over keys; T is L, or L + 1 when a [CLS] token comes first.
- GAN runs (the generate task lists the section): PNG sample grids in ``<run>/samples/``
  (one per epoch, names sorting by epoch) and a per-epoch Fréchet distance in metrics.jsonl
  under a key containing ``frechet`` or ``fid``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from torchkeel.data.kinds import kind_of
from torchkeel.evaluate import charts, plots
from torchkeel.evaluate.attack import attack
from torchkeel.evaluate.explain import (
    grad_cam,
    integrated_gradients,
    last_conv,
    pixels,
    predicted,
    saliency,
    token_attributions,
)
from torchkeel.evaluate.report_parts import Figure, ReportContext, Section
from torchkeel.evaluate.sections import class_names, fmt, table, vocabulary
from torchkeel.tasks import task_of

IG_ROWS = 1000  # table rows attributed: enough for a stable mean, bounded time


def _first_test(ctx: ReportContext, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    device = next(ctx.model.parameters()).device
    return ctx.data.test.x[:n].to(device), ctx.data.test.y[:n].to(device)


def _predicts_classes(ctx: ReportContext) -> bool:
    return task_of(ctx.spec).predict_index is not None


def _label(ctx: ReportContext, cls: int, prob: float) -> str:
    if not _predicts_classes(ctx):
        return ""
    return f"{class_names(ctx)[cls]} {prob:.0%}"


# ---- images


def saliency_section(ctx: ReportContext) -> Section:
    x, y = _first_test(ctx, ctx.examples)
    cls, prob = predicted(ctx.model, x, ctx.spec)
    maps = {"saliency": saliency(ctx.model, x, cls, ctx.spec).cpu().numpy()}
    if last_conv(ctx.model) is not None:
        maps["Grad-CAM"] = grad_cam(ctx.model, x, cls, ctx.spec).cpu().numpy()
    images = plots.to_display(pixels(x, ctx.spec).cpu().numpy())
    names = class_names(ctx)
    titles = [
        f"true {names[int(t)]}, pred {_label(ctx, int(c), float(p))}" if _predicts_classes(ctx) else ""
        for t, c, p in zip(y.long().tolist(), cls.tolist(), prob.tolist(), strict=True)
    ]
    figure = plots.explanations(images, maps, titles, overlay=("Grad-CAM",))
    what = " and Grad-CAM of the last conv layer" if "Grad-CAM" in maps else ""
    caption = f"the first {len(x)} test images: gradient saliency{what}, for the predicted class"
    return Section("saliency", "Saliency and Grad-CAM", "", [Figure(figure, caption)])


# ---- tables


def attribution_section(ctx: ReportContext) -> Section:
    """Integrated gradients from the all-zero (= training mean) baseline, |mean| over test rows."""
    x, _ = _first_test(ctx, IG_ROWS)
    cls, _ = predicted(ctx.model, x, ctx.spec)
    attr = integrated_gradients(ctx.model, x, cls, ctx.spec).reshape(len(x), -1)  # (N, F)
    mean_abs = attr.abs().mean(0).cpu().numpy()
    names = ctx.spec.extra.get("feature_names") or ctx.spec.extra.get("columns") or []
    names = [str(n) for n in names] if len(names) == len(mean_abs) else [f"x{i}" for i in range(len(mean_abs))]
    order = np.argsort(-mean_abs)[:25]
    figure = charts.bars(
        [names[i] for i in order], {"mean |IG|": mean_abs[order]}, "Feature attributions", horizontal=True
    )
    body = table(["feature", "mean |attribution|"], [(names[i], float(mean_abs[i])) for i in order[:10]])
    caption = f"integrated gradients over {len(x):,} test rows, for the predicted class, from the training mean"
    return Section("attributions", "Feature attributions", body, [Figure(figure, caption)])


# ---- text


def has_embedding(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Embedding) for m in model.modules())


def has_attention(model: nn.Module) -> bool:
    return callable(getattr(model, "attention_weights", None)) or callable(getattr(model, "attention_maps", None))


def _attention(model: nn.Module, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
    method = getattr(model, "attention_weights", None) or model.attention_maps
    return method(x)


def _tokens(ctx: ReportContext, ids: torch.Tensor) -> list[str]:
    vocab = vocabulary(ctx.spec)
    return [vocab[int(t)] if vocab and int(t) < len(vocab) else str(int(t)) for t in ids]


def token_section(ctx: ReportContext) -> Section:
    x, _ = _first_test(ctx, min(ctx.examples, 6))
    cls, prob = predicted(ctx.model, x, ctx.spec)
    attr = token_attributions(ctx.model, x, cls, ctx.spec).cpu()
    rows, values, titles = [], [], []
    for i in range(len(x)):
        length = min(int((x[i] != 0).sum()), 40)
        rows.append(_tokens(ctx, x[i, :length].cpu()))
        values.append(attr[i, :length].numpy())
        titles.append(_label(ctx, int(cls[i]), float(prob[i])))
    figure = plots.token_heat(rows, values, titles)
    caption = "integrated gradients per token (red: towards the predicted class, blue: against), first 40 tokens"
    return Section("tokens", "Token attributions", "", [Figure(figure, caption)])


def attention_section(ctx: ReportContext) -> Section:
    x, _ = _first_test(ctx, 4)
    with torch.no_grad():
        weights = _attention(ctx.model, x)
    if isinstance(weights, list | tuple):
        weights = weights[-1]
    # a model that prepends a [CLS] token attends over L + 1 positions, [CLS] first
    extra = weights.shape[-1] - x.shape[1]
    mats, labels = [], []
    for i in range(len(x)):
        length = min(int((x[i] != 0).sum()), 32)
        size = length + extra
        mats.append(weights[i].float().mean(0)[:size, :size].cpu().numpy())  # heads averaged: (L, L)
        labels.append(["[CLS]"] * extra + _tokens(ctx, x[i, :length].cpu()))
    figure = plots.matrix_grid(mats, labels, [f"example {i + 1}" for i in range(len(mats))])
    return Section("attention", "Attention", "", [Figure(figure, "last layer, averaged over heads; rows: queries")])


# ---- robustness


def robustness_section(ctx: ReportContext) -> Section:
    results = ctx.robustness
    body = table(
        ["split", "attack", "eps", "steps", "clean accuracy", "adversarial accuracy"],
        [
            (r["split"], r["method"], r["eps"], r["steps"], r["clean_accuracy"], r["adversarial_accuracy"])
            for r in results
        ],
    )
    # one panel: adversarial accuracy per method against eps, clean accuracy for reference
    series = {}
    for method in sorted({r["method"] for r in results}):
        rs = sorted((r for r in results if r["method"] == method), key=lambda r: r["eps"])
        label = method if method == "fgsm" else f"{method} ({rs[0]['steps']} steps)"
        series[label] = ([r["eps"] for r in rs], [r["adversarial_accuracy"] for r in rs])
    eps_all = sorted({r["eps"] for r in results})
    series["clean"] = (eps_all, [results[0]["clean_accuracy"]] * len(eps_all))
    panels = {"accuracy under attack": series}
    figures = [Figure(charts.line_panels(panels, "eps (pixel units)"), "accuracy under attack, by budget")]
    strongest = max(results, key=lambda r: r["eps"])
    if kind_of(ctx.spec).pixels and strongest["eps"] > 0:
        figures.append(_adversarial_examples(ctx, strongest))
    return Section("robustness", "Robustness", body, figures)


def _adversarial_examples(ctx: ReportContext, result: dict) -> Figure:
    x, y = _first_test(ctx, min(ctx.examples, 8))
    generator = torch.Generator().manual_seed(ctx.config.seed)
    x_adv = attack(result["method"], ctx.model, x, y, result["eps"], ctx.spec, ctx.loss_fn, result["steps"], generator)
    cls, prob = predicted(ctx.model, x, ctx.spec)
    cls_adv, prob_adv = predicted(ctx.model, x_adv, ctx.spec)
    images = plots.to_display(pixels(torch.cat([x, x_adv]), ctx.spec).detach().cpu().numpy())
    titles = [f"clean: {_label(ctx, int(c), float(p))}" for c, p in zip(cls, prob, strict=True)]
    titles += [f"attacked: {_label(ctx, int(c), float(p))}" for c, p in zip(cls_adv, prob_adv, strict=True)]
    caption = f"top row clean, bottom row after {result['method']} with eps {fmt(result['eps'])}"
    return Figure(plots.image_grid(images, titles, cols=len(x)), caption)


# ---- GAN runs


def _gan_grids(ctx: ReportContext) -> list:
    folder = ctx.run_dir / "samples"
    return sorted(folder.glob("*.png")) if folder.is_dir() else []


def _frechet_key(ctx: ReportContext) -> str | None:
    keys = {k for r in ctx.epochs for k in r if "frechet" in k.lower() or "fid" in k.lower().split("/")[-1]}
    return min(keys) if keys else None


def gan_section(ctx: ReportContext) -> Section:
    grids = _gan_grids(ctx)
    # at most 6 grids: first, last and evenly spaced between
    picks = sorted({round(i * (len(grids) - 1) / 5) for i in range(6)}) if len(grids) > 6 else range(len(grids))
    figures = [Figure(grids[i].read_bytes(), f"samples: {grids[i].stem}") for i in picks]
    key = _frechet_key(ctx)
    if key is not None:
        points = [(r["epoch"], r[key]) for r in ctx.epochs if key in r and math.isfinite(r[key])]
        panels = {key: {key: ([p[0] for p in points], [p[1] for p in points])}}
        figures.append(Figure(charts.line_panels(panels, "epoch"), "Fréchet distance per epoch (lower is better)"))
    return Section("gan", "Generated samples", "", figures)
