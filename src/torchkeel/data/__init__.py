"""Data sets by name. ``load(cfg, seed)`` returns a DataBundle of tensors and its DataSpec.

The loaders import their heavy libraries (torchvision, pandas, tokenizers) when called, so
importing this registry stays cheap.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from torchkeel.config_data import DataConfig
from torchkeel.data.audio import load_audio_folder, load_fsdd
from torchkeel.data.boxes import load_box_folder
from torchkeel.data.bundle import DataBundle, DataSpec, Split
from torchkeel.data.corpus_loader import load_text_file
from torchkeel.data.folder import load_image_folder
from torchkeel.data.images import load_digits
from torchkeel.data.loader import TensorLoader
from torchkeel.data.masks import load_mask_folder
from torchkeel.data.pairs import load_text_pairs
from torchkeel.data.series import load_series_csv, load_sine_series
from torchkeel.data.tabular import load_embedded_table, load_table
from torchkeel.data.text import load_hf, load_text
from torchkeel.data.textgen import load_word_order
from torchkeel.data.tokenize import tokenizer_from_dict
from torchkeel.data.transcripts import load_audio_transcripts, load_fsdd_digits, load_yesno
from torchkeel.data.vision import load_vision
from torchkeel.data.weights import add_class_weights
from torchkeel.errors import ConfigError, check_choice

FITTED_SPEC = "data.json"  # in a run folder: the DataSpec as learnt when the run started

DATASETS: dict[str, Callable[[DataConfig, int], DataBundle]] = {
    "digits": load_digits,
    "mnist": load_vision,
    "fashion_mnist": load_vision,
    "kmnist": load_vision,
    "cifar10": load_vision,
    "cifar100": load_vision,
    "svhn": load_vision,
    "image_folder": load_image_folder,
    "mask_folder": load_mask_folder,
    "box_folder": load_box_folder,
    "csv": load_table,
    "parquet": load_table,
    "breast_cancer": load_embedded_table,
    "wine": load_embedded_table,
    "iris": load_embedded_table,
    "diabetes": load_embedded_table,
    "text_csv": load_text,
    "text_pairs": load_text_pairs,
    "sine_series": load_sine_series,
    "series_csv": load_series_csv,
    "word_order": load_word_order,
    "text_file": load_text_file,
    "audio_folder": load_audio_folder,
    "fsdd": load_fsdd,
    "audio_transcripts": load_audio_transcripts,
    "yesno": load_yesno,
    "fsdd_digits": load_fsdd_digits,
}


def load(cfg: DataConfig | str | dict | None = None, seed: int = 0, fitted: DataSpec | None = None) -> DataBundle:
    """Load a data set by config, by name (``load("digits")``) or by a config dict.

    ``fitted``: the DataSpec of a trained run whose data is being rebuilt; a text set then
    reuses the run's tokeniser rather than learning one again (Hugging Face's WordPiece
    trainer does not number its vocabulary the same way twice).
    """
    if cfg is None:
        cfg = DataConfig()
    elif isinstance(cfg, str):
        cfg = DataConfig(name=cfg)
    elif isinstance(cfg, dict):
        cfg = DataConfig(**cfg)
    check_dataset(cfg.name)
    loader = load_hf if cfg.name.startswith("hf:") else DATASETS[cfg.name]
    if fitted is not None and "tokenizer" in fitted.extra and loader is load_text_file:
        bundle = loader(cfg, seed, tokenizer=fitted.extra["tokenizer"])
    elif fitted is not None and "target_tokenizer" in fitted.extra and loader is load_text_pairs:
        bundle = loader(cfg, seed, tokenizers=(fitted.extra["tokenizer"], fitted.extra["target_tokenizer"]))
    elif fitted is not None and "tokenizer" in fitted.extra and loader in (load_text, load_hf):
        bundle = loader(cfg, seed, tokenizer=tokenizer_from_dict(fitted.extra["tokenizer"]))
    else:
        bundle = loader(cfg, seed)
    if cfg.class_weights:
        add_class_weights(bundle)
    return bundle


def check_dataset(name: str) -> str:
    """A data set's name, or a ConfigError naming the closest one (``hf:NAME`` is any hub set)."""
    if name.startswith("hf:") and len(name) > 3:
        return name
    try:
        return check_choice("data set", name, DATASETS)
    except ConfigError as e:
        raise ConfigError(f"data.name: {e}") from None


def fitted_spec(run_dir: Path) -> DataSpec | None:
    """The DataSpec a run stored when it started (``data.json``), or None for older runs."""
    path = Path(run_dir) / FITTED_SPEC
    return DataSpec.from_dict(json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else None


__all__ = [
    "DATASETS",
    "FITTED_SPEC",
    "check_dataset",
    "fitted_spec",
    "DataBundle",
    "DataSpec",
    "Split",
    "TensorLoader",
    "load",
]
