"""mask_folder's files: which folders hold the images and the masks, how they pair by stem, and
reading a mask's raw values (class indices, grey levels or colours) at the image's geometry."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from torchkeel.config_data import MasksConfig
from torchkeel.data.decode import MAX_PIXELS
from torchkeel.errors import DataError, DataWarning

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
SPLITS = ("train", "val", "test")
MASK_FOLDERS = ("masks", "labels", "annotations")  # layout 1: ROOT/images/ beside one of these
SPLIT_MASKS = ("{split}annot", "{split}_masks", "{split}_labels")  # layout 2 (SegNet's CamVid: valannot/)
MASK_STEM_SUFFIXES = ("_mask", "_label")  # cat.jpg may pair with cat_mask.png
LAYOUTS = (
    "ROOT/images/ + ROOT/masks/ (or labels/, annotations/), flat or with train/ val/ test/ inside both; "
    "ROOT/{split}/ + ROOT/{split}annot/ (or {split}_masks/, {split}_labels/) for split in train, val, test; "
    "or name the folders in data.masks.images and data.masks.masks"
)


@dataclass
class Pairs:
    """Image and mask files paired by stem, with the split folder each came from ("" to split)."""

    images: list[str] = field(default_factory=list)
    masks: list[str] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)


def warn_files(what: str, files: list[str], root: Path, name: str = "mask_folder") -> None:
    """One counted warning per kind of problem, naming up to three of the files."""
    if files:
        examples = ", ".join(os.path.relpath(f, root) for f in files[:3])
        warnings.warn(f"{name}: {len(files)} {what} (e.g. {examples})", DataWarning, stacklevel=3)


def find_folders(root: Path, masks: MasksConfig) -> dict[str, tuple[Path, Path]]:
    """{split: (image folder, mask folder)}; split "" for one flat pair of folders to split."""
    if not root.is_dir():
        raise DataError(f"data.root: {root} is not a folder; mask_folder reads images and their masks from it")
    if masks.images is not None:
        found = _folders_of(root, masks.images, masks.masks or "", masks.splits, strict=True)
        if not found:
            raise DataError(f"mask_folder: no folders {masks.images}/ + {masks.masks}/ under {root} (data.masks)")
        return _checked(found, root, masks.splits)
    templates = [("images", m) for m in MASK_FOLDERS] + [("{split}", m) for m in SPLIT_MASKS]
    for images, mask_folder in templates:
        found = _folders_of(root, images, mask_folder, masks.splits, strict=False)
        if found:
            return _checked(found, root, masks.splits)
    raise DataError(f"mask_folder: no images and masks under {root}; accepted layouts: {LAYOUTS}")


def _folders_of(
    root: Path, images: str, masks: str, splits: dict[str, str] | None, strict: bool
) -> dict[str, tuple[Path, Path]]:
    named = splits or {s: s for s in SPLITS}
    if "{split}" not in images + masks:
        image_dir, mask_dir = root / images, root / masks
        if not (image_dir.is_dir() and mask_dir.is_dir()):
            return {}
        if not any((image_dir / f).is_dir() for f in named.values()):
            return {"": (image_dir, mask_dir)}
        # images/train/ is there: masks/train/ must be too
        images, masks, strict = f"{images}/{{split}}", f"{masks}/{{split}}", True
    found = {}
    for split, folder in named.items():
        image_dir, mask_dir = root / images.replace("{split}", folder), root / masks.replace("{split}", folder)
        if image_dir.is_dir() and mask_dir.is_dir():
            found[split] = (image_dir, mask_dir)
        elif strict and image_dir.is_dir() != mask_dir.is_dir():
            missing, what = (mask_dir, "masks") if image_dir.is_dir() else (image_dir, "images")
            raise DataError(f"mask_folder: {missing} is not a folder: the {split} split has no {what}")
    return found


def _checked(
    found: dict[str, tuple[Path, Path]], root: Path, splits: dict[str, str] | None
) -> dict[str, tuple[Path, Path]]:
    missing = [s for s in splits or {} if s not in found]
    if missing:
        named = ", ".join(f"{s}: {splits[s]}" for s in missing)  # type: ignore[index]
        raise DataError(f"mask_folder: data.masks.splits maps {named}, but {root} has no such image and mask folders")
    if "" in found or "train" in found:
        return found
    have = ", ".join(f"{i.relative_to(root)}/ + {m.relative_to(root)}/" for i, m in found.values())
    raise DataError(
        f"mask_folder: {root} has {have} but no train split: add one, or set data.masks.splits "
        "(e.g. {train: val, test: test} to train on the val folder)"
    )


def pair_files(folders: dict[str, tuple[Path, Path]], root: Path) -> Pairs:
    """Images and masks matched by stem (relative path without suffix); a mask's stem may end
    in _mask or _label. The unmatched and the ambiguous are warned about and left out."""
    pairs, skipped, lone_images, lone_masks, twins = Pairs(), [], [], [], []
    for part, (image_dir, mask_dir) in folders.items():
        images = _by_stem(image_dir, skipped, twins)
        masks = _by_stem(mask_dir, skipped, twins)
        matched: dict[str, str] = {}
        for stem, mask in masks.items():
            key = stem if stem in images else _stripped(stem, images)
            if key is None:
                lone_masks.append(mask)
            elif key in matched:
                twins.append(mask)
            else:
                matched[key] = mask
        for stem, image in images.items():
            if stem in matched:
                pairs.images.append(image)
                pairs.masks.append(matched[stem])
                pairs.parts.append(part)
            else:
                lone_images.append(image)
    warn_files("files that are not images were skipped", skipped, root)
    warn_files("files share a stem with another in their folder; the first was kept", twins, root)
    warn_files("images have no mask and were left out", lone_images, root)
    warn_files("masks have no image and were left out", lone_masks, root)
    return pairs


def _stripped(stem: str, images: dict[str, str]) -> str | None:
    for suffix in MASK_STEM_SUFFIXES:
        if stem.endswith(suffix) and stem[: -len(suffix)] in images:
            return stem[: -len(suffix)]
    return None


def _by_stem(folder: Path, skipped: list[str], twins: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))  # walk in a fixed order
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if name.startswith("."):
                continue
            if not name.lower().endswith(IMAGE_SUFFIXES):
                skipped.append(path)
                continue
            stem = Path(os.path.relpath(path, folder)).with_suffix("").as_posix()
            if stem in found:
                twins.append(path)
            else:
                found[stem] = path
    return found


@dataclass
class RawMask:
    """A mask's values as (h, w) int32: class indices or grey levels, or for colour masks
    r << 16 | g << 8 | b; with the distinct values of the whole file."""

    values: torch.Tensor
    distinct: np.ndarray
    colour: bool
    jpeg: bool


def read_mask(path: str, read: str = "auto") -> RawMask | None:
    """The mask's raw values, or None if it cannot be read. ``read``: ``auto`` keeps a P-mode
    (palette) file's indices and reads an RGB file whose channels are all equal as grey;
    ``colour`` reads every file's colours (format palette); ``grey`` reads P-mode indices and
    the grey level of everything else (format binary). A JPEG file is always read as grey
    unless ``colour``: compression leaves its channels unequal."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            if img.width * img.height > MAX_PIXELS:
                return None
            jpeg = img.format == "JPEG"
            if img.mode in ("P", "PA") and read == "colour":
                img = img.convert("RGB")
            elif img.mode not in ("P", "PA") and (read == "grey" or (jpeg and read == "auto") or img.mode == "1"):
                img = img.convert("L")
            elif img.mode not in ("L", "P", "I", "I;16", "LA", "PA", "RGB", "RGBA"):
                img = img.convert("RGB")  # CMYK, YCbCr, ...
            colour_mode = img.mode in ("RGB", "RGBA")
            array = np.asarray(img).astype(np.int32)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    if array.ndim == 3 and colour_mode:
        r, g, b = array[..., 0], array[..., 1], array[..., 2]
        colour = read == "colour" or not ((r == g).all() and (g == b).all())
        array = (r << 16) | (g << 8) | b if colour else r
    else:
        colour = False
        array = array[..., 0] if array.ndim == 3 else array  # LA, PA: the value, not the alpha
    return RawMask(torch.from_numpy(np.ascontiguousarray(array)), np.unique(array), colour, jpeg)


def nearest(values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(h, w) -> (H, W) by nearest neighbour at pixel centres (torch's nearest-exact, PIL's
    NEAREST), for any dtype: a mask's values are picked, never blended."""
    h, w = values.shape
    rows = ((torch.arange(size[0]) + 0.5) * (h / size[0])).long().clamp_max(h - 1)
    cols = ((torch.arange(size[1]) + 0.5) * (w / size[1])).long().clamp_max(w - 1)
    return values[rows][:, cols]


def fit_mask(values: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """(h, w) -> (H, W) the way ``resize.fit_size`` brings its image there (the same scale and
    centre crop), by nearest neighbour, so every label stays on its pixel."""
    from torchvision.transforms.v2 import functional as F

    h, w = values.shape
    if (h, w) == tuple(size):
        return values
    if mode == "stretch":
        return nearest(values, size)
    scale = max(size[0] / h, size[1] / w)
    covered = (max(size[0], round(h * scale)), max(size[1], round(w * scale)))
    return F.center_crop(nearest(values, covered)[None], list(size))[0]
