"""Shared test helpers: run the CLI in a subprocess, and one small trained run to share."""

from __future__ import annotations

import os
import subprocess
import sys
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
    """Run ``python -m torchkeel ARGS`` in ``cwd`` against this checkout's sources."""
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(
        [sys.executable, "-m", "torchkeel", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"keel {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


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
