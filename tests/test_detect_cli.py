"""Object detection end to end through ``keel``: train on a generated Pascal VOC folder (a small
FCOS must find the discs and squares), evaluate again, predict boxes and draw them, export to
ONNX with a parity check including NMS, and the one-line errors; then the real BCCD set when
it is beside the project."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error, keel
from make_data import boxes_scene, write_box_folder
from PIL import Image

BCCD = Path(__file__).parent.parent / "data" / "bccd"


def test_keel_trains_and_evaluates_a_detector(detect_run: Path, tmp_path: Path):
    summary = json.loads((detect_run / "summary.json").read_text())
    test = summary["test"]
    assert set(test) == {"map", "map_50", "map_75", "mar_100", "ap50_voc"}
    assert test["map_50"] > 0.5, test  # no detections score 0
    assert test["map"] <= test["map_50"] and test["map_75"] <= test["map_50"]
    spec = json.loads((detect_run / "data.json").read_text())
    assert spec["task"] == "detection" and spec["classes"] == ["disc", "square"]
    assert spec["input_shape"] == [3, 96, 128] and spec["extra"]["resize"] == "letterbox"
    again = json.loads(keel("eval", str(detect_run), "--json", cwd=tmp_path, check=True).stdout)
    assert again["map"] == pytest.approx(test["map"], abs=1e-6)
    evaluation = json.loads((detect_run / "evaluation.json").read_text())
    assert [r["class"] for r in evaluation["per_class"]] == ["disc", "square"]
    assert np.mean([r["ap50"] for r in evaluation["per_class"]]) == pytest.approx(test["map_50"], abs=1e-6)
    assert len(evaluation["per_image_ap50"]) == 9  # the VOC folder's test list
    epochs = [json.loads(line) for line in (detect_run / "metrics.jsonl").read_text().splitlines()]
    assert "val/map" in epochs[-1] and "val/loss" not in epochs[-1]  # detectors have no eval-mode loss


def test_keel_predict_gives_boxes_in_the_image_and_draws_them(detect_run: Path, tmp_path: Path):
    image, objects = boxes_scene(999)
    Image.fromarray(image).save(tmp_path / "new.png")
    as_json = json.loads(keel("predict", str(detect_run), "new.png", "--json", cwd=tmp_path, check=True).stdout)
    assert as_json["size"] == [96, 128] and as_json["boxes"], as_json
    best = as_json["boxes"][0]
    assert best["class"] == objects[0][0]
    x1, y1, x2, y2 = objects[0][1]
    cx, cy = (best["box"][0] + best["box"][2]) / 2, (best["box"][1] + best["box"][3]) / 2
    assert x1 <= cx <= x2 and y1 <= cy <= y2  # centred on the one object (this small model's boxes are loose)
    scores = [b["score"] for b in as_json["boxes"]]
    assert scores == sorted(scores, reverse=True) and min(scores) >= 0.3  # the default threshold
    fewer = json.loads(keel("predict", str(detect_run), "new.png", "--json", "--threshold", "0.9", cwd=tmp_path,
                            check=True).stdout)  # fmt: skip
    assert all(b["score"] >= 0.9 for b in fewer["boxes"])
    proc = keel("predict", str(detect_run), "new.png", "--output", "boxed.png", "--threshold", "0.1", cwd=tmp_path,
                check=True)  # fmt: skip
    assert "wrote boxed.png" in proc.stdout
    drawn = np.asarray(Image.open(tmp_path / "boxed.png").convert("RGB")).astype(int)
    assert drawn.shape == image.shape and (np.abs(drawn - image).sum(2) > 60).sum() > 40  # box outlines
    assert_one_line_error(keel("predict", str(detect_run), "new.png", "--output", "new.png", cwd=tmp_path),
                          "is an input")  # fmt: skip


def test_keel_export_includes_nms_and_matches_pytorch(detect_run: Path, tmp_path: Path):
    pytest.importorskip("onnxruntime")
    proc = keel("export", str(detect_run), "--out", str(tmp_path / "export"), cwd=tmp_path, check=True, timeout=600)
    assert "verified with onnxruntime" in proc.stdout and "batch fixed at 1" in proc.stdout
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "export" / "model.onnx"), providers=["CPUExecutionProvider"])
    x = torch.zeros(1, 3, 96, 128).numpy()
    rows = session.run(None, {"input": x})[0]
    assert rows.shape == (1, 100, 6)  # boxes, score, class: post-processing is in the graph


def test_box_folder_errors_are_one_line(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    assert_one_line_error(keel("train", "--data", "box_folder", "--set", f"data.root={tmp_path / 'empty'}",
                               cwd=tmp_path), "box_folder")  # fmt: skip
    write_box_folder(tmp_path / "voc", n=12)
    assert_one_line_error(keel("train", "--data", "box_folder", "--set", f"data.root={tmp_path / 'voc'}",
                               "--set", "model.name=unet", cwd=tmp_path), "boxes around objects", "fcos")  # fmt: skip
    assert_one_line_error(keel("train", "--data", "box_folder", "--set", f"data.root={tmp_path / 'voc'}",
                               "--set", "model.fpn_channels=40", cwd=tmp_path), "multiple of 32")  # fmt: skip
    assert_one_line_error(keel("train", "--data", "digits", "--set", "model.name=fcos", cwd=tmp_path),
                          "fcos")  # fmt: skip


def test_augmentation_moves_boxes_with_the_pixels():
    from torchkeel.config_data import AugmentConfig
    from torchkeel.data.augment import build_augment
    from torchkeel.data.bundle import DataSpec
    from torchkeel.data.ragged import Ragged

    spec = DataSpec("box_folder", "image", "detection", (1, 40, 60), classes=["a"], mean=[0.0], std=[1.0])
    x = torch.zeros(6, 1, 40, 60)
    x[:, :, 10:20, 5:25] = 1.0  # one bright box per image, exactly its target
    y = Ragged.from_list([torch.tensor([[0.0, 5, 10, 25, 20, 0]])] * 6)
    torch.manual_seed(0)
    moved_x, moved_y = build_augment(AugmentConfig(flip=True, scale=0.3, translate=0.1), spec)(x, y)
    assert len(moved_y) == 6
    for image, rows in zip(moved_x, moved_y.items(), strict=True):
        on = torch.nonzero(image[0] > 0.5)
        if len(rows) == 0:  # pushed out of the picture: dropped with its pixels
            assert len(on) < 10
            continue
        _, bx1, by1, bx2, by2, _ = rows[0].tolist()
        assert on[:, 1].min() >= bx1 - 1.5 and on[:, 1].max() <= bx2 + 0.5
        assert on[:, 0].min() >= by1 - 1.5 and on[:, 0].max() <= by2 + 0.5
        assert (bx2 - bx1) == pytest.approx(on[:, 1].max() - on[:, 1].min() + 1, abs=2.5)


@pytest.mark.slow
@pytest.mark.skipif(not BCCD.exists(), reason="the BCCD set is not beside the project")
def test_bccd_trains_a_detector_that_finds_cells(tmp_path: Path):
    keel("train", str(Path(__file__).parent.parent / "configs" / "bccd.yaml"), "--set", f"data.root={BCCD}",
         "--set", "data.image.size=[192,256]", "--set", "train.epochs=2", cwd=tmp_path, check=True,
         timeout=1200)  # fmt: skip
    summary = json.loads((tmp_path / "runs" / "latest" / "summary.json").read_text())
    assert summary["test"]["map_50"] > 0.3, summary["test"]  # one epoch at 192x256 already reaches ~0.4


def test_voc_coco_and_yolo_files_of_the_same_boxes_give_the_same_dataset(tmp_path: Path):
    from make_data import write_box_formats

    from torchkeel.data import load

    roots = write_box_formats(tmp_path, n=20)
    bundles = {fmt: load({"name": "box_folder", "root": str(root)}) for fmt, root in roots.items()}
    voc = bundles["voc"]
    assert voc.spec.classes == ["disc", "square"] and voc.spec.extra["format"] == "voc"
    for fmt, bundle in bundles.items():
        assert bundle.spec.extra["format"] == fmt and bundle.spec.classes == voc.spec.classes
        for name in ("train", "val", "test"):
            a, b = voc.splits()[name], bundle.splits()[name]
            assert [Path(s).stem for s in a.sources] == [Path(s).stem for s in b.sources], (fmt, name)
            assert torch.equal(a.x, b.x)
            assert torch.equal(a.y.lengths, b.y.lengths)
            assert torch.allclose(a.y.values, b.y.values, atol=1e-3), fmt  # YOLO's 6 decimals of a fraction


def test_a_flip_mirrors_boxes_to_hand_computed_coordinates():
    from torchkeel.data.augment_boxes import box_transform, boxes_moved
    from torchkeel.data.ragged import Ragged

    x = torch.arange(2 * 1 * 40 * 60, dtype=torch.float32).view(2, 1, 40, 60)
    y = Ragged.from_list([torch.tensor([[1.0, 5, 10, 25, 20, 0], [0.0, 50, 0, 60, 40, 1]]), torch.zeros(0, 6)])
    flip = boxes_moved(box_transform(True, 0.0, 0.0, 0.0))
    torch.manual_seed(1)
    flipped = [torch.rand(()) < 0.5 for _ in range(2)]  # what RandomHorizontalFlip draws per image, in order
    torch.manual_seed(1)
    moved_x, moved_y = flip(x, y)
    rows = moved_y.items()
    if flipped[0]:  # x' = width - x, the corners swapped
        assert rows[0].tolist() == [[1.0, 35, 10, 55, 20, 0], [0.0, 0, 0, 10, 40, 1]]
        assert torch.equal(moved_x[0], x[0].flip(-1))
    else:
        assert rows[0].tolist() == y.items()[0].tolist() and torch.equal(moved_x[0], x[0])
    assert len(rows[1]) == 0  # a background image stays one


def test_detection_runs_resume_bit_identically(tmp_path: Path):
    """Boxes move with per-image randomness from torch's RNG: a resumed run draws the same."""
    from resume_helpers import assert_resumes_bit_identically

    import torchkeel as keel_api

    write_box_folder(tmp_path / "voc", n=16, size=(48, 64))
    data = keel_api.data.load({"name": "box_folder", "root": str(tmp_path / "voc")}, seed=0)
    model_cfg = {"name": "fcos", "fpn_channels": 32, "head_convs": 1}
    assert_resumes_bit_identically(data, model_cfg, {"flip": True, "scale": 0.2, "translate": 0.1}, tmp_path / "run", 2)


