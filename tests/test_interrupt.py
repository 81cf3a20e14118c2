"""Stopped any way, resumed, same weights: SIGINT/SIGTERM in-process, and `keel train` in a
subprocess killed with SIGKILL at random steps and in the middle of a checkpoint write; the
same for a GAN run."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch
from conftest import SRC, default_sigint
from torch import nn

import torchkeel as keel
from torchkeel.errors import TrainingInterrupted
from torchkeel.train import checkpoint as ckpt
from torchkeel.train.signals import StopSignals


class SignalAt(nn.Module):
    """Wraps a model; sends ``sig`` to this very process during training forward pass ``call``."""

    def __init__(self, inner: nn.Module, call: int | None = None, sig: int = signal.SIGTERM):
        super().__init__()
        self.inner, self.call, self.sig, self.calls = inner, call, sig, 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls == self.call:
                os.kill(os.getpid(), self.sig)
        return self.inner(x)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_finishes_the_step_checkpoints_and_resumes_exactly(tmp_path, sig, code):
    data = keel.data.load("digits")
    options = {"epochs": 1, "seed": 1, "progress": False, "checkpoint": {"min_seconds": 3600}}

    def model(call=None):
        torch.manual_seed(0)
        return SignalAt(keel.models.build({"name": "simple_cnn", "dropout": 0.25}, data.spec), call, sig)

    full = keel.fit(model(), data, **options)
    call = 23  # mid-epoch, before any scheduled checkpoint
    before = signal.getsignal(sig)
    with pytest.raises(TrainingInterrupted) as stopped, StopSignals() as stop:
        keel.fit(model(call), data, run_dir=tmp_path, stop=stop, **options)
    assert stopped.value.exit_code == code
    assert f"at step {call} " in str(stopped.value) and f"keel train --resume {tmp_path}" in str(stopped.value)
    assert signal.getsignal(sig) == before  # the handler is restored
    [saved] = ckpt.list_checkpoints(tmp_path / "checkpoint")
    assert ckpt.read_checkpoint(saved).state["global_step"] == call

    resumed = keel.fit(model(), data, resume=tmp_path / "checkpoint", **options)
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_a_second_signal_stops_at_once():
    with pytest.raises(KeyboardInterrupt), StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.received == signal.SIGTERM
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)  # the handler raises before this ends


def test_a_signal_is_not_lost_with_another_exception():
    """keel tune catches a pruned or diverged trial and goes on: a Ctrl-C that arrived while
    that exception ended training must still stop the study."""
    ending = r"SIGTERM \(as it was ending with ValueError: pruned"
    with pytest.raises(TrainingInterrupted, match=ending) as e, StopSignals():
        os.kill(os.getpid(), signal.SIGTERM)
        raise ValueError("pruned")
    assert e.value.exit_code == 143 and isinstance(e.value.__cause__, ValueError)
    with pytest.raises(ValueError), StopSignals():  # no signal: the exception goes on as it was
        raise ValueError("pruned")


def test_a_signal_after_the_last_steps_check_is_not_lost(tmp_path):
    """SIGINT during the last epoch's on_epoch hook (keel tune reports to its database there),
    after the loop's last look at the flag: fit still stops with the final checkpoint."""
    data = keel.data.load("digits")

    def interrupt(record: dict) -> None:
        os.kill(os.getpid(), signal.SIGINT)

    model = keel.models.build("mlp", data.spec)
    with pytest.raises(TrainingInterrupted) as stopped, StopSignals() as stop:
        keel.fit(model, data, epochs=1, run_dir=tmp_path, stop=stop, on_epoch=interrupt, progress=False)
    assert stopped.value.exit_code == 130 and f"keel train --resume {tmp_path}" in str(stopped.value)
    [saved] = ckpt.list_checkpoints(tmp_path / "checkpoint")
    assert ckpt.read_checkpoint(saved).state["epoch"] == 1  # the final one: a resume only evaluates


