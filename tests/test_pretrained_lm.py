"""pretrained_lm on a tiny GPT-2 folder written in the test (offline): the gpt contract (logits,
KV cache), fine-tuning through the normal loop, and generation with the folder's tokeniser."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from lm_helpers import corpus_spec, one_torch_thread, write_run  # noqa: F401 (a fixture)

pytest.importorskip("transformers")

from hf_helpers import GPT2_TEXT, write_tiny_gpt2  # noqa: E402

from torchkeel import Generator, fit  # noqa: E402
from torchkeel.data.bundle import DataBundle  # noqa: E402
from torchkeel.data.corpus_loader import CorpusSplit, eval_windows  # noqa: E402
from torchkeel.data.pretrained_lm_tokenizer import PretrainedLMTokenizer  # noqa: E402
from torchkeel.errors import ConfigError  # noqa: E402
from torchkeel.models import build  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_tiny_gpt2(tmp_path_factory.mktemp("hf") / "tiny-gpt2")


def spec_of(folder, block: int = 16):
    tokenizer = PretrainedLMTokenizer.load(str(folder))
    return corpus_spec(tokenizer.to_dict(), vocab=tokenizer.vocab_size, block=block)


def test_the_folders_model_and_tokeniser_follow_the_gpt_contract(folder):
    import transformers

    spec = spec_of(folder)
    model = build({"name": "pretrained_lm", "source": str(folder)}, spec).eval()
    tokenizer = PretrainedLMTokenizer.load(str(folder))
    ids = torch.tensor([tokenizer.encode("ROMEO: But soft, what light")])
    assert tokenizer.decode(ids[0].tolist()) == "ROMEO: But soft, what light"
    reference = transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    logits = model(ids)
    assert logits.shape == (1, ids.shape[1], spec.extra["vocab_size"])
    torch.testing.assert_close(logits, reference(ids).logits)  # the folder's weights, unchanged
    cache = model.new_cache(1)
    steps = [model(ids[:, :3], cache=cache)] + [model(ids[:, i : i + 1], cache=cache) for i in range(3, ids.shape[1])]
    torch.testing.assert_close(torch.cat(steps, 1), logits, atol=1e-5, rtol=1e-5)


def test_a_corpus_tokenised_otherwise_is_refused(folder):
    with pytest.raises(ConfigError, match="model 'pretrained_lm' takes a corpus tokenised by its own tokeniser"):
        build({"name": "pretrained_lm", "source": str(folder)}, corpus_spec())
    with pytest.raises(ConfigError, match="block_size 100 exceeds the 64 positions"):
        build({"name": "pretrained_lm", "source": str(folder), "block_size": 100}, spec_of(folder))


def test_fine_tuning_through_the_loop_then_generating_with_the_folders_tokeniser(folder, tmp_path):
    tokenizer = PretrainedLMTokenizer.load(str(folder))
    tokens = np.asarray(tokenizer.encode(GPT2_TEXT * 30), dtype=np.uint16)
    spec = spec_of(folder)
    data = DataBundle(spec, CorpusSplit(tokens, 16, 20), eval_windows(tokens, 16, 20), eval_windows(tokens, 16, 20))
    cfg = {"name": "pretrained_lm", "source": str(folder)}
    torch.manual_seed(0)
    model = build(cfg, spec)
    run = fit(model, data, epochs=4, batch_size=8, optimizer="adamw", lr=1e-2, progress=False)
    losses = [r["val/loss"] for r in run.history]
    assert losses[-1] < 0.5 * losses[0]  # it learns the repeated line
    run_dir = write_run(tmp_path / "ft", spec, cfg, model=model)
    gen = Generator.from_run(run_dir)
    text = gen.generate("ROMEO: But soft,", max_tokens=12, top_k=1)  # greedy: the line it learnt
    assert GPT2_TEXT.startswith("ROMEO: But soft," + text[:10])
    assert gen.encode_prompt("") == [tokenizer.bos_id]  # an empty prompt starts from <|endoftext|>


def _gpt2_options(folder, tmp_path) -> list[str]:
    (tmp_path / "lines.txt").write_text(GPT2_TEXT * 60, encoding="utf-8")
    return [f"data.path={tmp_path / 'lines.txt'}", f"out_dir={tmp_path / 'runs'}", f"model.source={folder}",
            "data.corpus.block_size=32", "data.corpus.steps_per_epoch=10", "data.corpus.eval_windows=20",
            "train.epochs=2", "train.batch_size=8", "train.optimizer.lr=1e-2", "train.threads=1",
            "eval.report=false"]  # fmt: skip


def test_the_gpt2_config_fine_tunes_on_a_text_file_then_generates_and_evaluates(folder, tmp_path):
    import io

    from rich.console import Console

    from torchkeel.config import load_config
    from torchkeel.experiment import evaluate_run, train

    cfg = load_config(ROOT / "configs" / "text_file-gpt2.yaml", _gpt2_options(folder, tmp_path))
    assert (cfg.data.corpus.tokenizer, cfg.data.corpus.source) == ("pretrained", str(folder))  # from model.source
    run = train(cfg, Console(file=io.StringIO()), progress=False)
    spec = json.loads((run / "model.json").read_text())["spec"]
    assert spec["extra"]["tokenizer"] == {"type": "pretrained_lm", "source": str(folder)}
    summary = json.loads((run / "summary.json").read_text())
    assert evaluate_run(run)["loss"] == pytest.approx(summary["test"]["loss"], rel=1e-5)  # keel eval
    gen = Generator.from_run(run)  # what keel generate runs (the CLI's own test is marked slow below)
    assert isinstance(gen.tokenizer, PretrainedLMTokenizer)  # the folder's tokeniser, from the run alone
    text = gen.generate("ROMEO: But", max_tokens=8, seed=3)
    assert text and text == gen.generate("ROMEO: But", max_tokens=8, seed=3)  # reproducible for a seed


@pytest.mark.slow
def test_keel_train_eval_and_generate_a_pretrained_lm_through_the_cli(folder, tmp_path):
    from conftest import keel

    options = [a for s in _gpt2_options(folder, tmp_path) for a in ("--set", s)]
    keel("train", "--data", "text_file", "--model", "pretrained_lm", *options, "-q", cwd=tmp_path, check=True)
    run = (tmp_path / "runs" / "latest").resolve()
    assert "bits_per_char" in keel("eval", str(run), cwd=tmp_path, check=True).stdout
    expected = Generator.from_run(run).generate("ROMEO: But", max_tokens=8, seed=3)
    proc = keel("generate", str(run), "--prompt", "ROMEO: But", "--max-tokens", "8", "--seed", "3",
                cwd=tmp_path, check=True)  # fmt: skip
    assert proc.stdout.rstrip("\n") == "ROMEO: But" + expected


def _encode_with(folder, tmp_path, text: str = GPT2_TEXT * 20):
    from torchkeel.config import DataConfig
    from torchkeel.data.corpus import encoded_corpus

    (tmp_path / "c.txt").write_text(text, encoding="utf-8")
    corpus = {"tokenizer": "pretrained", "source": str(folder), "cache": str(tmp_path / "cache")}
    cfg = DataConfig(name="text_file", path=str(tmp_path / "c.txt"), corpus=corpus)
    return encoded_corpus(cfg, cfg.corpus)


def test_a_corpus_is_encoded_by_the_folders_tokeniser_and_never_read_by_another(folder, tmp_path):
    first = _encode_with(folder, tmp_path)
    tokenizer = PretrainedLMTokenizer.load(str(folder))
    assert first.meta["dtype"] == "uint16"  # 300 tokens (GPT-2's 50,257 fit too)
    assert first.tokens("train")[:12].tolist() == tokenizer.encode(GPT2_TEXT)[:12]
    assert _encode_with(folder, tmp_path).folder == first.folder  # the same tokeniser reuses the files
    other = write_tiny_gpt2(tmp_path / "other", vocab_size=280)  # another vocabulary ...
    assert _encode_with(other, tmp_path).folder != first.folder
    write_tiny_gpt2(tmp_path / "other", vocab_size=290)  # ... and another one in that same folder
    again = _encode_with(other, tmp_path)
    assert again.tokens("train")[:12].tolist() == PretrainedLMTokenizer.load(str(other)).encode(GPT2_TEXT)[:12]
    assert len({p.name for p in (tmp_path / "cache").iterdir()}) == 3


def test_a_vocabulary_of_65536_tokens_or_more_is_stored_as_uint32(tmp_path):
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<unk>": 0, **{f"w{i}": i + 1 for i in range(70_000)}}
    words = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    transformers.PreTrainedTokenizerFast(tokenizer_object=words, unk_token="<unk>").save_pretrained(tmp_path / "w")
    encoded = _encode_with(tmp_path / "w", tmp_path, "w3 w65536 w69999 w1\n" * 50)
    assert encoded.meta["dtype"] == "uint32"
    assert encoded.tokens("train")[:4].tolist() == [4, 65537, 70000, 2]  # ids past 65,535 kept whole


def test_the_corpus_tokeniser_comes_from_the_model_and_windows_fit_its_positions(folder, tmp_path):
    from torchkeel.config import load_config
    from torchkeel.data import load
    from torchkeel.data.lm_tokenizer import tokenizer_from_dict
    from torchkeel.errors import DataError

    options, names = _gpt2_options(folder, tmp_path), {"data.name": "text_file", "model.name": "pretrained_lm"}
    cfg = load_config(None, options, names)
    assert (cfg.data.corpus.tokenizer, cfg.data.corpus.source) == ("pretrained", str(folder))
    with pytest.raises(ConfigError, match="data.corpus.tokenizer 'bpe': model pretrained_lm reads its own"):
        load_config(None, [*options, "data.corpus.tokenizer=bpe"], names)
    with pytest.raises(ConfigError, match="data.corpus.source 'x' differs from model.source"):
        load_config(None, [*options, "data.corpus.source=x"], names)
    with pytest.raises(DataError, match="block_size: 100 tokens exceed the 64 positions of .* at most 64"):
        load(cfg.data.model_copy(update={"corpus": cfg.data.corpus.model_copy(update={"block_size": 100})}))
    stored = PretrainedLMTokenizer.load(str(folder)).to_dict()
    assert isinstance(tokenizer_from_dict(stored), PretrainedLMTokenizer)  # eval, serve and export rebuild it


@pytest.mark.slow
def test_a_pretrained_lm_run_exports_to_onnx_with_a_dynamic_length(folder, tmp_path):
    pytest.importorskip("onnxruntime")
    from torchkeel.export import export_run
    from torchkeel.export.formats import load_onnx

    spec, cfg = spec_of(folder), {"name": "pretrained_lm", "source": str(folder)}
    model = build(cfg, spec).eval()
    run = write_run(tmp_path / "gpt2-run", spec, cfg, model=model)
    result = export_run(run, "onnx")  # verified on the run's tokeniser's prompts at several lengths
    assert result.dynamic == {0: "batch", 1: "length"} and result.max_abs_diff < 1e-4
    ids = torch.tensor([PretrainedLMTokenizer.load(str(folder)).encode("ROMEO: But soft, what light")])
    with torch.inference_mode():
        torch.testing.assert_close(load_onnx(result.model_file)(ids), model(ids), atol=1e-4, rtol=0)
