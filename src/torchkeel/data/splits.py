"""Seeded, stratified train/val/test splits.

Written with numpy rather than imported from scikit-learn's ``train_test_split``: importing
``sklearn.model_selection`` costs over a second of start-up on 2 cores and this is 20 lines.
"""

from __future__ import annotations

import numpy as np


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
