"""The report's segmentation section: on a small U-Net trained on generated scenes (a disc and a
box on a noisy ground, void pixels on the disc's rim, one test image all void), its per-class
table matches IoU computed here from the model's own predictions, the best and worst images are
those with the highest and lowest mean IoU computed here, and its figures are embedded PNGs."""

from __future__ import annotations

import base64
import html
import io
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from eval_helpers import make_run, open_in_chromium
from PIL import Image

CLASSES = ["background", "disc", "box"]
PALETTE = [[0, 0, 0], [220, 40, 40], [40, 60, 210]]
SIZE = (24, 32)  # H, W
SPLITS = (36, 8, 12)  # train, val, test images


def _scene(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(3, H, W) float in [0, 1] and its (H, W) int64 mask: 0 ground, 1 disc, 2 box, 255 on the
    disc's rim (void, as the masks of real data sets draw object edges)."""
    h, w = SIZE
    mask = np.zeros(SIZE, np.int64)
    top, left = rng.integers(0, h - 8), rng.integers(0, w - 10)
    mask[top : top + rng.integers(5, 8), left : left + rng.integers(6, 10)] = 2
    cy, cx, r = rng.integers(6, h - 6), rng.integers(6, w - 6), rng.integers(3, 6)
    d2 = (np.mgrid[:h, :w][0] - cy) ** 2 + (np.mgrid[:h, :w][1] - cx) ** 2
    mask[d2 <= r * r] = 1
    colour = np.array([[0.45, 0.45, 0.45], [0.85, 0.15, 0.15], [0.15, 0.25, 0.85]])
    image = colour[mask] + rng.normal(0, 0.08, (h, w, 3))
    mask[(d2 > (r - 1) ** 2) & (d2 <= r * r)] = 255
    return image.clip(0, 1).transpose(2, 0, 1).astype(np.float32), mask


def _bundle():
    from torchkeel.data.bundle import DataBundle, DataSpec, Split

    rng = np.random.default_rng(0)
    images, masks = zip(*(_scene(rng) for _ in range(sum(SPLITS))), strict=True)
    x, y = torch.tensor(np.stack(images)), torch.tensor(np.stack(masks))
    y[-1] = 255  # a test image with no labelled pixel has no score
    a, b = SPLITS[0], SPLITS[0] + SPLITS[1]
    mean, std = x[:a].mean((0, 2, 3)), x[:a].std((0, 2, 3))
    x = (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    spec = DataSpec(
        "scenes", "image", "segmentation", (3, *SIZE), classes=CLASSES, mean=mean.tolist(), std=std.tolist(),
        extra={"ignore_index": 255, "palette": PALETTE},
    )  # fmt: skip
    return DataBundle(spec, Split(x[:a], y[:a]), Split(x[a:b], y[a:b]), Split(x[b:], y[b:]))


@pytest.fixture(scope="module")
def segment_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module, object]:
    from torchkeel.run_model import load_model

    data = _bundle()
    cfg = {
        "model": {"name": "unet", "widths": [8, 16, 32]},
        "train": {"epochs": 6, "batch_size": 6, "optimizer": {"lr": 0.01}, "threads": 1},
    }
    run = make_run(tmp_path_factory.mktemp("segment-report"), data, cfg, "scenes")
    model, _, _ = load_model(run, "cpu")
    return run, model.eval(), data


def _section(run: Path) -> str:
    page = (run / "report.html").read_text()
    found = re.search(r'<section id="segmentation".*?</section>', page, re.S)
    assert found, re.findall(r'<section id="([^"]+)"', page)
    return found.group(0)


def _reference_iou(pred: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """(K,) IoU per class as intersection / union of the pixel sets, void pixels left out; NaN
    for a class in neither the truth nor the prediction."""
    labelled = y != 255
    iou = []
    for c in range(len(CLASSES)):
        inter = ((pred == c) & (y == c) & labelled).sum().item()
        union = (((pred == c) | (y == c)) & labelled).sum().item()
        iou.append(inter / union if union else float("nan"))
    return np.array(iou)


def test_per_class_table_matches_iou_of_the_predictions(segment_report):
    run, model, data = segment_report
    with torch.no_grad():
        pred = model(data.test.x).argmax(1)  # (N, H, W)
    want = _reference_iou(pred, data.test.y)
    section = _section(run)
    for name, iou in zip(CLASSES, want, strict=True):
        row = re.search(rf"<tr><td>{name}</td><td class=\"num\">([^<]+)</td>", section)
        assert row, name
        assert float(row.group(1)) == pytest.approx(iou, abs=6e-5), name
    miou = re.search(r"<td>mean IoU \(classes present\)</td><td class=\"num\">([^<]+)</td>", section)
    assert float(miou.group(1)) == pytest.approx(np.nanmean(want), abs=6e-5)
    assert "disc" in section and "rgb(220,40,40)" in section  # the legend, in the data's palette


def test_best_and_worst_images_are_ranked_by_their_mean_iou(segment_report):
    run, model, data = segment_report
    with torch.no_grad():
        pred = model(data.test.x).argmax(1)
    scores = np.array([np.nanmean(_reference_iou(p, y)) if (y != 255).any() else np.nan
                       for p, y in zip(pred, data.test.y, strict=True)])  # fmt: skip
    captions = [html.unescape(c) for c in re.findall(r"<figcaption>(.*?)</figcaption>", _section(run))]
    shown = {}
    for what in ("best", "worst"):
        caption = next(c for c in captions if f" {what} test images" in c)
        pairs = [(int(i), float(v)) for i, v in re.findall(r"test image (\d+): mean IoU ([\d.]+)", caption)]
        assert len(pairs) == 4, caption
        for i, v in pairs:
            assert v == pytest.approx(scores[i], abs=6e-4), (what, i)
        shown[what] = [v for _, v in pairs]
    valid = np.sort(scores[~np.isnan(scores)])
    assert shown["best"] == pytest.approx(valid[::-1][:4], abs=6e-4)  # highest first
    assert shown["worst"] == pytest.approx(valid[:4], abs=6e-4)  # lowest first
    assert f"test image {len(scores) - 1}:" not in " ".join(captions)  # all void: not ranked


def test_the_figures_are_an_svg_chart_and_embedded_pngs(segment_report):
    run, _, _ = segment_report
    section = _section(run)
    figures = re.findall(r"<figure>(.*?)<figcaption>", section, re.S)
    assert len(figures) == 3  # the confusion matrix, the best and the worst images
    matrix = ET.fromstring(figures[0])  # an inline SVG chart: one cell per (true, predicted) pair
    cells = [r for r in matrix.iter("{http://www.w3.org/2000/svg}rect") if r.get("class") == "cell"]
    assert len(cells) == len(CLASSES) ** 2
    sources = [re.fullmatch(r'<img alt="[^"]*" src="data:image/png;base64,([^"]+)">', f)[1] for f in figures[1:]]
    sizes = [Image.open(io.BytesIO(base64.b64decode(s))).size for s in sources]
    assert all(w > 100 and h > 100 for w, h in sizes), sizes
    page = open_in_chromium(run / "report.html")  # skips without Chromium
    assert page["console"] == [] and page["errors"] == [], page
    seg = next(s for s in page["sections"] if s["id"] == "segmentation")
    assert seg["errors"] == 0 and seg["images"] == seg["decoded"] == 3, seg


def test_ranking_leaves_out_unscored_images_and_never_shows_one_twice():
    from torchkeel.evaluate.sections_segment import ranked

    scores = torch.tensor([0.5, float("nan"), 0.9, 0.1, 0.7], dtype=torch.float64)
    assert ranked(scores, shown=4) == ([2, 4], [3, 0])
    assert ranked(scores, shown=1) == ([2], [3])
    assert ranked(torch.tensor([0.3], dtype=torch.float64)) == ([0], [])


def test_a_capped_ranking_says_so(segment_report, monkeypatch):
    from torchkeel.evaluate import sections_segment
    from torchkeel.evaluate.report import build_context

    run, model, data = segment_report
    monkeypatch.setattr(sections_segment, "MAX_SCORED", 5)
    section = sections_segment.segmentation_section(build_context(run, model=model, data=data, device="cpu"))
    assert "ranked over the first 5 of 12 test images" in section.body
    shown = [int(i) for f in section.figures[1:] for i in re.findall(r"test image (\d+):", f.caption)]
    assert sorted(shown) == [0, 1, 2, 3, 4]  # three best and two worst of the five scored
