"""Test helpers: a real `keel serve` process on 127.0.0.1 and a free port (stopped afterwards),
digit pictures, and a GAN server app without training."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

SRC = Path(__file__).resolve().parents[1] / "src"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(run_dir: Path, *args: str, log_dir: Path, timeout: float = 120) -> Iterator[str]:
    """Yields the base URL once /health answers; the server's output goes to log_dir/serve.log."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    log = (log_dir / "serve.log").open("w")
    cmd = [sys.executable, "-m", "torchkeel", "serve", str(run_dir), "--port", str(port), *args]
    proc = subprocess.Popen(cmd, cwd=log_dir, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"keel serve exited {proc.returncode}:\n{(log_dir / 'serve.log').read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"keel serve did not answer in {timeout} s")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def digit_png(folder: Path, index: int, size: int = 64) -> tuple[Path, int]:
    """Digit ``index`` of scikit-learn's set as a grey PNG, light ink on dark like the data."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = (digits.images[index] / 16.0 * 255).astype(np.uint8)
    path = folder / f"digit{index}.png"
    Image.fromarray(pixels, mode="L").resize((size, size), Image.Resampling.NEAREST).save(path)
    return path, int(digits.target[index])


def untrained_gan_app(folder: Path, **limits: Any) -> Any:
    """The GAN server's app over a tiny class-conditional dcgan that was never trained: the
    HTTP side of a GAN run without the seconds a GAN run takes to train."""
    from torchkeel.data.bundle import DataSpec
    from torchkeel.models import build
    from torchkeel.serve.gan_app import create_gan_app

    spec = DataSpec("digits", "image", "classification", (1, 8, 8), classes=[str(i) for i in range(10)])
    gan = build({"name": "dcgan", "width": 8, "latent_dim": 8, "conditional": True}, spec).eval()
    return create_gan_app(folder, gan, spec, {}, limits or None)
