"""Text classification sets: ``text_csv`` (CSV, TSV or JSON lines with a text and a label
column) and, when the ``datasets`` library and a network are there, ``hf:<name>`` from the
Hugging Face Hub.

Texts become int64 token ids (N, L), right-padded with 0 (``<pad>``); ``<unk>`` is 1. The
tokeniser is learnt from the train split only and stored in ``spec.extra["tokenizer"]``.
L is the longest tokenised text of the data, at most ``data.text.max_length``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from torchkeel.config_data import DataConfig, TextConfig
from torchkeel.data.bundle import DataBundle, DataSpec, Split
from torchkeel.data.frames import read_frame, require_columns
from torchkeel.data.splits import holdout_indices
from torchkeel.data.tabular import drop_missing_target, encode_target, target_values
from torchkeel.data.tokenize import PAD_INDEX, UNK_INDEX, Tokenizer, encode_texts, train_tokenizer, used_width
from torchkeel.errors import DataError

DEFAULT_TARGET = "label"


def load_text(cfg: DataConfig, seed: int, tokenizer: Tokenizer | None = None) -> DataBundle:
    frame = read_frame(cfg.path)
    test = read_frame(cfg.test_path, "data.test_path") if cfg.test_path else None
    return text_bundle(Path(cfg.path).stem, frame, cfg, seed, test, source=cfg.path, tokenizer=tokenizer)


def text_bundle(
    name: str,
    frame: Any,
    cfg: DataConfig,
    seed: int,
    test_frame: Any = None,
    source: str = "the table",
    tokenizer: Tokenizer | None = None,
) -> DataBundle:
    """Split and tokenise; ``tokenizer``: a trained one to reuse (a run's own, when its data is
    rebuilt for evaluation) instead of learning one from the train split."""
    columns = text_columns(cfg)
    target = cfg.target or DEFAULT_TARGET
    require_columns(frame, columns, "data.text.column", source)
    require_columns(frame, [target], "data.target", source)
    frame = drop_missing_target(frame, target, source)
    task, classes, y = encode_target(frame[target], "classification" if cfg.task == "auto" else cfg.task, target)
    if task != "classification":
        raise DataError("data.task: text_csv trains classifiers; set data.task: classification (or auto)")
    texts = join_text(frame, columns)
    if not any(text.strip() for text in texts):
        raise DataError(
            f"data.text.column {', '.join(columns)}: every text in {source} is empty; "
            "point data.text.column at the column that holds the texts"
        )
    train, val, test = holdout_indices(y, len(texts), cfg, seed, own_test=test_frame is not None)
    t = cfg.text
    tokenizer = tokenizer or train_tokenizer([texts[i] for i in train], t)
    x, truncated = encode_texts(tokenizer, texts, ids_per_text(t), pad=False)
    y_t = torch.from_numpy(y)
    if test_frame is not None:
        require_columns(test_frame, [*columns, target], "data.test_path", cfg.test_path)
        test_frame = drop_missing_target(test_frame, target, cfg.test_path)
        test_x, _ = encode_texts(tokenizer, join_text(test_frame, columns), ids_per_text(t), pad=False)
        test_split = Split(test_x, torch.from_numpy(target_values(test_frame[target], classes, target)))
    else:
        test_split = Split(x[test], y_t[test])
    # pad to the longest text of any split (<= max_length), so every split has one width: the last
    # column holding an id (an ensemble's rows hold padding between its members' ids too)
    length = max(1, used_width(x), used_width(test_split.x))
    spec = DataSpec(name=name, kind="text", task="classification", input_shape=(length,), classes=classes)
    spec.extra.update(
        vocab_size=tokenizer.vocab_size,
        pad_index=PAD_INDEX,
        unk_index=UNK_INDEX,
        tokenizer=tokenizer.to_dict(),
        text_columns=columns,
        truncated=truncated,  # texts longer than max_length, cut
    )

    def part(split: Split) -> Split:
        x = split.x[:, :length]
        return Split(torch.nn.functional.pad(x, (0, length - x.shape[1]), value=PAD_INDEX).contiguous(), split.y)

    val_split = part(Split(x[val], y_t[val])) if len(val) else None
    return DataBundle(spec, part(Split(x[train], y_t[train])), val_split, part(test_split))


def ids_per_text(t: TextConfig) -> int:
    """Width of the id rows: ``max_length`` tokens, each followed by its n-grams (ngrams > 1)."""
    return t.max_length * t.ngrams


def text_columns(cfg: DataConfig) -> list[str]:
    column = cfg.text.column
    return [column] if isinstance(column, str) else list(column)


def join_text(frame: Any, columns: list[str]) -> list[str]:
    """One string per row: the text columns joined with a space; missing values are empty."""
    parts = [frame[c].fillna("").astype(str).tolist() for c in columns]
    return [" ".join(p for p in row if p) for row in zip(*parts, strict=True)]


def load_hf(cfg: DataConfig, seed: int, tokenizer: Tokenizer | None = None) -> DataBundle:
    """``hf:<name>``: a text classification set from the Hugging Face Hub (its own test split
    kept). Needs the ``datasets`` library and a network (or its local cache)."""
    name = cfg.name.removeprefix("hf:")
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"data.name: hf:{name} needs the Hugging Face 'datasets' library: pip install 'torchkeel[hf]'"
        ) from None
    try:
        loaded = datasets.load_dataset(name)
    except Exception as e:  # the library raises many types for offline, unknown and gated sets
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DataError(
            f"hf:{name}: could not load it from the Hugging Face Hub ({reason}); check the name, "
            "and that this machine is online (or has the set in its datasets cache)"
        ) from None
    if "train" not in loaded:
        raise DataError(f"hf:{name}: has no 'train' split (splits: {', '.join(loaded)})")
    target = cfg.target or DEFAULT_TARGET
    frames = {split: _named_labels(loaded[split], target) for split in ("train", "test") if split in loaded}
    return text_bundle(name, frames["train"], cfg, seed, frames.get("test"), f"hf:{name}", tokenizer)


def _named_labels(split: Any, target: str) -> Any:
    """A pandas frame of the split; integer class labels replaced by the set's class names."""
    frame = split.to_pandas()
    names = getattr(split.features.get(target), "names", None)
    if names is not None:
        frame[target] = [names[i] if i is not None and i >= 0 else None for i in frame[target]]
    return frame
