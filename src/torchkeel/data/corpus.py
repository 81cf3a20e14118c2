"""The data set ``text_file``: a corpus encoded once into token files, memory-mapped to train.

Split: the last ``data.val_fraction`` of each file's characters is held out (nanoGPT's
shakespeare_char prepare.py holds out the last 10% of its one file), never a random split of
overlapping windows; that part is both the val and the test split. The tokeniser is learnt
from the training part alone, or is a pretrained model's own (``tokenizer: pretrained``).

Cache: ``<cache>/<hash>/`` holds train.bin and val.bin (uint16 token ids when the vocabulary
has fewer than 65,536 tokens, else uint32) and corpus.json (the tokeniser and the counts);
the hash covers the files' bytes and every setting that changes the tokens (a pretrained
tokeniser's source and a hash of its vocabulary), so a later run on the same text reuses the
files. The folder is written under a temporary name and renamed into place: a run that is
stopped half-way leaves no half-written corpus behind.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from torchkeel.config_data import CORPUS_DATASETS, CorpusConfig, DataConfig
from torchkeel.data.corpus_files import TextSource, content_hash, count_chars, cut, sources
from torchkeel.data.lm_tokenizer import Tokenizer, tokenizer_from_dict, train_bpe, train_char
from torchkeel.errors import DataError

FORMAT = "torchkeel-corpus-1"
META = "corpus.json"
DEFAULT_CACHE = "runs/.corpus"  # <out_dir>/.corpus: run_model.prepare_data passes the run's


@dataclass
class EncodedCorpus:
    folder: Path
    meta: dict[str, Any]

    @property
    def tokenizer(self) -> Tokenizer:
        return tokenizer_from_dict(self.meta["tokenizer"])

    def tokens(self, part: str) -> np.memmap:
        """The token ids of "train" or "val", memory-mapped read-only (nothing is read yet)."""
        return np.memmap(self.folder / f"{part}.bin", dtype=np.dtype(self.meta["dtype"]), mode="r")


def with_cache(cfg: DataConfig, out_dir: str | Path) -> DataConfig:
    """The data config, its corpus cache beside the runs (``<out_dir>/.corpus``) unless it
    names one; other data sets' configs as they are."""
    if cfg.name not in CORPUS_DATASETS:
        return cfg
    corpus = cfg.corpus or CorpusConfig()
    if corpus.cache is None:
        corpus = corpus.model_copy(update={"cache": str(Path(out_dir) / ".corpus")})
    return cfg.model_copy(update={"corpus": corpus})


def encoded_corpus(cfg: DataConfig, corpus: CorpusConfig, fitted: dict[str, Any] | None = None) -> EncodedCorpus:
    """The corpus of ``data.path`` encoded in the cache, writing it when it is not there yet.
    ``fitted``: a trained run's tokeniser, which a rebuilt corpus must use."""
    if not 0.0 < cfg.val_fraction < 1.0:
        raise DataError("data.val_fraction: a text corpus needs a held-out part (e.g. 0.1: the last 10% of each file)")
    files = sources(cfg.path, corpus.column)
    given = tokenizer_from_dict(fitted) if fitted is not None else _pretrained(corpus)
    settings = _settings(cfg, corpus, given)
    key = content_hash(files, json.dumps(settings, sort_keys=True))
    cache = Path(corpus.cache or DEFAULT_CACHE)
    found = _read(cache / key)
    if found is not None and (fitted is None or found.meta["tokenizer"] == fitted):
        return found
    if fitted is not None:  # the run's tokeniser differs from what this text would learn now
        key = content_hash(files, json.dumps({**settings, "fitted": fitted}, sort_keys=True))
        found = _read(cache / key)
        if found is not None:
            return found
    return _write(cache, key, files, cfg.val_fraction, corpus, given)


def _pretrained(corpus: CorpusConfig) -> Tokenizer | None:
    """``tokenizer: pretrained``: the tokeniser of ``data.corpus.source``; None for the others."""
    if corpus.tokenizer != "pretrained":
        return None
    from torchkeel.data.pretrained_lm_tokenizer import PretrainedLMTokenizer

    return PretrainedLMTokenizer.load(str(corpus.source))


