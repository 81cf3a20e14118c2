"""Text: CSV/TSV/JSONL reading, the word tokeniser, BPE and WordPiece through Hugging Face
tokenizers, padding and truncation, the stored tokeniser, and the embedding_bag model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import keel
from make_data import TOPICS, news_rows, write_rows

from torchkeel.config import DataConfig, TextConfig
from torchkeel.data import load
from torchkeel.data.tokenize import (
    PAD_INDEX,
    UNK_INDEX,
    SubwordTokenizer,
    WordTokenizer,
    encode_texts,
    tokenizer_from_dict,
    train_tokenizer,
)
from torchkeel.errors import DataError, DataWarning
from torchkeel.models import build


@pytest.fixture(scope="module")
def news(tmp_path_factory) -> Path:
    return write_rows(tmp_path_factory.mktemp("text") / "news.csv", news_rows(240))


def _cfg(path: Path, **text) -> DataConfig:
    return DataConfig(name="text_csv", path=str(path), text=text)


def test_word_tokeniser_vocabulary_from_counts():
    texts = ["The cat sat.", "the cat ran!", "A dog sat"]
    tok = WordTokenizer.train(texts, vocab_size=6, min_freq=1)
    assert tok.vocab[:2] == ["<pad>", "<unk>"]
    assert tok.vocab[2:] == ["cat", "sat", "the", "!"]  # by count, ties by the token; cut at vocab_size
    assert tok.tokens("The CAT, sat.") == ["the", "cat", ",", "sat", "."]
    assert tok.encode_batch(["the dog sat"]) == [[4, UNK_INDEX, 3]]
    assert WordTokenizer.train(texts, 100, min_freq=2).vocab == ["<pad>", "<unk>", "cat", "sat", "the"]
    assert tokenizer_from_dict(tok.to_dict()).encode_batch(["the dog sat"]) == tok.encode_batch(["the dog sat"])


@pytest.mark.parametrize("kind", ["bpe", "wordpiece"])
def test_subword_tokenisers(kind: str):
    texts = [r["text"] for r in news_rows(120)]
    tok = train_tokenizer(texts, TextConfig(tokenizer=kind, vocab_size=80))
    assert isinstance(tok, SubwordTokenizer) and tok.vocab_size <= 80
    hf = tok.tokenizer
    assert hf.token_to_id("<pad>") == PAD_INDEX and hf.token_to_id("<unk>") == UNK_INDEX
    assert tok.tokens("BAKE Bread") == tok.tokens("bake bread")  # lower-cased
    again = tokenizer_from_dict(tok.to_dict())  # the JSON stored in the DataSpec
    sample = ["Bake the cheese bread", "zzz qqq unseen"]
    assert again.encode_batch(sample) == tok.encode_batch(sample)
    assert UNK_INDEX in tok.encode_batch(["§§§"])[0]


def test_padding_truncation_and_lengths():
    tok = WordTokenizer(["<pad>", "<unk>", "a", "b"])
    ids, truncated = encode_texts(tok, ["a b a b a", "b", ""], 4)
    assert ids.dtype == torch.int64 and ids.tolist() == [[2, 3, 2, 3], [3, 0, 0, 0], [0, 0, 0, 0]]
    assert truncated == 1 and (ids != PAD_INDEX).sum(1).tolist() == [4, 1, 0]


def test_text_csv_bundle(news: Path):
    data = load(_cfg(news, max_length=12), seed=0)
    spec = data.spec
    assert spec.kind == "text" and spec.classes == sorted(TOPICS) and spec.extra["pad_index"] == 0
    assert spec.input_shape == (12,) and data.train.x.shape[1] == 12 and data.test.x.dtype == torch.int64
    assert spec.extra["vocab_size"] == len(spec.extra["tokenizer"]["vocab"]) and spec.extra["truncated"] > 0
    for split in data.splits().values():
        assert torch.bincount(split.y, minlength=3).min() > 0  # stratified
        lengths = (split.x != 0).sum(1)
        assert lengths.min() > 0 and all(bool((row[n:] == 0).all()) for row, n in zip(split.x, lengths, strict=True))


def test_vocabulary_comes_from_the_train_split_only(tmp_path: Path):
    rows = news_rows(200)
    rows.append({"text": "xylophone", "label": "tech"})  # one text holds the only 'xylophone'
    path = write_rows(tmp_path / "n.csv", rows)
    seen = []
    for seed in range(6):
        data = load(_cfg(path), seed=seed)
        texts_in_train = "xylophone" in data.spec.extra["tokenizer"]["vocab"]
        xylophone_row = any((row != 0).sum() == 1 for row in data.train.x)
        assert texts_in_train == xylophone_row
        seen.append(texts_in_train)
    assert any(seen) and not all(seen)


@pytest.mark.parametrize("suffix", ["tsv", "jsonl"])
def test_tsv_and_jsonl(news: Path, tmp_path: Path, suffix: str):
    path = write_rows(tmp_path / f"news.{suffix}", news_rows(240))
    other, reference = load(_cfg(path), seed=0), load(_cfg(news), seed=0)
    assert torch.equal(other.train.x, reference.train.x) and torch.equal(other.test.y, reference.test.y)


def test_several_text_columns_and_own_test_file(tmp_path: Path):
    rows = [
        {"title": r["text"].split()[0], "body": " ".join(r["text"].split()[1:]), "topic": r["label"]}
        for r in news_rows()
    ]
    path = write_rows(tmp_path / "two.csv", rows)
    test = write_rows(tmp_path / "test.csv", rows[:30])
    data = load(
        DataConfig(
            name="text_csv", path=str(path), test_path=str(test), target="topic", text={"column": ["title", "body"]}
        )
    )
    assert len(data.test) == 30 and data.spec.extra["text_columns"] == ["title", "body"]


def test_non_utf8_text_is_replaced_with_a_warning(tmp_path: Path):
    path = tmp_path / "latin.csv"
    path.write_bytes(("text,label\n" + "café au lait,a\nthé vert,b\ncafé noir,a\nthé noir,b\n" * 5).encode("latin-1"))
    with pytest.warns(DataWarning, match="not valid UTF-8"):
        data = load(DataConfig(name="text_csv", path=str(path), val_fraction=0.0, test_fraction=0.25))
    assert data.spec.num_classes == 2


@pytest.mark.parametrize(
    ("text", "target", "message"),
    [
        ("txt", None, "data.text.column: no column 'txt'.*did you mean 'text'"),
        ("text", "labels", "did you mean 'label'"),
    ],
)
def test_misspelled_columns(news: Path, text: str, target: str | None, message: str):
    with pytest.raises(DataError, match=message):
        load(DataConfig(name="text_csv", path=str(news), target=target, text={"column": text}))


def test_hf_datasets_give_a_clear_error_here():
    with pytest.raises(DataError, match="hf:ag_news"):
        load(DataConfig(name="hf:ag_news"), seed=0)


def test_embedding_bag_is_the_mean_of_non_pad_embeddings(news: Path):
    data = load(_cfg(news), seed=0)
    torch.manual_seed(0)
    model = build({"name": "embedding_bag", "embed_dim": 8}, data.spec)
    x = data.train.x[:5]
    table = model.embed.weight
    means = torch.stack([table[row[row != 0]].mean(0) for row in x])  # torch reference
    torch.testing.assert_close(model.head(means), model(x))
    empty = torch.zeros(1, x.shape[1], dtype=torch.int64)
    torch.testing.assert_close(model(empty), model.head.bias[None])  # an empty text is the zero vector


def test_a_rebuilt_split_reuses_the_fitted_tokeniser(news: Path):
    cfg = _cfg(news, tokenizer="wordpiece", vocab_size=90)
    first = load(cfg, seed=0)
    again = load(cfg, seed=0, fitted=first.spec)  # what keel eval and a resumed run do
    assert again.spec.extra["tokenizer"] == first.spec.extra["tokenizer"]
    for name in ("train", "val", "test"):
        assert torch.equal(getattr(again, name).x, getattr(first, name).x)


def test_the_run_says_how_many_texts_were_cut(tmp_path: Path):
    rows = [
        {"text": " ".join(["word"] * n) + (" goal" if n % 2 else " stock"), "label": "sport" if n % 2 else "business"}
        for n in range(1, 41)
    ]  # fmt: skip; n + 1 words
    write_rows(tmp_path / "long.csv", rows)
    args = ["train", "--data", "text_csv", "--set", "data.path=long.csv", "--set", "data.text.max_length=10"]
    proc = keel(*args, "--set", "data.text.ngrams=1", "--epochs", "1", "--set", "eval.report=false", "-q", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    said = " ".join(proc.stdout.split())  # as one line, however the terminal wrapped it
    assert "31 of 40 texts are longer than data.text.max_length (10 tokens) and were cut" in said
