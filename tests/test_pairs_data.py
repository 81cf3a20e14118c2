"""text_pairs: parallel text from a folder of aligned files, NAME.de beside NAME.en, TSV/CSV,
JSONL and gzip; the x/y contract of translation, the tokenisers stored in the spec, the grouped
split, truncation, the filters and one clear error per bad input."""

from __future__ import annotations

import csv
import gzip
import json
import unicodedata
from pathlib import Path

import pytest
import torch

from torchkeel.config import DataConfig, load_config
from torchkeel.data import load
from torchkeel.data.pairs import group_keys
from torchkeel.data.tokenize import tokenizer_from_dict
from torchkeel.errors import ConfigError, DataError

MULTI30K = Path(__file__).resolve().parents[1] / "data" / "multi30k"

SUBJECTS = [("Der Hund", "The dog"), ("Die Katze", "The cat"), ("Ein Mädchen", "A girl"), ("Zwei Männer", "Two men")]
VERBS = [("läuft über die Straße.", "runs across the street."), ("schläft im Grünen!", "sleeps in the green!")]
PLACES = [("", ""), (" Schön, oder?", " Nice, isn't it?"), (' Er sagt: "Grüß Gott".', ' He says: "Hello".')]


def corpus(n: int = 60) -> list[tuple[str, str]]:
    """``n`` invented German-English pairs; every fourth repeats an earlier source sentence."""
    pairs = []
    for i in range(n):
        j = i // 4 if i % 4 == 3 else i  # a copy of an earlier sentence
        s, v, p = SUBJECTS[j % 4], VERBS[(j // 4) % 2], PLACES[(j // 8) % 3]
        pairs.append((f"{s[0]} {v[0]}{p[0]} ({j})", f"{s[1]} {v[1]}{p[1]} ({j})"))
    return pairs


def write_aligned(folder: Path, stem: str, pairs: list[tuple[str, str]], gz: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for lang, side in (("de", 0), ("en", 1)):
        text = "".join(p[side] + "\n" for p in pairs).encode()
        path = folder / f"{stem}.{lang}{'.gz' if gz else ''}"
        path.write_bytes(gzip.compress(text, mtime=0) if gz else text)
    return folder / f"{stem}.de{'.gz' if gz else ''}"


def pairs_cfg(root: Path | None = None, path: Path | None = None, **pairs) -> DataConfig:
    return DataConfig(
        name="text_pairs",
        root=str(root) if root else None,
        path=str(path) if path else None,
        source="de",
        target="en",
        pairs=pairs or None,
    )


def same_tensors(a, b) -> None:
    for name in ("train", "val", "test"):
        x, y = a.splits()[name], b.splits()[name]
        assert torch.equal(x.x, y.x) and torch.equal(x.y, y.y), name


def test_every_file_format_gives_the_same_pairs(tmp_path: Path):
    pairs = corpus()
    tsv = tmp_path / "header.tsv"
    tsv.write_text("id\tde\ten\n" + "".join(f"{i}\t{s}\t{t}\n" for i, (s, t) in enumerate(pairs)), encoding="utf-8")
    bare = tmp_path / "tatoeba.txt"  # Tatoeba/Anki: source, target, attribution; no header
    bare.write_text("".join(f"{s}\t{t}\tCC-BY 2.0 (France) #{i}\n" for i, (s, t) in enumerate(pairs)))
    with open(tmp_path / "quoted.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("en", "de"), *((t, s) for s, t in pairs)])  # columns by name, quoted cells
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text("".join(json.dumps({"de": s, "en": t, "n": 1}, ensure_ascii=False) + "\n" for s, t in pairs))
    named = write_aligned(tmp_path / "named", "corpus", pairs)
    zipped = write_aligned(tmp_path / "zipped", "corpus", pairs, gz=True)
    first = load(pairs_cfg(path=tsv), seed=3)
    assert first.spec.extra["source"] == "de" and first.spec.extra["target"] == "en"
    for path in (bare, tmp_path / "quoted.csv", jsonl, named, zipped, named.with_suffix(".en")):
        other = load(pairs_cfg(path=path), seed=3)
        same_tensors(first, other)
        assert other.spec.extra["tokenizer"] == first.spec.extra["tokenizer"]  # BPE training is deterministic
    assert sum(len(s) for s in first.splits().values()) == 60
    assert not torch.equal(first.test.x, load(pairs_cfg(path=tsv), seed=4).test.x)


def test_a_tsv_line_is_split_at_its_tabs_only(tmp_path: Path):
    rows = ['"Geh!", sagte er.\t"Go!" he said.', "", "Hallo\tHello", '"Lauf\t"Run', "Leer\t ", "\t", "x\ty"]
    path = _write(tmp_path / "q.tsv", "\r\n".join(rows) + "\r\n")
    data = load(DataConfig(name="text_pairs", path=str(path), val_fraction=0.0, test_fraction=0.0), seed=0)
    tok = tokenizer_from_dict(data.spec.extra["target_tokenizer"])
    targets = sorted(tok.decode(row.tolist()) for row in data.train.y)
    assert targets == ['"Go!" he said.', '"Run', "Hello", "y"] and data.val is None and len(data.test) == 0
    assert data.spec.extra["dropped"]["empty_side"] == 1  # "Leer"; a line of blanks is no pair


def test_lowercase(tmp_path: Path):
    data = load(pairs_cfg(path=write_aligned(tmp_path, "c", corpus()), lowercase=True), seed=0)
    tok = tokenizer_from_dict(data.spec.extra["tokenizer"])
    assert tok.encode_batch(["Der HUND"]) == tok.encode_batch(["der hund"])
    assert tok.decode(data.train.y[0].tolist()) == tok.decode(data.train.y[0].tolist()).lower()


def test_a_folder_keeps_its_splits_with_or_without_gzip(tmp_path: Path):
    pairs = corpus()
    for gz, folder in ((False, tmp_path / "plain"), (True, tmp_path / "gz")):
        write_aligned(folder, "train", pairs[:40], gz)
        write_aligned(folder, "dev", pairs[40:50], gz)
        write_aligned(folder, "test_2017", pairs[55:], gz)
        write_aligned(folder, "test_2016", pairs[50:55], gz)
    (tmp_path / "plain" / "README.md").write_text("not a language\n")
    plain, zipped = load(pairs_cfg(tmp_path / "plain"), seed=0), load(pairs_cfg(tmp_path / "gz"), seed=1)
    same_tensors(plain, zipped)  # given splits: the seed does not matter
    assert [len(s) for s in plain.splits().values()] == [40, 10, 5]  # test: the first test* stem
    chosen = load(pairs_cfg(tmp_path / "plain", test="test_2017"), seed=0)
    assert len(chosen.test) == 5 and not torch.equal(chosen.test.y, plain.test.y)
    tok = tokenizer_from_dict(plain.spec.extra["target_tokenizer"])
    assert tok.decode(plain.test.y[0].tolist()) == pairs[50][1]


def test_the_translation_contract(tmp_path: Path):
    pairs = corpus()
    data = load(pairs_cfg(path=write_aligned(tmp_path, "c", pairs)), seed=0)
    spec, extra = data.spec, data.spec.extra
    assert (spec.name, spec.kind, spec.task, spec.input_shape) == ("text_pairs", "text", "translation", (128,))
    assert extra["specials"] == {"pad": 0, "unk": 1, "bos": 2, "eos": 3} and extra["joint"] is True
    assert extra["tokenizer"] == extra["target_tokenizer"] and extra["vocab_size"] == extra["target_vocab_size"]
    assert extra["max_length"] == 128 and extra["truncated_sentences"] == {"train": 0, "val": 0, "test": 0}
    assert extra["dropped"] == {"empty_side": 0, "length_ratio": 0}
    tok = tokenizer_from_dict(json.loads(json.dumps(extra["tokenizer"])))  # as stored in data.json
    hf = tok.tokenizer
    assert [hf.id_to_token(i) for i in range(4)] == ["<pad>", "<unk>", "<s>", "</s>"]
    assert tok.vocab_size == extra["vocab_size"] < 8000  # the trainer ends smaller on 60 pairs
    by_source = dict(pairs)
    for split in data.splits().values():
        assert split.x.dtype == torch.int64 and split.y.dtype == torch.int64
        sources = [tok.decode(row.tolist()) for row in split.x]
        ids = tok.encode_batch(sources)
        assert split.x.shape[1] == max(len(i) for i in ids)  # as wide as the longest source
        for row, target, seq, text in zip(split.x, split.y, ids, sources, strict=True):
            assert row.tolist() == seq + [0] * (len(row) - len(seq))  # right-padded, no <s> or </s>
            body = tok.encode_batch([by_source[text]])[0]
            assert target.tolist()[: len(body) + 2] == [2, *body, 3] and not target[len(body) + 2 :].any()
            assert tok.decode(target.tolist()) == by_source[text]
        assert ((split.y != 0).sum(1) - 1).max() == split.y.shape[1] - 1  # the longest target fills y


def test_byte_level_bpe_round_trips_any_text(tmp_path: Path):
    data = load(pairs_cfg(path=write_aligned(tmp_path, "c", corpus())), seed=0)
    tok = tokenizer_from_dict(data.spec.extra["tokenizer"])
    texts = [
        "Größere Äpfel, Öl & „Grüße“ — schön! ß  zwei  Leerzeichen…",
        "Ça coûte 5 € (ok?)",
        "日本語 🙂",
        "</s> <pad>",
    ]
    ids = tok.encode_batch(texts)
    assert all(1 not in seq and min(seq) > 3 for seq in ids)  # nothing unknown; "</s>" in a text is text
    assert [tok.decode(seq) for seq in ids] == texts
    decomposed = unicodedata.normalize("NFD", texts[0])
    assert tok.encode_batch([decomposed]) == ids[:1] and tok.decode([2, *ids[0], 3, 0, 0]) == texts[0]


def test_separate_vocabularies_and_unigram(tmp_path: Path):
    path = write_aligned(tmp_path, "c", corpus())
    joint = load(pairs_cfg(path=path), seed=0)
    apart = load(pairs_cfg(path=path, joint=False), seed=0)
    source, target = (tokenizer_from_dict(apart.spec.extra[k]) for k in ("tokenizer", "target_tokenizer"))
    assert apart.spec.extra["joint"] is False and apart.spec.extra["tokenizer"] != apart.spec.extra["target_tokenizer"]
    assert source.vocab_size == apart.spec.extra["vocab_size"] and target.vocab_size < joint.spec.extra["vocab_size"]
    assert "Mädchen" in source.decode(apart.train.x.flatten().tolist())
    assert target.decode(apart.test.y[0].tolist()) == tokenizer_from_dict(joint.spec.extra["tokenizer"]).decode(
        joint.test.y[0].tolist()
    )
    uni = load(pairs_cfg(path=path, tokenizer="unigram", vocab_size=120), seed=0)
    tok = tokenizer_from_dict(uni.spec.extra["tokenizer"])
    assert uni.spec.extra["tokenizer"]["type"] == "unigram" and tok.vocab_size <= 120
    assert [tok.tokenizer.id_to_token(i) for i in range(4)] == ["<pad>", "<unk>", "<s>", "</s>"]
    row = uni.train.x[0]
    text = tok.decode(row.tolist())
    assert text in dict(corpus()) and tok.encode_batch([text])[0] == row[row != 0].tolist()
    assert tok.encode_batch(["Qxyzw"])[0].count(1) >= 1  # characters never seen are <unk>


def test_a_fitted_run_reuses_its_tokenisers(tmp_path: Path):
    from torchkeel.data.pairs import load_text_pairs

    cfg = pairs_cfg(path=write_aligned(tmp_path, "c", corpus()), tokenizer="unigram", vocab_size=120)
    first = load_text_pairs(cfg, 0)
    again = load_text_pairs(cfg, 0, tokenizers=(first.spec.extra["tokenizer"], first.spec.extra["target_tokenizer"]))
    same_tensors(first, again)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_split_keeps_copies_of_a_source_together(tmp_path: Path, seed: int):
    many = [(f"Satz {i % 17}.", f"Sentence {i % 17}, take {i}.") for i in range(120)]  # 17 sources, 7 copies each
    path = tmp_path / "p.tsv"
    path.write_text("".join(f"{s}\t{t}\n" for s, t in many))
    cfg = DataConfig(name="text_pairs", path=str(path), val_fraction=0.2, test_fraction=0.2)
    data = load(cfg, seed=seed)
    tok = tokenizer_from_dict(data.spec.extra["tokenizer"])

    def sources(split) -> set[str]:
        return set(group_keys([tok.decode(row.tolist()) for row in split.x], False))

    train, val, test = (sources(s) for s in (data.train, data.val, data.test))
    assert val and test and not train & val and not train & test and not val & test
    assert sum(len(s) for s in data.splits().values()) == 120
    assert torch.equal(load(cfg, seed=seed).test.y, data.test.y)
    assert data.spec.extra["source"] == "source" and data.spec.extra["target"] == "target"  # no header, no names
    assert group_keys(["  Ein  Hund\t", "Ein Hund"], False) == ["Ein Hund"] * 2


def test_long_sentences_are_cut_and_counted(tmp_path: Path, capsys):
    path = write_aligned(tmp_path, "c", corpus())
    data = load(pairs_cfg(path=path, max_length=6), seed=0)
    truncated = data.spec.extra["truncated_sentences"]
    assert truncated["train"] > 0 and set(truncated) == {"train", "val", "test"}
    assert "cut" in capsys.readouterr().err
    for split in data.splits().values():
        assert split.x.shape[1] <= 6 and split.y.shape[1] <= 8
        assert ((split.y == 3).sum(1) == 1).all() and (split.y[:, 0] == 2).all()
    assert data.spec.input_shape == (6,)


def test_empty_sides_and_unequal_lengths_are_left_out(tmp_path: Path, capsys):
    pairs = corpus(40)
    train = [*pairs[:30], ("", "Nothing."), ("Etwas.", " "), ("Kurz.", "A far longer sentence " * 6)]
    write_aligned(tmp_path, "train", train)
    write_aligned(tmp_path, "val", pairs[30:35])
    write_aligned(tmp_path, "test", [*pairs[35:], ("", "x"), ("Kurz.", "A far longer sentence " * 6)])
    data = load(pairs_cfg(tmp_path), seed=0)
    assert data.spec.extra["dropped"] == {"empty_side": 3, "length_ratio": 1}
    assert [len(s) for s in data.splits().values()] == [30, 5, 6]  # the ratio filter spares val and test
    err = capsys.readouterr().err
    assert f"3 pairs with an empty side left out (first: {tmp_path / 'train.de'}:31)" in err
    assert "1 training pairs left out" in err and "data.pairs.max_ratio" in err
    kept = load(pairs_cfg(tmp_path, max_ratio=100), seed=0)
    assert kept.spec.extra["dropped"]["length_ratio"] == 0 and len(kept.train) == 31


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


UNIGRAM_64 = {"tokenizer": "unigram", "vocab_size": 64}


def _bad_inputs(tmp: Path) -> dict[str, tuple[DataConfig, list[str]]]:
    _write(tmp / "short" / "train.de", "a\n" * 5)
    _write(tmp / "short" / "train.en", "a\n" * 4)
    _write(tmp / "langs" / "train.fr", "a\n")
    _write(tmp / "langs" / "train.en", "a\n")
    _write(tmp / "notrain" / "val.de", "a\n")
    _write(tmp / "notrain" / "val.en", "a\n")
    empty = "".join(f"x{i}\t\n" for i in range(5))
    ratio = "".join(f"x\t{'y ' * 50}\n" for i in range(5))

    def file(name: str, text: str | bytes, **kw) -> DataConfig:
        return DataConfig(name="text_pairs", path=str(_write(tmp / name, text)), **kw)

    return {
        "misaligned": (
            pairs_cfg(tmp / "short"),
            ["train.de has 5 lines but train.en 4", "lines after 4 have no partner"],
        ),
        "one column": (file("one.tsv", "Hallo\nWelt\n"), ["one.tsv", "has one column"]),
        "not utf-8": (file("bad.tsv", b"a\tb\nc\td\n\xff\xfe\tx\n"), ["bad.tsv", "line 3 is not UTF-8"]),
        "not utf-8 gz": (
            file("bad.tsv.gz", gzip.compress(b"a\tb\n\xe4\tx\n")),
            ["bad.tsv.gz", "line 2 is not UTF-8"],
        ),
        "languages": (pairs_cfg(tmp / "langs"), ["data.source 'de'", "no train.de", "en, fr"]),
        "unset languages": (DataConfig(name="text_pairs", root=str(tmp / "langs")), ["data.source", "en, fr"]),
        "no train": (pairs_cfg(tmp / "notrain"), ["no train files", "val.de"]),
        "no partner": (file("x/c.de", "a\n", source="de", target="en"), ["no partner file c.en"]),
        "all empty": (file("empty.tsv", empty), ["every training pair has an empty side", "empty.tsv:1"]),
        "all unequal": (file("ratio.tsv", ratio), ["no training pair is left", "data.pairs.max_ratio"]),
        "short row": (file("rows.tsv", "a\tb\tc\nd\te\n", source="a", target="c"), ["line 2 has 2 column(s)"]),
        "jsonl keys": (file("k.jsonl", '{"de": "a", "fr": "b"}\n', source="de", target="en"), ["no key 'en'"]),
        "both": (pairs_cfg(tmp / "short", tmp / "x.tsv"), ["not both"]),
        "tiny unigram": (
            file("u.tsv", "".join(f"{chr(0x4E00 + i)}\t{chr(0x4F00 + i)}\n" for i in range(80)), pairs=UNIGRAM_64),
            ["data.pairs.vocab_size", "distinct characters"],
        ),
    }


BAD_INPUTS = ["misaligned", "one column", "not utf-8", "not utf-8 gz", "languages", "unset languages", "no train"]
BAD_INPUTS += ["no partner", "all empty", "all unequal", "short row", "jsonl keys", "both", "tiny unigram"]


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_clear_error(tmp_path: Path, case: str):
    cfg, fragments = _bad_inputs(tmp_path)[case]
    with pytest.raises(DataError) as e:
        load(cfg, seed=0)
    message = str(e.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["data.name=text_pairs"], "set data.root to a folder of aligned files"),
        (["data.pairs.joint=false"], "data.pairs is for the parallel text data sets (text_pairs)"),
        (["data.name=text_pairs", "data.root=x", "data.pairs.vocab_size=100"], "byte-level BPE needs at least 260"),
        (["data.name=text_pairs", "data.root=x", "data.pairs.tokeniser=bpe"], "did you mean 'data.pairs.tokenizer'"),
    ],
)
def test_pairs_config_errors(overrides: list[str], fragment: str):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    assert fragment in str(e.value)


def test_pairs_config_round_trip(tmp_path: Path):
    overrides = ["data.name=text_pairs", "data.root=corpus", "data.source=de", "data.target=en"]
    cfg = load_config(None, [*overrides, "data.pairs={tokenizer: unigram, vocab_size: 500, test: test_2017_flickr}"])
    assert cfg.data.pairs.tokenizer == "unigram" and cfg.data.pairs.max_ratio == 9.0 and cfg.data.source == "de"
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg


@pytest.mark.realdata
@pytest.mark.skipif(not (MULTI30K / "train.de").is_file(), reason="Multi30k is not beside the project")
def test_multi30k_german_to_english():
    data = load(pairs_cfg(MULTI30K), seed=0)
    assert [len(s) for s in data.splits().values()] == [29000, 1014, 1000]  # test: test_2016_flickr
    extra = data.spec.extra
    assert extra["vocab_size"] == 8000 and extra["dropped"] == {"empty_side": 0, "length_ratio": 0}
    tok = tokenizer_from_dict(extra["tokenizer"])
    first = (MULTI30K / "test_2016_flickr.de").read_text(encoding="utf-8").splitlines()[0]
    assert tok.decode(data.test.x[0].tolist()) == first
