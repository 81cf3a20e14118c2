"""Tables: CSV/TSV/JSON-lines/Parquet files through pandas, and scikit-learn's embedded sets
(breast_cancer, wine, iris: classification; diabetes: regression).

The target column gives the task (``data.task: auto``): text labels, or integers with at most
CLASS_LEVELS distinct values, are classes; other numbers are a regression target (trained
with MSE, standardised with train statistics unless ``data.table.scale_target: false``).
Rows are split first (stratified for classes, seeded); every statistic of the features is
then learnt from the train rows only (see table_encoder.py) and stored in the DataSpec.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchkeel.config_data import DataConfig, TableConfig
from torchkeel.data.bundle import DataBundle, DataSpec, Split
from torchkeel.data.frames import read_frame, require_columns
from torchkeel.data.splits import holdout_indices
from torchkeel.data.table_encoder import TableEncoder, category_keys, numeric_values
from torchkeel.errors import DataError, DataWarning

CLASS_LEVELS = 20  # an integer target with at most this many values is taken as classes
EMBEDDED = ("breast_cancer", "wine", "iris", "diabetes")


def load_table(cfg: DataConfig, seed: int) -> DataBundle:
    frame = read_frame(cfg.path)
    test = read_frame(cfg.test_path, "data.test_path") if cfg.test_path else None
    return table_bundle(Path(cfg.path).stem, frame, cfg, seed, test, source=cfg.path)


def load_embedded_table(cfg: DataConfig, seed: int) -> DataBundle:
    """scikit-learn's bundled tables (no download), class names as labels."""
    from sklearn import datasets

    loader = getattr(datasets, f"load_{cfg.name}")
    bunch = loader(as_frame=True, **({"scaled": False} if cfg.name == "diabetes" else {}))
    frame = bunch.frame.copy()
    if cfg.name != "diabetes":
        frame["target"] = [str(bunch.target_names[i]) for i in bunch.target]
    return table_bundle(cfg.name, frame, cfg, seed, target=cfg.target or "target", source=cfg.name)


def table_bundle(
    name: str,
    frame: Any,
    cfg: DataConfig,
    seed: int,
    test_frame: Any = None,
    target: str | None = None,
    source: str = "the table",
) -> DataBundle:
    """Split ``frame`` and encode it; ``test_frame`` (same columns) is kept as the test split."""
    target = target or cfg.target
    if target is None:
        shown = ", ".join(map(str, frame.columns[:30]))
        raise DataError(f"data.target: name the column to predict in {source} (columns: {shown})")
    require_columns(frame, [target], "data.target", source)
    features = feature_columns(frame, target, cfg.table, source)
    frame = drop_missing_target(frame, target, source)
    task, classes, y = encode_target(frame[target], cfg.task, target)
    own_test = test_frame is not None
    train, val, test = holdout_indices(y if classes else None, len(frame), cfg, seed, own_test=own_test)
    numeric, categorical = column_kinds(frame.iloc[train], features, cfg.table)
    t = cfg.table
    encoder = TableEncoder.fit(frame.iloc[train], numeric, categorical, t.impute, t.max_categories, t.encoding)
    x = encoder.transform(frame)
    if own_test:
        require_columns(test_frame, [target, *encoder.columns], "data.test_path", cfg.test_path)
        test_frame = drop_missing_target(test_frame, target, cfg.test_path)
        test_x, test_y = encoder.transform(test_frame), target_values(test_frame[target], classes, target)
    y_t = torch.from_numpy(y)
    spec = DataSpec(name=name, kind="table", task=task, input_shape=(x.shape[1],), classes=classes)
    spec.extra["table"] = {"target": target, "encoder": encoder.to_dict(), "features": encoder.feature_names}
    if t.encoding == "index":
        spec.extra["numeric_features"] = len(encoder.numeric)
        spec.extra["categorical_cardinalities"] = encoder.cardinalities
    if task == "regression":
        y_t = y_t.float().view(-1, 1)  # (N, 1)
        test_y = torch.from_numpy(test_y).float().view(-1, 1) if own_test else None
        if t.scale_target:
            mean, std = float(y_t[train].mean()), float(y_t[train].std()) if len(train) > 1 else 1.0
            std = std if std > 1e-12 else 1.0
            spec.extra["target_scale"] = {"mean": mean, "std": std}  # predict multiplies back
            y_t = (y_t - mean) / std
            test_y = (test_y - mean) / std if own_test else None
    else:
        test_y = torch.from_numpy(test_y) if own_test else None
    test_split = Split(test_x, test_y) if own_test else Split(x[test], y_t[test])
    val_split = Split(x[val], y_t[val]) if len(val) else None
    return DataBundle(spec, Split(x[train], y_t[train]), val_split, test_split)


