"""Object-detection metrics over a whole data set's predictions: COCO mAP through pycocotools
(the tool people trust) and Pascal VOC 2010+ AP50 with precision/recall curves for a report.

Pure functions on CPU tensors; boxes are pixel ``x1, y1, x2, y2`` with no "+1" in widths
(pycocotools' and torchvision's convention; the VOC devkit's integer-pixel "+1" is not used).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Any

import torch
import torchvision

from torchkeel.errors import DataError

MAX_CURVE_POINTS = 200  # points kept per PR curve: enough for a plot, small in JSON


@dataclass
class ImageBoxes:
    """The boxes of one image: predictions (with scores) or ground truth (with difficult)."""

    boxes: torch.Tensor  # (n, 4) float x1, y1, x2, y2 in pixels
    labels: torch.Tensor  # (n,) int64 class index 0..K-1
    scores: torch.Tensor | None = None  # (n,) float for predictions; None for ground truth
    difficult: torch.Tensor | None = None  # (n,) bool for ground truth: neither TP nor FP


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of every pair, (n, 4) x (m, 4) -> (n, m), areas without the VOC "+1"."""
    return torchvision.ops.box_iou(a.double(), b.double())


def _difficult(truth: ImageBoxes) -> torch.Tensor:
    if truth.difficult is None:
        return torch.zeros(len(truth.labels), dtype=torch.bool)
    return truth.difficult.bool()


def _match_image(pred: ImageBoxes, truth: ImageBoxes, iou: float) -> torch.Tensor:
    """Outcome of each prediction of one image: 1 TP, 0 FP, -1 ignored (matched a difficult GT).

    As in the VOC devkit (VOCevaldet.m): in score order, each detection takes the GT of its
    class with the highest IoU, matched or not; IoU >= iou is a TP if that GT is free, a FP
    (duplicate) if it is taken, ignored if it is difficult; below iou it is a FP."""
    n = len(pred.labels)
    outcome = torch.zeros(n, dtype=torch.int8)  # (D,)
    if n == 0 or len(truth.labels) == 0:
        return outcome
    ious = box_iou(pred.boxes, truth.boxes)  # (D, G)
    ious[pred.labels[:, None] != truth.labels[None, :]] = -1.0  # other classes never match
    best, jmax = ious.max(1)  # ties: first GT, as the devkit's `ov > ovmax`
    hit = (best >= iou).tolist()
    jmax, diff = jmax.tolist(), _difficult(truth).tolist()
    taken = [False] * len(diff)
    for d in torch.argsort(pred.scores, descending=True, stable=True).tolist():
        if not hit[d]:
            continue
        j = jmax[d]
        if diff[j]:
            outcome[d] = -1
        elif not taken[j]:
            outcome[d], taken[j] = 1, True
    return outcome


