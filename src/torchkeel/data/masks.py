"""mask_folder: images with a segmentation mask each, for semantic segmentation.

Layouts (mask_files.LAYOUTS): ``ROOT/images/`` + ``ROOT/masks/``, flat or with split folders
inside both, or SegNet's ``ROOT/{split}/`` + ``ROOT/{split}annot/`` (CamVid); ``data.masks``
names other folders and maps splits to folders. Images and masks pair by stem.

Loading runs in this order: pair the files, read the image headers (size, colour), decode
each image and its mask once at the target size (the mask by nearest neighbour, cropped as
its image is), split, decide from the train masks what their values mean (class indices, two
levels, colours), map every mask to class indices with 255 on void pixels, and normalise
with per-channel statistics of the train images only. The set is kept in memory.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from torchkeel.config_data import DataConfig, MasksConfig
from torchkeel.data.bundle import DataBundle, Split
from torchkeel.data.decode import UnreadableImage, decode_file, read_header
from torchkeel.data.folder import check_in_memory, geometry, split_by_parts
from torchkeel.data.images import channel_stats, image_spec, normalise
from torchkeel.data.mask_files import RawMask, find_folders, fit_mask, nearest, pair_files, read_mask, warn_files
from torchkeel.data.resize import fit_size
from torchkeel.errors import DataError, DataWarning

IGNORE = 255  # void pixels in the targets, whatever the data's own void value (tasks/segment.py)
MAX_COLOURS = 32  # colour masks without a palette: at most this many colours are taken as classes
READ = {"auto": "auto", "index": "auto", "binary": "grey", "palette": "colour"}  # how each format reads files


@dataclass
class Labels:
    """What the mask values mean: the class names, a colour per class, and ``to_classes``:
    (h, w) int32 raw values -> (uint8 class indices with IGNORE on void, bool pixels that are
    neither a class nor void)."""

    classes: list[str]
    palette: list[list[int]]
    to_classes: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    unknown: str  # what the second output means, for its warning


def load_mask_folder(cfg: DataConfig, seed: int) -> DataBundle:
    root = Path(os.path.expanduser(cfg.root or ""))
    masks_cfg = cfg.masks or MasksConfig()
    pairs = pair_files(find_folders(root, masks_cfg), root)
    if not pairs.images:
        raise DataError(f"mask_folder: no image under {root} has a mask of the same stem (e.g. a.jpg and a.png)")
    headers = [read_header(p) for p in pairs.images]
    channels, size = _geometry(headers, pairs.images, cfg)
    check_in_memory("mask_folder", len(pairs.images), channels, size, cfg)
    images, raws, kept = _decode(pairs.images, pairs.masks, channels, size, cfg, READ[masks_cfg.format], root)
    sources = [pairs.images[i] for i in kept]
    mask_paths = [pairs.masks[i] for i in kept]
    # masks have no one label to stratify by: the random cuts are plain
    empty = "mask_folder: no train images with masks; add some or lower data.val_fraction/test_fraction"
    index = split_by_parts(np.array([pairs.parts[i] for i in kept]), cfg, seed, empty)

    labels = _labels(raws, index["train"], mask_paths, masks_cfg, root)
    y = torch.zeros(len(raws), *size, dtype=torch.uint8)  # (N, H, W)
    unknown = []
    for i, raw in enumerate(raws):
        y[i], stray = labels.to_classes(raw.values)
        if stray.any():
            unknown.append(mask_paths[i])
    warn_files(labels.unknown, unknown, root)

    mean, std = channel_stats(images[index["train"]])  # train images only
    spec = image_spec("mask_folder", (channels, *size), labels.classes, mean, std)
    spec.task = "segmentation"
    spec.extra.update(ignore_index=IGNORE, flip=True, palette=labels.palette, resize=cfg.image.resize)

    def make(name: str) -> Split | None:
        rows = index[name]
        if len(rows) == 0:
            return None
        return Split(normalise(images[rows], mean, std), y[rows].long(), [sources[i] for i in rows])

    test = make("test")
    if test is None:
        raise DataError("mask_folder: the test split is empty; add a test folder or raise data.test_fraction")
    return DataBundle(spec, make("train"), make("val"), test)


def _geometry(headers: list, paths: list[str], cfg: DataConfig) -> tuple[int, tuple[int, int]]:
    """Channels (1 or 3) and (height, width) every image is brought to."""
    read = [(h, p) for h, p in zip(headers, paths, strict=True) if h is not None]
    if not read:
        raise DataError(f"mask_folder: no readable images ({paths[0]}, ...)")
    return geometry([h for h, _ in read], [p for _, p in read], cfg, "mask_folder", " and their masks")


def _decode(
    images: list[str], masks: list[str], channels: int, size: tuple[int, int], cfg: DataConfig, read: str, root: Path
) -> tuple[torch.Tensor, list[RawMask], list[int]]:
    """(N, C, H, W) uint8 pixels and each mask's raw values at (H, W), for the pairs whose two
    files both decode; their indices in the pairs."""
    pixels, raws, kept, unreadable, resized = [], [], [], [], []
    for i, (image, mask) in enumerate(zip(images, masks, strict=True)):
        try:
            x = decode_file(image, channels)  # (C, h, w)
        except UnreadableImage:
            unreadable.append(image)
            continue
        raw = read_mask(mask, read)
        if raw is None:
            unreadable.append(mask)
            continue
        values = raw.values
        if tuple(values.shape) != tuple(x.shape[1:]):
            resized.append(mask)
            values = nearest(values, tuple(x.shape[1:]))
        pixels.append(fit_size(x, size, cfg.image.resize))
        raw.values = fit_mask(values, size, cfg.image.resize)
        raws.append(raw)
        kept.append(i)
    warn_files("files are not readable images; their pairs were left out", unreadable, root)
    warn_files("masks differ in size from their image and were resized to it (nearest neighbour)", resized, root)
    if not kept:
        raise DataError(f"mask_folder: no image and mask under {root} could both be read")
    return torch.stack(pixels), raws, kept


def _labels(raws: list[RawMask], train: np.ndarray, paths: list[str], cfg: MasksConfig, root: Path) -> Labels:
    """Decide the format (auto: from the train masks) and the classes, and check they fit."""
    jpeg = [p for p, r in zip(paths, raws, strict=True) if r.jpeg]
    colour = [p for p, r in zip(paths, raws, strict=True) if r.colour]
    grey = [p for p, r in zip(paths, raws, strict=True) if not r.colour]
    fmt = cfg.format
    if fmt == "auto":
        fmt = "binary" if jpeg else "palette" if colour else "index"
        if colour and grey:
            raise DataError(f"mask_folder: masks mix colour ({colour[0]}) and single-channel ({grey[0]}) files")
        if fmt == "index" and _values(raws, train, _void(cfg, False)) == {0, 255}:
            fmt = "binary"
    if jpeg and fmt != "binary":
        raise DataError(
            f"mask_folder: {jpeg[0]} is a JPEG mask, whose compression changes class values: save the masks as PNG, "
            "or set data.masks.format=binary to threshold them"
        )
    if fmt == "palette" and grey:
        raise DataError(f"mask_folder: format palette maps colours, and {grey[0]} is single-channel: use format index")
    if fmt != "palette" and colour:
        raise DataError(f"mask_folder: {colour[0]} is a colour mask: use format palette (and data.masks.palette)")
    names = cfg.classes or _classes_txt(root)
    if fmt == "binary":
        labels = _binary(raws, cfg, names or ["background", "foreground"], bool(jpeg))
        warn_files(f"masks are JPEG, thresholded at {cfg.threshold} into 2 classes", jpeg, root)
    elif fmt == "palette":
        labels = _palette(raws, train, cfg, names)
    else:
        labels = _index(raws, cfg, names, paths, root)
    if len(labels.classes) < 2:
        raise DataError(f"mask_folder: the masks hold {len(labels.classes)} class; segmentation needs 2")
    return labels


def _void(cfg: MasksConfig, colour: bool) -> int | None:
    """The masks' own void value as a raw value (a colour as r << 16 | g << 8 | b), or None."""
    ignore = cfg.ignore_index
    if ignore is None:
        return None
    if isinstance(ignore, int) == colour:
        want = "an [r, g, b] colour for colour masks" if colour else "a value for single-channel masks"
        raise DataError(f"data.masks.ignore_index {ignore if isinstance(ignore, int) else list(ignore)}: give {want}")
    return ignore if isinstance(ignore, int) else (ignore[0] << 16) | (ignore[1] << 8) | ignore[2]


