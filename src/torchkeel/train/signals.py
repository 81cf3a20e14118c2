"""Ctrl-C (SIGINT) and SIGTERM as a request to stop training cleanly.

Inside ``with StopSignals() as stop:`` the first signal only sets ``stop.received``; ``fit``
looks at it after every step, writes a checkpoint and raises TrainingInterrupted, so the run
can be resumed exactly. A second signal stops at once (KeyboardInterrupt), for when the first
one was not patient enough. A signal that arrives while another exception ends the block turns
it into TrainingInterrupted, so whoever catches that exception cannot lose the stop. Handlers
can only be installed from the main thread; elsewhere the context does nothing and signals keep
their usual effect.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

from torchkeel.errors import TrainingInterrupted


class StopSignals:
    def __init__(self, signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)):
        self.signals = signals
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None = None, exc: BaseException | None = None, *_: object
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        if (
            self.received is not None
            and exc is not None
            and not isinstance(exc, (KeyboardInterrupt, TrainingInterrupted))
        ):
            # another exception is ending the block (keel tune's pruning, a diverged trial that the
            # study catches and goes on from): the stop that was asked for must not be lost with it
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise TrainingInterrupted(
                f"training stopped by {self.name} (as it was ending with {type(exc).__name__}: {first})",
                self.exit_code,
            ) from exc

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else ""

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + (self.received or 0)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:  # asked twice: stop now, without a checkpoint
            self.__exit__()
            raise KeyboardInterrupt
        self.received = signum
