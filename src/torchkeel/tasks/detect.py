"""Object detection: the boxes around the objects in an image, each with a class and a score.

Targets are a ``Ragged`` of (n, 6) rows per image: class index, x1, y1, x2, y2 in input
pixels, difficult (data/boxes.py). A detector (models/detect.py) trains on them and returns
its own losses (torchvision's: classification, box regression and, by model, centre-ness or
objectness), summed; evaluated it returns (B, D, 6) rows of box, score and class (class -1
past the image's detections). No loss is computed on val or test: torchvision's detectors
compute it only in training mode, whose BatchNorm updates would change the model.

Metrics are computed once over the whole split (tasks/detect_metrics.py): COCO's mAP
averaged over IoU 0.50:0.95, AP50, AP75 and AR@100 through ``pycocotools`` (COCO's 101-point
interpolation), and Pascal VOC's AP at IoU 0.5 (every-point interpolation, VOC 2010 on),
labelled ``ap50_voc``: the two AP50s differ, and published numbers use either.
"""

from __future__ import annotations

from typing import Any

import torch

from torchkeel.tasks.base import Task
from torchkeel.tasks.meter import TrainMeter

METRICS = ("map", "map_50", "map_75", "mar_100", "ap50_voc")
SCORE_THRESHOLD = 0.3  # predictions below this score are not shown (predict, serve); metrics use them all


def targets_of(y: Any) -> list[dict[str, torch.Tensor]]:
    """A batch's Ragged targets as torchvision's per-image dicts (boxes, labels 0..K-1)."""
    return [{"boxes": t[:, 1:5], "labels": t[:, 0].long()} for t in y.items()]


def forward_loss(forward: Any, x: torch.Tensor, y: Any, loss_fn: Any) -> tuple[Any, torch.Tensor]:
    """The detector's own losses, summed (it matches boxes to its anchors or points itself)."""
    loss = forward(x, targets_of(y))
    return loss, loss


def predictions_only(forward: Any, x: torch.Tensor, y: Any, loss_fn: Any) -> tuple[torch.Tensor, None]:
    return forward(x), None


def build_loss(name: str, spec: Any, label_smoothing: float = 0.0, weights: Any = None):
    """Never called on a batch: the detector computes its loss (``forward_loss``)."""
    return None


def chosen_metrics(names: list[str], spec: Any = None) -> list[str]:
    """The detection metrics of ``names``; all of them when it names none but the key metric."""
    own = [n for n in names if n in METRICS]
    return list(METRICS) if own in ([], ["map"]) else own


def image_boxes(out: torch.Tensor, y: Any) -> tuple[list[Any], list[Any]]:
    """Per image: the predictions (rows with a class) and the ground truth, on the CPU."""
    from torchkeel.tasks.detect_metrics import ImageBoxes

    preds, truths = [], []
    for rows in out.detach().float().cpu():
        rows = rows[rows[:, 5] >= 0]
        preds.append(ImageBoxes(rows[:, :4], rows[:, 5].long(), rows[:, 4]))
    for t in y.items():
        t = t.float().cpu()
        truths.append(ImageBoxes(t[:, 1:5], t[:, 0].long(), None, t[:, 5] > 0))
    return preds, truths


