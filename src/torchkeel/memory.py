"""Memory a run will need, estimated before anything is allocated, so a setting that cannot fit
(a model of 100,000 channels, images of 20,000 x 20,000 pixels, texts of 100,000 tokens) ends
in one error with the numbers instead of an allocation failure deep inside torch.

Estimates are lower bounds of what a step really takes (fp32 weights, their gradients and the
optimiser's state; the tensors a forward pass makes, which autograd keeps for the backward
pass), so nothing that fits is refused; what they leave out (the backward pass's own
temporaries, the allocator's slack) the allocation error at the training edge still catches.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torchkeel.errors import ResourceError

MEMINFO = Path("/proc/meminfo")
CGROUP = Path("/sys/fs/cgroup")  # cgroup v2: a container's limit and its current use


def available_bytes(device: Any = "cpu") -> int | None:
    """Bytes that can still be allocated on ``device`` (a torch.device or its type), or None
    where we cannot tell (Apple's MPS, a system without /proc and sysconf)."""
    device_type = getattr(device, "type", str(device).split(":")[0])
    if device_type == "cuda":
        import torch

        return int(torch.cuda.mem_get_info(device)[0])
    if device_type != "cpu":
        return None
    host = _meminfo_available()
    host = _sysconf_available() if host is None else host
    left = [b for b in (host, _cgroup_left()) if b is not None]  # a container may have less than the host
    return min(left) if left else None


def _meminfo_available() -> int | None:
    """Linux's MemAvailable: what can be allocated without swapping, page cache that can be
    dropped included (proc(5)); sysconf's free pages leave that cache out."""
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _sysconf_available() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):  # no sysconf, or no such name (macOS, Windows)
        return None


def _cgroup_left() -> int | None:
    try:
        limit = (CGROUP / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int((CGROUP / "memory.current").read_text().strip()))
    except (OSError, ValueError):
        return None


def gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"


def check_fits(need: int, what: str, fix: str, device: Any = "cpu") -> None:
    """ResourceError when ``need`` bytes (for ``what``) exceed what ``device`` has available."""
    have = available_bytes(device)
    if have is not None and need > have:
        where = "on this machine" if getattr(device, "type", device) == "cpu" else f"on {device}"
        raise ResourceError(f"{what} needs about {gib(need)} but {gib(have)} of memory is available {where}: {fix}")


ALLOCATION_FAILURES = ("not enough memory", "can't allocate memory", "out of memory", "cannot allocate memory")


def is_allocation_error(error: BaseException) -> bool:
    """torch's and numpy's ways of saying an allocation failed: MemoryError (numpy's
    ``_ArrayMemoryError`` too), torch.OutOfMemoryError (CUDA), and the CPU allocator's
    RuntimeError ("DefaultCPUAllocator: not enough memory" / "can't allocate memory")."""
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return True
    return isinstance(error, RuntimeError) and any(s in str(error).lower() for s in ALLOCATION_FAILURES)


def allocation_message(error: BaseException, doing: str) -> str:
    """One line for an allocation failure while ``doing`` something, saying what to lower."""
    from torchkeel.errors import one_line

    detail = one_line(str(error), 200) or type(error).__name__
    return (
        f"out of memory while {doing} ({detail}): lower train.batch_size, eval.batch_size, "
        "the input size (data.image.size, data.text.max_length) or the model's size"
    )


@contextlib.contextmanager
def allocation_errors(doing: str) -> Iterator[None]:
    """Turn an allocation failure inside the block into one ResourceError (a KeelError, so the
    caller's cleanup of a failed run applies to it too)."""
    try:
        yield
    except (MemoryError, RuntimeError) as e:
        if not is_allocation_error(e):
            raise
        raise ResourceError(allocation_message(e, doing)) from None
