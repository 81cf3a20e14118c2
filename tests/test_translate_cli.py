"""Translation end to end: keel train on a TSV of invented pairs, eval, predict, report, serve
and the page in Chromium; resume; bad input; Multi30k when it is there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import assert_one_line_error, keel
from pairs_helpers import invented_pairs, pairs_config, write_tsv

pytest.importorskip("sacrebleu")

SMALL = ["--set", "model.width=64", "--set", "model.heads=2", "--set", "model.ffn=128", "--set", "model.layers=2"]
SMALL += ["--set", "model.dropout=0.0", "--set", "model.beam=3", "--set", "data.pairs.vocab_size=300"]


@pytest.fixture(scope="module")
def translate_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("translate")
    tsv = write_tsv(cwd / "pairs.tsv", invented_pairs(2000))
    # the translation recipe (no model named), made small: 8 epochs of a 2-layer, 64-wide model
    keel("train", "--data", "text_pairs", "--set", f"data.path={tsv}", "--set", "data.source=xx",
         "--set", "data.target=en", *SMALL, "--set", "train.optimizer.lr=3e-3", "--set", "train.batch_size=32",
         "--set", "train.label_smoothing=0.0", "--set", "train.precision=fp32", "--epochs", "8", cwd=cwd,
         check=True, timeout=600)  # fmt: skip
    return (cwd / "runs" / "latest").resolve()


def test_keel_trains_evaluates_and_reports_a_translator(translate_run: Path, tmp_path: Path):
    summary = json.loads((translate_run / "summary.json").read_text())
    assert summary["test"]["bleu"] > 60 and summary["test"]["chrf"] > 80, summary["test"]
    assert set(summary["test"]) >= {"bleu", "bleu_lowercase", "chrf", "perplexity", "loss"}
    assert "transformer_seq2seq" in (translate_run / "config.yaml").read_text()  # the recipe's model
    assert json.loads((translate_run / "data.json").read_text())["task"] == "translation"
    again = json.loads(keel("eval", str(translate_run), "--json", cwd=tmp_path, check=True).stdout)
    assert again["bleu"] == pytest.approx(summary["test"]["bleu"])  # the data rebuilt with the run's tokeniser
    assert "tok:13a" in again["notes"]["bleu signature"] == summary["notes"]["bleu signature"]  # sacreBLEU's
    report = (translate_run / "report.html").read_text()
    assert 'id="translations"' in report and "tok:13a" in report and "Worst test sentences" in report
    evaluation = json.loads((translate_run / "evaluation.json").read_text())
    rows = evaluation["translations"]
    assert len(rows) > 100  # every test sentence
    assert set(rows[0]) == {"source", "reference", "hypothesis"}


def test_keel_predict_translates_texts_and_files(translate_run: Path, tmp_path: Path):
    proc = keel("predict", str(translate_run), "--text", "zab lupo kir.", "--json", cwd=tmp_path, check=True)
    assert json.loads(proc.stdout) == {"source": "zab lupo kir.", "translation": "Runs dog red."}
    (tmp_path / "in.txt").write_text("tos vahe.\n\nmemna ost quam.\n", encoding="utf-8")
    proc = keel("predict", str(translate_run), str(tmp_path / "in.txt"), cwd=tmp_path, check=True)
    lines = proc.stdout.strip().splitlines()
    assert lines == [f"{tmp_path / 'in.txt'}:1: Field green.", f"{tmp_path / 'in.txt'}:3: Bread eats over."]


def test_a_translator_is_served_and_its_page_shows_the_translation(translate_run: Path, tmp_path: Path):
    import httpx
    from browser import chromium_page, skip_without_chromium
    from serving import running_server

    with running_server(translate_run, log_dir=tmp_path) as url:
        got = httpx.post(f"{url}/predict", json={"texts": ["zab lupo kir.", "tos vahe."]}, timeout=60)
        assert got.status_code == 200, got.text
        assert [p["translation"] for p in got.json()["predictions"]] == ["Runs dog red.", "Field green."]
        assert httpx.post(f"{url}/predict", json={"text": "  "}, timeout=30).status_code == 400
        assert httpx.post(f"{url}/predict", json={"texts": ["zab."] * 300}, timeout=30).status_code == 413
        long = httpx.post(f"{url}/predict", json={"text": "zab " * 5000}, timeout=60)  # cut at the run's length
        assert long.status_code == 200 and isinstance(long.json()["predictions"][0]["translation"], str)
        assert httpx.get(f"{url}/health", timeout=30).status_code == 200
        skip_without_chromium()
        with chromium_page(url + "/") as (page, problems):
            page.wait_for_selector("#text-input:not([hidden])")
            page.fill("#text", "kir memna.")
            page.click("#predict-text")
            page.wait_for_selector("#translation")
            assert page.locator("#translation").input_value() == "Over runs."
        assert problems == []


def test_translation_runs_resume_mid_training_bit_identically(tmp_path: Path):
    """Length-bucketed batches and dropout: a resumed run sees the same batches and masks."""
    import torchkeel as keel_api
    from torchkeel.train import checkpoint as ckpt

    data = keel_api.data.load(pairs_config(write_tsv(tmp_path / "p.tsv", invented_pairs(300))), seed=0)
    model_cfg = {"name": "transformer_seq2seq", "layers": 1, "width": 32, "heads": 2, "ffn": 64, "dropout": 0.1}
    every_epoch = {"every_epochs": 1, "min_seconds": 0, "keep": 3}
    # one thread: train.threads auto times the model to choose, and under load two runs may choose
    # differently, which changes the order of float sums (not what this test is about)
    options = {"epochs": 3, "seed": 2, "batch_size": 16, "checkpoint": every_epoch, "progress": False, "threads": 1}
    torch.manual_seed(0)
    full = keel_api.fit(keel_api.models.build(model_cfg, data.spec), data, run_dir=tmp_path / "run", **options)
    first = ckpt.list_checkpoints(tmp_path / "run" / "checkpoint")[0]
    torch.manual_seed(99)
    resumed = keel_api.fit(keel_api.models.build(model_cfg, data.spec), data, resume=first, **options)
    timeless = [[{k: v for k, v in r.items() if k != "seconds"} for r in run.history] for run in (full, resumed)]
    assert timeless[0] == timeless[1] and len(timeless[0]) == 3
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_other_runs_refuse_text_translation_inputs_in_one_line(trained_run: Path, tmp_path: Path):
    proc = keel("predict", str(trained_run), "--text", "Ein Hund.", cwd=tmp_path)
    assert_one_line_error(proc, "--text is for text models")


MULTI30K = Path(__file__).resolve().parents[1] / "data" / "multi30k"


@pytest.mark.realdata
@pytest.mark.skipif(not (MULTI30K / "train.de").is_file(), reason="Multi30k is not in data/")
def test_the_multi30k_config_trains_on_the_real_files(tmp_path: Path):
    """configs/multi30k-de-en.yaml, one epoch of a small model: the real corpus, the recipe, beam
    search and sacreBLEU end to end (its BLEU is in benchmarks/RESULTS.md, not asserted here).
    A fixed amount of work, not of time: 20 s of training on a busy machine left the model too
    few steps to learn anything."""
    config = Path(__file__).resolve().parents[1] / "configs" / "multi30k-de-en.yaml"
    keel("train", str(config), "--set", f"data.root={MULTI30K}", "--epochs", "1",
         "--set", "model.layers=1", "--set", "model.width=64", "--set", "model.ffn=128", cwd=tmp_path, check=True,
         timeout=600)  # fmt: skip
    summary = json.loads((tmp_path / "runs" / "latest" / "summary.json").read_text())
    assert summary["test"]["bleu"] >= 0 and summary["test"]["perplexity"] < 8000


def test_keel_export_writes_an_encoder_and_a_decoder_step_that_translate_as_keel_predict(
    translate_run: Path, tmp_path: Path
):
    """The two ONNX graphs, run by onnxruntime in a greedy loop, give the PyTorch model's greedy
    translations of new sentences (keel predict searches with the run's beam of 3, which may
    choose otherwise: that depends on the trained weights, not on the export)."""
    pytest.importorskip("onnxruntime")
    from torchkeel.data.tokenize import tokenizer_from_dict
    from torchkeel.export.seq2seq import OnnxTranslator

    out = tmp_path / "export"
    keel("export", str(translate_run), "--out", str(out), cwd=tmp_path, check=True, timeout=300)
    meta = json.loads((out / "preprocess.json").read_text())
    assert meta["task"] == "translation" and meta["models"]["encoder.onnx"]["graphs"][1] == "decoder_step.onnx"
    texts = ["vahe zab.", "ost pelit drun quam.", "lupo tos kir memna."]
    from torchkeel.serve.predictor import Predictor

    predictor = Predictor.from_run(translate_run)
    with predictor.task.validation(predictor.model):  # greedy decoding, as validation in training does
        expected = [p.output["translation"] for p in predictor.predict_texts(texts)]
    proc = keel("predict", str(translate_run), *sum((["--text", t] for t in texts), []), "--json", cwd=tmp_path)
    assert [json.loads(line)["source"] for line in proc.stdout.splitlines()] == texts  # keel predict's beam runs
    spec = meta["spec"]["extra"]
    source, target = tokenizer_from_dict(spec["tokenizer"]), tokenizer_from_dict(spec["target_tokenizer"])
    ids = torch.nn.utils.rnn.pad_sequence([torch.tensor(s) for s in source.encode_batch(texts)], batch_first=True)
    lengths = (ids != 0).sum(1) * 3 // 2 + 10  # the loop's limit: 1.5 x source tokens + 10
    got = [target.decode(row) for row in OnnxTranslator({"encoder": out / "encoder.onnx",
           "decoder_step": out / "decoder_step.onnx"}).greedy(ids, lengths)]  # fmt: skip
    assert got == expected
    assert (
        keel("export", str(translate_run), "--out", str(out), "--format", "torchscript", cwd=tmp_path).returncode == 2
    )


@pytest.mark.slow
def test_two_processes_train_a_translator_and_their_summed_scores_are_one_process_scores(tmp_path: Path):
    """`--nproc 2`: each rank takes half of every length bucket, and evaluation sums the
    sacreBLEU statistics over the ranks, so the test BLEU the job records is what one process
    computes on the whole test split."""
    tsv = write_tsv(tmp_path / "pairs.tsv", invented_pairs(600))
    keel("train", "--data", "text_pairs", "--set", f"data.path={tsv}", "--set", "data.source=xx",
         "--set", "data.target=en", *SMALL, "--set", "train.batch_size=32", "--set", "train.precision=fp32",
         "--epochs", "3", "--nproc", "2", "-q", cwd=tmp_path, check=True, timeout=600)  # fmt: skip
    run = (tmp_path / "runs" / "latest").resolve()
    summary = json.loads((run / "summary.json").read_text())
    assert json.loads((run / "env.json").read_text())["distributed"]["world_size"] == 2
    again = json.loads(keel("eval", str(run), "--json", cwd=tmp_path, check=True).stdout)
    for key in ("loss", "perplexity"):  # teacher-forced: the same sums in another order
        assert again[key] == pytest.approx(summary["test"][key], rel=1e-4), key
    # decoded in other batches (half the sentences each): a near-tie between two tokens may fall
    # the other way in another batch's float rounding, so a token or two may differ
    assert again["bleu"] == pytest.approx(summary["test"]["bleu"], abs=1.0)
    assert again["chrf"] == pytest.approx(summary["test"]["chrf"], abs=1.0)
