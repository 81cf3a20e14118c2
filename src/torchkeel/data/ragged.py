"""Ragged targets: one variable-size target per sample (a token sequence, a set of labels, an
image's boxes), kept as one flat tensor of rows with a length per sample.

A ``Split``'s ``y`` is either a tensor (fixed-size targets: the hot path, sliced on the device
as before) or a ``Ragged``. ``Ragged`` answers what the loaders and the evaluation loop ask of
``y`` — ``len``, ``shape[0]``, ``index_select(0, idx)``, slicing (also ``[rank::world]`` for
distributed shards) and ``to(device)`` — with another ``Ragged`` of those samples, gathered in
a few vectorised ops. The task collates a batch when its loss or metrics first need it
(``padded``, computed once per batch and kept), so the loss, the running meter and the
accumulator share one collation.
"""

from __future__ import annotations

from functools import cached_property

import torch


class Ragged:
    def __init__(self, values: torch.Tensor, lengths: torch.Tensor, pad_value: float = -1):
        """``values``: (total, *row) every sample's rows, concatenated; ``lengths``: (N,) int64."""
        if lengths.ndim != 1 or int(lengths.sum()) != len(values):
            raise ValueError(f"lengths sum to {int(lengths.sum())} rows but values has {len(values)}")
        self.values, self.lengths, self.pad_value = values, lengths.long(), pad_value

    @classmethod
    def from_list(cls, items: list[torch.Tensor], pad_value: float = -1) -> Ragged:
        """From one tensor of rows per sample (rows may be scalars: a 1-D tensor per sample)."""
        lengths = torch.tensor([len(t) for t in items], dtype=torch.int64)
        return cls(torch.cat(items) if items else torch.zeros(0), lengths, pad_value)

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def shape(self) -> tuple[int]:
        return (len(self),)

    @property
    def device(self) -> torch.device:
        return self.values.device

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Ragged:
        lengths = self.lengths.to(device, non_blocking=non_blocking)
        return Ragged(self.values.to(device, non_blocking=non_blocking), lengths, self.pad_value)

    def index_select(self, dim: int, index: torch.Tensor) -> Ragged:
        """The samples ``index`` (dim 0), in that order."""
        if dim != 0:
            raise ValueError("ragged targets are indexed by sample (dim 0)")
        index = index.to(self.lengths.device).long()
        starts = (self.lengths.cumsum(0) - self.lengths)[index]  # (B,) first row of each sample
        lengths = self.lengths[index]
        sample = torch.repeat_interleave(torch.arange(len(index), device=index.device), lengths)
        first = torch.repeat_interleave(lengths.cumsum(0) - lengths, lengths)
        rows = starts[sample] + torch.arange(len(sample), device=index.device) - first  # (rows,)
        return Ragged(self.values.index_select(0, rows.to(self.values.device)), lengths, self.pad_value)

    def __getitem__(self, key: slice | torch.Tensor) -> Ragged:
        if isinstance(key, slice):
            key = torch.arange(len(self), device=self.lengths.device)[key]
        return self.index_select(0, torch.as_tensor(key))

    @cached_property
    def padded(self) -> torch.Tensor:
        """(N, longest, *row) with ``pad_value`` after each sample's rows."""
        longest = int(self.lengths.max()) if len(self) else 0
        out = self.values.new_full((len(self), longest, *self.values.shape[1:]), self.pad_value)
        sample = torch.repeat_interleave(torch.arange(len(self), device=self.device), self.lengths)
        position = torch.arange(len(self.values), device=self.device) - torch.repeat_interleave(
            self.lengths.cumsum(0) - self.lengths, self.lengths
        )
        out[sample, position] = self.values
        return out

    def items(self) -> list[torch.Tensor]:
        """One tensor of rows per sample (e.g. a detector's per-image dicts are built from these)."""
        return list(torch.split(self.values, self.lengths.tolist()))
