"""Decoding image files to uint8 tensors of one size, in batches that DataLoader workers make.

Files are decoded with Pillow, as torchvision's own ``ImageFolder`` does (torchvision 0.29
deprecates its ``torchvision.io`` decoders in favour of TorchCodec); resizing is torchvision's
(see resize.py). A file that cannot be decoded is reported, not raised: the caller counts and
skips it, so one bad file never stops a run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from torchkeel.data.resize import fit_size

# refuse images whose header declares more pixels than this before decoding them
# (a decompression bomb is a small file that decodes to gigabytes)
MAX_PIXELS = 40_000_000
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def allow_pixels(max_pixels: int) -> None:
    """Make ``max_pixels`` the limit that applies: Pillow refuses, as it opens a file, any image
    over twice its own ``Image.MAX_IMAGE_PIXELS`` (89.5 M pixels by default, so 179 M), which
    would otherwise fire before a larger limit of ours with a message that names neither. Raised,
    never lowered, Pillow's error can then only fire above our limit, where ours would too."""
    from PIL import Image

    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels


class UnreadableImage(Exception):
    """A file that is not a decodable image (internal: callers count and skip these)."""


def decode_file(path: str | Path, channels: int) -> torch.Tensor:
    """(channels, h, w) uint8 at the file's own size; UnreadableImage if it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            if img.width * img.height > MAX_PIXELS:
                raise UnreadableImage(f"{img.width}x{img.height} pixels is over the limit of {MAX_PIXELS:,}")
            pixels = np.asarray(img.convert("L" if channels == 1 else "RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise UnreadableImage(f"{type(e).__name__}: {e}") from None
    x = torch.from_numpy(pixels.copy())
    return x[None] if x.ndim == 2 else x.permute(2, 0, 1).contiguous()  # (C, h, w)


def read_header(path: str | Path) -> tuple[int, int, bool] | None:
    """(height, width, is_grey) from the file's header alone, or None if PIL cannot parse it
    or it declares more than MAX_PIXELS pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            if img.width * img.height > MAX_PIXELS:
                return None
            return img.height, img.width, img.mode in GREY_MODES
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


class ImageFiles(Dataset):
    """Image files with labels, decoded to (C, H, W) uint8 of one size. ``__getitems__``
    returns whole batches (x, y, ok), so workers send one tensor per batch instead of one
    per image; ``ok[i]`` is False (and x[i] zeros) for a file that could not be decoded."""

    def __init__(self, paths: list[str], labels: torch.Tensor, channels: int, size: tuple[int, int], resize: str):
        self.paths, self.labels = paths, labels
        self.channels, self.size, self.resize = channels, size, resize

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> torch.Tensor | None:
        try:
            x = decode_file(self.paths[index], self.channels)
        except UnreadableImage:
            return None
        return fit_size(x, self.size, self.resize)

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = torch.zeros(len(indices), self.channels, *self.size, dtype=torch.uint8)
        ok = torch.zeros(len(indices), dtype=torch.bool)
        for row, index in enumerate(indices):
            image = self.load(index)
            if image is not None:
                x[row], ok[row] = image, True
        return x, self.labels[indices], ok

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, y, ok = self.__getitems__([index])
        return x[0], y[0], ok[0]

    def subset(self, indices: list[int] | torch.Tensor) -> ImageFiles:
        indices = [int(i) for i in indices]
        return ImageFiles([self.paths[i] for i in indices], self.labels[indices], self.channels, self.size, self.resize)


def batches_of(
    files: ImageFiles, batches: list[list[int]], workers: int, pin_memory: bool = False
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(x, y, ok) per list of indices, in order, decoded by ``workers`` processes (0: here)."""
    loader = DataLoader(
        files,
        batch_sampler=batches,
        num_workers=workers,
        collate_fn=_as_is,
        pin_memory=pin_memory,
        worker_init_fn=_one_thread if workers else None,
        prefetch_factor=4 if workers else None,
        # DataLoader draws its workers' base seed from this generator; without one it would
        # draw from torch's global RNG and shift the augmentation of a seeded run
        generator=torch.Generator(),
    )
    yield from loader


def chunks(n: int, size: int) -> list[list[int]]:
    return [list(range(i, min(i + size, n))) for i in range(0, n, size)]


def _as_is(batch: tuple) -> tuple:
    return batch  # __getitems__ already made the batch


def _one_thread(_: int) -> None:
    # each worker decodes one image at a time; torch's own thread pool would oversubscribe
    torch.set_num_threads(1)
