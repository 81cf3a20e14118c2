"""A small detector trained on generated VOC pictures, shared by the detection tests."""

from __future__ import annotations

from pathlib import Path

from conftest import keel
from make_data import write_box_folder

# FCOS on a narrow Lite0 FPN from scratch: finds the discs and squares of make_data.boxes_scene
# (test COCO AP50 ~0.75 after 12 epochs on 60 pictures, about 40 s on one core)
SMALL = ["--set", "model.name=fcos", "--set", "model.pretrained=false", "--set", "model.freeze_backbone=false",
         "--set", "model.fpn_channels=64", "--set", "train.early_stopping=null",
         "--set", "train.epochs=12"]  # fmt: skip


def train_detector(cwd: Path, n: int = 60, *extra: str) -> Path:
    """Write a VOC folder of ``n`` pictures under ``cwd``, train on it, return the run folder."""
    write_box_folder(cwd / "voc", n=n)
    keel("train", "--data", "box_folder", "--set", f"data.root={cwd / 'voc'}", *SMALL, *extra, cwd=cwd, check=True,
         timeout=900)  # fmt: skip
    return (cwd / "runs" / "latest").resolve()
