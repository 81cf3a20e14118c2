"""The language-model corpus (data set text_file): the contiguous split per file, the
tokenisers, the memory-mapped token files and their cache, seeded windows, the metrics, and
bad input (one error line each)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_one_line_error, keel

import torchkeel as tk
from torchkeel.data.corpus_loader import WindowLoader
from torchkeel.data.describe import corpus_details, corpus_lines
from torchkeel.data.lm_tokenizer import tokenizer_from_spec, train_bpe, train_char
from torchkeel.tasks import TASKS

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = ROOT / "data" / "tinyshakespeare" / "input.txt"


def load(tmp_path: Path, path: Path, **corpus) -> tk.data.DataBundle:
    options = {"block_size": 8, "cache": str(tmp_path / "cache"), **corpus}
    return tk.data.load({"name": "text_file", "path": str(path), "corpus": options})


def decoded(bundle, part: str) -> str:
    folder = Path(bundle.spec.extra["corpus"]["cache"])
    ids = np.fromfile(folder / f"{part}.bin", dtype=np.uint16).tolist()
    return tokenizer_from_spec(bundle.spec).decode(ids)


def test_the_last_tenth_of_each_file_is_held_out_as_val_and_test(tmp_path):
    folder = tmp_path / "books"
    (folder / "b").mkdir(parents=True)
    one, two = "".join(chr(97 + i % 26) for i in range(300)), "".join(chr(65 + i % 26) for i in range(200)) + "\n"
    (folder / "one.txt").write_text(one, encoding="utf-8")
    (folder / "b" / "two.txt").write_text(two, encoding="utf-8")
    (folder / "notes.md").write_text("not part of the corpus", encoding="utf-8")
    bundle = load(tmp_path, folder)
    # int(n * 0.9) characters of each file train, the files in path order (b/two.txt first)
    assert decoded(bundle, "train") == two[:180] + one[:270]
    assert decoded(bundle, "val") == (two[180:] + one[270:]).replace("\n", "")  # not in the vocabulary: dropped
    assert bundle.val is bundle.test
    assert bundle.spec.task == "language_model" and bundle.spec.input_shape == (8,)
    assert bundle.spec.extra["vocab_size"] == 26 + 26  # the training part's characters: no "\n" (held out)
    assert bundle.spec.extra["corpus"]["val_unknown_chars"] == ["\n"]  # dropped when encoding
    assert "both the val and the test split" in " ".join(corpus_lines(corpus_details(bundle.spec)))


def test_the_vectorised_char_encoder_equals_the_per_character_one():
    char = train_char(["abc\u00e9\n"])  # the corpus encoder's path against the reference loop
    text = "abc\u00e9\nxyz \U0001f600 cab\u20ac" * 3  # unknown BMP and astral characters are dropped
    assert char.encode_array(text).tolist() == char.encode(text) == [char.index[c] for c in text if c in char.index]
    assert char.encode_array("").tolist() == [] and train_char(["a"]).encode_array("\U0001f600a").tolist() == [0]


def test_char_and_bpe_tokenisers_round_trip():
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 20
    char = train_char([text])
    assert char.decode(char.encode(text)) == text and char.vocab_size == len(set(text))
    assert char.unknown("Zebra ü") == ["Z", "b", "ü"] and char.decode(char.encode("Zebra")) == "era"  # dropped
    bpe = train_bpe([text], vocab_size=300)
    assert 256 < bpe.vocab_size <= 300
    other = "Unseen wörds, emoji 🐍 and\ttabs\r\n"
    assert bpe.decode(bpe.encode(text)) == text and bpe.decode(bpe.encode(other)) == other
    assert bpe.unknown(other) == [] and len(bpe.encode(text)) < len(text) / 2  # merges learnt


def test_bpe_corpus_trains_from_the_training_part_and_decodes_back(tmp_path):
    text = "the cat sat on the mat. " * 400
    (tmp_path / "c.txt").write_text(text, encoding="utf-8")
    bundle = load(tmp_path, tmp_path / "c.txt", tokenizer="bpe", vocab_size=300)
    cut = int(len(text) * 0.9)
    assert decoded(bundle, "train") == text[:cut] and decoded(bundle, "val") == text[cut:]
    assert bundle.spec.extra["chars_per_token"] > 2.0


def test_token_file_is_memory_mapped_and_reused_by_a_later_run(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("abcd" * 500, encoding="utf-8")
    first = load(tmp_path, path)
    tokens = first.train.tokens
    assert isinstance(tokens, np.memmap) and tokens.dtype == np.uint16 and len(tokens) == 1800
    folder = Path(first.spec.extra["corpus"]["cache"])
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    second = load(tmp_path, path)
    assert Path(second.spec.extra["corpus"]["cache"]) == folder  # the same hash: reused, not rewritten
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps
    path.write_text("abce" * 500, encoding="utf-8")
    assert Path(load(tmp_path, path).spec.extra["corpus"]["cache"]) != folder  # new text: new files
    assert not list((tmp_path / "cache").glob(".*.tmp"))  # written under a temporary name, renamed


def test_a_vocabulary_of_65536_or_more_tokens_is_stored_as_uint32(tmp_path):
    chars = "".join(chr(0x10000 + i) for i in range(70_000))  # 70,000 distinct characters, all in training
    (tmp_path / "wide.txt").write_text(chars + chars[:8000], encoding="utf-8")
    bundle = load(tmp_path, tmp_path / "wide.txt")
    assert bundle.train.tokens.dtype == np.uint32 and bundle.spec.extra["vocab_size"] > 65_535


def test_window_batches_are_a_function_of_seed_epoch_and_batch(tmp_path):
    (tmp_path / "a.txt").write_text("".join(chr(97 + i % 26) for i in range(3000)), encoding="utf-8")
    split = load(tmp_path, tmp_path / "a.txt", steps_per_epoch=6).train
    loader = WindowLoader(split, 4, seed=3)
    whole = list(loader.epoch(2))
    assert len(whole) == len(loader) == 6
    again = list(WindowLoader(split, 4, seed=3).epoch(2, start=4))  # a resume at batch 4
    for (x, y), (x2, y2) in zip(whole[4:], again, strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2)
    x, y = whole[0]
    assert x.shape == y.shape == (4, 8) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])  # y is x shifted by one token
    assert not torch.equal(x, next(iter(loader.epoch(3)))[0])  # another epoch, other windows
    assert not torch.equal(x, next(iter(WindowLoader(split, 4, seed=4).epoch(2)))[0])


def test_held_out_windows_are_fixed_non_overlapping_and_capped(tmp_path):
    (tmp_path / "a.txt").write_text("".join(chr(97 + i % 26) for i in range(2000)), encoding="utf-8")
    full = load(tmp_path, tmp_path / "a.txt")
    assert len(full.val) == (200 - 1) // 8  # every non-overlapping window of the 200 held-out tokens
    starts = [decoded(full, "val").index(tokenizer_from_spec(full.spec).decode(w.tolist())) for w in full.val.x[:3]]
    assert starts == [0, 8, 16]
    capped = load(tmp_path, tmp_path / "a.txt", eval_windows=5)
    assert len(capped.val) == 5 and torch.equal(capped.val.x[0], full.val.x[0])
    assert torch.equal(capped.val.x[-1], full.val.x[-1])  # spread over the whole held-out part


def test_jsonl_and_csv_columns_are_corpora(tmp_path):
    rows = [{"id": i, "body": f"document number {i} says hello"} for i in range(60)]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    (tmp_path / "d.csv").write_text("id,body\n" + "".join(f'{r["id"]},"{r["body"]}"\n' for r in rows))
    texts = "".join(r["body"] + "\n\n" for r in rows)
    for name in ("d.jsonl", "d.csv"):
        bundle = load(tmp_path, tmp_path / name, column="body")
        assert decoded(bundle, "train") + decoded(bundle, "val") == texts, name


def test_metrics_are_the_loss_in_other_units():
    spec = tk.data.DataSpec("t", "text", "language_model", (5,), extra={"vocab_size": 7, "chars_per_token": 2.5})
    task = TASKS["language_model"]
    g = torch.Generator().manual_seed(0)
    out, y = torch.randn(3, 5, 7, generator=g), torch.randint(0, 7, (3, 5), generator=g)
    acc = task.accumulator(spec, [], torch.device("cpu"))
    for a, b in ((0, 2), (2, 3)):  # two batches: the mean is over all 15 positions
        acc.update(out[a:b], y[a:b], task.build_loss("cross_entropy", spec)(out[a:b], y[a:b]))
    m = acc.compute()
    loss = F.cross_entropy(out.view(-1, 7), y.view(-1)).item()
    assert m["loss"] == pytest.approx(loss) and m["perplexity"] == pytest.approx(math.exp(loss))
    assert m["bits_per_token"] == pytest.approx(loss / math.log(2))
    assert m["bits_per_char"] == pytest.approx(loss / math.log(2) / 2.5)
    assert task.output_size(spec) == 7 and task.key_metric == "loss" and "loss" in task.lower_is_better


def _write(tmp_path: Path, case: str) -> tuple[str, str]:
    """(data.path, the fragment its error line must carry) for a bad input."""
    if case == "empty":
        (tmp_path / "e.txt").write_text("")
        return "e.txt", "empty"
    if case == "nul":
        (tmp_path / "b.txt").write_bytes(b"abc\x00\x01\x02" * 100)
        return "b.txt", "binary"
    if case == "not utf-8":
        (tmp_path / "b.txt").write_bytes(bytes(range(128, 256)) * 10)
        return "b.txt", "not UTF-8"
    if case == "no txt files":
        (tmp_path / "docs").mkdir()
        (tmp_path / "docs" / "a.md").write_text("words")
        return "docs", "no .txt files"
    if case == "block too long":
        (tmp_path / "s.txt").write_text("abcdefghij" * 20)  # 20 held-out characters
        return "s.txt", "held-out part (20 tokens"
    if case == "jsonl column":
        (tmp_path / "d.jsonl").write_text('{"body": "hi"}\n')
        return "d.jsonl", "no column 'text' (it has: body)"
    (tmp_path / "d.csv").write_text("id,body\n1,hi\n")
    return "d.csv", "no column 'text' (it has: id, body)"


BAD = ["empty", "nul", "not utf-8", "no txt files", "block too long", "jsonl column", "csv column"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_a_one_line_data_error(tmp_path, case):
    path, fragment = _write(tmp_path, case)
    with pytest.raises(tk.errors.DataError) as e:
        load(tmp_path, tmp_path / path, block_size=32)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_bad_input_on_the_command_line_is_one_error_line_and_exit_2(tmp_path):
    # the CLI prints any DataError as one line (each case's message is checked above)
    path, fragment = _write(tmp_path, "not utf-8")
    proc = keel("data", "text_file", "--set", f"data.path={path}", cwd=tmp_path)
    assert_one_line_error(proc, fragment)


@pytest.mark.parametrize("case", [c if c == "empty" else pytest.param(c, marks=pytest.mark.slow) for c in BAD])
def test_keel_train_on_bad_text_is_one_error_line_and_exit_2(tmp_path, case):
    path, fragment = _write(tmp_path, case)
    corpus = ["data.corpus.block_size=32"] if case == "block too long" else []
    sets = [a for s in [f"data.path={path}", *corpus] for a in ("--set", s)]
    proc = keel("train", "--data", "text_file", *sets, "--set", "model.name=gpt", cwd=tmp_path)
    assert_one_line_error(proc, fragment)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").glob("*/model.safetensors"))


@pytest.mark.realdata
def test_tiny_shakespeare_is_65_characters_split_as_nanogpt_splits_it(tmp_path):
    if not SHAKESPEARE.is_file():
        pytest.skip("data/tinyshakespeare/input.txt is not there")
    bundle = load(tmp_path, SHAKESPEARE, block_size=64)
    corpus = bundle.spec.extra["corpus"]
    # nanoGPT's prepare.py: 1,115,394 characters, 65 distinct, the first 90% train
    assert bundle.spec.extra["vocab_size"] == 65 and corpus["val_unknown_chars"] == []
    assert (corpus["train_tokens"], corpus["val_tokens"]) == (1_003_854, 111_540)
    assert len(bundle.val) == 1000  # eval_windows' default cap of the 1,742 non-overlapping windows
