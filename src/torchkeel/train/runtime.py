"""Device, seeding, precision, threads and the environment record."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import platform
import random
import subprocess
import sys
from typing import Any

import numpy as np
import torch

from torchkeel.config import DEVICE_FORM, DEVICE_FORMS
from torchkeel.errors import ConfigError


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` takes CUDA, then Apple's MPS, then the CPU; a named device must exist here."""
    if not DEVICE_FORM.fullmatch(str(name)):
        raise ConfigError(f"train.device: {str(name)[:40]!r} is not a device; use {DEVICE_FORMS}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
    }
    if not available.get(device.type, False):
        raise ConfigError(f"train.device: '{name}' is not available here; use 'auto' or 'cpu'")
    count = torch.cuda.device_count() if device.type == "cuda" else 1
    if device.index is not None and device.index >= count:
        have = f"cuda:0 to cuda:{count - 1}" if count > 1 else f"{device.type} (index 0) only"
        raise ConfigError(f"train.device: '{name}' does not exist here (this machine has {have})")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto``: bf16 where it is fast, fp32 elsewhere. On the CPU that is AVX512-BF16 or AMX:
    without them oneDNN emulates bf16 and a small CNN's step costs ~30% more CPU time than fp32
    (benchmarks/RESULTS.md). On CUDA, GPUs with native bf16 (Ampere and newer)."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu" and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()):
        return "bf16"
    return "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed precision for the forward pass and loss; fp32 is a no-op."""
    precision = resolve_precision(precision, device)
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("train.precision: fp16 needs a CUDA device; use bf16 on the CPU")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


# glibc's mallopt() parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 * 2**20  # the largest glibc accepts on 64-bit (half its heap size)
TRIM_THRESHOLD = 2**30


def set_allocator(name: str) -> bool:
    """``retain``: tell glibc's malloc to keep freed memory in the process for reuse. By default
    it hands blocks of a few MB straight back to the OS (mmap/munmap, and trimming the heap
    top), so every training step faults the pages of its activations in again: on workload
    (1) of benchmarks/speed.py that was 2-3.6 M page faults and 4-7 s of system time per
    epoch, 1.4-1.6x the training time of the same loop without them (benchmarks/RESULTS.md).
    Blocks up to 32 MB then come from the heap, and the heap top is returned only past 1 GB
    free. It applies to the whole process from then on. True when it was applied (Linux with
    glibc); elsewhere (macOS, musl, Windows) nothing changes."""
    libc = _glibc() if name == "retain" else None
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (platform.libc_ver reads the interpreter's binary: once)."""
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def set_deterministic(enabled: bool) -> None:
    """``train.deterministic``: deterministic kernels only, so a GPU run (and its resume) gives
    the same weights every time, at some cost in speed. Off leaves torch's settings alone."""
    if not enabled:
        return
    # cuBLAS needs a fixed workspace to be deterministic; it must be set before its first use
    # (https://docs.nvidia.com/cuda/cublas/index.html#results-reproducibility)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def environment(device: torch.device) -> dict[str, Any]:
    """Versions, device and command line, written to env.json in every run."""
    import torchkeel

    env: dict[str, Any] = {
        "torchkeel": torchkeel.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "git_revision": git_revision(),
        "command": sys.argv,
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None
