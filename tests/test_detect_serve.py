"""A detector served by ``keel serve``: /predict answers boxes in the uploaded picture's pixels,
bad uploads get a 4xx and the server keeps serving, the page in Chromium draws the boxes over
the picture; and ``keel predict --json`` gives the boxes in the pixels of an image of another size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import keel
from make_data import boxes_scene
from PIL import Image


def iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union


def check_boxes(prediction: dict, size: tuple[int, int], truth: list[tuple[str, list[float]]], classes: list[str]):
    """Boxes of the run's classes inside the picture, best first; the best one on a true object."""
    h, w = size
    assert prediction["size"] == [h, w]
    boxes = prediction["boxes"]
    assert boxes, prediction
    for b in boxes:
        x1, y1, x2, y2 = b["box"]
        assert b["class"] in classes and 0 <= b["score"] <= 1
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h, b
    scores = [b["score"] for b in boxes]
    assert scores == sorted(scores, reverse=True)
    # the best box is on a true object of its class: its centre inside that object's box, and an
    # IoU over 0.3, not 0.5: this small detector's boxes are loose (test AP75 ~0.16, AP50 ~0.75),
    # and scene 999's one disc is 14 px across, its best box ~22 px (IoU ~0.41)
    x1, y1, x2, y2 = boxes[0]["box"]
    name, (tx1, ty1, tx2, ty2) = max(truth, key=lambda t: iou(boxes[0]["box"], t[1]))
    assert boxes[0]["class"] == name and tx1 < (x1 + x2) / 2 < tx2 and ty1 < (y1 + y2) / 2 < ty2, (boxes, truth)
    assert iou(boxes[0]["box"], [tx1, ty1, tx2, ty2]) > 0.3, (boxes, truth)


def test_a_detector_is_served_and_its_page_draws_the_boxes(detect_run: Path, tmp_path: Path):
    import httpx
    from browser import chromium_page, skip_without_chromium, upload_picture
    from serving import running_server

    classes = json.loads((detect_run / "data.json").read_text())["classes"]
    image, truth = boxes_scene(999)
    Image.fromarray(image).save(tmp_path / "up.png")
    noise = np.random.default_rng(0).integers(70, 130, image.shape)  # boxes_scene's background
    Image.fromarray(noise.astype(np.uint8)).save(tmp_path / "none.png")
    with running_server(detect_run, log_dir=tmp_path) as url:
        with (tmp_path / "up.png").open("rb") as f:
            got = httpx.post(f"{url}/predict", files={"file": ("up.png", f, "image/png")}, timeout=60)
        assert got.status_code == 200, got.text
        prediction = got.json()["predictions"][0]
        assert prediction["source"] == "up.png"
        check_boxes(prediction, image.shape[:2], truth, classes)
        for name, body in [("empty.png", b""), ("x.png", b"not a png")]:
            bad = httpx.post(f"{url}/predict", files={"file": (name, body, "image/png")}, timeout=30)
            assert 400 <= bad.status_code < 500, (name, bad.status_code, bad.text)
            assert "error" in bad.json()
        assert httpx.get(f"{url}/health", timeout=30).status_code == 200  # still serving
        skip_without_chromium()
        with chromium_page(url + "/") as (page, problems):
            upload_picture(page, tmp_path / "up.png")
            drawn = int(page.get_attribute("#overlay", "data-boxes"))
            assert drawn == len(prediction["boxes"]) >= 1
            labels = page.locator("#bars .label").all_text_contents()
            assert labels == [b["class"] for b in prediction["boxes"]]
            # the best box's colour (its bar is painted the same) is on the canvas: on the box's
            # left edge, halfway down, and over many pixels (the outline and the label's background)
            found = page.evaluate(
                """([box, w]) => {
                  const c = document.getElementById('overlay'), s = c.width / w;
                  const colour = getComputedStyle(document.querySelector('#bars .fill')).backgroundColor;
                  const want = colour.match(/\\d+/g).slice(0, 3).map(Number);
                  const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                  let n = 0;
                  for (let i = 0; i < data.length; i += 4) {
                    if (want.every((v, k) => Math.abs(data[i + k] - v) <= 2)) n += 1;
                  }
                  const edge = c.getContext('2d').getImageData(box[0] * s, (box[1] + box[3]) / 2 * s, 1, 1).data;
                  return { want, n, edge: Array.from(edge).slice(0, 3), size: [c.height, c.width] };
                }""",
                [prediction["boxes"][0]["box"], image.shape[1]],
            )
            assert max(found["size"]) == 420 and found["size"][0] * image.shape[1] == pytest.approx(
                found["size"][1] * image.shape[0], abs=image.shape[1]
            )
            assert found["want"] != [47, 111, 222], found  # a class colour, not the page's accent
            assert found["n"] >= 100, found
            assert np.abs(np.subtract(found["edge"], found["want"])).max() <= 2, found
            # a picture of the background alone: the picture, no boxes, and the page says so
            page.set_input_files("#file", str(tmp_path / "none.png"))
            page.wait_for_selector("#overlay[data-drawn='true'][data-boxes='0']")
            assert page.locator("#bars li.empty").inner_text() == "(no objects found)"
        assert problems == []


def test_keel_predict_gives_the_boxes_in_the_pixels_of_the_image(detect_run: Path, tmp_path: Path):
    """The picture at the model's input size and at twice it: each one's boxes in its own pixels."""
    classes = json.loads((detect_run / "data.json").read_text())["classes"]
    image, truth = boxes_scene(999)
    h, w = image.shape[:2]
    Image.fromarray(image).save(tmp_path / "new.png")
    Image.fromarray(image).resize((2 * w, 2 * h), Image.Resampling.NEAREST).save(tmp_path / "big.png")
    proc = keel("predict", str(detect_run), "new.png", "big.png", "--json", cwd=tmp_path, check=True)
    same, big = (json.loads(line) for line in proc.stdout.splitlines())
    assert (same["source"], big["source"]) == ("new.png", "big.png")
    check_boxes(same, (h, w), truth, classes)
    check_boxes(big, (2 * h, 2 * w), [(name, [2 * v for v in box]) for name, box in truth], classes)
    # the model sees nearly the same input (big.png shrunk back): its best box, halved, is the same
    assert np.array(big["boxes"][0]["box"]) / 2 == pytest.approx(same["boxes"][0]["box"], abs=3)