def test_a_class_only_in_the_test_split_is_said(tmp_path: Path):
    from torchkeel.data import load
    from torchkeel.errors import DataWarning

    root = tmp_path / "voc"
    write_box_folder(root, n=12)
    test_names = (root / "ImageSets" / "Main" / "test.txt").read_text().split()
    xml = root / "Annotations" / f"{test_names[0]}.xml"
    xml.write_text(xml.read_text().replace("<name>disc</name>", "<name>platelet</name>", 1)
                   .replace("<name>square</name>", "<name>platelet</name>", 1))  # fmt: skip
    with pytest.warns(DataWarning, match="no train boxes of class platelet"):
        bundle = load({"name": "box_folder", "root": str(root)})
    assert "platelet" in bundle.spec.classes


def test_a_traced_detector_pads_any_number_of_detections():
    """The ONNX export traces the model: the padding to D rows must not bake in the example's count."""
    import warnings

    from torchkeel.models.detect import Detector

    class Found(torch.nn.Module):  # a detector whose number of boxes depends on the pixels
        def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
            out = []
            for image in images:
                s = image.flatten()[:50].sigmoid()
                keep = s > 0.5
                boxes = torch.stack([s, s, s + 1, s + 1], 1)[keep]
                out.append({"boxes": boxes, "scores": s[keep], "labels": (s[keep] * 0 + 1).long()})
            return out

    model = Detector(Found(), 50).eval()  # more rows than boxes found: the padding shows
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's warnings about data-dependent shapes
        traced = torch.jit.trace(model, torch.randn(1, 1, 8, 8))
    counts = set()
    for x in (torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(s)) for s in range(3)):
        assert torch.equal(traced(x * 3), model(x * 3))
        counts.add(int((model(x * 3)[0, :, 5] >= 0).sum()))
    none = -5 * torch.ones(1, 1, 8, 8)
    assert torch.equal(traced(none), model(none)) and (model(none)[0, :, 5] == -1).all()
    assert len(counts) > 1  # the check saw different counts


