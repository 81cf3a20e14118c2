import random

import numpy as np
import pytest
import torch

import torchkeel as keel
from torchkeel.errors import CheckpointError, ConfigError, RunError
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


def test_named_optimizers_round_trip_and_must_match(tmp_path):
    """Two optimisers by name (a GAN's), each restored into its own; a checkpoint of one
    optimiser does not load into named ones, nor the other way round."""
    torch.manual_seed(0)
    model = torch.nn.ModuleDict({"d": torch.nn.Linear(3, 1), "g": torch.nn.Linear(2, 3)})
    opts = {name: torch.optim.Adam(model[name].parameters(), lr=0.01, betas=(0.5, 0.9)) for name in ("d", "g")}
    for _ in range(2):
        model["d"](model["g"](torch.randn(4, 2))).sum().backward()
        opts["d"].step()
    opts["g"].step()
    path = tmp_path / "c.safetensors"
    ckpt.save_checkpoint(path, model, opts, {"epoch": 1})

    other = torch.nn.ModuleDict({"d": torch.nn.Linear(3, 1), "g": torch.nn.Linear(2, 3)})
    other_opts = {name: torch.optim.Adam(other[name].parameters(), lr=0.01) for name in ("d", "g")}
    ckpt.load_checkpoint(path, other, other_opts)
    for name in ("d", "g"):
        a, b = opts[name].state_dict(), other_opts[name].state_dict()
        assert a["param_groups"] == b["param_groups"] and a["param_groups"][0]["betas"] == (0.5, 0.9)
        for pid, entries in a["state"].items():
            assert all(torch.equal(v, b["state"][pid][k]) for k, v in entries.items()), (name, pid)
    with pytest.raises(RunError, match="does not fit"):
        ckpt.load_checkpoint(path, other, torch.optim.Adam(other.parameters()))
    with pytest.raises(RunError, match="does not fit"):
        ckpt.load_checkpoint(path, other, {"d": other_opts["d"]})
    ckpt.save_checkpoint(path, other, torch.optim.Adam(other.parameters()), {})
    with pytest.raises(RunError, match="does not fit"):
        ckpt.load_checkpoint(path, other, other_opts)


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


def _saved(tmp_path, name="c.safetensors"):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    path = tmp_path / name
    ckpt.save_checkpoint(path, model, torch.optim.SGD(model.parameters(), lr=0.1), {"epoch": 1})
    return path, model


def test_checksums_detect_a_flipped_bit_truncation_and_garbage(tmp_path):
    path, model = _saved(tmp_path)
    assert ckpt.read_checkpoint(path).state == {"epoch": 1}
    good = path.read_bytes()

    flipped = bytearray(good)
    flipped[-3] ^= 0x10  # inside the last tensor's data: the header still parses
    path.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        ckpt.load_checkpoint(path, model)

    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="unreadable"):
        ckpt.read_checkpoint(path)

    path.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError):
        ckpt.read_checkpoint(path)


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous(tmp_path):
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    older, _ = _saved(folder, "step-000000010.safetensors")
    newer, _ = _saved(folder, "step-000000020.safetensors")
    newer.write_bytes(newer.read_bytes()[:-5])  # a copy cut short
    reports = []
    found = ckpt.newest_good_checkpoint(folder, report=reports.append)
    assert found is not None and found.path == older
    assert len(reports) == 1 and "step-000000020" in reports[0] and "previous" in reports[0]
    assert ckpt.list_checkpoints(folder) == [older]  # the damaged one is set aside, not deleted
    assert (folder / "step-000000020.safetensors.corrupt").is_file()


