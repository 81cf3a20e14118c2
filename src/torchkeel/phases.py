"""Where a command's time goes: the phase timer behind ``keel train --profile``.

The process's wall time, from its start (the kernel's start time of the process) to the end of
the command, is cut into consecutive phases: ``mark(name)`` ends the current phase and starts
the next. Imports of the heavy libraries are timed apart, wherever they happen (torch when the
trainer is imported, torch._dynamo if something pulls it in during training, matplotlib when the
report is drawn): their time is taken out of the phase they happened in and shown on its own
line, each library's without the watched libraries it imported itself. What no phase covers is
shown as "other", so the lines add up to the total.

The timer is process-wide on purpose, like ``logging``: ``mark`` is a no-op until ``start`` is
called, so the library's code can mark its phases without passing a timer around.
"""

from __future__ import annotations

import importlib.abc
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

# the libraries whose import is shown on its own line (the rest is part of the phase importing it)
HEAVY = (
    "torch",
    "torch._dynamo",
    "torchvision",
    "numpy",
    "pydantic",
    "yaml",
    "safetensors",
    "matplotlib",
    "captum",
    "PIL",
    "sklearn",
    "scipy",
    "pandas",
    "sympy",
)


def process_age() -> float:
    """Seconds since this process started: from /proc on Linux (10 ms resolution), else since
    torchkeel was imported (which then leaves out the interpreter's own start-up)."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start time, ticks since boot
        return time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, ValueError, IndexError, AttributeError):
        return time.perf_counter() - _IMPORTED


_IMPORTED = time.perf_counter()


@dataclass
class PhaseTimer:
    origin: float  # perf_counter() at the process's start
    phases: dict[str, float] = field(default_factory=dict)
    imports: dict[str, float] = field(default_factory=dict)
    current: str = "start-up (python, typer, rich)"
    since: float = 0.0
    _stack: list[list[float]] = field(default_factory=list)  # per watched import: [start, nested s]
    _in_phase: float = 0.0  # watched-import seconds inside the current phase

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        spent = now - (self.since or self.origin) - self._in_phase
        self.phases[self.current] = self.phases.get(self.current, 0.0) + spent
        self.current, self.since, self._in_phase = name, now, 0.0

    def timed_import(self, name: str, run: Any) -> Any:
        self._stack.append([time.perf_counter(), 0.0])
        try:
            return run()
        finally:
            start, nested = self._stack.pop()
            total = time.perf_counter() - start
            self.imports[name] = self.imports.get(name, 0.0) + total - nested
            if self._stack:
                self._stack[-1][1] += total
            else:
                self._in_phase += total

    def rows(self) -> list[tuple[str, float]]:
        """(line, seconds) in time order, then "other", then the process's total."""
        self.mark("other")
        total = time.perf_counter() - self.origin
        imports = [(f"import {name}", s) for name, s in self.imports.items()]
        named = [(name, s) for name, s in self.phases.items() if name != "other"] + imports
        other = total - sum(s for _, s in named)
        return [*named, ("other", other), ("total (process wall time)", total)]


class _ImportTimer(importlib.abc.MetaPathFinder):
    """Finds nothing itself: asks the finders after it, and times the module's execution."""

    def __init__(self, timer: PhaseTimer):
        self.timer = timer

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name not in HEAVY:
            return None
        for finder in sys.meta_path[sys.meta_path.index(self) + 1 :]:
            spec = finder.find_spec(name, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                execute = spec.loader.exec_module
                spec.loader.exec_module = lambda module, run=execute: self.timer.timed_import(name, lambda: run(module))
                return spec
            if spec is not None:
                return spec
        return None


_timer: PhaseTimer | None = None


def start() -> PhaseTimer:
    """Start timing this process: the time until now is its start-up phase."""
    global _timer
    _timer = PhaseTimer(origin=time.perf_counter() - process_age())
    sys.meta_path.insert(0, _ImportTimer(_timer))
    return _timer


def mark(name: str) -> None:
    """End the current phase and start ``name`` (nothing unless ``start`` was called)."""
    if _timer is not None:
        _timer.mark(name)


def stop() -> list[tuple[str, float]]:
    """The phases and their seconds, and stop timing."""
    global _timer
    timer, _timer = _timer, None
    if timer is None:
        return []
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _ImportTimer)]
    return timer.rows()