@pytest.mark.parametrize("name", ["fcos", "retinanet"])
def test_fpn_detectors_also_train_on_mobilenet_v3(name):
    from torchkeel.data.bundle import DataSpec
    from torchkeel.models import build

    spec = DataSpec("det", "image", "detection", (3, 64, 96), classes=["a"])
    model = build({"name": name, "backbone": "mobilenet_v3"}, spec).train()
    loss = model(
        torch.randn(2, 3, 64, 96), [{"boxes": torch.tensor([[4.0, 6, 30, 40]]), "labels": torch.tensor([0])}] * 2
    )
    loss.backward()
    assert torch.isfinite(loss) and model.eval()(torch.randn(1, 3, 64, 96)).shape == (1, 100, 6)


def test_threshold_and_tta_are_refused_where_they_do_not_apply(detect_run: Path, trained_run: Path, tmp_path: Path):
    image, _ = boxes_scene(3)
    Image.fromarray(image).save(tmp_path / "a.png")
    assert_one_line_error(keel("predict", str(trained_run), "a.png", "--threshold", "0.5", cwd=tmp_path),
                          "--threshold is for detection runs")  # fmt: skip
    write_box_folder(tmp_path / "voc", n=12)
    assert_one_line_error(keel("train", "--data", "box_folder", "--set", f"data.root={tmp_path / 'voc'}",
                               "--set", "eval.tta=flip", cwd=tmp_path), "test-time augmentation")  # fmt: skip