def test_checkpoints_every_n_steps_and_every_m_minutes(tmp_path):
    data = keel.data.load("digits")
    model = keel.models.build("mlp", data.spec)
    options = {"epochs": 2, "progress": False}
    every_7 = {"min_seconds": 3600, "keep": 100, "every_steps": 7, "every_minutes": None}
    run = keel.fit(model, data, run_dir=tmp_path / "a", checkpoint=every_7, **options)
    steps = [int(p.stem.split("-")[1]) for p in ckpt.list_checkpoints(tmp_path / "a" / "checkpoint")]
    total = run.history[-1]["step"]
    assert steps == sorted({*range(7, total + 1, 7), total})  # mid-epoch ones, and the final one
    always = {"min_seconds": 3600, "keep": 1000, "every_minutes": 1e-9}  # due after every step
    keel.fit(model, data, run_dir=tmp_path / "b", checkpoint=always, epochs=1, progress=False)
    assert len(ckpt.list_checkpoints(tmp_path / "b" / "checkpoint")) == total // 2


def _without_seconds(history):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


def test_mid_epoch_resume_is_bit_identical_with_the_same_metrics(tmp_path):
    data = keel.data.load("digits")
    often = {"every_steps": 17, "min_seconds": 3600, "keep": 100}
    options = {
        "epochs": 2,
        "seed": 5,
        "augment": {"crop": 1},
        "checkpoint": often,
        "early_stopping": {"monitor": "val/accuracy", "patience": 5},
        "progress": False,
    }
    torch.manual_seed(0)
    spec_model = {"name": "mlp", "dropout": 0.25}  # dropout and crop draw from the RNGs
    full = keel.fit(keel.models.build(spec_model, data.spec), data, run_dir=tmp_path, **options)
    steps_per_epoch = full.history[0]["step"]
    saved = ckpt.list_checkpoints(tmp_path / "checkpoint")
    mid = [p for p in saved if int(p.stem.split("-")[1]) % steps_per_epoch]
    assert len(mid) >= 3
    for path in (mid[0], mid[-1]):  # in the first epoch and in the last
        assert ckpt.read_checkpoint(path).state["batch"] > 0
        torch.manual_seed(99)
        resumed = keel.fit(keel.models.build(spec_model, data.spec), data, resume=path, **options)
        assert _without_seconds(resumed.history) == _without_seconds(full.history)
        for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
            assert torch.equal(a, b), k


def test_resume_refuses_a_different_batch_size(tmp_path):
    data = keel.data.load("digits")
    model = keel.models.build("mlp", data.spec)
    keel.fit(model, data, run_dir=tmp_path, epochs=1, progress=False)
    with pytest.raises(ConfigError, match="steps per epoch"):
        keel.fit(model, data, resume=tmp_path / "checkpoint", epochs=2, batch_size=64, progress=False)


def test_checkpoints_set_aside_as_corrupt_are_never_rotated_away(tmp_path):
    """The same step checkpointed again after each resume and damaged again: three files set
    aside, then training goes on through many rotations (keep: 2), and all three remain."""
    data = keel.data.load("digits")
    options = {"checkpoint": {"every_steps": 5, "min_seconds": 3600, "keep": 2}, "progress": False, "batch_size": 64}
    folder = tmp_path / "checkpoint"
    keel.fit(keel.models.build("mlp", data.spec), data, run_dir=tmp_path, epochs=1, **options)
    damaged = []
    for _ in range(3):
        newest = ckpt.list_checkpoints(folder)[-1]
        raw = bytearray(newest.read_bytes())
        raw[-9] ^= 0xFF  # one flipped bit in the last tensor's data
        newest.write_bytes(bytes(raw))
        damaged.append(bytes(raw))
        # resumes from the one before (setting the damaged one aside) and writes that step again
        keel.fit(keel.models.build("mlp", data.spec), data, run_dir=tmp_path, epochs=1, resume=folder, **options)
    keel.fit(keel.models.build("mlp", data.spec), data, run_dir=tmp_path, epochs=3, resume=folder, **options)
    aside = sorted(folder.glob("*.corrupt"))
    assert [p.name for p in aside] == [
        f"{newest.name}.2.corrupt",
        f"{newest.name}.3.corrupt",
        f"{newest.name}.corrupt",
    ]
    assert sorted(p.read_bytes() for p in aside) == sorted(damaged)  # each one as it was found
    assert len(ckpt.list_checkpoints(folder)) == 2  # rotation went on around them
