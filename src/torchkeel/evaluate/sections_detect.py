"""The report section of a detection run: COCO AP@[.5:.95], AP50 and Pascal VOC AP50 per class
with its ground-truth boxes, COCO's AP by object size, VOC precision-recall curves per class,
the best and worst test images by their own AP50 with the truth and the prediction drawn over
each, and the sizes of the test split's true and predicted boxes.

The numbers are the test split's (the analysis' accumulator, as in evaluation.json); only the
figures predict again: the images shown, and at most ``MAX_PREDICTED`` test images for the box
sizes. ``draw_boxes`` is shared with ``keel predict --output boxed.png``.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from torchkeel.data.bundle import DataSpec, Split
from torchkeel.evaluate import charts, plots
from torchkeel.evaluate.explain import pixels
from torchkeel.evaluate.report_parts import Figure, ReportContext, Section
from torchkeel.evaluate.sections import key_values, table
from torchkeel.evaluate.sections_segment import ranked
from torchkeel.tasks.detect import SCORE_THRESHOLD

SHOWN = 4  # best and worst images each
MAX_PREDICTED = 500  # test images whose predicted boxes go into the size histogram
MAX_CURVES = 12  # precision-recall panels (the classes with the most GT boxes)
BATCH = 16  # images per forward pass
CELL = 256  # pixels of the longer side of each picture in the overlay figures
# matplotlib's tab10 (charts.PALETTE's source): class i is drawn in COLOURS[i % 10]
COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))  # fmt: skip
# COCO's object sizes (pycocotools' areaRng): small under 32^2 pixels of area, large over 96^2
SMALL, LARGE = 32, 96


def detection_section(ctx: ReportContext) -> Section:
    details, metrics = ctx.analysis.details, ctx.analysis.metrics
    names, rows, areas = details["classes"], details["per_class"], details["areas"]
    facts = {
        "COCO mAP @[.5:.95]": metrics.get("map", float("nan")),
        "COCO AP50": metrics.get("map_50", float("nan")),
        "COCO AP75": metrics.get("map_75", float("nan")),
        "COCO AR@100": metrics.get("mar_100", float("nan")),
        "VOC AP50 (every point)": metrics.get("ap50_voc", float("nan")),
        "test images": ctx.analysis.size,
        "GT boxes (not difficult)": sum(r["gt"] for r in rows),
    }
    sizes = {
        f"small (area < {SMALL}² px)": _or_nan(areas.get("map_small")),
        f"medium ({SMALL}² to {LARGE}² px)": _or_nan(areas.get("map_medium")),
        f"large (area > {LARGE}² px)": _or_nan(areas.get("map_large")),
    }
    body = key_values(facts) + per_class_table(rows)
    body += "<h3>COCO AP@[.5:.95] by object size</h3>" + key_values(sizes)
    body += "<p class='note'>'-': no ground truth of that size or class in the test split.</p>"
    figures = []
    curves = _curves_figure(details["curves"], rows)
    if curves is not None:
        figures.append(curves)
    scores = torch.tensor([_or_nan(v) for v in details["per_image_ap50"]], dtype=torch.float64)
    best, worst = ranked(scores, SHOWN)
    if best:
        body += f"<h3>Colours in the overlays</h3>{legend(names)}<p class='note'>Below the precision-recall "
        body += "curves: the best and worst test images by their own AP50 (VOC, IoU 0.5, over the classes in "
        body += "their truth or prediction); each "
        body += f"pair is the truth (left) and the predictions scoring at least {SCORE_THRESHOLD:g} (right).</p>"
        for what, chosen in (("best", best), ("worst", worst)):
            if chosen:
                figures.append(_pairs_figure(ctx, chosen, scores, what))
    sizes_figure = _sizes_figure(ctx.model, ctx.data.test, ctx.spec)
    if sizes_figure is not None:
        figures.append(sizes_figure)
    return Section("detection", "Detection", body, figures)


def per_class_table(rows: list[dict]) -> str:
    return table(
        ["class", "AP@[.5:.95]", "AP50", "AP50 (VOC)", "GT boxes"],
        [(r["class"], _or_nan(r["ap"]), _or_nan(r["ap50"]), _or_nan(r["ap50_voc"]), r["gt"]) for r in rows],
    )


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def colour_of(k: int) -> tuple[int, int, int]:
    return COLOURS[k % len(COLOURS)]


def legend(names: list[str]) -> str:
    """A swatch of each class's box colour beside its name."""
    swatches = "".join(
        f"<span style='margin-right:14px;white-space:nowrap'>"
        f"<span style='display:inline-block;width:12px;height:12px;vertical-align:middle;"
        f"border:1px solid #888;background:rgb{colour_of(k)}'></span> {html.escape(name)}</span>"
        for k, name in enumerate(names)
    )
    return f"<p class='legend'>{swatches}</p>"


