"""pretrained_lm on a tiny GPT-2 folder written in the test (offline): the gpt contract (logits,
KV cache), fine-tuning through the normal loop, and generation with the folder's tokeniser."""

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