def test_a_signal_after_fit_returned_stops_keel_train(tmp_path, monkeypatch):
    """The few steps between fit's return and the handlers' restoration: the flag is still
    looked at, so `keel train` exits 130 instead of finishing as if nothing had arrived."""
    from rich.console import Console

    from torchkeel import experiment, runs
    from torchkeel.config import validate_config

    real_fit = experiment.fit

    def fit_then_signal(*args, **kwargs):
        run = real_fit(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)
        return run

    monkeypatch.setattr(experiment, "fit", fit_then_signal)
    cfg = validate_config(
        {"model": {"name": "mlp"}, "train": {"epochs": 1}, "eval": {"report": False}, "out_dir": str(tmp_path)}
    )
    with pytest.raises(TrainingInterrupted) as stopped:
        experiment.train(cfg, Console(quiet=True), progress=False)
    assert stopped.value.exit_code == 130 and "keel train --resume" in str(stopped.value)
    [run] = runs.find_runs(tmp_path)  # kept, with its final checkpoint, for the resume
    assert ckpt.list_checkpoints(run / "checkpoint") and not (run / "summary.json").exists()


# --------------------------------------------------------------------------------------------
# `keel train` in a subprocess, killed and resumed

# 40 steps per epoch; a checkpoint every 10 steps so kills land between checkpoints too
TRAIN_ARGS = ["train", "-q", "--seed", "3", "--set", "train.checkpoint.every_steps=10"]
# a small DCGAN: 39 steps per epoch (batch 32), a 1-epoch feature classifier, few Frechet samples
GAN_ARGS = [*TRAIN_ARGS, "--model", "dcgan", "--set", "model.width=16", "--set", "train.threads=1"]
GAN_ARGS += ["--set", "train.gan.classifier_epochs=1", "--set", "train.gan.grid=16"]
GAN_ARGS += ["--set", "train.gan.frechet_samples=64"]
# os.fsync made slow (0.4 s) so the kill can land while a checkpoint's temporary file exists
SLOW_FSYNC = (
    "import os, sys, time; fsync = os.fsync; os.fsync = lambda fd: (time.sleep(0.4), fsync(fd))[1]; "
    "sys.argv[0] = 'keel'; from torchkeel.cli import main; main()"
)


class KilledRun:
    """One run folder under ``out``, started, stopped and resumed by the test."""

    def __init__(self, out: Path, epochs: int, rng: random.Random, train_args: list[str] = TRAIN_ARGS):
        self.out, self.epochs, self.rng, self.train_args = out, epochs, rng, train_args
        self.kills: list[str] = []  # what each stop hit, for the report

    def start(self, *, slow_fsync: bool = False) -> subprocess.Popen:
        first = not (self.out / "latest").exists()
        args = [*self.train_args, "--epochs", str(self.epochs)] if first else ["train", "-q", "--resume", "latest"]
        program = ["-c", SLOW_FSYNC] if slow_fsync else ["-m", "torchkeel"]
        return subprocess.Popen(
            [sys.executable, *program, *args, "--out-dir", str(self.out)],
            cwd=self.out.parent,
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=default_sigint,
        )

    @property
    def folder(self) -> Path:
        return self.out / "latest" / "checkpoint"

    def steps(self) -> list[int]:
        return [int(p.stem.split("-")[1]) for p in ckpt.list_checkpoints(self.folder)]

    def kill_after_step(self, target: int, sig: int = signal.SIGKILL) -> int:
        """Once a checkpoint at or past ``target`` exists, wait a random few ms (a few more
        steps) and send ``sig``; returns the exit code."""
        proc = self.start()
        _wait_for(proc, lambda: max(self.steps(), default=0) >= target)
        time.sleep(self.rng.uniform(0.0, 0.05))
        newest = max(self.steps(), default=0)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=120)
        if sig == signal.SIGKILL:  # the step it died in is unknown: some steps after the checkpoint
            self.kills.append(f"SIGKILL after checkpoint step {newest}")
        else:
            assert "keel train --resume" in stderr, stderr
            stopped_at = re.search(r"at step (\d+)", stderr)
            self.kills.append(f"{signal.Signals(sig).name} at step {stopped_at.group(1) if stopped_at else '?'}")
        return proc.returncode

    def kill_during_write(self) -> None:
        proc = self.start(slow_fsync=True)
        _wait_for(proc, lambda: any(self.folder.glob(".step-*.tmp")))
        proc.kill()
        proc.communicate(timeout=120)
        [tmp] = self.folder.glob(".step-*.tmp")  # the half-written checkpoint is still there
        self.kills.append(f"SIGKILL while writing {tmp.name.split('.')[1]}")

    def kill_before_first_checkpoint(self) -> None:
        proc = self.start()
        _wait_for(proc, lambda: (self.out / "latest" / "env.json").is_file())
        proc.kill()
        proc.communicate(timeout=120)
        if not self.steps():
            self.kills.append("SIGKILL before the first checkpoint")

    def finish(self) -> Path:
        proc = self.start()
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr
        assert not list(self.folder.glob(".*.tmp"))  # the resume cleared what the kills left
        return (self.out / "latest").resolve()


