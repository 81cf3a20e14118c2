"""Batches of parallel sentences of similar length, each holding about the same number of tokens.

A batch is padded to its longest sentence, so a batch of random sentences (Multi30k: 4 to 50
tokens) spends about half its work on padding. As fairseq does (Ott et al. 2019, ``--max-tokens``),
each epoch the sentences are sorted by length, ties in a seeded random order, cut into batches
of equal token counts (of each pair's longer side; sorted, that is nearly the padded count:
short sentences come many to a batch, long ones few), and the
batches are visited in a seeded random order. The number of batches per epoch is fixed
(``ceil(N / batch_size)``), so ``train.batch_size`` is the mean number of sentences per batch and
the schedule's step count is known before training; the order depends only on
``(seed, epoch)``, so a resumed run sees the same batches. Under DDP each rank takes every
``world_size``-th sentence of each batch: the same number of steps everywhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from torchkeel.data.bundle import Split


@dataclass
class PairSplit(Split):
    """Parallel sentences: x (N, S) source ids, y (N, T) target ids, both right-padded with 0."""

    def to(self, device: torch.device | str) -> PairSplit:
        return PairSplit(self.x.to(device), self.y.to(device), self.sources)

    def lengths(self) -> torch.Tensor:
        """(N,) the padded length a sentence pair brings to a batch: its longer side."""
        return torch.maximum((self.x != 0).sum(1), (self.y != 0).sum(1)).cpu()


class LengthBatchLoader:
    def __init__(
        self, split: PairSplit, batch_size: int, *, seed: int = 0, rank: int = 0, world_size: int = 1, **_: object
    ):
        self.x, self.y, self.batch_size, self.seed = split.x, split.y, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.sizes = split.lengths()
        self.batches = max(1, -(-len(self.x) // batch_size))

    def __len__(self) -> int:
        return self.batches

    def plan(self, epoch: int) -> list[torch.Tensor]:
        """The epoch's batches of sample indices, in the order they are visited."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        shuffled = torch.randperm(len(self.sizes), generator=g)
        order = shuffled[torch.argsort(self.sizes[shuffled], stable=True)]  # by length; ties at random
        tokens = self.sizes[order].cumsum(0).double()
        # cut where the running token count crosses each k/K of the total: equal tokens per batch
        marks = tokens[-1] * torch.arange(1, self.batches, dtype=torch.float64) / self.batches
        cuts = torch.searchsorted(tokens, marks).tolist()
        bounds = sorted(set([0, *cuts, len(order)]))
        groups = [order[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
        while len(groups) < self.batches:  # fewer sentences than batches asked: split the largest
            big = max(range(len(groups)), key=lambda i: len(groups[i]))
            if len(groups[big]) < 2:
                groups.append(groups[big])  # as many batches as promised (a sentence seen twice)
                continue
            half = len(groups[big]) // 2
            groups[big : big + 1] = [groups[big][:half], groups[big][half:]]
        visit = torch.randperm(len(groups), generator=g).tolist()
        return [groups[i] for i in visit]

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in self.plan(epoch)[start:]:
            if self.world_size > 1:  # every rank the same number of steps, each a share of the batch
                batch = torch.cat([batch, batch[: (-len(batch)) % self.world_size]])[self.rank :: self.world_size]
            index = batch.to(self.x.device)
            x, y = self.x.index_select(0, index), self.y.index_select(0, index)
            yield x[:, : int((x != 0).sum(1).max())], y[:, : int((y != 0).sum(1).max())]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.epoch(0)
