"""Shared test helpers: run the CLI in a subprocess, and one small trained run to share."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
# The suite runs on pytest-xdist workers, one per core (pyproject's addopts). Each worker, and
# every process it starts, uses one OpenMP thread: two workers with two threads each on two
# cores spin at OpenMP barriers, which made small jobs 5-15x slower on a busy machine
# (benchmarks/RESULTS.md). With `-n 0` (one process), torch's default as before.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


def keel(*args: str, cwd: Path, timeout: float = 300, check: bool = False) -> subprocess.CompletedProcess:
    """Run ``python -m torchkeel ARGS`` in ``cwd`` against this checkout's sources, in a process
    of its own: forked from a zygote that has imported torch already (tests/keel_zygote.py),
    or a new interpreter where there is no fork or ``KEEL_TEST_ZYGOTE=0``."""
    if _ZYGOTE.usable():
        proc = _ZYGOTE.run(list(args), Path(cwd), timeout, _cli_env())
    else:
        proc = subprocess.run(
            [sys.executable, "-m", "torchkeel", *args],
            cwd=cwd,
            env=_cli_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    if check and proc.returncode != 0:
        raise AssertionError(f"keel {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def _cli_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


class _Zygote:
    """One zygote per test process, started on first use and ended with the process."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.lock = threading.Lock()
        self.pending = b""
        self.env: dict[str, str] | None = None

    def usable(self) -> bool:
        """Fork where the platform can, unless a variable read at import (thread counts, the
        path, hash seed, devices) differs from the zygote's: then a new interpreter."""
        if not hasattr(os, "fork") or os.environ.get("KEEL_TEST_ZYGOTE", "1") == "0":
            return False
        now = _cli_env()
        return self.env is None or all(now.get(k) == self.env.get(k) for k in _READ_AT_IMPORT)

    def _start(self) -> subprocess.Popen:
        if self.proc is None or self.proc.poll() is not None:
            here = Path(__file__).resolve().parent / "keel_zygote.py"
            self.env = _cli_env()
            self.proc = subprocess.Popen(
                [sys.executable, str(here)], env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0
            )
            self.pending = b""
        return self.proc

    def _reply(self, proc: subprocess.Popen, deadline: float | None) -> dict:
        """The zygote's next line, or {} at ``deadline``; read from the pipe unbuffered, so
        select() never waits on a line that a buffer already holds."""
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        while b"\n" not in self.pending:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([fd], [], [], wait)[0]:
                return {}
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError("the keel zygote ended (tests/keel_zygote.py)")
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return json.loads(line)

    def run(self, args: list[str], cwd: Path, timeout: float, env: dict[str, str]) -> subprocess.CompletedProcess:
        with self.lock, tempfile.TemporaryDirectory() as tmp:
            out, err = Path(tmp, "stdout"), Path(tmp, "stderr")
            out.touch(), err.touch()
            proc = self._start()
            assert proc.stdin is not None
            request = {"args": args, "cwd": str(cwd), "out": str(out), "err": str(err), "env": env}
            proc.stdin.write(json.dumps(request).encode() + b"\n")
            pid = self._reply(proc, None)["pid"]
            done = self._reply(proc, time.monotonic() + timeout)
            if not done:  # as subprocess.run: kill the command, then raise
                os.kill(pid, signal.SIGKILL)
                self._reply(proc, None)
                raise subprocess.TimeoutExpired(["keel", *args], timeout, out.read_text(), err.read_text())
            return subprocess.CompletedProcess(
                ["keel", *args], done["returncode"], out.read_text(errors="replace"), err.read_text(errors="replace")
            )


_ZYGOTE = _Zygote()
_READ_AT_IMPORT = {"PYTHONPATH", "PYTHONHASHSEED", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES"}


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit code 2, no traceback, a single 'error:' line that mentions every fragment."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A digits simple_cnn run trained for 6 epochs through the CLI (shared, read-only)."""
    cwd = tmp_path_factory.mktemp("trained")
    keel("train", "--epochs", "6", "--seed", "0", cwd=cwd, check=True)
    return (cwd / "runs" / "latest").resolve()


@pytest.fixture(scope="session")
def detect_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small FCOS trained on generated VOC pictures of discs and squares (shared, read-only
    but for its report and export folder); tests/detect_helpers.py."""
    from detect_helpers import train_detector

    return train_detector(tmp_path_factory.mktemp("detect"))


@pytest.fixture(scope="session")
def digits_server(trained_run: Path, tmp_path_factory: pytest.TempPathFactory):
    """`keel serve` of ``trained_run`` on 127.0.0.1 (shared by the server and web-page tests).
    A long max wait makes concurrent requests batch together even on a busy machine."""
    from serving import running_server

    with running_server(trained_run, "--max-wait-ms", "100", log_dir=tmp_path_factory.mktemp("serve")) as url:
        yield url


NEWS_WORDS = {"sport": ["match", "goal", "team", "coach"], "money": ["bank", "stock", "price", "market"]}


@pytest.fixture(scope="session")
def text_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An embedding_bag text classifier (sport / money headlines), trained in seconds (shared, read-only)."""
    cwd = tmp_path_factory.mktemp("text")
    lines = ["text,label"]
    for i in range(160):
        label = "sport" if i % 2 else "money"
        words = NEWS_WORDS[label]
        lines.append(f"the {words[i % 4]} and the {words[(i + 1) % 4]} today,{label}")
    (cwd / "news.csv").write_text("\n".join(lines) + "\n")
    keel(
        "train", "--data", "text_csv", "--set", "data.path=news.csv", "--model", "embedding_bag", "--epochs", "8",
        "--set", "train.optimizer.lr=0.05", "--set", "train.threads=1", "--set", "eval.report=false", "-q",
        cwd=cwd, check=True,
    )  # fmt: skip
    return (cwd / "runs" / "latest").resolve()


@pytest.fixture(scope="session")
def mixed_table_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An mlp regression on a CSV with a numeric column ("size") and a category column
    ("colour") predicting "weight" (shared, read-only)."""
    cwd = tmp_path_factory.mktemp("mixed")
    colours = ["red", "green", "blue"]
    lines = ["size,colour,weight"] + [
        f"{i * 37 % 100 / 10:.1f},{colours[i % 3]},{i * 37 % 100 / 5 + i % 3}" for i in range(90)
    ]
    (cwd / "shapes.csv").write_text("\n".join(lines) + "\n")
    keel(
        "train", "--data", "csv", "--set", "data.path=shapes.csv", "--set", "data.target=weight", "--model", "mlp",
        "--epochs", "2", "--set", "train.threads=1", "--set", "eval.report=false", "-q", cwd=cwd, check=True,
    )  # fmt: skip
    return (cwd / "runs" / "latest").resolve()


def default_sigint() -> None:
    """``preexec_fn`` of a child that a test sends Ctrl-C: a shell's background job (``nohup
    bash .ci/run &``) starts with SIGINT ignored, and a child inherits that and keeps it, as
    Python does for an ignored SIGINT (it then installs no KeyboardInterrupt handler)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
