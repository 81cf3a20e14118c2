"""Segmentation end to end through ``keel``: train on generated image + mask folders (a small
model must find the discs and boxes), evaluate, predict a mask and its overlay, export with a
parity check, serve, and the page in Chromium; then the real CamVid when it is beside the project."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, keel
from make_data import shapes_scene, write_mask_folder
from PIL import Image

SCRATCH = ["--set", "model.name=unet", "--set", "model.widths=[8,16,32]", "--set", "train.batch_size=8"]
SCRATCH += ["--set", "train.optimizer.lr=1e-2", "--set", "train.early_stopping=null"]


@pytest.fixture(scope="module")
def segment_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("segment")
    write_mask_folder(cwd / "shapes", n=64)
    keel("train", "--data", "mask_folder", "--set", f"data.root={cwd / 'shapes'}", *SCRATCH, "--epochs", "12", cwd=cwd,
         check=True, timeout=600)  # fmt: skip
    return (cwd / "runs" / "latest").resolve()


def test_keel_trains_and_evaluates_a_segmenter(segment_run: Path, tmp_path: Path):
    summary = json.loads((segment_run / "summary.json").read_text())
    test = summary["test"]
    assert set(test) >= {"loss", "miou", "pixel_accuracy", "mean_dice"}
    assert test["miou"] > 0.8 and test["pixel_accuracy"] > 0.9, test  # majority class alone: mIoU ~0.3
    spec = json.loads((segment_run / "data.json").read_text())
    assert spec["task"] == "segmentation" and spec["classes"] == ["background", "disc", "box"]
    again = json.loads(keel("eval", str(segment_run), "--json", cwd=tmp_path, check=True).stdout)
    assert again["miou"] == pytest.approx(test["miou"], abs=1e-6)
    evaluation = json.loads((segment_run / "evaluation.json").read_text())
    confusion = np.array(evaluation["confusion_matrix"])
    tp = np.diag(confusion)
    iou = tp / (confusion.sum(0) + confusion.sum(1) - tp)  # every class is present here
    assert iou.mean() == pytest.approx(test["miou"], abs=1e-6)
    per_class = {row["class"]: row["iou"] for row in evaluation["per_class"]}
    assert per_class == pytest.approx(dict(zip(["background", "disc", "box"], iou.tolist(), strict=True)))


def test_keel_predict_writes_the_mask_and_its_overlay(segment_run: Path, tmp_path: Path):
    image, truth = shapes_scene(999)
    Image.fromarray(image).save(tmp_path / "new.png")
    proc = keel("predict", str(segment_run), "new.png", "--output", "new.mask.png", cwd=tmp_path, check=True)
    assert "background" in proc.stdout and "disc" in proc.stdout and "new.overlay.png" in proc.stdout
    mask = np.asarray(Image.open(tmp_path / "new.mask.png"))
    assert mask.shape == truth.shape
    assert (mask == truth).mean() > 0.9  # the disc and the box found where they are
    overlay = np.asarray(Image.open(tmp_path / "new.overlay.png").convert("RGB"))
    assert overlay.shape == (*truth.shape, 3)
    as_json = json.loads(keel("predict", str(segment_run), "new.png", "--json", cwd=tmp_path, check=True).stdout)
    shares = {c["class"]: c["fraction"] for c in as_json["classes"]}
    assert shares["disc"] == pytest.approx((truth == 1).mean(), abs=0.05)
    assert as_json["mask"].startswith("data:image/png;base64,") and as_json["size"] == list(truth.shape)
    # an input is never overwritten, and --output with two images wants a folder
    assert_one_line_error(keel("predict", str(segment_run), "new.png", "--output", "new.png", cwd=tmp_path),
                          "is an input")  # fmt: skip
    (tmp_path / "out").mkdir()
    keel("predict", str(segment_run), "new.png", str(tmp_path / "new.png"), "--output", "out", "--force",
         cwd=tmp_path, check=True)  # fmt: skip
    assert (tmp_path / "out" / "new.mask.png").is_file() and (tmp_path / "out" / "new.overlay.png").is_file()


def test_keel_export_matches_pytorch_on_real_images(segment_run: Path, tmp_path: Path):
    pytest.importorskip("onnxruntime")
    proc = keel("export", str(segment_run), cwd=tmp_path, check=True, timeout=300)
    assert "verified with onnxruntime" in proc.stdout and "inputs of the test split" in proc.stdout


def test_a_segmenter_is_served_and_its_page_draws_the_mask(segment_run: Path, tmp_path: Path):
    import httpx
    from browser import chromium_page, skip_without_chromium, upload_picture
    from serving import running_server

    image, truth = shapes_scene(1234)
    Image.fromarray(image).save(tmp_path / "up.png")
    with running_server(segment_run, log_dir=tmp_path) as url:
        with (tmp_path / "up.png").open("rb") as f:
            got = httpx.post(f"{url}/predict", files={"file": ("up.png", f, "image/png")}, timeout=60)
        assert got.status_code == 200, got.text
        prediction = got.json()["predictions"][0]
        assert prediction["size"] == list(truth.shape) and prediction["classes"][0]["class"] == "background"
        bad = httpx.post(f"{url}/predict", files={"file": ("x.png", b"not a png", "image/png")}, timeout=30)
        assert bad.status_code == 400
        assert httpx.get(f"{url}/health", timeout=30).status_code == 200  # still serving
        skip_without_chromium()
        with chromium_page(url + "/") as (page, problems):
            upload_picture(page, tmp_path / "up.png")
            labels = page.locator("#bars .label").all_text_contents()
            assert "disc" in labels and "box" in labels
            # the disc's centre is painted red-ish by the mask (half opacity over the red disc)
            ys, xs = np.nonzero(truth == 1)
            at = page.evaluate(
                "([x, y, w]) => { const c = document.getElementById('overlay'); const s = c.width / w;"
                " return Array.from(c.getContext('2d').getImageData(x * s, y * s, 1, 1).data); }",
                [int(xs.mean()), int(ys.mean()), truth.shape[1]],
            )
            assert at[0] > at[2], at
        assert problems == []


def test_classification_runs_refuse_predict_output(trained_run: Path, tmp_path: Path):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "d.png")
    proc = keel("predict", str(trained_run), "d.png", "--output", "m.png", cwd=tmp_path)
    assert_one_line_error(proc, "writes predicted masks")


def test_segmentation_runs_resume_bit_identically(tmp_path: Path):
    """Augmentation moves the masks with per-sample randomness: a resumed run draws the same."""
    from resume_helpers import assert_resumes_bit_identically

    import torchkeel as keel_api

    write_mask_folder(tmp_path / "shapes", n=24, size=(16, 20))
    data = keel_api.data.load({"name": "mask_folder", "root": str(tmp_path / "shapes")}, seed=0)
    augment = {"flip": True, "scale": 0.2, "translate": 0.1, "crop": 2, "crop_size": [12, 16]}
    assert_resumes_bit_identically(data, {"name": "unet", "widths": [4, 8]}, augment, tmp_path / "run", 3)


CAMVID = Path(__file__).resolve().parents[1] / "data" / "camvid"


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.skipif(not CAMVID.is_dir(), reason="CamVid is not beside the project")
def test_the_camvid_config_trains_on_the_real_frames(tmp_path: Path):
    pytest.importorskip("timm")
    config = Path(__file__).resolve().parents[1] / "configs" / "camvid.yaml"
    keel("train", str(config), "--set", f"data.root={CAMVID}", "--set", "data.image.size=[120,160]",
         "--epochs", "2", "--set", "eval.report=false", cwd=tmp_path, check=True, timeout=900)  # fmt: skip
    summary = json.loads((tmp_path / "runs" / "latest" / "summary.json").read_text())
    assert summary["test"]["miou"] > 0.1  # two epochs; the majority class alone scores 0.03
