"""``train.threads: auto``: one thread for a small step, torch's default for a large one; the
decision and its work count, not timings (benchmarks/threads.py times them)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchkeel as keel_api
from torchkeel.config import load_config
from torchkeel.data.bundle import DataSpec
from torchkeel.models import build
from torchkeel.train.threads import SMALL_STEP, choose, decode_threads, forward_macs

DIGITS = DataSpec("digits", "image", "classification", (1, 8, 8), classes=list("0123456789"))
MNIST = DataSpec("mnist", "image", "classification", (1, 28, 28), classes=list("0123456789"))
CLASSIC = ["model.channels=[24,32]", "model.kernels=[5,3]", "model.padding=valid", "model.hidden=256"]


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _model(spec: DataSpec, sets: list[str]) -> nn.Module:
    return build(load_config(None, sets, {}).model, spec)


def test_multiply_adds_are_counted_per_layer_kind():
    conv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(256, 10))
    conv.train()
    assert forward_macs(conv, torch.zeros(1, 1, 8, 8)) == 36 * 64 + 2560  # kernel x 8x8 outputs; weights
    assert conv.training and int(conv[1].num_batches_tracked) == 0  # eval-mode pass: no statistic changed
    lstm = nn.LSTM(8, 16, batch_first=True)
    assert forward_macs(lstm, torch.zeros(1, 5, 8)) == (4 * 16 * 8 + 4 * 16 * 16) * 5  # weights x time steps
    up = nn.ConvTranspose2d(2, 3, 2, stride=2)
    assert forward_macs(up, torch.zeros(1, 2, 4, 4)) == 24 * 16  # the kernel at every input position


@pytest.mark.parametrize(
    ("spec", "sets", "batch", "threads"),
    [
        (DIGITS, [], 32, 1),  # the default job: 11 M multiply-adds per batch
        (DIGITS, ["model.name=lenet5"], 32, 1),
        (MNIST, CLASSIC, 128, None),  # benchmarks/speed.py workload 1: 159 M, torch's threads
        (DIGITS, ["model.name=resnet"], 32, None),
    ],
)
def test_auto_takes_one_thread_for_a_small_step_only(spec, sets, batch, threads):
    model = _model(spec, sets)
    assert choose("auto", model, torch.zeros(1, *spec.input_shape), batch) == threads


def test_the_threshold_is_the_batch_s_work():
    model = _model(DIGITS, [])
    per_sample = forward_macs(model, torch.zeros(1, 1, 8, 8))
    below = SMALL_STEP // per_sample
    assert choose("auto", model, torch.zeros(1, 1, 8, 8), below) == 1
    assert choose("auto", model, torch.zeros(1, 1, 8, 8), below + 1) is None


def test_a_number_wins_and_no_sample_leaves_torch_s_choice():
    model = _model(DIGITS, [])
    assert choose(2, model, torch.zeros(1, 1, 8, 8), 32) == 2
    assert choose(None, model, torch.zeros(1, 1, 8, 8), 32) is None
    assert choose("auto", model, None, 32) is None  # a streamed split, a GPU run


def test_fit_sets_one_thread_for_the_default_job(restore_threads):
    torch.set_num_threads(2)
    data = keel_api.data.load("digits")
    keel_api.fit(_model(data.spec, []), data, epochs=1, progress=False)
    assert torch.get_num_threads() == 1
    torch.set_num_threads(2)
    keel_api.fit(_model(data.spec, []), data, epochs=1, threads=2, progress=False)
    assert torch.get_num_threads() == 2
    assert load_config(None, [], {}).train.threads == "auto"


def test_generation_takes_one_thread_for_a_small_model_only():
    small = nn.Linear(100, 100)
    assert decode_threads(small) == 1
    with torch.device("meta"):
        assert decode_threads(nn.Linear(100, 100)) is None  # not on the CPU: torch's choice
        big = nn.Embedding(SMALL_STEP // 64 + 1, 64)
    assert decode_threads(big.to_empty(device="cpu")) is None  # a step touches every weight