class DetectionAccumulator:
    """Keeps every image's predictions and ground truth (a few KB per image) and computes the
    metrics once at the end; under ``train.distributed`` every rank's lists are gathered
    (``gathered``) before that, so each rank computes them over the whole split."""

    gathered = ("preds", "truths")

    def __init__(self, spec: Any, names: list[str], device: torch.device, top_k: int = 1, *, details: bool = False):
        self.spec, self.names = spec, chosen_metrics(names)
        self.classes = spec.classes or []
        self.preds: list[Any] = []
        self.truths: list[Any] = []
        self._computed: dict[str, Any] | None = None

    @torch.no_grad()
    def update(self, out: torch.Tensor, y: Any, loss: torch.Tensor | None = None) -> None:
        preds, truths = image_boxes(out, y)
        self.preds += preds
        self.truths += truths
        self._computed = None

    def _all(self) -> dict[str, Any]:
        from torchkeel.tasks.detect_metrics import coco_metrics, voc_ap50

        if self._computed is None:
            coco = coco_metrics(self.preds, self.truths, self.classes)
            voc = voc_ap50(self.preds, self.truths, self.classes)
            self._computed = {"coco": coco, "voc": voc}
        return self._computed

    def compute(self) -> dict[str, float]:
        found = self._all()
        values = {k: found["coco"][k] for k in ("map", "map_50", "map_75", "mar_100")}
        values["ap50_voc"] = found["voc"]["ap50_voc"]
        return {k: float(values[k] or 0.0) for k in self.names}

    def details(self) -> dict[str, Any]:
        """Per-class AP (COCO and VOC), per-image AP50, precision-recall curves, box counts."""
        found = self._all()
        voc = {row["class"]: row for row in found["voc"]["per_class"]}
        per_class = [
            row | {"ap50_voc": voc.get(row["class"], {}).get("ap50_voc")} for row in found["coco"]["per_class"]
        ]
        areas = {k: found["coco"].get(k) for k in ("map_small", "map_medium", "map_large")}
        return {
            "classes": self.classes,
            "per_class": per_class,
            "areas": areas,
            "per_image_ap50": found["coco"]["per_image_ap50"],
            "curves": found["voc"]["curves"],
        }


def decode(out: torch.Tensor, spec: Any, k: int) -> list[dict[str, Any]]:
    """Per image: the boxes scoring at least the threshold (``spec.extra["score_threshold"]``,
    else 0.3), best first: class, score and x1, y1, x2, y2 in the model's input pixels; and
    that input's (height, width)."""
    classes = spec.classes or []
    threshold = float(spec.extra.get("score_threshold", SCORE_THRESHOLD))
    results = []
    for rows in out.detach().float().cpu():
        rows = rows[(rows[:, 5] >= 0) & (rows[:, 4] >= threshold)]
        rows = rows[rows[:, 4].argsort(descending=True)]
        boxes = [
            {"class": classes[int(r[5])], "score": round(float(r[4]), 4), "box": [round(float(v), 1) for v in r[:4]]}
            for r in rows
        ]
        results.append({"boxes": boxes, "size": list(spec.input_shape[1:])})
    return results


def to_image(prediction: dict[str, Any], spec: Any, size: tuple[int, int]) -> dict[str, Any]:
    """Boxes from the model's input pixels back to those of the image as read (through the
    letterbox, or the stretch), clipped to it; ``size`` becomes the image's."""
    from torchkeel.data.resize import letterbox_scales

    h, w = size
    if spec.extra.get("resize") == "stretch":
        sy, sx = spec.input_shape[1] / h, spec.input_shape[2] / w
    else:
        sy, sx, _ = letterbox_scales(h, w, tuple(spec.input_shape[1:]))
    limits = (w, h, w, h)
    boxes = []
    for b in prediction["boxes"]:
        scaled = [v / s for v, s in zip(b["box"], (sx, sy, sx, sy), strict=True)]
        boxes.append(b | {"box": [round(min(max(v, 0.0), m), 1) for v, m in zip(scaled, limits, strict=True)]})
    return prediction | {"boxes": boxes, "size": [h, w]}


DETECTION = Task(
    name="detection",
    description="object detection",
    losses=("detector",),
    metrics=METRICS,
    key_metric="map",
    lower_is_better=frozenset({"loss"}),
    uses=frozenset({"predict", "serve", "export", "eval"}),
    output_size=lambda spec: spec.num_classes,
    build_loss=build_loss,
    accumulator=DetectionAccumulator,
    train_meter=lambda spec, device: TrainMeter(device, None),
    decode=decode,
    to_image=to_image,
    forward_loss=forward_loss,
    eval_forward_loss=predictions_only,
    eval_loss=False,
    export_output="(1, D, 6) detections of one image, post-processing (box decoding, NMS) included: "
    "x1, y1, x2, y2 in input pixels, score, class index (-1: none)",
    export_batch=1,
    adjust_metrics=chosen_metrics,
    report_sections=("detection",),
    boxes=True,
    refusal_hint="; it finds boxes (keel predict {run} IMAGE --output boxed.png)",
)
