"""image_folder: ``ROOT/<class>/*.png|jpg|jpeg|bmp|webp`` (sub-folders searched too), with
``train/``, ``val/`` and ``test/`` folders of classes when present, else a seeded split.

Loading runs in this order, so a set gives the same splits whether it fits in memory or not:
list the files, read every header (size and colour, without decoding), decode every file
once with DataLoader workers (counting the ones that fail), drop the failures, split, and
take per-channel statistics from the train split. A set whose decoded float32 tensors would
exceed ``data.image.memory_mb`` is not kept: its splits decode from disk on each use.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from torchkeel import memory
from torchkeel.config_data import DataConfig
from torchkeel.data.bundle import DataBundle, Split
from torchkeel.data.decode import ImageFiles, batches_of, chunks, read_header
from torchkeel.data.images import image_spec, normalise
from torchkeel.data.resize import target_size
from torchkeel.data.splits import holdout_indices
from torchkeel.data.stream import StreamSplit
from torchkeel.errors import DataError, DataWarning

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
SPLITS = ("train", "val", "test")
DECODE_BATCH = 64  # files per worker task in the decoding pass
FILES_PER_WORKER = 1000  # the loading pass starts one decoding worker per this many files (up to workers)


@dataclass
class Listing:
    classes: list[str]
    paths: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)  # "train" / "val" / "test" folder, or "" (to split)
    skipped: list[str] = field(default_factory=list)  # files that are not images, or not in a class folder


def load_image_folder(cfg: DataConfig, seed: int) -> DataBundle:
    root = Path(os.path.expanduser(cfg.root or ""))
    listing = list_folder(root)
    headers = [read_header(p) for p in listing.paths]
    readable = [i for i, h in enumerate(headers) if h is not None]
    skipped = listing.skipped + [listing.paths[i] for i, h in enumerate(headers) if h is None]
    if not readable:
        raise DataError(f"image_folder: no readable images under {root} (PNG, JPEG, BMP or WEBP files)")
    channels, size = geometry([headers[i] for i in readable], [listing.paths[i] for i in readable], cfg)
    files = ImageFiles(
        [listing.paths[i] for i in readable],
        torch.tensor([listing.labels[i] for i in readable], dtype=torch.int64),
        channels,
        size,
        cfg.image.resize,
    )
    # worker processes take about a second to start on a small machine: not worth it for a few files
    workers = min(cfg.image.workers, len(files) // FILES_PER_WORKER)
    stream, per_task = _memory_plan(len(files), channels, size, workers, cfg.image.memory_mb)
    pixels, ok, sums = decode_pass(files, workers, keep=not stream, per_task=per_task)
    skipped += [files.paths[i] for i in np.flatnonzero(~ok)]
    if skipped:
        examples = ", ".join(os.path.relpath(p, root) for p in skipped[:3])
        warnings.warn(
            f"image_folder: skipped {len(skipped)} of {len(listing.paths) + len(listing.skipped)} files that are "
            f"not readable images or not in a class folder (e.g. {examples})",
            DataWarning,
            stacklevel=2,
        )
    good = np.flatnonzero(ok)
    parts = np.array([listing.parts[i] for i in readable])[good]
    index = _split(files.labels[good].numpy(), parts, cfg, seed, listing.classes)
    train_sums = sums[good[index["train"]]].sum(0)  # (3, C): pixel count, sum, sum of squares
    mean, std = _stats(train_sums)
    spec = image_spec("image_folder", (channels, *size), listing.classes, mean, std)
    spec.extra.update(flip=True, resize=cfg.image.resize)

    def make(name: str) -> Split | StreamSplit | None:
        rows = good[index[name]]
        if len(rows) == 0:
            return None
        if stream:
            return StreamSplit(files.subset(rows), spec.mean, spec.std, cfg.image.workers)
        return Split(normalise(pixels[rows], mean, std), files.labels[rows])

    test = make("test")
    if test is None:
        raise DataError("image_folder: the test split is empty; add images or raise data.test_fraction")
    return DataBundle(spec, make("train"), make("val"), test)


def list_folder(root: Path) -> Listing:
    if not root.is_dir():
        raise DataError(f"data.root: {root} is not a folder; image_folder reads ROOT/<class>/<images>")
    own = [s for s in SPLITS if (root / s).is_dir()]
    if own and "train" not in own:
        raise DataError(f"{root} has {'/, '.join(own)}/ but no train/ folder: add train/<class>/<images>")
    top = root / "train" if own else root
    classes = sorted(d.name for d in top.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"{top}: no class folders; image_folder expects {top}/<class>/<image files>")
    listing = Listing(classes)
    for part in own or [""]:
        folder = root / part if part else root
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith("."):
                continue
            if not entry.is_dir():
                listing.skipped.append(str(entry))
                continue
            if entry.name not in classes:
                raise DataError(f"{entry}: class '{entry.name}' is not among the train/ classes ({', '.join(classes)})")
            _add_class(listing, entry, classes.index(entry.name), part)
    return listing


def _add_class(listing: Listing, folder: Path, label: int, part: str) -> None:
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))  # walk in a fixed order
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = os.path.join(dirpath, name)
            if name.lower().endswith(IMAGE_SUFFIXES):
                listing.paths.append(path)
                listing.labels.append(label)
                listing.parts.append(part)
            else:
                listing.skipped.append(path)


def geometry(
    headers: list[tuple[int, int, bool]], paths: list[str], cfg: DataConfig, name: str = "image_folder", also: str = ""
) -> tuple[int, tuple[int, int]]:
    """Channels (1 or 3) and (height, width) every image is brought to; images of several
    sizes need ``data.image.size`` (``also``: what is resized with them, e.g. " and their masks")."""
    channels = {"grey": 1, "rgb": 3}.get(cfg.image.channels) or (1 if all(g for _, _, g in headers) else 3)
    size = target_size(cfg.image.size)
    if size is None:
        sizes = {(h, w): p for (h, w, _), p in zip(headers, paths, strict=True)}
        if len(sizes) > 1:
            (a, pa), (b, pb) = list(sizes.items())[:2]
            raise DataError(
                f"{name}: images differ in size ({a[0]}x{a[1]} {pa}, {b[0]}x{b[1]} {pb}, ...): "
                f"set data.image.size (e.g. data.image.size=64) to resize them{also}"
            )
        size = next(iter(sizes))
    return channels, size


def _memory_plan(n: int, channels: int, size: tuple[int, int], workers: int, memory_mb: float) -> tuple[bool, int]:
    """Whether the set streams from disk (its float32 tensors over ``data.image.memory_mb``, or
    its pixels beyond the memory available), and files per decoding task. One image must fit."""
    values = channels * size[0] * size[1]
    # per file while decoding: its uint8 slot in the batch, the resize's output and float temporary
    per_file = values * (1 + 1 + 4)
    memory.check_fits(
        per_file,
        f"decoding one {size[0]}x{size[1]} image (data.image.size, {channels} channels)",
        "lower data.image.size",
    )
    have = memory.available_bytes() or 2**63
    stream = n * values * 4 / 2**20 > memory_mb or n * values * (1 + 4) > have // 2  # uint8 kept + float32 split
    return stream, max(1, min(DECODE_BATCH, have // 2 // (per_file * (workers + 1))))


def decode_pass(
    files: ImageFiles, workers: int, keep: bool, per_task: int = DECODE_BATCH
) -> tuple[torch.Tensor | None, np.ndarray, torch.Tensor]:
    """Decode every file once, ``per_task`` files at a time. Returns the (N, C, H, W) uint8
    pixels (if ``keep``), which files decoded, and per file and channel (N, 3, C) int64: pixel
    count, sum, sum of squares."""
    kept, ok, sums = [], [], []
    levels = torch.arange(256, dtype=torch.int64)
    for x, _, good in batches_of(files, chunks(len(files), per_task), workers):
        # from each channel's histogram of the 256 levels: exact, and no int64 copy of the pixels
        hist = torch.stack([torch.bincount(c.reshape(-1), minlength=256) for c in x.flatten(0, 1)])
        hist = hist.view(x.shape[0], x.shape[1], 256)  # (B, C, 256)
        sums.append(torch.stack([hist.sum(2), hist @ levels, hist @ (levels * levels)], 1))  # (B, 3, C)
        ok.append(good)
        if keep:
            kept.append(x)
    pixels = torch.cat(kept) if keep else None
    return pixels, torch.cat(ok).numpy(), torch.cat(sums)


def _stats(sums: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and unbiased std on the [0, 1] scale from (3, C) count/sum/squares."""
    n, s1, s2 = (v.double() for v in sums)
    mean = s1 / n
    var = (s2 - s1 * mean) / (n - 1).clamp_min(1)
    return (mean / 255).float(), (var.clamp_min(0).sqrt() / 255).clamp_min(1e-6).float()