def draw_boxes(image: Image.Image, boxes: list[dict], classes: list[str], width: int = 2) -> Image.Image:
    """A new RGB copy of ``image`` with each box ({"box": [x1, y1, x2, y2] in its pixels, "class",
    optional "score"}) outlined in its class's colour and labelled "class 0.87" (the class alone
    without a score: ground truth)."""
    out = image.convert("RGB")  # a copy, also of an RGB image
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default(size=max(10, min(out.size) // 24))
    index = {name: k for k, name in enumerate(classes)}
    for b in boxes:
        colour = colour_of(index.get(b["class"], len(classes)))
        x1, y1, x2, y2 = (float(v) for v in b["box"])
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        label = b["class"] if b.get("score") is None else f"{b['class']} {b['score']:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        h = bottom - top + 2
        y = y1 - h if y1 - h >= 0 else y1  # above the box, else just inside its top edge
        draw.rectangle((x1, y, x1 + right - left + 4, y + h), fill=colour)
        text = "black" if sum(colour) > 450 else "white"  # readable on light and dark colours
        draw.text((x1 + 2, y + 1 - top), label, fill=text, font=font)
    return out


def _curves_figure(curves: dict[str, dict[str, list[float]]], rows: list[dict]) -> Figure | None:
    """One precision-recall panel per class with GT (the MAX_CURVES with the most boxes)."""
    with_gt = sorted((r for r in rows if r["class"] in curves), key=lambda r: -r["gt"])
    shown = with_gt[:MAX_CURVES]
    if not shown:
        return None
    panels = {}
    for r in shown:
        c = curves[r["class"]]
        # start at recall 0 with the first detection's precision so a one-point curve is visible
        xs, ys = [0.0, *c["recall"]], [c["precision"][0] if c["precision"] else 0.0, *c["precision"]]
        panels[f"{r['class']} (VOC AP50 {_or_nan(r['ap50_voc']):.3f})"] = {"precision": (xs, ys)}
    caption = "precision (y) against recall at IoU 0.5 (VOC matching, test split), one panel per class"
    if len(with_gt) > len(shown):
        caption += f"; the {len(shown)} of {len(with_gt)} classes with the most GT boxes"
    return Figure(charts.line_panels(panels, "recall", markers=False), caption)


@torch.no_grad()
def predicted_boxes(model: nn.Module, x: torch.Tensor, spec: DataSpec) -> list[list[dict[str, Any]]]:
    """Per image of ``x`` (N, C, H, W): its detections scoring at least SCORE_THRESHOLD, as
    draw_boxes takes them (input pixels)."""
    device = next(model.parameters()).device
    classes = spec.classes or []
    found = []
    for start in range(0, len(x), BATCH):
        out = model(x[start : start + BATCH].to(device)).float().cpu()  # (B, D, 6)
        for rows in out:
            rows = rows[(rows[:, 5] >= 0) & (rows[:, 4] >= SCORE_THRESHOLD)]
            found.append([{"box": r[:4].tolist(), "class": classes[int(r[5])], "score": float(r[4])} for r in rows])
    return found


def true_boxes(rows: torch.Tensor, classes: list[str]) -> list[dict[str, Any]]:
    """An image's (n, 6) target rows (class, x1, y1, x2, y2, difficult) as draw_boxes takes them."""
    return [{"box": r[1:5].tolist(), "class": classes[int(r[0])]} for r in rows.float()]


def _pairs_figure(ctx: ReportContext, chosen: list[int], scores: torch.Tensor, what: str) -> Figure:
    """Two images a row, each as (truth, prediction) over the picture."""
    test, spec = ctx.data.test, ctx.spec
    classes = spec.classes or []
    x = test.x[chosen]
    images = plots.to_display(pixels(x, spec).numpy())  # (S, H, W) or (S, H, W, 3) in [0, 1]
    preds = predicted_boxes(ctx.model, x, spec)
    truths = test.y[chosen].items()
    cells = []
    for j, i in enumerate(chosen):
        picture = Image.fromarray((images[j] * 255).round().astype(np.uint8))
        cells.append((_tile(picture, true_boxes(truths[j], classes), classes), f"test image {i}\ntruth"))
        cells.append((_tile(picture, preds[j], classes), f"AP50 {scores[i]:.3f}\nprediction"))
    rows = [cells[r : r + 4] for r in range(0, len(cells), 4)]
    listed = ", ".join(f"test image {i}: AP50 {scores[i]:.3f}" for i in chosen)
    order = "highest first" if what == "best" else "lowest first"
    caption = f"the {len(chosen)} {what} test images by AP50 ({order}): {listed}"
    return Figure(plots.mosaic(rows, cell=CELL), caption)


def _tile(picture: Image.Image, boxes: list[dict], classes: list[str]) -> np.ndarray:
    """(h, w, 3) in [0, 1]: the picture scaled to CELL on its longer side, then the boxes drawn
    (drawn after scaling so the lines stay sharp at the figure's size)."""
    scale = CELL / max(picture.size)
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    resample = Image.Resampling.NEAREST if scale >= 2 else Image.Resampling.BILINEAR
    scaled = [b | {"box": [v * scale for v in b["box"]]} for b in boxes]
    drawn = draw_boxes(picture.resize(size, resample), scaled, classes)
    return np.asarray(drawn, dtype=np.float32) / 255


def _sizes_figure(model: nn.Module, test: Split, spec: DataSpec) -> Figure | None:
    """The histogram of sqrt(box area) in input pixels: the test split's GT against its predictions."""
    count = min(len(test), MAX_PREDICTED)
    truth = test.y[:count].values.float()  # (n, 6)
    if count == 0 or len(truth) == 0:
        return None
    preds = [b["box"] for image in predicted_boxes(model, test.x[:count], spec) for b in image]
    predicted = np.asarray(preds, dtype=np.float64).reshape(-1, 4)
    values = {
        f"ground truth ({len(truth):,})": _sides(truth[:, 1:5].double().numpy()),
        f"predicted, score >= {SCORE_THRESHOLD:g} ({len(predicted):,})": _sides(predicted),
    }
    top = max(float(v.max()) for v in values.values() if v.size)
    edges = np.linspace(0.0, top * 1.02 + 1e-6, 31)  # shared bins: the two series compare bar by bar
    png = charts.histogram(values, "Box size, test split", "sqrt(box area), input pixels", bins=edges)
    capped = f"the first {count:,} of {len(test):,} test images" if count < len(test) else "every test image"
    caption = (
        f"sizes of the boxes of {capped}: ground truth (difficult included) against the predictions scoring at "
        f"least {SCORE_THRESHOLD:g}; COCO counts under {SMALL} as small, over {LARGE} as large"
    )
    return Figure(png, caption)


def _sides(boxes: np.ndarray) -> np.ndarray:
    """(n,) sqrt of the area of (n, 4) x1, y1, x2, y2 boxes."""
    return np.sqrt(np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None))
