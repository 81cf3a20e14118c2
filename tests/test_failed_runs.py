"""A failed run keeps the README's promise: whatever the failure (a KeelError, a bug, an
allocation error, Ctrl-C twice), a run folder without a checkpoint is removed and ``latest``
points at the newest run left; one with a checkpoint stays, to resume."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from torchkeel import runs
from torchkeel.config import validate_config
from torchkeel.errors import ResourceError
from torchkeel.experiment import train
from torchkeel.train import runtime


class Failure(Exception):
    """Not a KeelError: a bug in the user's hook, say."""


def _digits_config(out: Path, **train_keys) -> dict:
    return {
        "model": {"name": "mlp", "hidden": [16]},
        "train": {"epochs": 3, "batch_size": 64, **train_keys},
        "eval": {"report": False},
        "out_dir": str(out),
    }


def _fail_after_first_epoch(error: BaseException):
    def on_epoch(record: dict) -> None:
        if record["epoch"] == 1:
            raise error

    return on_epoch


@pytest.mark.parametrize(
    ("error", "raised"),
    [
        (Failure("boom"), Failure),
        # allocation failures reach the user as one-line ResourceErrors (memory.allocation_errors)
        (RuntimeError("CUDA out of memory"), ResourceError),
        (MemoryError(), ResourceError),
        (KeyboardInterrupt(), KeyboardInterrupt),
    ],
)
def test_a_run_failing_before_its_first_checkpoint_leaves_no_folder(tmp_path: Path, error: BaseException, raised: type):
    """Any exception, not only a KeelError: the folder goes and ``latest`` points at the run before."""
    earlier = runs.create_run(tmp_path, "earlier")
    (earlier / "config.yaml").write_text("{}\n")
    cfg = validate_config(_digits_config(tmp_path))  # no checkpoint before 30 s (min_seconds) but the last
    with pytest.raises(raised):
        train(cfg, Console(quiet=True), progress=False, on_epoch=_fail_after_first_epoch(error))
    assert runs.find_runs(tmp_path) == [earlier]
    assert (tmp_path / "latest").resolve() == earlier.resolve()


def test_a_run_failing_after_a_checkpoint_keeps_it_for_resume(tmp_path: Path):
    cfg = validate_config(_digits_config(tmp_path, checkpoint={"every_steps": 5}))
    with pytest.raises(RuntimeError):
        train(cfg, Console(quiet=True), progress=False, on_epoch=_fail_after_first_epoch(RuntimeError("bug")))
    [run] = runs.find_runs(tmp_path)
    assert list((run / "checkpoint").glob("step-*.safetensors")) and (tmp_path / "latest").resolve() == run


def test_a_failure_while_the_run_folder_is_written_removes_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def no_memory(*args: object) -> dict:
        raise MemoryError

    monkeypatch.setattr(runtime, "environment", no_memory)  # env.json is the second file written
    with pytest.raises(MemoryError):
        train(validate_config(_digits_config(tmp_path)), Console(quiet=True), progress=False)
    assert runs.find_runs(tmp_path) == [] and not any(tmp_path.iterdir())
