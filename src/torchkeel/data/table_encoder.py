"""Table columns -> one float matrix, with statistics learnt from the train split only.

Numbers: missing values filled with the train median (or mean), then standardised with the
train mean and std. Categories: the train split's most frequent values (a missing value is
its own category, ``<missing>``); one-hot columns, or one index column per category column
(0 = a value not seen in train) placed after the numbers for an embedding layer. The whole
state is plain JSON, stored in the DataSpec, so predict encodes new rows the same way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

MISSING = "<missing>"


@dataclass
class NumericColumn:
    name: str
    fill: float  # imputed for missing values
    mean: float
    std: float


@dataclass
class CategoricalColumn:
    name: str
    categories: list[str]  # kept values, most frequent first; one-hot column i / index i + 1


@dataclass
class TableEncoder:
    numeric: list[NumericColumn]
    categorical: list[CategoricalColumn]
    encoding: str = "onehot"  # "onehot" | "index"

    @classmethod
    def fit(
        cls, frame: Any, numeric: list[str], categorical: list[str], impute: str, max_categories: int, encoding: str
    ) -> TableEncoder:
        """Learn the statistics of ``frame`` (the train split)."""
        numbers = []
        for name in numeric:
            values = numeric_values(frame[name])
            observed = values[~np.isnan(values)]
            fill = float(np.median(observed) if impute == "median" else observed.mean())
            std = float(observed.std(ddof=1)) if len(observed) > 1 else 0.0
            numbers.append(NumericColumn(name, fill, float(observed.mean()), std if std > 1e-12 else 1.0))
        categories = []
        for name in categorical:
            keys, counts = np.unique(category_keys(frame[name]), return_counts=True)
            order = sorted(range(len(keys)), key=lambda i: (-counts[i], keys[i]))  # frequent first, then by name
            categories.append(CategoricalColumn(name, [str(keys[i]) for i in order[:max_categories]]))
        return cls(numbers, categories, encoding)

    @property
    def columns(self) -> list[str]:
        """The input columns this encoder reads."""
        return [c.name for c in self.numeric] + [c.name for c in self.categorical]

    @property
    def feature_names(self) -> list[str]:
        """One name per output feature."""
        names = [c.name for c in self.numeric]
        if self.encoding == "index":
            return names + [c.name for c in self.categorical]
        return names + [f"{c.name}={v}" for c in self.categorical for v in c.categories]

    @property
    def cardinalities(self) -> list[int]:
        """Index encoding: the embedding sizes (kept categories + 1 for unseen values)."""
        return [len(c.categories) + 1 for c in self.categorical]

    def transform(self, frame: Any) -> torch.Tensor:
        """(N, features) float32 for the rows of ``frame`` (which must hold ``columns``)."""
        blocks = []
        for c in self.numeric:
            values = numeric_values(frame[c.name])
            values = np.where(np.isnan(values), c.fill, values)
            blocks.append(((values - c.mean) / c.std)[:, None])
        for c in self.categorical:
            lookup = {v: i for i, v in enumerate(c.categories)}
            index = np.array([lookup.get(k, -1) for k in category_keys(frame[c.name])], dtype=np.int64)
            if self.encoding == "index":
                blocks.append((index + 1)[:, None].astype(np.float64))  # 0: not seen in train
            else:
                onehot = np.zeros((len(index), len(c.categories)))
                rows = np.flatnonzero(index >= 0)
                onehot[rows, index[rows]] = 1.0
                blocks.append(onehot)
        matrix = np.concatenate(blocks, axis=1) if blocks else np.zeros((len(frame), 0))
        return torch.from_numpy(matrix.astype(np.float32))

    def inverse(self, x: torch.Tensor) -> list[dict[str, str]]:
        """The rows of an encoded (N, features) matrix as the user's columns and values: numbers
        un-standardised (a missing value shows as the fill it got), categories by name
        (``<other>`` for a value not kept from train)."""
        x = x.detach().double().cpu().numpy()
        rows: list[dict[str, str]] = [{} for _ in range(len(x))]
        for j, c in enumerate(self.numeric):
            for row, value in zip(rows, x[:, j] * c.std + c.mean, strict=True):
                row[c.name] = f"{value:.6g}"
        at = len(self.numeric)
        for c in self.categorical:
            width = 1 if self.encoding == "index" else len(c.categories)
            block = x[:, at : at + width]
            at += width
            for row, codes in zip(rows, block, strict=True):
                index = int(round(codes[0])) - 1 if self.encoding == "index" else int(codes.argmax())
                seen = 0 <= index < len(c.categories) and (self.encoding == "index" or codes[index] > 0.5)
                row[c.name] = c.categories[index] if seen else "<other>"
        return rows

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TableEncoder:
        return cls(
            [NumericColumn(**c) for c in d["numeric"]],
            [CategoricalColumn(**c) for c in d["categorical"]],
            d.get("encoding", "onehot"),
        )


def numeric_values(series: Any) -> np.ndarray:
    """float64 values; anything that is not a number (blank, '?', 'n/a') is NaN."""
    import pandas as pd

    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan, copy=True)


def category_keys(series: Any) -> np.ndarray:
    """Each value as a string key: missing -> <missing>; 2.0 -> '2' (so a column read as
    floats because it has gaps matches the same column read as integers)."""
    import pandas as pd

    def key(v: Any) -> str:
        if v is None or (not isinstance(v, str) and pd.isna(v)):
            return MISSING
        if isinstance(v, float) and v.is_integer():
            return str(int(v))
        return str(v).strip()

    return np.array([key(v) for v in series.tolist()], dtype=object)
