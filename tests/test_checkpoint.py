import random

import numpy as np
import torch

import torchkeel as keel
from torchkeel.train import checkpoint as ckpt


def test_round_trip_model_optimizer_rng(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3))
    model[1].weight = model[0].weight  # tied weights: safetensors refuses shared memory as is
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(5, 3)).sum().backward()
        opt.step()
    path = tmp_path / "c.safetensors"
    ckpt.save_checkpoint(path, model, opt, {"epoch": 2, "note": "x"}, {"best.w": torch.ones(2)})
    expected = (torch.rand(3), np.random.rand(), random.random())

    torch.manual_seed(123)
    other = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3))
    other[1].weight = other[0].weight
    other_opt = torch.optim.AdamW(other.parameters(), lr=0.1)
    state, extra = ckpt.load_checkpoint(path, other, other_opt)
    assert state == {"epoch": 2, "note": "x"} and torch.equal(extra["best.w"], torch.ones(2))
    for a, b in zip(model.state_dict().values(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    sa, sb = opt.state_dict(), other_opt.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    for pid in sa["state"]:
        for key, value in sa["state"][pid].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(sb["state"][pid][key]))
    assert torch.equal(torch.rand(3), expected[0])
    assert (np.random.rand(), random.random()) == expected[1:]


def test_checkpoint_file_is_not_a_pickle(tmp_path):
    model = torch.nn.Linear(2, 2)
    path = tmp_path / "c.safetensors"
    ckpt.save_checkpoint(path, model, torch.optim.SGD(model.parameters(), lr=0.1), {})
    head = path.read_bytes()[:16]
    assert not head.startswith(b"\x80") and not head.startswith(b"PK")  # pickle / torch zip


def test_resume_from_epoch_checkpoint_is_bit_identical(tmp_path):
    data = keel.data.load("digits")
    every_epoch = {"every_epochs": 1, "min_seconds": 0, "keep": 2}
    options = {"epochs": 4, "seed": 3, "augment": {"crop": 1}, "checkpoint": every_epoch, "progress": False}

    torch.manual_seed(0)
    full = keel.fit(keel.models.build("simple_cnn", data.spec), data, run_dir=tmp_path, **options)
    saved = ckpt.list_checkpoints(tmp_path / "checkpoint")
    assert len(saved) == 2  # keep=2: after epochs 3 and 4

    torch.manual_seed(99)  # different initial weights: all must come from the checkpoint
    resumed = keel.fit(keel.models.build("simple_cnn", data.spec), data, resume=saved[0], **options)
    assert len(resumed.history) == 4 and resumed.history[:3] == full.history[:3]
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert sum('"seconds"' in line for line in lines) == 4


def test_checkpoint_schedule(tmp_path):
    data = keel.data.load("digits")
    model = keel.models.build("mlp", data.spec)
    options = {"epochs": 4, "progress": False}
    keel.fit(model, data, run_dir=tmp_path / "a", checkpoint={"min_seconds": 3600, "keep": 5}, **options)
    assert len(ckpt.list_checkpoints(tmp_path / "a" / "checkpoint")) == 1  # only the final one
    every_other = {"min_seconds": 0, "keep": 5, "every_epochs": 2}
    keel.fit(model, data, run_dir=tmp_path / "b", checkpoint=every_other, **options)
    steps = [int(p.stem.split("-")[1]) for p in ckpt.list_checkpoints(tmp_path / "b" / "checkpoint")]
    assert len(steps) == 2 and steps[1] == 2 * steps[0]  # after epochs 2 and 4
