"""The data section of the config schema (``data:``); its image sections are in
config_images.py and the base of every section in config_base.py, re-exported here.

Split from config.py, which imports and re-exports every name here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from torchkeel.config_base import Strict
from torchkeel.config_images import (  # noqa: F401  (re-exported: the data schema is one namespace)
    AugmentConfig,
    BoxesConfig,
    ImageConfig,
    ImageSize,
    MasksConfig,
    positive_sides,
)
from torchkeel.errors import ConfigError, check_choice

BAG_MODELS = ("embedding_bag", "linear_bow")  # models that read a text as a bag of its ids
SEQUENCE_MAX_LENGTH = 256  # tokens per text for the other text models
# tokens per text for bag models: a long article's length, rows padded to the longest text of
# the data (10,000 texts of 4,096 words and their bigram ids take 650 MB of int64 ids)
BAG_MAX_LENGTH = 4096


class TableConfig(Strict):
    """Preprocessing of table columns; every statistic comes from the train split."""

    columns: list[str] | None = Field(None, description="feature columns to use; null: all but the target")
    exclude: list[str] = Field(default_factory=list, description="columns to leave out (ids, leaks)")
    categorical: list[str] = Field(
        default_factory=list, description="numeric columns to treat as categories (text columns always are)"
    )
    encoding: Literal["onehot", "index"] = Field(
        "onehot", description="categories as one-hot columns, or as indices (for embeddings) after the numbers"
    )
    max_categories: int = Field(50, ge=1, description="most frequent categories kept per column; rarer -> <other>")
    impute: Literal["median", "mean"] = Field("median", description="fill for missing numbers")
    scale_target: bool = Field(True, description="regression: standardise the target (predict undoes it)")


class TextConfig(Strict):
    """Tokenisation of a text column; the vocabulary is learnt from the train split."""

    column: str | list[str] = Field("text", description="text column (several are joined with a space)")
    tokenizer: Literal["word", "bpe", "wordpiece", "pretrained"] = Field(
        "word", description="pretrained: the tokeniser of data.text.encoder (model pretrained_text sets it)"
    )
    encoder: str | None = Field(None, description="tokenizer pretrained: a local folder or a Hugging Face hub name")
    vocab_size: int = Field(20000, ge=3, description="largest vocabulary, <pad> and <unk> included")
    min_freq: int = Field(1, ge=1, description="word and subword tokens seen fewer times become <unk>")
    max_length: int = Field(
        SEQUENCE_MAX_LENGTH,
        ge=1,
        description=f"tokens kept per text; longer ones are cut (unset: {BAG_MAX_LENGTH} for bag models, "
        f"else {SEQUENCE_MAX_LENGTH})",
    )
    lowercase: bool = True
    ngrams: int = Field(
        1, ge=1, le=4, description="2+: add hashed word n-gram ids (fastText-style, for bag models like embedding_bag)"
    )
    ngram_buckets: int = Field(32768, ge=1, description="ids shared by all hashed n-grams (ngrams > 1)")


def resolve_text_length(data: DataConfig, model: str) -> None:
    """``data.text.max_length`` left unset: a bag model (its cost is one lookup per id, and the
    batch is trimmed to its longest text) reads every text up to BAG_MAX_LENGTH tokens; a
    sequence model, whose cost grows with the length (quadratically for attention), keeps the
    first 256. On long reviews (IMDB, ~230 words, the longest 2,459) the bag of n-grams cut at 256
    tokens scored 0.852 and read whole 0.870, tf-idf + logistic regression 0.868
    (benchmarks/quality.py, seed 0; benchmarks/RESULTS.md)."""
    if model in BAG_MODELS and "max_length" not in data.text.model_fields_set:
        data.text.max_length = BAG_MAX_LENGTH


# data sets read from a file the user gives (data.path) or from a folder (data.root)
FILE_DATASETS = ("csv", "parquet", "text_csv", "text_file")
PAIRS_DATASETS = ("text_pairs",)  # a file (data.path) or a folder (data.root) of parallel text
FOLDER_DATASETS = ("image_folder", "mask_folder", "box_folder")
MASK_DATASETS = ("mask_folder",)  # images with a segmentation mask each
BOX_DATASETS = ("box_folder",)  # images with boxes around objects (VOC XML, COCO JSON, YOLO txt)
AUDIO_DATASETS = ("audio_folder", "fsdd", "audio_transcripts", "yesno", "fsdd_digits")
SPEECH_DATASETS = ("audio_transcripts", "yesno", "fsdd_digits")  # a transcript per clip: speech recognition (CTC)


class AudioConfig(Strict):
    """Sound files (``audio_folder``, ``fsdd``): read at one rate, cut at a longest duration."""

    sample_rate: int | None = Field(
        None, ge=1000, le=192000, description="Hz every clip is resampled to; null: the files' most common rate"
    )
    max_seconds: float = Field(10.0, gt=0, le=600, description="clips longer than this are cut (and counted)")
    strings: int = Field(
        2000, ge=10, le=100000, description="fsdd_digits: digit strings made for train and val (test: a quarter)"
    )
    test_speakers: list[str] | None = Field(
        None,
        description="fsdd, fsdd_digits: these speakers' recordings are the test set and no other split's "
        "(leave-speakers-out); null: the official split (takes 0-4)",
    )


SERIES_DATASETS = ("sine_series", "series_csv")


class SeriesConfig(Strict):
    """Windows cut from a numeric series: the data sets ``sine_series`` and ``series_csv``."""

    window: int = Field(32, ge=2, description="time steps the model sees per sample")
    horizon: int = Field(1, ge=1, description="next values to forecast")
    path: str | None = Field(None, description="series_csv: the CSV file (header row, one column per series)")
    target: str | None = Field(None, description="series_csv: the column to forecast")
    features: list[str] | None = Field(None, description="series_csv: input columns (default: the target alone)")


CORPUS_DATASETS = ("text_file",)


class CorpusConfig(Strict):
    """A text corpus for language modelling (the data set ``text_file``): the last
    ``data.val_fraction`` of each file is held out, and is both the val and the test split."""

    block_size: int = Field(256, ge=1, description="tokens per window: the model's context length")
    tokenizer: Literal["char", "bpe", "pretrained"] = Field(
        "char",
        description="char: the training part's characters; bpe: byte-level BPE learnt from it; "
        "pretrained: the tokeniser of data.corpus.source (model pretrained_lm sets it)",
    )
    source: str | None = Field(None, description="tokenizer pretrained: a model folder or a Hugging Face hub name")
    vocab_size: int = Field(4096, ge=257, lt=2**32, description="bpe: tokens in the vocabulary, the 256 bytes included")
    column: str = Field("text", description="a .jsonl or .csv/.tsv file: the column holding the text")
    steps_per_epoch: int = Field(
        500, ge=1, description="batches of random windows per epoch (micro-batches under train.accumulate)"
    )
    eval_windows: int = Field(
        1000, ge=1, description="held-out windows evaluated (non-overlapping, evenly spaced; all when fewer)"
    )
    cache: str | None = Field(None, description="folder of encoded corpora (token files); null: <out_dir>/.corpus")

    @model_validator(mode="after")
    def _pretrained_has_a_source(self) -> CorpusConfig:
        if self.tokenizer == "pretrained" and self.source is None:
            raise ValueError(
                "data.corpus.tokenizer pretrained reads the tokeniser of data.corpus.source: set it to a model "
                "folder or hub name (model pretrained_lm sets both from model.source)"
            )
        return self


class PairsConfig(Strict):
    """Parallel text for translation (the data set ``text_pairs``): the tokenisers are learnt
    from the train split, and the length filters apply to it alone."""

    tokenizer: Literal["bpe", "unigram"] = Field(
        "bpe", description="bpe: byte-level BPE (every string encodes, nothing is unknown); unigram: a unigram LM"
    )
    joint: bool = Field(True, description="one vocabulary learnt from both languages; false: one per language")
    vocab_size: int = Field(
        8000, ge=64, le=2**18, description="most tokens per vocabulary, 4 special tokens included (small data: fewer)"
    )
    max_length: int = Field(128, ge=1, le=4096, description="tokens kept per sentence; longer ones are cut (counted)")
    max_ratio: float = Field(
        9.0, ge=1.0, description="training pairs whose token lengths differ by more than this factor are dropped"
    )
    lowercase: bool = Field(False, description="lower-case both languages (the tokenisers do it, at serving too)")
    test: str | None = Field(
        None, description="data.root: the test files' stem (e.g. test_2017_flickr); null: test, else the first test*"
    )

    @model_validator(mode="after")
    def _bytes_fit(self) -> PairsConfig:
        if self.tokenizer == "bpe" and self.vocab_size < 260:
            raise ValueError(
                f"vocab_size {self.vocab_size}: byte-level BPE needs at least 260 (256 bytes, 4 special tokens)"
            )
        return self


class DataConfig(Strict):
    name: str = Field(
        "digits",
        description="a built-in data set, csv/parquet/text_csv/image_folder/mask_folder/box_folder, or hf:<name>",
    )
    root: str | None = Field(None, description="folder holding the data set's files")
    path: str | None = Field(
        None, description="csv/parquet/text_csv/text_pairs: the data file (CSV, TSV, JSONL, Parquet, NAME.lang)"
    )
    test_path: str | None = Field(None, description="optional file of the data set's own test split")
    download: bool = False
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    source: str | None = Field(None, description="text_pairs: the source language (file suffix) or column")
    target: str | None = Field(
        None, description="label or target column (text_csv: default 'label'); text_pairs: the target language"
    )
    task: Literal["auto", "classification", "regression"] = Field(
        "auto", description="auto: classification for text labels or few integer values, else regression"
    )
    class_weights: bool = Field(False, description="weight the loss by inverse class frequency in train")
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    series: SeriesConfig | None = Field(None, description="sine_series / series_csv: window, horizon, columns")
    image: ImageConfig = Field(default_factory=ImageConfig)
    table: TableConfig = Field(default_factory=TableConfig)
    text: TextConfig = Field(default_factory=TextConfig)
    corpus: CorpusConfig | None = Field(None, description="text_file: windows, tokeniser and evaluation")
    audio: AudioConfig | None = Field(None, description="audio_folder / fsdd: sample rate, longest clip")
    pairs: PairsConfig | None = Field(None, description="text_pairs: tokenisers, lengths and filters")
    masks: MasksConfig | None = Field(None, description="mask_folder: where the masks are, what their values mean")
    boxes: BoxesConfig | None = Field(None, description="box_folder: the annotations' format and classes")

    @model_validator(mode="after")
    def _fractions_leave_training_data(self) -> DataConfig:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("val_fraction + test_fraction must leave at least 10% for training")
        return self

    @model_validator(mode="after")
    def _files_given(self) -> DataConfig:
        if self.name in FILE_DATASETS and not self.path:
            raise ValueError(f"data set '{self.name}' reads a file: set data.path (e.g. data.path=train.csv)")
        if self.name == "audio_folder" and not (self.root or self.path):
            raise ValueError(
                "data set 'audio_folder' reads class folders (data.root) or a CSV of file,label (data.path)"
            )
        if self.name in PAIRS_DATASETS and not (self.root or self.path):
            raise ValueError(
                f"data set '{self.name}' reads parallel text: set data.root to a folder of aligned files "
                "(train.de, train.en, ...) or data.path to one file (TSV, JSONL, or NAME.de beside NAME.en)"
            )
        if self.name in FOLDER_DATASETS and not self.root:
            raise ValueError(f"data set '{self.name}' reads a folder: set data.root to it")
        return self


def _choice(what: str, name: str, choices: Any) -> str:
    # inside a validator a ValueError becomes a pydantic error carrying the key path
    try:
        return check_choice(what, name, choices)
    except ConfigError as e:
        raise ValueError(str(e)) from None


# data sections that only some data sets read: (the data sets, what they are)
SECTION_DATASETS = {
    "corpus": (CORPUS_DATASETS, "text corpus"),
    "series": (SERIES_DATASETS, "series"),
    "audio": (AUDIO_DATASETS, "sound"),
    "pairs": (PAIRS_DATASETS, "parallel text"),
    "masks": (MASK_DATASETS, "segmentation mask"),
    "boxes": (BOX_DATASETS, "object box"),
}


def check_data_sections(data: DataConfig) -> None:
    """A section the chosen data set does not read is an error, not ignored."""
    for section, (names, what) in SECTION_DATASETS.items():
        if getattr(data, section) is not None and data.name not in names:
            raise ConfigError(
                f"config: data.{section} is for the {what} data sets ({', '.join(names)}), not '{data.name}'"
            )


def corpus_of_pretrained_lm(data: DataConfig, source: Any) -> None:
    """Make a text corpus use the tokeniser of model ``pretrained_lm``'s ``source``: the model's
    embeddings only mean something for its own token ids."""
    if data.name not in CORPUS_DATASETS:
        return  # the model refuses other data in one line (models.gpt.lm_sizes)
    corpus = data.corpus or CorpusConfig()
    if "tokenizer" in corpus.model_fields_set and corpus.tokenizer != "pretrained":
        raise ConfigError(
            f"config: data.corpus.tokenizer '{corpus.tokenizer}': model pretrained_lm reads its own tokeniser "
            "(from model.source); leave data.corpus.tokenizer out"
        )
    if corpus.source not in (None, source):
        raise ConfigError(f"config: data.corpus.source '{corpus.source}' differs from model.source '{source}'")
    data.corpus = corpus.model_copy(update={"tokenizer": "pretrained", "source": source})


# --------------------------------------------------------------------------------------------
# loading
