"""TensorLoader: batches sliced from tensors that already sit on the device.

No per-sample ``Dataset.__getitem__`` and no collate on the hot path: each epoch draws one
seeded permutation and every batch is a single gather. ``DataLoader`` over a ``TensorDataset``
spends about 0.5 ms per batch indexing samples one by one and stacking them.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


class TensorLoader:
    """Batches of ``(x, y)`` in an order that depends only on ``(seed, epoch)``.

    ``start`` in :meth:`epoch` skips batches already done (exact resume mid-epoch). With
    ``world_size > 1`` each rank takes every ``world_size``-th index of the same permutation,
    padded by wrapping so all ranks run the same number of steps (as DistributedSampler does).
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if len(x) != len(y):
            raise ValueError(f"x and y differ in length: {len(x)} vs {len(y)}")
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.rank, self.world_size = rank, world_size

    @property
    def samples_per_rank(self) -> int:
        return -(-len(self.x) // self.world_size)  # ceil

    def __len__(self) -> int:
        n = self.samples_per_rank
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int) -> torch.Tensor:
        """This rank's sample indices for ``epoch``, on the data's device."""
        idx = epoch_order(len(self.x), epoch, self.seed, self.shuffle, self.rank, self.world_size)
        return idx.to(self.x.device)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        idx = self.order(epoch)
        bs = self.batch_size
        for b in range(start, len(self)):
            sel = idx[b * bs : (b + 1) * bs]
            yield self.x.index_select(0, sel), self.y.index_select(0, sel)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.epoch(0)


def epoch_order(
    n: int, epoch: int, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1
) -> torch.Tensor:
    """Indices (on the CPU) of ``n`` samples that ``rank`` visits in ``epoch``."""
    if shuffle:
        # a fresh CPU generator per epoch: the order never depends on what ran before
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        idx = torch.randperm(n, generator=g)
    else:
        idx = torch.arange(n)
    if world_size > 1:
        per_rank = -(-n // world_size)
        idx = torch.cat([idx, idx[: per_rank * world_size - n]])[rank::world_size]
    return idx
