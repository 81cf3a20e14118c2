"""Live progress for training: a rich bar per epoch and one summary line per epoch."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class TrainProgress:
    """Shows epoch, step, loss, accuracy, samples/s and ETA; ``enabled=False`` prints nothing."""

    def __init__(self, epochs: int, console: Console | None = None, enabled: bool = True):
        self.epochs, self.enabled = epochs, enabled
        self.console = console or Console(stderr=True, soft_wrap=True)
        self.progress: Progress | None = None
        self.task = None

    def start_epoch(self, epoch: int, steps: int, done: int = 0) -> None:
        self.t0, self.samples = time.perf_counter(), 0
        if not (self.enabled and self.console.is_terminal):
            return  # logs and pipes get the epoch lines only
        self.progress = Progress(
            TextColumn(f"epoch {epoch + 1}/{self.epochs}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self.task = self.progress.add_task("train", total=steps, completed=done, stats="")
        self.progress.start()

    def update(self, step: int, samples: int, stats: dict[str, float]) -> None:
        """Called every ``log_every`` steps with values already on the host."""
        self.samples = samples
        if self.progress is None:
            return
        rate = samples / max(time.perf_counter() - self.t0, 1e-9)
        text = "  ".join(f"{k} {v:.4f}" for k, v in stats.items()) + f"  {rate:,.0f} samples/s"
        self.progress.update(self.task, completed=step, stats=text)

    def end_epoch(self, epoch: int, train: dict[str, float], val: dict[str, float], lr: float) -> float:
        """Close the bar, print the epoch line; return the epoch's wall time."""
        seconds = time.perf_counter() - self.t0
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        if self.enabled:
            parts = [f"epoch {epoch + 1:>3}/{self.epochs}"]
            parts += [f"train {k} {v:.4f}" for k, v in train.items()]
            parts += [f"val {k} {v:.4f}" for k, v in val.items()]
            parts += [f"lr {lr:.2e}", f"{seconds:.1f}s"]
            self.console.print("  ".join(parts), highlight=False)
        return seconds

    def message(self, text: str) -> None:
        if self.enabled:
            self.console.print(text, highlight=False)
