"""The report's detection section: on a small FCOS trained on generated VOC pictures (discs and
squares), its per-class AP table and AP by object size are evaluation.json's, the best and worst
images are those with the highest and lowest per-image AP50 recorded there, its figures (the
precision-recall curves, the overlays, the box sizes) are embedded PNGs, and ``draw_boxes``
outlines each box in its class's colour. The common data section draws for Ragged box targets."""

from __future__ import annotations

import base64
import html
import io
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from conftest import keel
from eval_helpers import open_in_chromium
from PIL import Image


def _section(run: Path, key: str = "detection") -> str:
    page = (run / "report.html").read_text()
    found = re.search(rf'<section id="{key}".*?</section>', page, re.S)
    assert found, re.findall(r'<section id="([^"]+)"', page)
    return found.group(0)


def _cell(value: str) -> float:
    return float("nan") if value == "-" else float(value)


def _close(shown: float, recorded: float | None) -> bool:
    return np.isnan(shown) if recorded is None else shown == pytest.approx(recorded, abs=6e-5)


def test_per_class_table_and_sizes_match_evaluation_json(detect_run):
    evaluation = json.loads((detect_run / "evaluation.json").read_text())
    section = _section(detect_run)
    assert "could not be drawn" not in section
    assert "<th>AP@[.5:.95]</th><th>AP50</th><th>AP50 (VOC)</th><th>GT boxes</th>" in section
    assert [r["class"] for r in evaluation["per_class"]] == ["disc", "square"]
    for row in evaluation["per_class"]:
        found = re.search(rf"<tr><td>{row['class']}</td>" + r'<td class="num">([^<]+)</td>' * 4, section)
        assert found, row["class"]
        ap, ap50, voc, gt = found.groups()
        for shown, key in ((ap, "ap"), (ap50, "ap50"), (voc, "ap50_voc")):
            assert _close(_cell(shown), row[key]), (row["class"], key, shown, row[key])
        assert int(gt) == row["gt"] > 0
    for label, key in (("small", "map_small"), ("medium", "map_medium"), ("large", "map_large")):
        found = re.search(rf"<tr><td>{label} \([^<]*\)</td><td class=\"num\">([^<]+)</td>", section)
        assert found and _close(_cell(found.group(1)), evaluation["areas"][key]), label
    found = re.search(r"<td>COCO mAP @\[.5:.95\]</td><td class=\"num\">([^<]+)</td>", section)
    assert float(found.group(1)) == pytest.approx(evaluation["metrics"]["map"], abs=6e-5)