def _values(raws: list[RawMask], rows: np.ndarray | range, void: int | None) -> set[int]:
    seen = set(np.unique(np.concatenate([raws[i].distinct for i in rows])).tolist()) if len(rows) else set()
    return seen - {void}


def _classes_txt(root: Path) -> list[str] | None:
    path = root / "classes.txt"
    if not path.is_file():
        return None
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(set(names)) < len(names) or not names:
        raise DataError(f"{path}: give one distinct class name per line")
    return names


def _binary(raws: list[RawMask], cfg: MasksConfig, names: list[str], jpeg: bool) -> Labels:
    if len(names) != 2:
        raise DataError(f"mask_folder: binary masks have 2 classes, and {len(names)} are named (classes.txt)")
    void, threshold = _void(cfg, False), cfg.threshold
    seen = sorted(_values(raws, range(len(raws)), void))
    if "threshold" not in cfg.model_fields_set and not jpeg and len(seen) == 2 and not seen[0] < threshold <= seen[1]:
        threshold = seen[1]  # two levels on one side of 128 (0/1 masks): the higher is foreground

    def to_classes(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = (values >= threshold).to(torch.uint8)
        if void is not None:
            out[values == void] = IGNORE
        return out, torch.zeros(1, dtype=torch.bool)

    return Labels(names, default_palette(2), to_classes, "")


def _index(raws: list[RawMask], cfg: MasksConfig, names: list[str] | None, paths: list[str], root: Path) -> Labels:
    void = _void(cfg, False)
    if void is None:  # 255 is void already (VOC's convention): say so, it may be a class to the user
        with_255 = [p for p, r in zip(paths, raws, strict=True) if IGNORE in r.distinct]
        warn_files("masks have the value 255, read as void (set data.masks.ignore_index=255 to say so)", with_255, root)
        void = IGNORE
    # every split's masks: the label space is the data set's, not something learnt from train
    seen = _values(raws, range(len(raws)), void)
    k = len(names) if names else max(seen, default=0) + 1
    if k >= IGNORE:
        raise DataError(
            f"mask_folder: class index {k - 1} >= {IGNORE} (void): set data.masks.ignore_index for the void value, "
            "or data.masks.classes"
        )

    def to_classes(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        is_void = values == void
        known = (values < k) & ~is_void
        return torch.where(known, values, IGNORE).to(torch.uint8), ~known & ~is_void

    unknown = f"masks have values that are no class (0-{k - 1}) nor data.masks.ignore_index; they became void"
    return Labels(names or [f"class_{i}" for i in range(k)], default_palette(k), to_classes, unknown)


def _palette(raws: list[RawMask], train: np.ndarray, cfg: MasksConfig, names: list[str] | None) -> Labels:
    void = _void(cfg, True)
    if cfg.palette is not None:
        colours = [list(c) for c in cfg.palette]
    else:
        seen = sorted(_values(raws, train, void))
        if len(seen) > MAX_COLOURS:
            raise DataError(
                f"mask_folder: the train masks hold {len(seen)} colours, more than {MAX_COLOURS} classes: "
                "set data.masks.palette (one [r, g, b] per class, in class order)"
            )
        colours = [[c >> 16, (c >> 8) & 255, c & 255] for c in seen]
        names = names or ["#{:02x}{:02x}{:02x}".format(*c) for c in colours]
        warnings.warn(
            f"mask_folder: no data.masks.palette: each of the train masks' {len(seen)} colours is a class, "
            f"in this order: {', '.join('#{:02x}{:02x}{:02x}'.format(*c) for c in colours)}",
            DataWarning,
            stacklevel=4,
        )
    if len(colours) >= IGNORE:
        raise DataError(f"mask_folder: {len(colours)} palette colours; at most {IGNORE - 1} classes (255 is void)")
    if names is not None and len(names) != len(colours):
        raise DataError(f"mask_folder: {len(names)} class names for {len(colours)} palette colours")
    codes = torch.tensor([(r << 16) | (g << 8) | b for r, g, b in colours], dtype=torch.int32)
    ordered, order = codes.sort()

    def to_classes(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        at = torch.searchsorted(ordered, values).clamp_max(len(codes) - 1)
        hit = ordered[at] == values
        is_void = values == void if void is not None else torch.zeros_like(hit)
        out = torch.where(hit & ~is_void, order[at], IGNORE).to(torch.uint8)
        return out, ~hit & ~is_void

    unknown = "masks have colours that are in no class of the palette nor data.masks.ignore_index; they became void"
    return Labels(names or [f"class_{i}" for i in range(len(colours))], colours, to_classes, unknown)


def default_palette(k: int) -> list[list[int]]:
    """``k`` distinct colours: PASCAL VOC's colour map (VOCdevkit's VOClabelcolormap.m), which
    spreads the bits of the class index over the high bits of r, g and b."""
    palette = []
    for i in range(k):
        rgb, c = [0, 0, 0], i
        for bit in range(8):
            for channel in range(3):
                rgb[channel] |= ((c >> channel) & 1) << (7 - bit)
            c >>= 3
        palette.append(rgb)
    return palette
