"""Default recipes per data kind (torchkeel.recipes) and hashed word n-grams (the text recipe's
input): which config a plain `keel train --data X` resolves to, and that it trains and learns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import keel
from make_data import news_rows, shop_rows, write_rows

from torchkeel.config import DataConfig, TextConfig, load_config
from torchkeel.config_data import BAG_MAX_LENGTH, SEQUENCE_MAX_LENGTH
from torchkeel.data import load
from torchkeel.data.tokenize import NGRAM_HASH, NgramTokenizer, WordTokenizer, tokenizer_from_dict, train_tokenizer
from torchkeel.models import build
from torchkeel.models.text import trim_padding
from torchkeel.recipes import TEXT_RECIPE, data_kind


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("recipes")
    write_rows(root / "news.csv", news_rows(300))
    write_rows(root / "shop.csv", shop_rows(400))
    return root


def test_text_data_without_a_model_gets_the_text_recipe():
    cfg = load_config(None, ["data.path=x.csv"], {"data.name": "text_csv"})
    assert cfg.model.name == "linear_bow" and cfg.train.optimizer.name == TEXT_RECIPE["train"]["optimizer"]["name"]
    assert cfg.data.text.ngrams == 2
    assert cfg.train.early_stopping is not None and cfg.train.early_stopping.monitor == "val/loss"
    assert cfg.train.epochs == TEXT_RECIPE["train"]["epochs"]


def test_the_users_keys_win_over_the_recipe():
    cfg = load_config(
        None,
        ["data.path=x.csv", "train.epochs=3", "train.batch_size=16", "data.text.ngrams=1"],
        {"data.name": "text_csv"},
    )
    assert (cfg.train.epochs, cfg.model.name, cfg.train.batch_size) == (3, "linear_bow", 16)
    assert cfg.data.text.ngrams == 1
    assert cfg.train.optimizer.lr == TEXT_RECIPE["train"]["optimizer"]["lr"]  # the rest still from the recipe


def test_a_named_model_gets_the_schema_defaults_only():
    cfg = load_config(None, ["data.path=x.csv"], {"data.name": "text_csv", "model.name": "lstm"})
    assert cfg.train.early_stopping is None and cfg.data.text.ngrams == 1 and cfg.train.epochs == 12


def test_recipes_by_data_kind():
    assert load_config().model.name == "simple_cnn"  # `keel train` alone: digits, unchanged
    assert load_config(None, None, {"data.name": "mnist"}).model.name == "simple_cnn"
    table = load_config(None, None, {"data.name": "breast_cancer"})
    assert table.model.name == "mlp" and table.model.options()["batch_norm"] and table.model.options()["dropout"] > 0
    assert [data_kind(n) for n in ("hf:ag_news", "csv", "sine_series", "cifar10")] == [
        "text",
        "table",
        "series",
        "image",
    ]


def test_ngram_ids_follow_their_tokens_and_hash_token_ids():
    words = WordTokenizer.train(["a b c", "a b"], vocab_size=10)
    tok = NgramTokenizer(words, n=3, buckets=50)
    a, b, c = words.encode_batch(["a b c"])[0]
    first = words.vocab_size

    def bucket(*ids: int) -> int:  # the hash written out: the last token first, growing leftwards
        h = ids[-1]
        for prev in reversed(ids[:-1]):
            h = (h * NGRAM_HASH + prev) % 2**64
        return first + h % 50

    expected = [a, b, bucket(a, b), c, bucket(b, c), bucket(a, b, c)]
    assert tok.encode_batch(["a b c"]) == [expected]
    assert max(expected) < tok.vocab_size == words.vocab_size + 50
    again = tokenizer_from_dict(json.loads(json.dumps(tok.to_dict())))  # as stored in the DataSpec
    assert again.encode_batch(["c b a", "a b c"]) == tok.encode_batch(["c b a", "a b c"])


def test_ngram_rows_are_max_length_times_n_wide(files: Path):
    cfg = DataConfig(name="text_csv", path=str(files / "news.csv"), text={"ngrams": 2, "max_length": 4})
    data = load(cfg, seed=0)
    assert data.spec.extra["tokenizer"]["type"] == "ngram" and data.train.x.shape[1] == 8
    assert int(data.train.x.max()) < data.spec.extra["vocab_size"]
    plain = train_tokenizer(["x y z"], TextConfig())
    assert isinstance(plain, WordTokenizer)  # ngrams: 1 keeps the plain ids


def test_embedding_bag_starts_from_fasttext_init(files: Path):
    data = load(DataConfig(name="text_csv", path=str(files / "news.csv")), seed=0)
    model = build({"name": "embedding_bag", "embed_dim": 20}, data.spec)
    weight = model.embed.weight.detach()
    assert float(weight.abs().max()) <= 1 / 20 and torch.all(weight[0] == 0)


def test_keel_train_on_text_without_a_model_learns_and_predicts(files: Path, tmp_path: Path):
    proc = keel(
        "train", "--data", "text_csv", "--set", f"data.path={files / 'news.csv'}", "--set", "eval.report=false",
        "-q", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    run = next((tmp_path / "runs").iterdir())
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["name"] == "linear_bow" and saved["data"]["text"]["ngrams"] == 2
    assert json.loads((run / "summary.json").read_text())["test"]["accuracy"] >= 0.9
    proc = keel("predict", "latest", "-t", "the team scored a goal in the match", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.split(":")[1].split()[0] == "sport", proc.stdout


def test_keel_train_on_a_table_without_a_model_learns(files: Path, tmp_path: Path):
    proc = keel(
        "train", "--data", "csv", "--set", f"data.path={files / 'shop.csv'}", "--set", "data.target=buys",
        "--set", "data.table.exclude=[id, price]", "--set", "eval.report=false", "-q", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    run = next((tmp_path / "runs").iterdir())
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["name"] == "mlp" and saved["model"]["batch_norm"] is True
    assert json.loads((run / "summary.json").read_text())["test"]["accuracy"] >= 0.75


def test_word_dropout_leaves_out_ids_in_training_only(files: Path):
    data = load(DataConfig(name="text_csv", path=str(files / "news.csv")), seed=0)
    x = trim_padding(data.train.x[:8], 0)  # what the model reads: the batch cut to its longest text
    torch.manual_seed(0)
    plain = build({"name": "embedding_bag", "embed_dim": 8}, data.spec).eval()
    dropping = build({"name": "embedding_bag", "embed_dim": 8, "token_dropout": 0.5}, data.spec)
    dropping.load_state_dict(plain.state_dict())
    with torch.no_grad():
        torch.manual_seed(1)
        trained = dropping.train()(x)
        torch.manual_seed(1)
        left_out = torch.rand(x.shape) < 0.5  # the same draw: those ids become <pad>
        torch.testing.assert_close(trained, plain(x.masked_fill(left_out, 0)))
        assert not torch.allclose(trained, plain(x))
        torch.testing.assert_close(dropping.eval()(x), plain(x))  # evaluation sees every id


def test_a_text_corpus_without_a_model_trains_a_language_model(tmp_path: Path):
    import io

    from rich.console import Console

    from torchkeel.experiment import train

    cfg = load_config(None, ["data.path=x.txt"], {"data.name": "text_file"})
    assert data_kind("text_file") == "corpus" and cfg.model.name == "gpt"  # a language model, not a classifier
    assert (cfg.data.corpus.block_size, cfg.train.batch_size, cfg.train.schedule.name) == (64, 12, "cosine")
    books = tmp_path / "books"
    books.mkdir()
    for i in range(2):  # a folder of .txt files, as `keel train --data text_file --set data.path=books` reads it
        (books / f"{i}.txt").write_text("".join(f"line {j % 7} of book {i}.\n" for j in range(300)), encoding="utf-8")
    options = [f"data.path={books}", f"out_dir={tmp_path / 'runs'}", "data.corpus.steps_per_epoch=5", "train.epochs=1",
               "model.n_layer=1", "model.n_embd=32", "train.threads=1", "eval.report=false"]  # fmt: skip
    run = train(load_config(None, options, {"data.name": "text_file"}), Console(file=io.StringIO()), progress=False)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["key_metric"] == "loss" and "bits_per_char" in summary["test"]


def test_bag_models_read_texts_whole_unless_a_length_is_set():
    def length(*sets: str) -> int:
        return load_config(None, ["data.path=x.csv", *sets], {"data.name": "text_csv"}).data.text.max_length

    assert length() == BAG_MAX_LENGTH  # the recipe's linear_bow
    assert length("model.name=embedding_bag") == BAG_MAX_LENGTH
    assert length("model.name=linear_bow") == BAG_MAX_LENGTH
    assert length("model.name=lstm") == SEQUENCE_MAX_LENGTH  # a sequence model's cost grows with it
    assert length("data.text.max_length=300") == 300  # set: kept, for any model
    assert length("model.name=lstm", "data.text.max_length=300") == 300


def test_the_text_recipe_reads_long_texts_whole_where_cutting_them_loses_the_label(tmp_path: Path):
    """Long texts (~400 filler words drawn from 2,000) whose label is in their last ten words (a
    review's verdict, from 20 words per label): the recipe reads them whole and learns it; the
    same recipe cut at 256 tokens sees only filler, at chance."""
    import random

    from torchkeel.train.loop import fit

    rng = random.Random(0)
    filler = [f"w{i}" for i in range(2000)]
    verdicts = {"yes": [f"good{i}" for i in range(20)], "no": [f"bad{i}" for i in range(20)]}
    rows = []
    for _ in range(600):
        label = rng.choice(["yes", "no"])
        words = [rng.choice(filler) for _ in range(rng.randint(350, 450))]
        words += [rng.choice(verdicts[label]) for _ in range(10)]
        rows.append({"text": " ".join(words), "label": label})
    write_rows(tmp_path / "long.csv", rows)

    def accuracy(*sets: str) -> float:
        sets = (f"data.path={tmp_path / 'long.csv'}", "train.threads=1", *sets)
        cfg = load_config(None, list(sets), {"data.name": "text_csv"})
        data = load(cfg.data, cfg.seed)
        run = fit(build(cfg.model, data.spec), data, cfg, progress=False)
        return run.evaluate("test")["accuracy"]

    assert accuracy() >= 0.95
    assert accuracy("data.text.max_length=256") <= 0.7
