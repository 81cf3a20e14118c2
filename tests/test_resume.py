"""`keel train --resume`: from the newest good checkpoint, around damage and leftovers, from
the start when there is none; refused for a finished run, a run in use, or extra flags."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
import safetensors.torch
import torch
from conftest import assert_one_line_error, keel
from rich.console import Console

import torchkeel as keel_lib
from torchkeel import runs
from torchkeel.config import load_config
from torchkeel.errors import RunError
from torchkeel.experiment import train
from torchkeel.train import checkpoint as ckpt


def _train(cfg=None, resume: str | None = None) -> tuple[Path, str]:
    out = io.StringIO()
    run_dir = train(cfg or load_config(), Console(file=out, width=300), resume=resume, progress=False)
    return run_dir, out.getvalue()


def _unfinish(run_dir: Path) -> None:
    for name in ("summary.json", "model.safetensors", "model.json"):
        (run_dir / name).unlink()


def test_resume_around_damage_from_scratch_and_refusals(tmp_path):
    settings = ["model.name=mlp", "train.epochs=2", "train.checkpoint.every_steps=10", "train.checkpoint.keep=3"]
    cfg = load_config(None, [*settings, f"out_dir={tmp_path / 'runs'}"])
    run_dir, _ = _train(cfg)
    weights = safetensors.torch.load_file(run_dir / "model.safetensors")

    def assert_same_weights():
        again = safetensors.torch.load_file(run_dir / "model.safetensors")
        assert all(torch.equal(weights[k], again[k]) for k in weights)

    # interrupted with its newest checkpoint damaged and a killed write's temporary file left
    _unfinish(run_dir)
    folder = run_dir / "checkpoint"
    newest = ckpt.list_checkpoints(folder)[-1]
    newest.write_bytes(newest.read_bytes()[:1000])
    (folder / ".step-000000099.safetensors.abc123.tmp").write_bytes(b"half")
    _, said = _train(resume=str(run_dir))
    assert "warning:" in said and "moved it aside" in said and "removed 1 half-written" in said
    assert_same_weights()

    with pytest.raises(RunError, match="has finished"):
        _train(resume=str(run_dir))

    # interrupted before its first checkpoint: trained from the start with its saved config
    _unfinish(run_dir)
    shutil.rmtree(folder)
    _, said = _train(resume=str(run_dir))
    assert "no checkpoint yet" in said
    assert_same_weights()

    _unfinish(run_dir)
    with runs.lock_run(run_dir), pytest.raises(RunError, match="being trained by another process"):
        _train(resume=str(run_dir))


def test_resume_takes_no_other_settings(tmp_path):
    proc = keel("train", "--resume", "latest", "--epochs", "3", cwd=tmp_path)
    assert_one_line_error(proc, "--resume continues a run with the config saved in it")


def test_deterministic_turns_on_deterministic_algorithms():
    data = keel_lib.data.load("digits")
    try:
        keel_lib.fit(keel_lib.models.build("mlp", data.spec), data, epochs=1, deterministic=True, progress=False)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_resume_is_bit_identical_with_deterministic(tmp_path):
    data = keel_lib.data.load("digits")
    options = {
        "epochs": 2,
        "device": "cuda",
        "deterministic": True,
        "augment": {"crop": 1},
        "checkpoint": {"every_steps": 15, "min_seconds": 3600, "keep": 100},
        "progress": False,
    }
    try:
        torch.manual_seed(0)
        full = keel_lib.fit(keel_lib.models.build("simple_cnn", data.spec), data, run_dir=tmp_path, **options)
        mid = ckpt.list_checkpoints(tmp_path / "checkpoint")[2]
        torch.manual_seed(1)
        resumed = keel_lib.fit(keel_lib.models.build("simple_cnn", data.spec), data, resume=mid, **options)
        for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
            assert torch.equal(a, b), k
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False
