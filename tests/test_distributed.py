"""`keel train --nproc 2` on the CPU (gloo) through torchrun: the same loss curve and final
weights as one process at the same global batch; a rank that dies fails the job cleanly, and
resuming on 2 processes ends bit-identical to the run that was never interrupted. Each rank
draws from its own RNG streams, checkpointed and resumed per rank."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch
from conftest import SRC, assert_one_line_error, keel

from torchkeel.config import RunConfig, validate_config
from torchkeel.errors import ConfigError
from torchkeel.train.launch import LaunchOptions, launch

# digits with a 0.25 test fraction leaves 1,168 training samples = 73 batches of 16, so one
# process and two processes of 8 see exactly the same batches (no padding of a last batch)
DIVISIBLE = ["--set", "data.test_fraction=0.25", "--set", "train.batch_size=16"]
# a learning rate in the stable regime: at lr 0.05 with momentum 0.9 the trajectory is chaotic
# and the rounding differences of summing gradients in another order grow ~500x per epoch
SGD = ["--set", "train.optimizer.name=sgd", "--set", "train.optimizer.lr=0.02", "--set", "train.optimizer.momentum=0.5"]
EVERY_EPOCH = ["--set", "train.checkpoint.min_seconds=0", "--set", "train.checkpoint.keep=3"]
EPOCHS = 8  # long enough to kill a rank mid-run (an epoch takes about a second here)
TRAIN = ["train", "--epochs", str(EPOCHS), "-q", *DIVISIBLE, *SGD, *EVERY_EPOCH]


def _epochs(run: Path) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "seconds" in r]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(str(run / "model.safetensors"))


@pytest.fixture(scope="module")
def one_and_two(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    cwd = tmp_path_factory.mktemp("ddp")
    # one thread, as `--nproc 2` gives each rank on two cores (launch.py: cores // nproc): on an
    # AVX-512 CPU, two threads sum in another order and that run drifted from both by up to
    # 3e-3 (relative) by epoch 4, while one thread and two ranks of one thread agreed to 2e-7
    # over all 8 epochs
    keel(*TRAIN, "--out-dir", "one", "--set", "train.threads=1", cwd=cwd, check=True)
    two = keel(*TRAIN, "--out-dir", "two", "--nproc", "2", cwd=cwd, check=True)
    assert "DistributedDataParallel over 2 processes (gloo): global batch 16 = 2 x 8" in two.stdout
    assert two.stdout.count("[1/6] Preprocess") == 1  # only rank 0 prints
    return (cwd / "one" / "latest").resolve(), (cwd / "two" / "latest").resolve()


def test_two_processes_follow_one_process(one_and_two):
    one, two = one_and_two
    curve_one, curve_two = _epochs(one), _epochs(two)
    assert len(curve_one) == len(curve_two) == EPOCHS
    for a, b in zip(curve_one, curve_two, strict=True):
        assert a["step"] == b["step"]  # the same number of optimiser steps
        for key in ("train/loss", "train/accuracy", "val/loss", "val/accuracy", "val/f1"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), key
    w1, w2 = _weights(one), _weights(two)
    assert w1.keys() == w2.keys()
    for key in w1:
        torch.testing.assert_close(w2[key], w1[key], rtol=0, atol=1e-5)
    env = json.loads((two / "env.json").read_text())
    assert env["distributed"] == {"world_size": 2, "backend": "gloo"}
    # rank 0 alone wrote the folder: one run, its model, the last 3 epochs' checkpoints
    assert len(list(two.parent.glob("2*"))) == 1 and len(list((two / "checkpoint").glob("step-*"))) == 3


def _worker_pid(launcher: int, rank: int) -> int | None:
    """The torchrun worker of ``rank`` among the launcher's child processes."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == launcher and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    return None


