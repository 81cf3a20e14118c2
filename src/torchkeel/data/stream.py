"""Image sets too large to hold decoded in memory: files decoded batch by batch.

A StreamSplit stands where a Split of tensors would: ``len``, ``.y`` (labels are small and
stay in memory), ``.to(device)`` and ``.x``, a LazyImages that decodes and normalises the
images it is indexed with, so evaluation code that slices ``split.x[a:b]`` works unchanged.
Training reads it through a StreamLoader: the TensorLoader interface (``epoch(e, start)``,
``len``, the same seeded order per epoch) over DataLoader worker processes that decode the
next batches while the model trains on this one.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch

from torchkeel.data.corpus_loader import CorpusSplit, WindowLoader
from torchkeel.data.decode import ImageFiles, batches_of
from torchkeel.data.images import normalise
from torchkeel.data.loader import TensorLoader, epoch_order
from torchkeel.data.pairs_loader import LengthBatchLoader, PairSplit
from torchkeel.errors import DataWarning

# slices at least this long are decoded by worker processes in chunks of this size
WORKER_CHUNK = 64


@dataclass
class StreamSplit:
    files: ImageFiles
    mean: list[float]
    std: list[float]
    workers: int = 2
    device: torch.device = torch.device("cpu")

    def __len__(self) -> int:
        return len(self.files)

    @property
    def x(self) -> LazyImages:
        return LazyImages(self)

    @property
    def y(self) -> torch.Tensor:
        return self.files.labels.to(self.device)

    def to(self, device: torch.device | str) -> StreamSplit:
        return replace(self, device=torch.device(device))

    def decode(self, indices: list[int]) -> torch.Tensor:
        """(B, C, H, W) normalised float32 on the split's device. A file that can no longer be
        decoded becomes zeros (the mean), with a warning, so x and y stay aligned."""
        if self.workers and len(indices) >= 2 * WORKER_CHUNK:
            parts = [indices[i : i + WORKER_CHUNK] for i in range(0, len(indices), WORKER_CHUNK)]
            pieces = list(batches_of(self.files, parts, self.workers))
            x, ok = torch.cat([p[0] for p in pieces]), torch.cat([p[2] for p in pieces])
        else:
            x, _, ok = self.files.__getitems__(indices)
        x = normalise(x.to(self.device, non_blocking=True), self.mean, self.std)
        if not bool(ok.all()):
            self.warn_unreadable(indices, ok, "replaced by the mean image")
            x[~ok.to(self.device)] = 0.0
        return x

    def warn_unreadable(self, indices: list[int], ok: torch.Tensor, what: str) -> None:
        for i in (~ok).nonzero().view(-1).tolist():
            warnings.warn(
                f"{self.files.paths[indices[i]]}: can no longer be decoded (it could when the data set was "
                f"loaded; was the folder changed during the run?); {what}",
                DataWarning,
                stacklevel=3,
            )


class LazyImages:
    """Indexing (an int, a slice, a list or tensor of indices) returns normalised images,
    as indexing a (N, C, H, W) float tensor would."""

    def __init__(self, split: StreamSplit):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    @property
    def shape(self) -> torch.Size:
        return torch.Size([len(self.split), self.split.files.channels, *self.split.files.size])

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    @property
    def device(self) -> torch.device:
        return self.split.device

    def __getitem__(self, key: Any) -> torch.Tensor:
        if isinstance(key, int):
            return self[[key]][0]
        if isinstance(key, slice):
            indices = list(range(len(self.split)))[key]
        else:
            indices = torch.as_tensor(key).view(-1).tolist()
        return self.split.decode(indices)

    def index_select(self, dim: int, index: torch.Tensor) -> torch.Tensor:
        if dim != 0:
            raise ValueError("streamed images are indexed along the batch dimension only")
        return self[index]

    def to(self, device: torch.device | str) -> LazyImages:
        return LazyImages(self.split.to(device))


class StreamLoader:
    """TensorLoader's interface over a StreamSplit: batches of normalised images on the
    split's device, in the order TensorLoader would give for the same seed and epoch."""

    def __init__(
        self,
        split: StreamSplit,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.split, self.batch_size = split, batch_size
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.rank, self.world_size = rank, world_size

    @property
    def samples_per_rank(self) -> int:
        return -(-len(self.split) // self.world_size)

    def __len__(self) -> int:
        n = self.samples_per_rank
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int) -> torch.Tensor:
        return epoch_order(len(self.split), epoch, self.seed, self.shuffle, self.rank, self.world_size)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        idx = self.order(epoch).tolist()
        bs = self.batch_size
        wanted = [idx[b * bs : (b + 1) * bs] for b in range(start, len(self))]
        split = self.split
        pin = split.device.type == "cuda"
        for indices, (x, y, ok) in zip(wanted, batches_of(split.files, wanted, split.workers, pin), strict=True):
            if not bool(ok.all()):  # a file broken since loading: train on the rest of the batch
                split.warn_unreadable(indices, ok, "left out of its batch")
                x, y = x[ok], y[ok]
            x = normalise(x.to(split.device, non_blocking=True), split.mean, split.std)  # (B, C, H, W)
            yield x, y.to(split.device, non_blocking=True)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.epoch(0)


__all__ = ["LazyImages", "StreamLoader", "StreamSplit"]


def make_loader(split: Any, device: torch.device | str, batch_size: int, **options: Any) -> Any:
    """The training loader for a split: a TensorLoader over its tensors moved to ``device``,
    or, for an image set streamed from disk, a StreamLoader with the same interface
    (``epoch(e, start)``, ``__len__``, ``batch_size``), or for a memory-mapped text corpus a
    WindowLoader of random windows, or for parallel text a LengthBatchLoader. ``options`` go to any of them."""
    if isinstance(split, CorpusSplit):
        return WindowLoader(split.to(device), batch_size, **options)
    if isinstance(split, StreamSplit):
        return StreamLoader(split.to(device), batch_size, **options)
    if isinstance(split, PairSplit):  # parallel sentences: batches of similar lengths
        return LengthBatchLoader(split.to(device), batch_size, **options)
    return TensorLoader(split.x.to(device), split.y.to(device), batch_size, **options)
