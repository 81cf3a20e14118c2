"""Detection metrics: COCO mAP through pycocotools and VOC 2010+ AP50, on hand-worked cases."""

from __future__ import annotations

import sys

import pytest
import torch

from torchkeel.errors import DataError
from torchkeel.tasks.detect_metrics import ImageBoxes, box_iou, coco_metrics, voc_ap50

pytest.importorskip("pycocotools")


def gt(boxes: list[list[float]], labels: list[int], difficult: list[bool] | None = None) -> ImageBoxes:
    return ImageBoxes(
        torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        torch.tensor(labels, dtype=torch.long),
        difficult=None if difficult is None else torch.tensor(difficult),
    )


def det(boxes: list[list[float]], labels: list[int], scores: list[float]) -> ImageBoxes:
    return ImageBoxes(
        torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        torch.tensor(labels, dtype=torch.long),
        torch.tensor(scores, dtype=torch.float32),
    )


A, B = [0.0, 0.0, 40.0, 40.0], [100.0, 100.0, 160.0, 150.0]
FAR = [300.0, 300.0, 340.0, 340.0]  # overlaps nothing


def test_box_iou_matches_hand_values() -> None:
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[2.5, 0.0, 12.5, 10.0], [20.0, 20.0, 30.0, 30.0], [0.0, 0.0, 10.0, 10.0]])
    # shifted by 2.5: intersection 75, union 125 -> 0.6 (no "+1" in widths)
    assert torch.allclose(box_iou(a, b), torch.tensor([[0.6, 0.0, 1.0]], dtype=torch.float64))


def test_perfect_predictions_score_one() -> None:
    truths = [gt([A, B], [0, 1]), gt([B], [1])]
    preds = [det([A, B], [0, 1], [0.9, 0.8]), det([B], [1], [0.7])]
    coco = coco_metrics(preds, truths, ["cat", "dog"])
    assert coco["map"] == pytest.approx(1.0)
    assert coco["mar_100"] == pytest.approx(1.0)
    assert [c["ap"] for c in coco["per_class"]] == pytest.approx([1.0, 1.0])
    assert [c["gt"] for c in coco["per_class"]] == [1, 2]
    assert coco["per_image_ap50"] == pytest.approx([1.0, 1.0])
    voc = voc_ap50(preds, truths, ["cat", "dog"])
    assert voc["ap50_voc"] == pytest.approx(1.0)
    assert voc["curves"]["dog"] == {"precision": [1.0, 1.0], "recall": [0.5, 1.0]}


def test_voc_ap_hand_computed() -> None:
    # 2 GT; detections by score: 0.9 TP, 0.8 FP, 0.7 TP
    # precision 1, 1/2, 2/3; recall 1/2, 1/2, 1; envelope 1, 2/3, 2/3
    # AP = 0.5 * 1 + 0.5 * 2/3 = 5/6
    truths = [gt([A], [0]), gt([B], [0])]
    preds = [det([A, FAR], [0, 0], [0.9, 0.8]), det([B], [0], [0.7])]
    voc = voc_ap50(preds, truths, ["cat"])
    assert voc["ap50_voc"] == pytest.approx(5 / 6)
    assert voc["curves"]["cat"]["precision"] == pytest.approx([1.0, 0.5, 2 / 3])
    assert voc["curves"]["cat"]["recall"] == pytest.approx([0.5, 0.5, 1.0])


def test_high_scoring_false_positive_lowers_ap() -> None:
    # by score: 0.95 FP, 0.9 TP, 0.8 TP -> precision 0, 1/2, 2/3; recall 0, 1/2, 1
    # envelope 2/3 everywhere -> AP = 2/3 (1.0 without the false positive)
    truths = [gt([A, B], [0, 0])]
    preds = [det([FAR, A, B], [0, 0, 0], [0.95, 0.9, 0.8])]
    assert voc_ap50(preds, truths, ["cat"])["ap50_voc"] == pytest.approx(2 / 3)
    # a duplicate detection of a matched GT is a false positive too: 1, 1/2, 2/3 -> 5/6
    preds = [det([A, A, B], [0, 0, 0], [0.9, 0.85, 0.8])]
    assert voc_ap50(preds, truths, ["cat"])["ap50_voc"] == pytest.approx(5 / 6)