# ~50 s: the default run covers two-process training (test_two_processes_follow_one_process) and
# its exact resume (test_each_rank_checkpoints_and_resumes_its_own_rng_streams)
@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the worker through /proc (Linux)")
def test_a_dead_rank_fails_the_job_cleanly_and_resume_is_exact(one_and_two, tmp_path: Path):
    """The 2-process run again, rank 1 killed (SIGKILL) after the first checkpoint: the job
    ends at once with one line naming the rank; `--resume` on 2 processes then finishes with
    the uninterrupted run's weights, bit for bit."""
    _, uninterrupted = one_and_two
    cmd = [sys.executable, "-m", "torchkeel", *TRAIN, "--nproc", "2"]
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    launcher = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not list(tmp_path.glob("runs/2*/checkpoint/step-*.safetensors")):
            assert launcher.poll() is None, launcher.communicate()
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.1)
        victim = _worker_pid(launcher.pid, rank=1)
        assert victim is not None and launcher.poll() is None, "the run ended before rank 1 could be killed"
        os.kill(victim, signal.SIGKILL)
        stdout, stderr = launcher.communicate(timeout=120)  # no hang: torchrun stops rank 0
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    assert_one_line_error(subprocess.CompletedProcess(cmd, launcher.returncode, stdout, stderr), "rank 1", "SIGKILL")
    assert "--resume" in stderr
    run = next(tmp_path.glob("runs/2*"))
    assert not (run / "model.safetensors").exists()  # unfinished; its checkpoints kept
    keel("train", "--resume", str(run), "--nproc", "2", "-q", cwd=tmp_path, check=True)
    assert [r["epoch"] for r in _epochs(run)] == list(range(1, EPOCHS + 1))
    assert [r["train/loss"] for r in _epochs(run)] == [r["train/loss"] for r in _epochs(uninterrupted)]
    for key, value in _weights(uninterrupted).items():
        assert torch.equal(_weights(run)[key], value), key


def test_bad_launch_options_are_one_line_errors(tmp_path: Path):
    assert_one_line_error(keel("train", "--nnodes", "2", cwd=tmp_path), "--nproc")
    with pytest.raises(ConfigError, match="--rdzv-endpoint"):
        launch(RunConfig(), LaunchOptions(2, nnodes="2"))
    with pytest.raises(ConfigError, match="multiple of 4"):
        launch(validate_config({"train": {"batch_size": 30}}), LaunchOptions(2, nnodes="2", rdzv_endpoint="h:1"))


def test_torchrun_arguments():
    assert LaunchOptions(4).torchrun_args() == ["--nproc-per-node", "4", "--standalone"]
    fixed = LaunchOptions(2, "3", 1, "10.0.0.1:29400").torchrun_args()
    assert fixed[-4:] == ["--rdzv-backend", "static", "--node-rank", "1"] and "10.0.0.1:29400" in fixed
    elastic = LaunchOptions(2, "2:4", None, "10.0.0.1:29400").torchrun_args()
    assert elastic[elastic.index("--nnodes") + 1] == "2:4" and "c10d" in elastic


