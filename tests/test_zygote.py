"""The tests' ``keel`` helper: a command forked from the zygote (tests/keel_zygote.py) behaves as
``python -m torchkeel`` in a new interpreter: the same output, exit code, folder and
environment, and a command past its timeout is killed without taking the zygote with it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import _ZYGOTE, assert_one_line_error, keel


def _both(monkeypatch: pytest.MonkeyPatch, *args: str, cwd: Path) -> tuple[subprocess.CompletedProcess, ...]:
    forked = keel(*args, cwd=cwd)
    monkeypatch.setenv("KEEL_TEST_ZYGOTE", "0")
    fresh = keel(*args, cwd=cwd)
    monkeypatch.delenv("KEEL_TEST_ZYGOTE")
    return forked, fresh


def test_a_forked_command_is_the_command_in_a_new_interpreter(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    if not _ZYGOTE.usable():
        pytest.skip("no fork on this platform")
    assert keel("--help", cwd=tmp_path).returncode == 0  # the zygote runs, started before the variable is set
    monkeypatch.setenv("COLUMNS", "64")  # read by the help's layout: the child sees the caller's environment
    forked, fresh = _both(monkeypatch, "train", "--help", cwd=tmp_path)
    assert forked.returncode == fresh.returncode == 0 and forked.stdout == fresh.stdout
    assert max(len(line) for line in forked.stdout.splitlines()) <= 64
    forked, fresh = _both(monkeypatch, "train", "--set", "train.epochs=-1", cwd=tmp_path)
    assert_one_line_error(forked)
    assert (forked.returncode, forked.stderr) == (fresh.returncode, fresh.stderr)
    (tmp_path / "here.yaml").write_text("train: {epochs: -1}\n")  # found in the command's own folder
    assert_one_line_error(keel("train", "here.yaml", cwd=tmp_path), "train.epochs")


def test_a_command_past_its_timeout_is_killed_and_the_next_one_runs(trained_run: Path, tmp_path: Path):
    if not _ZYGOTE.usable():
        pytest.skip("no fork on this platform")
    with pytest.raises(subprocess.TimeoutExpired):
        keel("serve", str(trained_run), "--port", "0", cwd=tmp_path, timeout=3)  # serves until stopped
    assert keel("--help", cwd=tmp_path).returncode == 0