def _settings(cfg: DataConfig, corpus: CorpusConfig, given: Tokenizer | None) -> dict[str, Any]:
    """What shapes the tokens, for the cache key: a pretrained tokeniser by its source and by a
    hash of its vocabulary and rules, so another tokeniser never reads these token files."""
    settings: dict[str, Any] = {"format": FORMAT, "val_fraction": cfg.val_fraction, "tokenizer": corpus.tokenizer}
    if corpus.tokenizer == "bpe":
        settings["vocab_size"] = corpus.vocab_size
    fingerprint = getattr(given, "fingerprint", None)
    if fingerprint is not None:
        settings.update(tokenizer="pretrained", source=given.source, fingerprint=fingerprint())
    return settings


def _read(folder: Path) -> EncodedCorpus | None:
    try:
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return EncodedCorpus(folder, meta) if meta.get("format") == FORMAT else None


def _write(
    cache: Path, key: str, files: list[TextSource], val_fraction: float, corpus: CorpusConfig, given: Tokenizer | None
) -> EncodedCorpus:
    """Encode the files into the cache: with ``given`` (a trained run's or a pretrained model's
    tokeniser), else with one learnt from the training part."""
    counts = [count_chars(source) for source in files]
    if sum(counts) == 0:
        raise DataError(f"data.path: {files[0].path if len(files) == 1 else 'every file'} is empty: there is no text")
    cuts = [int(n * (1.0 - val_fraction)) for n in counts]  # the first (1 - f) of each file trains

    def train_text():
        for source, stop in zip(files, cuts, strict=True):
            yield from cut(source, 0, stop)

    def val_text():
        for source, start, n in zip(files, cuts, counts, strict=True):
            yield from cut(source, start, n)

    if given is not None:
        tokenizer = given
    elif corpus.tokenizer == "bpe":
        tokenizer = train_bpe(train_text(), corpus.vocab_size)
    else:
        tokenizer = train_char(train_text())
    dtype = np.uint16 if tokenizer.vocab_size < 2**16 else np.uint32
    tmp = cache / f".{key}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        tmp.mkdir(parents=True)
        train = _encode(tokenizer, train_text(), tmp / "train.bin", dtype)
        val = _encode(tokenizer, val_text(), tmp / "val.bin", dtype)
        meta = {
            "format": FORMAT,
            "dtype": np.dtype(dtype).name,
            "tokenizer": tokenizer.to_dict(),
            "files": [str(s.path) for s in files],
            "train_chars": sum(cuts),
            "val_chars": sum(counts) - sum(cuts),
            "train_tokens": train["tokens"],
            "val_tokens": val["tokens"],
            "val_fraction": val_fraction,
            "val_unknown_chars": val["unknown"],  # char-level: held-out characters the vocabulary lacks (dropped)
        }
        (tmp / META).write_text(json.dumps(meta), encoding="utf-8")
        return _publish(tmp, cache / key)
    except OSError as e:
        raise DataError(f"cannot write the encoded corpus in {cache}: {e.strerror}; set data.corpus.cache") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _encode(tokenizer: Tokenizer, pieces: Any, path: Path, dtype: Any) -> dict[str, Any]:
    """Encode the pieces into a flat token file; the count of tokens and of unknown characters."""
    tokens, unknown = 0, set()
    with open(path, "wb") as f:
        for piece in pieces:
            unknown.update(tokenizer.unknown(piece))
            ids = tokenizer.encode_array(piece).astype(dtype)
            f.write(ids.tobytes())
            tokens += len(ids)
        f.flush()
        os.fsync(f.fileno())
    return {"tokens": tokens, "unknown": sorted(unknown)}


def _publish(tmp: Path, folder: Path) -> EncodedCorpus:
    """Rename the finished folder into place; a run that finished first wins (same bytes)."""
    try:
        os.rename(tmp, folder)
    except OSError:
        if _read(folder) is None:
            raise
    found = _read(folder)
    assert found is not None
    return found
