"""The report section of a segmentation run: mean IoU and pixel accuracy, IoU, Dice and pixels
per class, the row-normalised pixel confusion matrix, the classes' colours, and the best and
worst test images by their own mean IoU with the truth and the prediction over each.

The table and the matrix are the test split's (the analysis' confusion matrix); the ranking
scores at most ``MAX_SCORED`` test images, a batch at a time, keeping one number per image, and
predicts again only the images it shows.
"""

from __future__ import annotations

import html

import numpy as np
import torch
from torch import nn

from torchkeel.data.bundle import DataSpec, Split
from torchkeel.evaluate import charts, plots
from torchkeel.evaluate.explain import pixels
from torchkeel.evaluate.report_parts import Figure, ReportContext, Section
from torchkeel.evaluate.sections import key_values, table
from torchkeel.serve.pictures import colours, overlay
from torchkeel.tasks.segment import IGNORE, class_scores_of, confusion_of

SHOWN = 4  # best and worst images each
MAX_SCORED = 500  # test images ranked by their mean IoU
BATCH = 8  # images per forward pass: (8, K, H, W) float logits, ~66 MB for CamVid's 360x480 x 12
CELL = 160  # pixels per picture in the overlay figures


def segmentation_section(ctx: ReportContext) -> Section:
    details, metrics = ctx.analysis.details, ctx.analysis.metrics
    names = details["classes"]
    cm = np.asarray(details["confusion_matrix"], dtype=np.int64)  # (K, K) rows true, cols predicted
    labelled = int(cm.sum())
    present = [r["iou"] for r in details["per_class"] if r["iou"] is not None]
    facts = {
        "mean IoU (classes present)": metrics.get("miou", float(np.mean(present)) if present else 0.0),
        "pixel accuracy": metrics.get("pixel_accuracy", float(np.trace(cm)) / max(labelled, 1)),
        "mean Dice": metrics.get("mean_dice", float("nan")),
        "test images": ctx.analysis.size,
        "labelled pixels": labelled,
        "void pixels (not scored)": int(ctx.data.test.y.numel()) - labelled,
    }
    body = key_values(facts) + _per_class_table(details["per_class"])
    title = f"Pixel confusion matrix, test ({labelled:,} labelled pixels)"
    caption = "rows: true class, columns: predicted; colour: share of the true class's pixels; numbers: pixels"
    figures = [Figure(charts.heatmap(cm, names, title), caption)]
    test = ctx.data.test
    scored = min(len(test), MAX_SCORED)
    if scored:
        scores = image_scores(ctx.model, test, scored)
        best, worst = ranked(scores)
        capped = f"the first {scored:,} of {len(test):,} test images" if scored < len(test) else "every test image"
        # the body comes before every figure: this note introduces the overlays below the matrix
        body += f"<h3>Colours in the overlays</h3>{legend(ctx.spec, names)}<p class='note'>Below the confusion "
        body += f"matrix: the best and worst test images by their own mean IoU, ranked over {capped}; each "
        body += "pair is the truth (left) and the prediction (right) over the image, void pixels uncoloured.</p>"
        for what, chosen in (("best", best), ("worst", worst)):
            if chosen:
                figures.append(_pairs_figure(ctx, chosen, scores, what))
    return Section("segmentation", "Segmentation", body, figures)


def _per_class_table(rows: list[dict]) -> str:
    nan = float("nan")  # a class absent from the truth and the predictions has no score: "-"
    return table(
        ["class", "IoU", "Dice", "pixels (support)"],
        [(r["class"], _or(r["iou"], nan), _or(r["dice"], nan), r["pixels"]) for r in rows],
    )


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def legend(spec: DataSpec, names: list[str]) -> str:
    """A swatch of each class's colour (the overlays') beside its name."""
    swatches = "".join(
        f"<span style='margin-right:14px;white-space:nowrap'>"
        f"<span style='display:inline-block;width:12px;height:12px;vertical-align:middle;"
        f"border:1px solid #888;background:rgb({r},{g},{b})'></span> {html.escape(name)}</span>"
        for name, (r, g, b) in zip(names, colours(spec, len(names)).tolist(), strict=True)
    )
    return f"<p class='legend'>{swatches}</p>"


@torch.no_grad()
def image_scores(model: nn.Module, split: Split, count: int) -> torch.Tensor:
    """(count,) float64: each of the first ``count`` images' mean IoU over the classes present in
    its truth or its prediction (void pixels left out); NaN for an image with no labelled pixel."""
    device = next(model.parameters()).device
    scores = torch.full((count,), float("nan"), dtype=torch.float64)
    for start in range(0, count, BATCH):
        stop = min(start + BATCH, count)
        out = model(split.x[start:stop].to(device))  # (B, K, H, W)
        k, pred = out.shape[1], out.argmax(1)  # (B, H, W); the logits are dropped with this batch
        del out
        y = split.y[start:stop].to(device)
        for i in range(len(pred)):
            if y[i].ne(IGNORE).any():  # an image of void only has no score
                iou, _, present = class_scores_of(confusion_of(pred[i], y[i], k))
                scores[start + i] = iou[present].mean().item()
    return scores


def ranked(scores: torch.Tensor, shown: int = SHOWN) -> tuple[list[int], list[int]]:
    """The indices of the best images (highest mean IoU first) and of the worst (lowest first),
    images without a score left out; on a few images the two lists share none."""
    valid = torch.nonzero(~scores.isnan()).view(-1)
    order = valid[scores[valid].argsort(stable=True)].tolist()  # lowest first
    best = order[::-1][: min(shown, (len(order) + 1) // 2)]
    worst = order[: min(shown, len(order) - len(best))]
    return best, worst


def _pairs_figure(ctx: ReportContext, chosen: list[int], scores: torch.Tensor, what: str) -> Figure:
    """Two images a row, each as (truth, prediction) over the picture."""
    test, spec, model = ctx.data.test, ctx.spec, ctx.model
    device = next(model.parameters()).device
    x = test.x[chosen]
    with torch.no_grad():
        pred = model(x.to(device)).argmax(1).to(torch.uint8).cpu().numpy()  # (S, H, W)
    images = pixels(x, spec).float()  # (S, C, H, W), in [0, 1] once normalisation is undone
    truth = test.y[chosen].numpy()
    cells = []
    for j, i in enumerate(chosen):
        cells.append((_painted(images[j], truth[j], spec), f"test image {i}\ntruth"))
        cells.append((_painted(images[j], pred[j], spec), f"mean IoU {scores[i]:.3f}\nprediction"))
    rows = [cells[r : r + 4] for r in range(0, len(cells), 4)]
    listed = ", ".join(f"test image {i}: mean IoU {scores[i]:.3f}" for i in chosen)
    order = "highest first" if what == "best" else "lowest first"
    caption = f"the {len(chosen)} {what} test images by mean IoU ({order}): {listed}"
    return Figure(plots.mosaic(rows, cell=CELL), caption)


def _painted(image: torch.Tensor, mask: np.ndarray, spec: DataSpec) -> np.ndarray:
    """(H, W, 3) in [0, 1]: ``mask``'s colours over ``image`` ((C, H, W)); void pixels as they are."""
    void = mask == IGNORE
    blended = overlay(image, np.where(void, 0, mask).astype(np.uint8), spec).astype(np.float32) / 255
    plain = image.expand(3, -1, -1) if image.shape[0] == 1 else image[:3]
    plain = plain.permute(1, 2, 0).clamp(0, 1).numpy()
    return np.where(void[..., None], plain, blended)