def test_shifted_box_counts_at_50_not_75() -> None:
    truths = [gt([[0.0, 0.0, 100.0, 100.0]], [0])]
    preds = [det([[25.0, 0.0, 125.0, 100.0]], [0], [0.9])]  # IoU 75 / 125 = 0.6
    coco = coco_metrics(preds, truths, ["cat"])
    assert coco["map_50"] == pytest.approx(1.0)
    assert coco["map_75"] == pytest.approx(0.0)
    assert voc_ap50(preds, truths, ["cat"])["ap50_voc"] == pytest.approx(1.0)
    assert voc_ap50(preds, truths, ["cat"], iou=0.75)["ap50_voc"] == pytest.approx(0.0)


def test_voc_threshold_is_inclusive_as_in_the_devkit() -> None:
    truths = [gt([[0.0, 0.0, 10.0, 10.0]], [0])]
    preds = [det([[2.5, 0.0, 12.5, 10.0]], [0], [0.9])]  # IoU exactly 0.6 in float64
    assert voc_ap50(preds, truths, ["cat"], iou=0.6)["ap50_voc"] == pytest.approx(1.0)


def test_difficult_boxes_are_ignored() -> None:
    # the detection on the difficult box is neither TP nor FP; the missed difficult box is not a positive
    truths = [gt([A, B, FAR], [0, 0, 0], [False, True, True])]
    preds = [det([B, A], [0, 0], [0.95, 0.9])]
    voc = voc_ap50(preds, truths, ["cat"])
    assert voc["ap50_voc"] == pytest.approx(1.0)
    assert voc["per_class"][0]["gt"] == 1
    assert voc["curves"]["cat"] == {"precision": [1.0], "recall": [1.0]}
    coco = coco_metrics(preds, truths, ["cat"])
    assert coco["map"] == pytest.approx(1.0)
    assert coco["per_class"][0]["gt"] == 1
    assert coco["per_image_ap50"] == pytest.approx([1.0])


def test_classes_without_gt_give_none() -> None:
    truths = [gt([A], [0])]
    preds = [det([A, B], [0, 2], [0.9, 0.8])]  # "bird" predicted, never in the GT
    classes = ["cat", "dog", "bird"]
    voc = voc_ap50(preds, truths, classes)
    assert [c["ap50_voc"] for c in voc["per_class"]] == [pytest.approx(1.0), None, None]
    assert voc["ap50_voc"] == pytest.approx(1.0)  # the mean is over classes with GT
    assert set(voc["curves"]) == {"cat"}
    coco = coco_metrics(preds, truths, classes)
    assert [c["ap"] for c in coco["per_class"]] == [pytest.approx(1.0), None, None]
    assert coco["map_small"] is None and coco["map_large"] is None  # only a medium GT (40 x 40)
    assert coco["map_medium"] == pytest.approx(1.0)
    assert coco["per_image_ap50"] == pytest.approx([0.5])  # cat 1, bird 0 (a false positive)


def test_zero_predictions_give_zero() -> None:
    truths = [gt([A], [0]), gt([B], [1])]
    preds = [det([], [], []), det([], [], [])]
    coco = coco_metrics(preds, truths, ["cat", "dog", "bird"])
    assert coco["map"] == 0.0 and coco["map_50"] == 0.0 and coco["mar_100"] == 0.0
    assert [c["ap"] for c in coco["per_class"]] == [0.0, 0.0, None]
    assert coco["per_image_ap50"] == [0.0, 0.0]
    voc = voc_ap50(preds, truths, ["cat", "dog", "bird"])
    assert voc["ap50_voc"] == 0.0
    assert voc["curves"]["cat"] == {"precision": [], "recall": []}