def _split(
    labels: np.ndarray, parts: np.ndarray, cfg: DataConfig, seed: int, classes: list[str]
) -> dict[str, np.ndarray]:
    """Row indices of train / val / test: own folders where present, the rest cut from train."""
    own = {p for p in parts if p}
    base = np.flatnonzero(parts == "train") if own else np.arange(len(labels))
    train, val, test = holdout_indices(labels[base], len(base), cfg, seed, "val" in own, "test" in own)
    index = {"train": base[train], "val": base[val], "test": base[test]}
    for name in own - {"train"}:
        index[name] = np.flatnonzero(parts == name)
    present = np.unique(labels[index["train"]])
    if len(present) < 2:
        raise DataError(f"image_folder: the train split has images of {len(present)} class; classification needs 2")
    missing = [c for i, c in enumerate(classes) if i not in present]
    if missing:
        warnings.warn(f"image_folder: no train images for class {', '.join(missing)}", DataWarning, stacklevel=3)
    return index


def check_in_memory(name: str, n: int, channels: int, size: tuple[int, int], cfg: DataConfig) -> None:
    """A set kept in memory (mask_folder, box_folder) whose float32 splits exceed
    ``data.image.memory_mb`` is refused before any pixel is decoded."""
    mb = n * channels * size[0] * size[1] * 4 / 2**20
    if mb > cfg.image.memory_mb:
        raise DataError(
            f"{name} keeps its set in memory: {n} images of {channels}x{size[0]}x{size[1]} take {mb:,.0f} MB "
            f"as float32, over data.image.memory_mb ({cfg.image.memory_mb:,.0f}); lower data.image.size or raise it"
        )


def split_by_parts(parts: np.ndarray, cfg: DataConfig, seed: int, empty_train: str) -> dict[str, np.ndarray]:
    """Row indices of train / val / test for files that may name their split ("" where they
    do not): the named val and test as they are, val and test cut at random (seeded) from the
    rest where not named; ``empty_train`` is the DataError when no train rows are left."""
    own = {p for p in parts if p}
    base = np.flatnonzero((parts == "train") | (parts == "")) if own else np.arange(len(parts))
    train, val, test = holdout_indices(None, len(base), cfg, seed, "val" in own, "test" in own)
    index = {"train": base[train], "val": base[val], "test": base[test]}
    for name in own - {"train"}:
        index[name] = np.flatnonzero(parts == name)
    if len(index["train"]) == 0:
        raise DataError(empty_train)
    return index