def _wait_for(proc: subprocess.Popen, condition, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the run ended before the kill point: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "timed out waiting for the kill point"
        time.sleep(0.002)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}


def _reference(tmp_path: Path, epochs: int, train_args: list[str] = TRAIN_ARGS) -> Path:
    out = tmp_path / "uninterrupted"
    args = [*train_args, "--epochs", str(epochs), "--out-dir", str(out)]
    subprocess.run(
        [sys.executable, "-m", "torchkeel", *args], cwd=tmp_path, env=_env(), check=True, capture_output=True
    )
    return (out / "latest").resolve()


def _assert_same_run(reference: Path, resumed: Path) -> None:
    a = safetensors.torch.load_file(reference / "model.safetensors")
    b = safetensors.torch.load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k  # bit for bit
    assert (
        json.loads((reference / "summary.json").read_text())["test"]
        == json.loads((resumed / "summary.json").read_text())["test"]
    )


def test_keel_train_killed_three_ways_resumes_to_identical_weights(tmp_path):
    rng = random.Random(7)
    run = KilledRun(tmp_path / "killed", epochs=3, rng=rng)
    run.kill_after_step(rng.randrange(10, 40))  # SIGKILL mid-epoch 1
    run.kill_during_write()  # SIGKILL with a checkpoint half-written
    assert run.kill_after_step(max(run.steps()) + 10, signal.SIGINT) == 130  # Ctrl-C: checkpoint, exit 130
    resumed = run.finish()
    print(f"kill points: {run.kills}")
    assert len(run.kills) == 3
    _assert_same_run(_reference(tmp_path, epochs=3), resumed)


@pytest.mark.slow  # ~40 s of CPU; the default run resumes GANs in-process (tests/test_gan.py)
def test_keel_train_of_a_gan_killed_and_stopped_resumes_to_identical_weights(tmp_path):
    """A GAN run (its own loop, two networks, two optimisers) SIGKILLed mid-epoch after a
    checkpoint, then stopped by Ctrl-C (checkpoint, exit 130), resumed to the end: the
    weights and the Frechet distance of the run never interrupted, bit for bit."""
    rng = random.Random(11)
    run = KilledRun(tmp_path / "killed", epochs=2, rng=rng, train_args=GAN_ARGS)
    run.kill_after_step(rng.randrange(10, 30))  # SIGKILL in epoch 1
    assert run.kill_after_step(max(run.steps()) + 10, signal.SIGINT) == 130  # Ctrl-C: checkpoint, exit 130
    resumed = run.finish()
    print(f"kill points: {run.kills}")
    assert len(run.kills) == 2 and len(list((resumed / "samples").iterdir())) == 2
    _assert_same_run(_reference(tmp_path, epochs=2, train_args=GAN_ARGS), resumed)


@pytest.mark.slow
def test_keel_train_killed_many_times_at_random_points(tmp_path):
    rng = random.Random(2024)
    epochs = 6  # 240 steps
    run = KilledRun(tmp_path / "killed", epochs=epochs, rng=rng)
    run.kill_before_first_checkpoint()
    for _ in range(8):
        kind = rng.choice(["kill", "kill", "write", "int", "term"])
        if kind == "write":
            run.kill_during_write()
            continue
        target = max(run.steps(), default=0) + rng.randrange(1, 40)
        if target >= 40 * epochs - 10:
            break
        sig = {"kill": signal.SIGKILL, "int": signal.SIGINT, "term": signal.SIGTERM}[kind]
        code = run.kill_after_step(target, sig)
        if sig != signal.SIGKILL:
            assert code == 128 + sig
    resumed = run.finish()
    print(f"kill points ({len(run.kills)}): {run.kills}")
    assert len(run.kills) >= 6
    _assert_same_run(_reference(tmp_path, epochs=epochs), resumed)