def test_images_without_gt() -> None:
    truths = [gt([A], [0]), gt([], []), gt([], [])]
    preds = [det([A], [0], [0.9]), det([B], [0], [0.95]), det([], [], [])]
    coco = coco_metrics(preds, truths, ["cat"])
    # the FP on the empty image outranks the TP: precision 0, 1/2 at recall 0, 1
    assert coco["map_50"] == pytest.approx(0.5)
    assert coco["per_image_ap50"] == [pytest.approx(1.0), 0.0, None]
    assert voc_ap50(preds, truths, ["cat"])["ap50_voc"] == pytest.approx(0.5)
    nothing = coco_metrics([det([], [], [])], [gt([], [])], ["cat"])
    assert nothing["map"] is None and nothing["per_class"][0]["ap"] is None
    assert voc_ap50([det([], [], [])], [gt([], [])], ["cat"])["ap50_voc"] is None


def random_case(seed: int, images: int, boxes: int, classes: int) -> tuple[list[ImageBoxes], list[ImageBoxes]]:
    """GT boxes, predictions that jitter them (some badly), drop some, and add false positives."""
    g = torch.Generator().manual_seed(seed)
    preds, truths = [], []
    for _ in range(images):
        xy = torch.rand(boxes, 2, generator=g) * 400
        wh = 20 + torch.rand(boxes, 2, generator=g) * 100
        box = torch.cat([xy, xy + wh], 1)
        labels = torch.randint(classes, (boxes,), generator=g)
        truths.append(ImageBoxes(box, labels))
        jitter = box + torch.randn(boxes, 4, generator=g) * wh.repeat(1, 2) * 0.1
        kept = torch.rand(boxes, generator=g) > 0.2
        fp_xy = torch.rand(boxes // 4, 2, generator=g) * 400
        fp = torch.cat([fp_xy, fp_xy + 50], 1)
        pred_boxes = torch.cat([jitter[kept], fp])
        pred_labels = torch.cat([labels[kept], torch.randint(classes, (len(fp),), generator=g)])
        preds.append(ImageBoxes(pred_boxes, pred_labels, torch.rand(len(pred_boxes), generator=g)))
    return preds, truths


def test_voc_ap50_close_to_pycocotools_ap50() -> None:
    # Not equal by design: COCO samples precision at 101 recall points, VOC integrates every
    # point; COCO gives a detection the best *unmatched* GT, VOC the best GT (a duplicate if taken).
    # On this case the two agree within 0.05.
    preds, truths = random_case(seed=0, images=30, boxes=10, classes=3)
    classes = ["a", "b", "c"]
    coco, voc = coco_metrics(preds, truths, classes), voc_ap50(preds, truths, classes)
    assert 0.2 < voc["ap50_voc"] < 0.95  # a case where the metric is not trivially 0 or 1
    assert abs(voc["ap50_voc"] - coco["map_50"]) < 0.05
    for c, v in zip(coco["per_class"], voc["per_class"], strict=True):
        assert abs(c["ap50"] - v["ap50_voc"]) < 0.05
        assert c["gt"] == v["gt"]


def test_curves_are_downsampled() -> None:
    preds, truths = random_case(seed=1, images=40, boxes=20, classes=1)
    curve = voc_ap50(preds, truths, ["a"])["curves"]["a"]
    assert len(curve["precision"]) == len(curve["recall"]) == 200
    assert curve["recall"] == sorted(curve["recall"])


def test_mismatched_inputs_raise() -> None:
    with pytest.raises(DataError, match="one of each per image"):
        voc_ap50([det([A], [0], [0.9])], [], ["cat"])
    with pytest.raises(DataError, match="scores"):
        coco_metrics([gt([A], [0])], [gt([A], [0])], ["cat"])


def test_missing_pycocotools_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from torchkeel import extras
    from torchkeel.errors import KeelError

    for name in ("pycocotools", "pycocotools.coco", "pycocotools.cocoeval"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails, find_spec finds nothing
    extras._found.cache_clear()
    try:
        with pytest.raises(KeelError, match=r"pycocotools.*torchkeel\[vision\]"):
            coco_metrics([det([A], [0], [0.9])], [gt([A], [0])], ["cat"])
    finally:
        extras._found.cache_clear()
