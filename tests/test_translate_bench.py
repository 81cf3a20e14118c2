"""benchmarks/translate_speed.py and its peer benchmarks/peers/seq2seq_plain.py in --quick mode
on a tiny corpus of invented pairs, so the scripts cannot rot; no timing is asserted (the
measurement is the benchmark's, benchmarks/RESULTS.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from pairs_helpers import invented_pairs, write_tsv

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "benchmarks" / "peers"))

import seq2seq_plain  # noqa: E402
import translate_speed  # noqa: E402

from torchkeel.models import build  # noqa: E402


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory):
    """A de/en TSV (the preset's languages, so its data section reads it) and its data."""
    path = write_tsv(tmp_path_factory.mktemp("pairs") / "pairs.tsv", invented_pairs(400), header=("de", "en"))
    cfg = translate_speed.bench_config(path)
    return path, cfg, translate_speed.load(cfg.data, cfg.seed)


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _json(capsys: pytest.CaptureFixture) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_both_loops_train_on_the_same_sentences(corpus, tmp_path, capsys, restore_threads):
    path, cfg, data = corpus
    args = translate_speed.parse_args(["--quick", "--data", str(path)])
    tensors = translate_speed.draw_sentences(data.train, args.warmup, args.steps, cfg.train.batch_size)
    folder = translate_speed.save_inputs(tmp_path, data.spec, tensors)
    translate_speed.main(["--keel-child", str(folder), "--threads", "1"])
    keel = _json(capsys)
    vocab = str(data.spec.extra["target_vocab_size"])
    seq2seq_plain.main(["--tensors", str(folder / "pairs.safetensors"), "--vocab", vocab, "--threads", "1"])
    plain = _json(capsys)
    tokens = translate_speed.target_tokens(tensors["y_timed"])
    assert keel["steps"] == plain["steps"] == args.steps  # 3 batches of 128 sentences, 280 cycled
    assert keel["target_tokens"] == plain["target_tokens"] == tokens
    for side in (keel, plain):
        assert side["tokens_per_second"] > 0 and 0 < side["fill"] <= 1 and side["loss"] == pytest.approx(side["loss"])


def test_the_peer_has_the_sizes_of_torchkeel_s_model(corpus):
    _, cfg, data = corpus
    keel = build(cfg.model, data.spec)
    plain = seq2seq_plain.Translator(data.spec.extra["target_vocab_size"], 64)
    assert sum(p.numel() for p in plain.parameters()) == sum(p.numel() for p in keel.parameters())


def test_decoding_rows_greedy_and_beam_with_and_without_the_cache(corpus, restore_threads):
    _, cfg, data = corpus
    torch.manual_seed(0)
    model = build(cfg.model, data.spec)
    src = data.test.x[:20]
    rows = translate_speed.decoding_speed(model, src, cfg.eval.batch_size, threads=1)
    assert [(r["beam"], r["cache"]) for r in rows] == [(1, True), (1, False), (5, True), (5, False)]
    assert all(r["sentences_per_second"] > 0 and r["tokens_per_sentence"] <= r["limit"] for r in rows)
    assert [r.get("same") for r in rows] == [None, 20, None, 20]  # the cache changes no translation
    assert model.decoding.beam == cfg.model.options()["beam"] and model.decoding.cache  # put back
    translate_speed.decoding_table(rows, 20, "untrained", 1)


def test_a_missing_data_folder_is_one_error_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        translate_speed.main(["--quick", "--data", str(tmp_path / "multi30k")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1
    assert err.startswith("error: ") and "multi30k not found" in err
