"""Language-model runs for the generation, serving and export tests, written without training:
a run folder holds model.json and model.safetensors exactly as ``keel train`` writes them."""

from __future__ import annotations

from pathlib import Path

import pytest
import safetensors.torch
import torch
import yaml

from torchkeel import atomic
from torchkeel.data.bundle import DataSpec
from torchkeel.data.lm_tokenizer import CharTokenizer
from torchkeel.models import build
from torchkeel.train.checkpoint import saveable

CHARS = "\n !',.:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # 61 characters
GPT_OPTIONS = {"name": "gpt", "n_layer": 2, "n_head": 2, "n_embd": 32, "dropout": 0.0}


def corpus_spec(tokenizer: dict | None = None, vocab: int | None = None, block: int = 32) -> DataSpec:
    """A text corpus's DataSpec as the text_file data writes it (character vocabulary by default)."""
    tokenizer = tokenizer or CharTokenizer(CHARS).to_dict()
    vocab = vocab or len(tokenizer.get("chars", "")) or 300
    extra = {"vocab_size": vocab, "block_size": block, "tokenizer": tokenizer, "chars_per_token": 1.0}
    return DataSpec("corpus", "text", "language_model", (block,), extra=extra)


def write_run(
    folder: Path, spec: DataSpec, model_cfg: dict | None = None, seed: int = 0, model: torch.nn.Module | None = None
) -> Path:
    """A finished run of ``model_cfg`` (a tiny gpt by default): ``model``'s weights, or fresh ones."""
    model_cfg = model_cfg or GPT_OPTIONS
    if model is None:
        torch.manual_seed(seed)
        model = build(model_cfg, spec)
        with torch.no_grad():  # sharper than GPT-2's init, so samples differ visibly between seeds
            for p in model.parameters():
                if p.ndim == 2:
                    p.mul_(20.0)
    folder.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(folder / "model.safetensors", safetensors.torch.save(saveable(model.state_dict())))
    meta = {"format": "torchkeel-model-1", "model": model_cfg, "spec": spec.to_dict(), "loss": "cross_entropy"}
    atomic.write_json(folder / "model.json", meta)
    # the resolved config a trained run keeps (the commands find run folders by it)
    (folder / "config.yaml").write_text(yaml.safe_dump({"data": {"name": spec.name}, "model": model_cfg}))
    return folder


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models step by step are latency-bound: on a shared 2-core host, torch's thread pool
    costs more than it gives (a test's generation took 30 s on two threads, 2 s on one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
