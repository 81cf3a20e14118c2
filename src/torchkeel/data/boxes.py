"""box_folder: images with boxes around the objects in them, for object detection.

The annotations are read and checked by data/box_files.py (Pascal VOC XML, COCO JSON or YOLO
txt). Each image is decoded once and letterboxed to one size (scaled to fit whole, padded at
the right and bottom, so no box is cut), its boxes scaled with it; splits come from the files
(VOC ImageSets, COCO file names, YOLO folders) or are cut at random, seeded; pixels are
normalised with the train images' statistics. The set is kept in memory.

Targets are a ``Ragged`` of one (n, 6) row block per image: class index, x1, y1, x2, y2 in
the model's input pixels, and 1 for a box marked difficult (VOC), which the VOC metric
neither rewards nor punishes. An image may have no boxes (a background image).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from torchkeel.config_data import BoxesConfig, DataConfig
from torchkeel.data.box_files import BoxRecord, read_box_set
from torchkeel.data.bundle import DataBundle, Split
from torchkeel.data.decode import UnreadableImage, decode_file
from torchkeel.data.folder import check_in_memory, split_by_parts
from torchkeel.data.images import channel_stats, image_spec, normalise
from torchkeel.data.mask_files import warn_files
from torchkeel.data.ragged import Ragged
from torchkeel.data.resize import fit_size, letterbox_scales, target_size
from torchkeel.errors import DataError, DataWarning

COLUMNS = 6  # class, x1, y1, x2, y2, difficult
MIN_SIDE = 1.0  # pixels: a box thinner than this after resizing is dropped (torchvision divides by its size)


def load_box_folder(cfg: DataConfig, seed: int) -> DataBundle:
    root = Path(os.path.expanduser(cfg.root or ""))
    boxes_cfg = cfg.boxes or BoxesConfig()
    found = read_box_set(root, boxes_cfg.format, boxes_cfg.classes)
    records = found.records
    if not records:
        raise DataError(f"box_folder: no annotated images under {root}")
    if not found.classes:
        raise DataError(f"box_folder: the annotations under {root} name no class of object")
    channels = {"grey": 1, "rgb": 3}.get(cfg.image.channels, 3)
    size = target_size(cfg.image.size) or default_size([r.size for r in records], boxes_cfg.max_side)
    mode = "stretch" if "resize" in cfg.image.model_fields_set and cfg.image.resize == "stretch" else "letterbox"
    check_in_memory("box_folder", len(records), channels, size, cfg)
    pixels, targets, kept = _decode(records, found.classes, channels, size, mode, root)
    index = _split(np.array([records[i].part for i in kept]), cfg, seed)
    sources = [records[i].image for i in kept]

    _warn_unseen(found.classes, [targets[i] for i in index["train"]])
    mean, std = channel_stats(pixels[index["train"]])
    spec = image_spec("box_folder", (channels, *size), found.classes, mean, std)
    spec.task = "detection"
    spec.extra.update(resize=mode, flip=True, format=found.format)
    counts = np.bincount(
        np.concatenate([t[:, 0].numpy().astype(int) for t in targets] + [np.zeros(0, int)]),
        minlength=len(found.classes),
    )
    spec.extra["boxes_per_class"] = counts.tolist()

    def make(name: str) -> Split | None:
        rows = index[name]
        if len(rows) == 0:
            return None
        y = Ragged.from_list([targets[i] for i in rows])
        if len(y.values) == 0:
            y = Ragged(torch.zeros(0, COLUMNS), y.lengths)
        return Split(normalise(pixels[rows], mean, std), y, [sources[i] for i in rows])

    test = make("test")
    if test is None:
        raise DataError("box_folder: the test split is empty; add a test split or raise data.test_fraction")
    return DataBundle(spec, make("train"), make("val"), test)


def default_size(sizes: list[tuple[int, int]], max_side: int) -> tuple[int, int]:
    """The images' most common (height, width), scaled down so its longer side is at most
    ``max_side``, rounded to a multiple of 32 (the detectors' coarsest stride)."""
    values, counts = np.unique(np.array(sizes), axis=0, return_counts=True)
    h, w = (int(v) for v in values[counts.argmax()])
    scale = min(1.0, max_side / max(h, w))
    return tuple(max(32, round(side * scale / 32) * 32) for side in (h, w))  # type: ignore[return-value]


def scale_boxes(record: BoxRecord, decoded: tuple[int, int], size: tuple[int, int], mode: str) -> np.ndarray:
    """(n, 4) the record's boxes in pixels of the image as the model sees it."""
    h, w = decoded
    if mode == "letterbox":
        sy, sx, _ = letterbox_scales(h, w, size)
    else:
        sy, sx = size[0] / h, size[1] / w
    boxes = np.asarray(record.boxes, dtype=np.float64).reshape(-1, 4)
    # an annotation's declared size can differ from the file's (a resized copy): map through it
    ay, ax = h / record.size[0], w / record.size[1]
    return boxes * np.array([ax * sx, ay * sy, ax * sx, ay * sy])


def _decode(
    records: list[BoxRecord], classes: list[str], channels: int, size: tuple[int, int], mode: str, root: Path
) -> tuple[torch.Tensor, list[torch.Tensor], list[int]]:
    """(N, C, H, W) uint8 pixels, each image's (n, 6) targets, and the records they came from."""
    index = {c: i for i, c in enumerate(classes)}
    pixels, targets, kept, unreadable, thin = [], [], [], [], []
    for i, record in enumerate(records):
        try:
            x = decode_file(record.image, channels)
        except UnreadableImage:
            unreadable.append(record.image)
            continue
        boxes = scale_boxes(record, tuple(x.shape[1:]), size, mode)
        labels = np.array([index[name] for name in record.labels], dtype=np.float64)
        difficult = np.array(record.difficult or [False] * len(labels), dtype=np.float64)
        keep = ((boxes[:, 2] - boxes[:, 0]) >= MIN_SIDE) & ((boxes[:, 3] - boxes[:, 1]) >= MIN_SIDE)
        if not keep.all():
            thin.append(record.image)
        rows = np.concatenate([labels[:, None], boxes, difficult[:, None]], 1)[keep]
        pixels.append(fit_size(x, size, mode))
        targets.append(torch.from_numpy(rows.reshape(-1, COLUMNS)).float())
        kept.append(i)
    warn_files("images could not be read and were left out", unreadable, root, "box_folder")
    thin_boxes = f"images had boxes under {MIN_SIDE:g} pixel wide at {size[0]}x{size[1]}, dropped"
    warn_files(thin_boxes, thin, root, "box_folder")
    if not kept:
        raise DataError(f"box_folder: no image under {root} could be read")
    return torch.stack(pixels), targets, kept


def _warn_unseen(classes: list[str], train: list[torch.Tensor]) -> None:
    """A class with boxes in val or test but none in train cannot be learnt: said, not silent."""
    seen = {int(c) for t in train for c in t[:, 0].tolist()}
    unseen = [c for i, c in enumerate(classes) if i not in seen]
    if unseen:
        warnings.warn(
            f"box_folder: no train boxes of class {', '.join(unseen)}: the model cannot learn to find it",
            DataWarning,
            stacklevel=3,
        )


def _split(parts: np.ndarray, cfg: DataConfig, seed: int) -> dict[str, np.ndarray]:
    """Row indices of train / val / test: the files' own splits where they name them, the
    rest cut from train at random (seeded)."""
    own = {p for p in parts if p}
    if own and "train" not in own:  # one file named val or test (a COCO json): a set to split, not a split
        parts, own = np.full(len(parts), "", dtype=object), set()
    unsplit = int((parts == "").sum())
    if own and unsplit:  # images no split list names (VOC ImageSets) train, rather than vanish
        warnings.warn(
            f"box_folder: {unsplit} images are in no split list; they are trained on", DataWarning, stacklevel=3
        )
    return split_by_parts(
        parts, cfg, seed, "box_folder: no train images; add some or lower data.val_fraction/test_fraction"
    )
