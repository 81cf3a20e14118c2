"""A run folder that cannot be written (read-only, or a full disk): a clear error, and the
checkpoints already there stay intact and loadable."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import pytest
from conftest import assert_one_line_error, keel

import torchkeel as keel_lib
from torchkeel import atomic
from torchkeel.errors import WriteError
from torchkeel.train import checkpoint as ckpt


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    """A size-limited tmpfs at ``path``; skips the test where mounting is not allowed (not root)."""
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.decode().strip() or proc.returncode})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@contextlib.contextmanager
def read_only(folder: Path):
    """``folder`` made read-only: by permissions for a normal user; root ignores those, so for
    root the folder is a tmpfs remounted read-only (skipped where mounting is not allowed)."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")] if p.is_dir()}
        for p in modes:
            p.chmod(0o555)
        try:
            yield
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
        return
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
    try:
        yield
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(folder)], check=False)


def test_write_error_leaves_the_old_file(tmp_path):
    target = tmp_path / "f.json"
    atomic.write_json(target, {"v": 1})
    with pytest.raises(WriteError, match="cannot write"):
        atomic.write_json(tmp_path / "missing-folder" / "f.json", {"v": 2})
    assert target.read_text().strip().endswith("}") and '"v": 1' in target.read_text()


def test_read_only_run_folder_is_a_clear_error_and_the_checkpoint_survives(tmp_path):
    data = keel_lib.data.load("digits")
    model = keel_lib.models.build("mlp", data.spec)
    options = {"progress": False, "checkpoint": {"min_seconds": 3600}}
    context = contextlib.nullcontext(tmp_path / "run") if os.geteuid() != 0 else tmpfs(tmp_path / "run", "16m")
    with context as run_dir:
        keel_lib.fit(model, data, epochs=1, run_dir=run_dir, **options)
        [saved] = ckpt.list_checkpoints(run_dir / "checkpoint")
        before = saved.read_bytes()
        with read_only(run_dir), pytest.raises(WriteError) as err:
            keel_lib.fit(model, data, epochs=3, run_dir=run_dir, resume=saved, **options)
        message = str(err.value)
        assert "cannot write" in message and f"{saved.name}, is intact" in message, message
        assert ckpt.list_checkpoints(run_dir / "checkpoint") == [saved] and saved.read_bytes() == before
        ckpt.read_checkpoint(saved)  # still verifies


def test_full_disk_is_one_line_and_the_last_checkpoints_survive(tmp_path):
    # simple_cnn checkpoints are ~0.66 MB: two fit in 1.5 MB, the third does not
    with tmpfs(tmp_path / "small", "1500k") as out:
        proc = keel(
            "train", "--epochs", "2", "--set", "train.checkpoint.every_steps=10", "--out-dir", str(out), cwd=tmp_path
        )
        assert_one_line_error(proc, "No space left on device", "is intact")
        saved = ckpt.list_checkpoints(out / "latest" / "checkpoint")
        assert len(saved) == 2 and [ckpt.read_checkpoint(p).state["global_step"] for p in saved] == [10, 20]
        assert not list(out.rglob(".*.tmp"))  # the failed write removed its temporary file