@pytest.mark.slow
@pytest.mark.parametrize("fixed_ranks", [True, False], ids=["static", "elastic"])
def test_two_nodes_meet_at_the_rendezvous(one_and_two, tmp_path: Path, fixed_ranks: bool):
    """Two launchers in separate folders (two "nodes" on this machine), one process each, with
    --nnodes 2 --rdzv-endpoint (and --node-rank for fixed ranks): the same run as 2 local processes."""
    from serving import free_port

    _, two = one_and_two
    endpoint = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    launchers = []
    for node in range(2):
        folder = tmp_path / f"node{node}"
        folder.mkdir()
        # one thread, as each of the 2 local processes had: the same kernels, the same sums
        args = [*TRAIN, "--set", "train.threads=1", "--nproc", "1", "--nnodes", "2", "--rdzv-endpoint", endpoint]
        args += ["--node-rank", str(node)] if fixed_ranks else []
        cmd = [sys.executable, "-m", "torchkeel", *args]
        launchers.append(subprocess.Popen(cmd, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    try:
        outputs = [p.communicate(timeout=600) for p in launchers]
    finally:
        for p in launchers:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in launchers] == [0, 0], outputs
    written = list(tmp_path.glob("node*/runs/2*"))
    assert len(written) == 1  # rank 0's node alone wrote a run folder
    if fixed_ranks:
        assert written[0].parent.parent.name == "node0"
    for key, value in _weights(two).items():
        assert torch.equal(_weights(written[0])[key], value), key


# --------------------------------------------------------------------------------------------
# per-rank RNG streams: `fit` on 2 gloo processes started by torch.multiprocessing

RANK_OPTIONS = {
    "epochs": 2,
    "batch_size": 32,  # 40 steps per epoch, 16 samples per rank
    "threads": 1,
    "seed": 5,
    "progress": False,
    "checkpoint": {"every_steps": 10, "min_seconds": 3600, "keep": 100},
}


def _rank_worker(rank: int, world: int, folder: str) -> None:
    """One rank: an uninterrupted run; a resume from its mid-epoch checkpoint at step 30; a
    run that rank 1 alone signals (SIGTERM) at its 15th step, resumed. Every rank's weights and
    RNG state at the end go to ``rank<r>.safetensors`` for the test to compare."""
    import torch.distributed as tdist

    import torchkeel as keel_lib
    from torchkeel.errors import TrainingInterrupted
    from torchkeel.train.signals import StopSignals

    out = Path(folder)
    tdist.init_process_group("gloo", init_method=f"file://{out / 'rendezvous'}", rank=rank, world_size=world)
    data = keel_lib.data.load("digits")

    def model():
        torch.manual_seed(0)
        return keel_lib.models.build({"name": "mlp", "dropout": 0.5}, data.spec)  # per-rank dropout masks

    def signal_at(net, call):
        calls = [0]

        def hook(*_):
            calls[0] += 1
            if calls[0] == call and rank == 1:
                os.kill(os.getpid(), signal.SIGTERM)

        net.register_forward_pre_hook(hook)
        return net

    def keep(name, run):
        results[f"rng.{name}"] = torch.get_rng_state()
        results.update({f"{name}.{k}": v for k, v in run.model.state_dict().items()})

    results = {}
    keep("full", keel_lib.fit(model(), data, run_dir=out / "full", **RANK_OPTIONS))
    tdist.barrier()  # rank 0 has written the checkpoints
    mid_epoch = out / "full" / "checkpoint" / "step-000000030.safetensors"
    keep("resumed", keel_lib.fit(model(), data, resume=mid_epoch, **RANK_OPTIONS))
    try:
        with StopSignals() as stop:
            keel_lib.fit(signal_at(model(), 15), data, run_dir=out / "stopped", stop=stop, **RANK_OPTIONS)
    except TrainingInterrupted as e:
        (out / f"stopped{rank}.txt").write_text(str(e))
    keep("after_stop", keel_lib.fit(model(), data, resume=out / "stopped" / "checkpoint", **RANK_OPTIONS))
    safetensors.torch.save_file({k: v.contiguous() for k, v in results.items()}, str(out / f"rank{rank}.safetensors"))
    tdist.destroy_process_group()


def test_each_rank_checkpoints_and_resumes_its_own_rng_streams(tmp_path: Path):
    import torch.multiprocessing

    from torchkeel.train import checkpoint as ckpt

    torch.multiprocessing.spawn(_rank_worker, args=(2, str(tmp_path)), nprocs=2)
    ranks = [safetensors.torch.load_file(str(tmp_path / f"rank{r}.safetensors")) for r in range(2)]
    assert not torch.equal(ranks[0]["rng.full"], ranks[1]["rng.full"])  # one stream per rank
    saved = ckpt.read_checkpoint(tmp_path / "full" / "checkpoint" / "step-000000030.safetensors")
    assert not torch.equal(saved.tensors["rng.torch"], saved.tensors["rank1.rng.torch"])  # both ranks' states
    for r, result in enumerate(ranks):
        assert torch.equal(result["rng.resumed"], result["rng.full"]), f"rank {r}'s RNG after the resume"
        full = {k.removeprefix("full."): v for k, v in result.items() if k.startswith("full.")}
        assert full
        for k, v in full.items():
            assert torch.equal(result[f"resumed.{k}"], v), (r, k)
            assert torch.equal(result[f"after_stop.{k}"], v), (r, k)
    # the SIGTERM reached rank 1 alone; both ranks stopped at the next log point (step 20) together
    assert "by SIGTERM at step 20 " in (tmp_path / "stopped1.txt").read_text()
    assert "at step 20 " in (tmp_path / "stopped0.txt").read_text()
    [stopped] = ckpt.list_checkpoints(tmp_path / "stopped" / "checkpoint")[1:]
    assert ckpt.read_checkpoint(stopped).state["global_step"] == 20