def feature_columns(frame: Any, target: str, t: TableConfig, source: str) -> list[str]:
    """``data.table.columns`` (default: all but the target), minus ``exclude``."""
    for key, names in (("columns", t.columns or []), ("exclude", t.exclude), ("categorical", t.categorical)):
        require_columns(frame, names, f"data.table.{key}", source)
    if t.columns and target in t.columns:
        raise DataError(f"data.table.columns: '{target}' is the target; it cannot also be a feature")
    listed = t.columns or [c for c in frame.columns if c != target]
    features = [c for c in listed if c not in t.exclude and c != target]
    if not features:
        raise DataError(f"data.table: no feature columns left in {source} after data.table.exclude")
    return features


def column_kinds(train: Any, features: list[str], t: TableConfig) -> tuple[list[str], list[str]]:
    """(numeric, categorical) feature columns, judged on the train rows; all-missing columns
    are dropped with a warning, or an error if they were listed by name."""
    import pandas as pd

    numeric, categorical, empty = [], [], []
    for name in features:
        series = train[name]
        if series.isna().all():
            if name in (t.columns or []) or name in t.categorical:
                raise DataError(f"data.table: column '{name}' has no values in the train split; leave it out")
            empty.append(name)
        elif name in t.categorical or pd.api.types.is_bool_dtype(series):
            categorical.append(name)
        elif pd.api.types.is_numeric_dtype(series) or _mostly_numbers(series, name):
            numeric.append(name)
        else:
            categorical.append(name)
    if empty:
        warnings.warn(f"data.table: dropped column(s) with no values: {', '.join(empty)}", DataWarning, stacklevel=3)
    if not numeric and not categorical:
        raise DataError("data.table: every feature column is empty")
    return numeric, categorical


def _mostly_numbers(series: Any, name: str) -> bool:
    """A text column whose values are numbers but for a few placeholders ('?', 'n/a'):
    numeric, the placeholders treated as missing (with a warning)."""
    present = series.dropna()
    parsed = numeric_values(present)
    good = int((~np.isnan(parsed)).sum())
    if good == 0 or good < 0.9 * len(present):
        return False
    odd = sorted({str(v) for v, p in zip(present.tolist(), parsed, strict=True) if np.isnan(p)})[:3]
    warnings.warn(
        f"data.table: column '{name}' is numeric but for {len(present) - good} value(s) like {odd}; "
        "they are treated as missing",
        DataWarning,
        stacklevel=4,
    )
    return True


def encode_target(series: Any, task: str, target: str) -> tuple[str, list[str] | None, np.ndarray]:
    """(task, class names or None, y): int64 class indices, or float64 values."""
    import pandas as pd

    is_number = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
    if task == "auto":
        values = numeric_values(series) if is_number else None
        few_integers = (
            values is not None and np.all(values == np.round(values)) and len(np.unique(values)) <= CLASS_LEVELS
        )
        task = "classification" if values is None or few_integers else "regression"
    if task == "regression":
        values = numeric_values(series)
        if np.isnan(values).any():
            odd = series[np.isnan(values)].iloc[0]
            raise DataError(
                f"data.target: column '{target}' has values that are not numbers (e.g. {odd!r}); "
                "a regression target must be numeric (or set data.task: classification)"
            )
        return "regression", None, values
    keys = category_keys(series)
    unique = sorted(set(keys), key=lambda k: (float(k), k) if is_number else (0.0, k))
    if len(unique) < 2:
        raise DataError(f"data.target: column '{target}' has a single value ({unique[0]!r}); classification needs two")
    return "classification", unique, target_values(series, unique, target)


def target_values(series: Any, classes: list[str] | None, target: str) -> np.ndarray:
    """Class indices for ``classes`` (an unknown label is an error), or float values."""
    if classes is None:
        return numeric_values(series)
    lookup = {c: i for i, c in enumerate(classes)}
    keys = category_keys(series)
    unknown = [k for k in keys if k not in lookup]
    if unknown:
        raise DataError(f"data.target: label {unknown[0]!r} of column '{target}' is not among the train classes")
    return np.array([lookup[k] for k in keys], dtype=np.int64)


def drop_missing_target(frame: Any, target: str, source: Any) -> Any:
    missing = frame[target].isna()
    if missing.all():
        raise DataError(f"data.target: column '{target}' of {source} has no values")
    if missing.any():
        warnings.warn(
            f"{source}: dropped {int(missing.sum())} row(s) without a value in '{target}'", DataWarning, stacklevel=3
        )
        frame = frame[~missing].reset_index(drop=True)
    return frame
