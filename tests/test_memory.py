"""The memory estimates made before allocating, the allocation backstop, and the one-line
messages of section 'messages that tell the truth' that are cheaper to check here than
through the CLI."""

from __future__ import annotations

import struct
import zlib

import pytest
import torch

from torchkeel import memory
from torchkeel.config import load_config, read_yaml
from torchkeel.data.bundle import DataSpec
from torchkeel.data.tokenize import encode_texts
from torchkeel.errors import ConfigError, ResourceError, RunError
from torchkeel.models import build
from torchkeel.train import checkpoint as ckpt
from torchkeel.train.footprint import (
    PROBE_PARAMETERS,
    activation_bytes,
    check_step_fits,
    forward_bytes,
    optimizer_states,
    probe_bytes,
)
from torchkeel.train.runtime import pick_device


def _text_spec(length: int) -> DataSpec:
    return DataSpec("t", "text", "classification", (length,), classes=["a", "b"], extra={"vocab_size": 50})


def test_the_memory_available_here_is_read():
    have = memory.available_bytes("cpu")
    assert have is not None and 0 < have < 2**50
    assert memory.available_bytes("mps") is None


def test_forward_bytes_counts_a_step_and_not_the_scores_the_fused_attention_never_makes():
    with torch.device("meta"):
        model = build({"name": "transformer", "dim": 64, "heads": 4}, _text_spec(1000))
    total, largest = forward_bytes(model, (1000,), torch.int64, 8)
    scores = 8 * 4 * 1001 * 1001 * 4  # one layer's (B, heads, T, T) float32 scores
    assert 8 * 1001 * 64 * 4 * 10 < total < scores  # ten (B, T, dim) tensors at least, no T x T
    assert largest == 8 * 1001 * 64 * 4 * 4  # the MLP's hidden layer, (B, T, 4 * dim)
    short, _ = forward_bytes(model, (100,), torch.int64, 8)
    assert 8 < total / short < 12  # linear in T


@pytest.mark.parametrize("sets", [[], ["model.batch_norm=true"], ["model.name=lenet5"], ["model.name=mlp"]])
def test_a_small_model_run_for_real_keeps_part_of_what_the_meta_estimate_counts(sets):
    """The real two-sample pass (what autograd saves) is a lower bound of the meta pass (every
    tensor made), of the same size: neither misses a layer."""
    cfg = load_config(None, sets, {})
    spec = DataSpec("digits", "image", "classification", (1, 8, 8), classes=list("0123456789"))
    with torch.device("meta"):
        meta = build(cfg.model, spec)
    total, largest = forward_bytes(meta, (1, 8, 8), torch.float32, 32)
    probed, probed_largest = probe_bytes(cfg, spec, torch.float32, 32)
    assert 0.4 * total < probed <= total and probed_largest == largest
    assert activation_bytes(cfg, spec, meta, torch.float32, 32) == (probed, probed_largest)


def test_a_large_model_is_estimated_on_the_meta_device():
    cfg = load_config(None, ["model.name=mlp", "model.hidden=[4096, 4096]"], {})
    spec = DataSpec("t", "table", "classification", (64,), classes=["a", "b"])
    with torch.device("meta"):
        meta = build(cfg.model, spec)
    assert sum(p.numel() for p in meta.parameters()) > PROBE_PARAMETERS
    assert activation_bytes(cfg, spec, meta, torch.float32, 32) == forward_bytes(meta, (64,), torch.float32, 32)


def test_a_step_that_cannot_fit_is_refused_with_its_numbers():
    cfg = load_config(None, ["model.name=transformer", "model.dim=1024"], {})
    spec = _text_spec(100_000)
    with pytest.raises(ResourceError, match=r"one training step of 'transformer' .* GiB .* train\.batch_size"):
        check_step_fits(cfg, spec, torch.int64, torch.device("cpu"), 32, evaluate=True, forward=True)
    check_step_fits(cfg, _text_spec(30), torch.int64, torch.device("cpu"), 32, evaluate=True, forward=True)


def test_optimizer_state_per_parameter():
    assert optimizer_states("adamw", 0.9) == 2
    assert optimizer_states("sgd", 0.0) == 0 and optimizer_states("sgd", 0.9) == 1
    assert optimizer_states("rmsprop", 0.0) == 1 and optimizer_states("rmsprop", 0.5) == 2


@pytest.mark.parametrize(
    "error",
    [
        MemoryError(),
        RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: not enough memory: you tried"),
        RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 72000000000 bytes"),
    ],
)
def test_allocation_failures_become_one_resource_error(error):
    with (
        pytest.raises(ResourceError, match="out of memory while training") as caught,
        memory.allocation_errors("training"),
    ):
        raise error
    assert "\n" not in str(caught.value)


def test_other_runtime_errors_pass_through():
    with pytest.raises(RuntimeError, match="shape"), memory.allocation_errors("training"):
        raise RuntimeError("shape mismatch")


@pytest.mark.parametrize("name", ["cuda:99x", "cuda:-1", "gpu", "auto:0", "cpu:1"])
def test_a_device_that_is_not_one_is_a_config_error(name):
    with pytest.raises(ConfigError, match="train.device"):
        pick_device(name)


def test_the_whole_weight_mismatch_is_in_the_resume_error(tmp_path):
    path = tmp_path / "c.safetensors"
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    ckpt.save_checkpoint(path, model, torch.optim.SGD(model.parameters(), lr=0.1), {"epoch": 1})
    other = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.Linear(3, 2))
    with pytest.raises(RunError) as caught:
        ckpt.load_checkpoint(path, other, torch.optim.SGD(other.parameters(), lr=0.1))
    message = str(caught.value)
    assert "\n" not in message and "size mismatch for 0.weight" in message and "[3, 5]" in message


def test_a_duplicate_key_is_an_error_but_a_merge_key_may_be_overridden(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  name: iris\ntrain: {epochs: 1, lr: 2, epochs: 3}\n")
    with pytest.raises(ConfigError, match=r"line 3, .*duplicate key 'epochs'"):
        read_yaml(path)
    path.write_text("base: &b {epochs: 1, batch_size: 8}\ntrain:\n  <<: *b\n  epochs: 3\n")
    assert read_yaml(path)["train"] == {"epochs": 3, "batch_size": 8}


def test_texts_are_padded_to_the_longest_not_to_max_length():
    class Words:
        def encode_batch(self, texts):
            return [[2 + len(w) for w in t.split()] for t in texts]

    x, truncated = encode_texts(Words(), ["a bb", "c"], 100_000, pad=False)
    assert x.tolist() == [[3, 4], [3, 0]] and truncated == 0
    assert encode_texts(Words(), ["a bb"], 3)[0].shape == (1, 3)


def _png_header_and_zero_rows(width: int, height: int) -> bytes:
    """A 1-bit grey PNG of zeros (small on disk, ``width * height`` pixels decoded)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = (b"\x00" + bytes((width + 7) // 8)) * height
    head = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def test_max_pixels_above_pillows_own_limit_is_the_limit_that_applies(tmp_path):
    from torchkeel.serve.predictor import load_image

    path = tmp_path / "big.png"
    path.write_bytes(_png_header_and_zero_rows(14_000, 13_000))  # 182 M pixels: over Pillow's 179 M
    spec = DataSpec("digits", "image", "classification", (1, 8, 8), classes=list("0123456789"))
    x, _ = load_image(path, spec, max_pixels=200_000_000)
    assert x.shape == (1, 8, 8)
    with pytest.raises(Exception, match="14000x13000 pixels is over the limit of 100,000,000"):
        load_image(path, spec, max_pixels=100_000_000)