def _pr_curve(scores: torch.Tensor, tp: torch.Tensor, npos: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Precision and recall after each detection, in descending score order (stable on ties)."""
    order = torch.argsort(scores, descending=True, stable=True)
    ctp = tp[order].double().cumsum(0)
    cfp = (1 - tp[order].double()).cumsum(0)
    return ctp / (ctp + cfp), ctp / npos


def _voc_ap(precision: torch.Tensor, recall: torch.Tensor) -> float:
    """Area under the monotone precision envelope at every recall point (VOCap.m, VOC 2010+)."""
    mrec = torch.cat([torch.zeros(1, dtype=torch.float64), recall, torch.ones(1, dtype=torch.float64)])
    mpre = torch.cat([torch.zeros(1, dtype=torch.float64), precision, torch.zeros(1, dtype=torch.float64)])
    envelope = mpre.flip(0).cummax(0).values.flip(0)  # precision made non-increasing in recall
    return float(((mrec[1:] - mrec[:-1]) * envelope[1:]).sum())


def _class_ap(labels: torch.Tensor, scores: torch.Tensor, outcome: torch.Tensor, k: int, npos: int) -> float:
    """VOC AP of class k from matched detections (ignored ones dropped); 0 without detections."""
    keep = (labels == k) & (outcome >= 0)
    if npos == 0 or not keep.any():
        return 0.0
    return _voc_ap(*_pr_curve(scores[keep], outcome[keep], npos))


def _downsample(values: torch.Tensor) -> list[float]:
    """At most MAX_CURVE_POINTS values, evenly spaced, first and last kept."""
    if len(values) > MAX_CURVE_POINTS:
        values = values[torch.linspace(0, len(values) - 1, MAX_CURVE_POINTS).round().long()]
    return values.tolist()


def _check(preds: list[ImageBoxes], truths: list[ImageBoxes]) -> None:
    if len(preds) != len(truths):
        raise DataError(
            f"{len(preds)} images of predictions for {len(truths)} of ground truth: pass one of each per image"
        )
    if any(p.scores is None for p in preds):
        raise DataError("every prediction needs scores (ImageBoxes.scores)")


def voc_ap50(preds: list[ImageBoxes], truths: list[ImageBoxes], classes: list[str], iou: float = 0.5) -> dict[str, Any]:
    """Pascal VOC 2010+ AP per class and its mean over the classes with GT.

    Follows the devkit (VOCevaldet.m, VOCap.m): detections of a class sorted by score over the
    whole set; each goes to the GT of its class in its image with the highest IoU and counts
    when IoU >= iou (the devkit's ``ovmax >= minoverlap``; py-faster-rcnn's port uses ``>``);
    a second detection of a taken GT is a FP; difficult GT is neither TP nor FP nor a
    positive. AP is the area under the monotone precision envelope at every recall point (not
    the VOC2007 11-point). IoU has no "+1" in widths (unlike the devkit). Returns
    {"ap50_voc": mean over classes with GT (None if none has), "per_class": [{"class",
    "ap50_voc" (None without GT), "gt" (non-difficult GT boxes)}], "curves": {class: {"precision",
    "recall"}} for classes with GT: raw values after each detection, at most 200 points}."""
    _check(preds, truths)
    outcomes = [_match_image(p, t, iou) for p, t in zip(preds, truths, strict=True)]
    labels = torch.cat([torch.zeros(0, dtype=torch.long)] + [p.labels.long() for p in preds])
    scores = torch.cat([torch.zeros(0, dtype=torch.float64)] + [p.scores.double() for p in preds])
    outcome = torch.cat([torch.zeros(0, dtype=torch.int8), *outcomes])
    gt_labels = torch.cat([torch.zeros(0, dtype=torch.long)] + [t.labels[~_difficult(t)].long() for t in truths])
    npos = torch.bincount(gt_labels, minlength=len(classes)).tolist()  # (K,) positives per class
    per_class, curves = [], {}
    for k, name in enumerate(classes):
        if not npos[k]:
            per_class.append({"class": name, "ap50_voc": None, "gt": 0})
            continue
        keep = (labels == k) & (outcome >= 0)  # ignored detections leave the curve
        precision, recall = _pr_curve(scores[keep], outcome[keep], npos[k])
        ap = _voc_ap(precision, recall) if keep.any() else 0.0
        per_class.append({"class": name, "ap50_voc": ap, "gt": npos[k]})
        curves[name] = {"precision": _downsample(precision), "recall": _downsample(recall)}
    aps = [c["ap50_voc"] for c in per_class if c["ap50_voc"] is not None]
    return {"ap50_voc": sum(aps) / len(aps) if aps else None, "per_class": per_class, "curves": curves}


def _image_ap50(pred: ImageBoxes, truth: ImageBoxes) -> float | None:
    """VOC AP50 of one image, the mean over the classes in its GT or its predictions.

    A class predicted but absent from the GT scores 0 (its detections are all FPs); None when
    nothing counts (no non-difficult GT and no prediction that is not ignored)."""
    outcome = _match_image(pred, truth, 0.5)
    labels, kept = pred.labels.long(), outcome >= 0
    npos = torch.bincount(truth.labels[~_difficult(truth)].long(), minlength=1)
    present = set(labels[kept].tolist()) | set(torch.nonzero(npos).flatten().tolist())
    if not present:
        return None
    aps = []
    for k in present:
        n = int(npos[k]) if k < len(npos) else 0
        aps.append(_class_ap(labels, pred.scores, outcome, k, n))
    return sum(aps) / len(aps)


def _coco_dataset(truths: list[ImageBoxes], classes: list[str]) -> dict[str, Any]:
    """An in-memory COCO GT: xywh boxes, area w*h, difficult boxes as iscrowd (ignored)."""
    anns = []
    for i, t in enumerate(truths):
        xywh = torchvision.ops.box_convert(t.boxes.double(), "xyxy", "xywh").tolist()
        for box, label, diff in zip(xywh, t.labels.tolist(), _difficult(t).tolist(), strict=True):
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": label + 1,
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": int(diff),  # pycocotools ignores only crowd GT (COCOeval._prepare)
                }
            )
    return {
        "images": [{"id": i + 1} for i in range(len(truths))],
        "categories": [{"id": k + 1, "name": name} for k, name in enumerate(classes)],
        "annotations": anns,
    }


def _coco_results(preds: list[ImageBoxes]) -> list[dict[str, Any]]:
    results = []
    for i, p in enumerate(preds):
        xywh = torchvision.ops.box_convert(p.boxes.double(), "xyxy", "xywh").tolist()
        for box, label, score in zip(xywh, p.labels.tolist(), p.scores.tolist(), strict=True):
            results.append({"image_id": i + 1, "category_id": label + 1, "bbox": box, "score": score})
    return results


def _or_none(value: float) -> float | None:
    return None if value <= -1 else float(value)


def _mean_present(values: Any) -> float | None:
    """Mean of pycocotools' entries > -1 (-1 marks "no GT"), None when there is none."""
    values = values[values > -1]
    return float(values.mean()) if values.size else None


def coco_metrics(preds: list[ImageBoxes], truths: list[ImageBoxes], classes: list[str]) -> dict[str, Any]:
    """COCO bbox evaluation through pycocotools (maxDets 100).

    Returns {"map": AP@[.5:.95], "map_50", "map_75", "map_small", "map_medium", "map_large",
    "mar_100": AR@100, "per_class": [{"class", "ap": AP@[.5:.95], "ap50", "gt" (non-difficult
    GT boxes)}], "per_image_ap50": [per image: VOC-style AP50 (IoU >= 0.5, every-point envelope)
    averaged over the classes in that image's GT or predictions, a predicted class without GT
    scoring 0; None where the image has no GT and no predictions]}. pycocotools' -1 (no GT for
    that area or class) becomes None. Difficult GT is passed as iscrowd, so pycocotools ignores
    it (a detection on it is neither TP nor FP; crowd IoU is intersection over the detection's
    area). With no predictions at all the GT is scored against an empty result set (AP 0)."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        from torchkeel.extras import require

        require("vision", "pycocotools")
        raise
    _check(preds, truths)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints; the CLI has its own tables
        gt = COCO()
        gt.dataset = _coco_dataset(truths, classes)
        gt.createIndex()
        results = _coco_results(preds)
        if results:
            dt = gt.loadRes(results)
        else:  # loadRes fails on an empty list; an empty result set scores 0 where there is GT
            dt = COCO()
            dt.dataset = {"images": gt.dataset["images"], "categories": gt.dataset["categories"], "annotations": []}
            dt.createIndex()
        evaluator = COCOeval(gt, dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = [_or_none(s) for s in evaluator.stats]
    precision = evaluator.eval["precision"]  # (T, R, K, A, M); A=0 "all", M=-1 maxDets 100
    npos = torch.bincount(
        torch.cat([torch.zeros(0, dtype=torch.long)] + [t.labels[~_difficult(t)].long() for t in truths]),
        minlength=len(classes),
    ).tolist()
    per_class = [
        {
            "class": name,
            "ap": _mean_present(precision[:, :, k, 0, -1]),
            "ap50": _mean_present(precision[0, :, k, 0, -1]),  # iouThrs[0] = 0.5
            "gt": npos[k],
        }
        for k, name in enumerate(classes)
    ]
    keys = ["map", "map_50", "map_75", "map_small", "map_medium", "map_large"]
    metrics: dict[str, Any] = dict(zip(keys, stats[:6], strict=True))
    metrics["mar_100"] = stats[8]  # stats: AP x6, then AR@1, AR@10, AR@100, ...
    metrics["per_class"] = per_class
    metrics["per_image_ap50"] = [_image_ap50(p, t) for p, t in zip(preds, truths, strict=True)]
    return metrics
