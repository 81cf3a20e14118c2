"""Seeded, stratified train/val/test splits.

Written with numpy rather than imported from scikit-learn's ``train_test_split``: importing
``sklearn.model_selection`` costs over a second of start-up on 2 cores and this is 20 lines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from torchkeel.config_data import DataConfig


def split_indices(
    labels: np.ndarray | None,
    n: int,
    fractions: tuple[float, ...],
    seed: int,
) -> list[np.ndarray]:
    """Indices for ``len(fractions) + 1`` parts: the given fractions, then the rest.

    With ``labels`` the split is stratified: every class is divided in the same proportions
    (rounded per class), so rare classes appear in every part when they can.
    """
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if labels is None else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for group in groups:
        group = rng.permutation(group)
        start = 0
        for i, fraction in enumerate(fractions):
            count = int(round(fraction * len(group)))
            parts[i].append(group[start : start + count])
            start += count
        parts[-1].append(group[start:])
    # shuffle across classes so a part is not sorted by label
    return [rng.permutation(np.concatenate(p)) for p in parts]


def holdout_indices(
    labels: np.ndarray | None,
    n: int,
    cfg: DataConfig,
    seed: int,
    own_val: bool = False,
    own_test: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) indices of ``n`` samples, stratified by ``labels`` when given.

    A data set that brings its own val or test split keeps it: no fraction is cut for that
    part and its index array here is empty.
    """
    wanted = [("val", cfg.val_fraction, own_val), ("test", cfg.test_fraction, own_test)]
    fractions = tuple(f for _, f, own in wanted if not own)
    parts = split_indices(labels, n, fractions, seed)
    named = dict(zip([k for k, _, own in wanted if not own], parts, strict=False))
    empty = np.zeros(0, dtype=np.int64)
    return parts[-1], named.get("val", empty), named.get("test", empty)