def test_best_and_worst_images_are_ranked_by_their_ap50(detect_run):
    scores = json.loads((detect_run / "evaluation.json").read_text())["per_image_ap50"]
    valid = sorted(v for v in scores if v is not None)
    captions = [html.unescape(c) for c in re.findall(r"<figcaption>(.*?)</figcaption>", _section(detect_run))]
    shown = {}
    for what in ("best", "worst"):
        caption = next(c for c in captions if f" {what} test images by AP50" in c)
        pairs = [(int(i), float(v)) for i, v in re.findall(r"test image (\d+): AP50 ([\d.]+)", caption)]
        best = min(4, (len(valid) + 1) // 2)  # on few images the two lists share none
        assert len(pairs) == (best if what == "best" else min(4, len(valid) - best)), caption
        for i, v in pairs:
            assert v == pytest.approx(scores[i], abs=6e-4), (what, i)
        shown[what] = [i for i, _ in pairs]
        values = [v for _, v in pairs]
        want = valid[::-1][: len(values)] if what == "best" else valid[: len(values)]
        assert values == pytest.approx(want, abs=6e-4), what
    assert not set(shown["best"]) & set(shown["worst"])


def test_the_figures_are_svg_charts_and_embedded_pngs(detect_run):
    section = _section(detect_run)
    figures = re.findall(r"<figure>(.*?)<figcaption>(.*?)</figcaption></figure>", section, re.S)
    captions = [html.unescape(c) for _, c in figures]
    assert len(figures) == 4, captions  # the curves, the best and the worst images, the box sizes
    assert "precision (y) against recall" in captions[0]
    assert " best test images" in captions[1] and " worst test images" in captions[2]
    assert "ground truth" in captions[3] and "predictions scoring at least 0.3" in captions[3]
    curves, sizes = ET.fromstring(figures[0][0]), ET.fromstring(figures[3][0])  # charts: inline SVG
    assert len(curves.findall(".//{*}polyline")) >= 1  # a precision-recall line per class panel
    assert len([r for r in sizes.iter("{http://www.w3.org/2000/svg}rect") if r.get("class") == "bar"]) >= 2
    pictures = [re.fullmatch(r'<img alt="[^"]*" src="data:image/png;base64,([^"]+)">', f) for f, _ in figures[1:3]]
    for match in pictures:
        image = Image.open(io.BytesIO(base64.b64decode(match[1])))
        assert image.format == "PNG" and min(image.size) > 100, image.size
    # the overlays draw the classes' colours (disc: tab10 blue, square: orange) over the pictures
    overlay = np.asarray(Image.open(io.BytesIO(base64.b64decode(pictures[0][1]))).convert("RGB"))
    for colour in ((31, 119, 180), (255, 127, 14)):
        assert (overlay == colour).all(-1).sum() > 50, colour
    assert "rgb(31, 119, 180)'></span> disc" in section  # the legend
    page = open_in_chromium(detect_run / "report.html")  # skips without Chromium
    assert page["console"] == [] and page["errors"] == [], page
    det = next(s for s in page["sections"] if s["id"] == "detection")
    assert det["errors"] == 0 and det["images"] == det["decoded"] == 4, det


def test_the_data_section_draws_box_targets(detect_run):
    data = _section(detect_run, "data")
    assert "could not be drawn" not in data
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", data)
    assert "boxes per class" in captions and any("first training images" in c for c in captions), captions


def test_keel_report_rewrites_the_page(detect_run):
    (detect_run / "report.html").unlink()
    done = keel("report", str(detect_run), cwd=detect_run.parent, check=True)
    assert "failed" not in done.stdout + done.stderr, done.stdout + done.stderr
    assert "could not be drawn" not in (detect_run / "report.html").read_text()
    assert "<th>AP50 (VOC)</th>" in _section(detect_run)


def test_draw_boxes_outlines_each_box_in_its_class_colour():
    from torchkeel.evaluate.sections_detect import COLOURS, draw_boxes

    blank = Image.new("L", (80, 60))  # grey in, RGB out
    boxes = [
        {"box": [10, 20, 50, 50], "class": "square", "score": 0.87},  # predicted: labelled with its score
        {"box": [60, 5, 75, 40], "class": "disc"},  # ground truth: the class alone
    ]
    out = draw_boxes(blank, boxes, ["disc", "square"], width=2)
    assert out is not blank and out.mode == "RGB" and out.size == blank.size
    assert np.asarray(blank).max() == 0  # the input is left as it was
    rgb = np.asarray(out)
    square, disc = COLOURS[1], COLOURS[0]
    for x, y in ((10, 35), (11, 35), (50, 35), (49, 35), (30, 49), (30, 50)):  # left, right, bottom edges
        assert tuple(rgb[y, x]) == square, (x, y)
    for x, y in ((60, 25), (75, 25), (67, 40)):
        assert tuple(rgb[y, x]) == disc, (x, y)
    assert tuple(rgb[35, 30]) == (0, 0, 0) and tuple(rgb[25, 67]) == (0, 0, 0)  # insides stay blank
    label = rgb[:20, 10:50]  # above the square: its label on a patch of its colour
    assert (label == square).all(-1).sum() > 40
    assert (label != square).any(-1).sum() > 5  # and its text
    scored, truth = (np.asarray(draw_boxes(blank, [boxes[0] | {"score": s}], ["disc", "square"])) for s in (0.87, None))
    assert (truth[:20] == square).all(-1).sum() < (scored[:20] == square).all(-1).sum()  # a shorter label
