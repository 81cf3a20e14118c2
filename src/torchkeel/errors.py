"""The one error family torchkeel raises at its edges (config, files, requests).

The CLI prints ``str(error)`` on one line and exits with code 2, so every message says what is
wrong and what to do about it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class KeelError(Exception):
    """Base class: a problem with the user's input that they can fix."""


class ConfigError(KeelError):
    """An invalid config key, type, value or name."""


class DataError(KeelError):
    """A data set or input file that cannot be read or used."""


class RunError(KeelError):
    """A missing or unusable run folder."""


class TrainingError(KeelError):
    """Training stopped because it cannot continue (NaN loss, ...)."""


class CheckpointError(RunError):
    """A checkpoint file that is truncated, corrupt or not a torchkeel checkpoint."""


class WriteError(KeelError):
    """A file could not be written: disk full, read-only or missing folder."""


class TrainingInterrupted(TrainingError):
    """SIGINT/SIGTERM stopped training after a checkpoint was written; ``exit_code`` is the
    shell's convention for the signal (130 for SIGINT, 143 for SIGTERM)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class StopRequested(Exception):  # noqa: N818 - a request, not an error
    """Raised by an ``on_epoch`` hook to end training on purpose (``keel tune`` prunes a trial
    this way): unlike a failure, it leaves the run folder as it is."""


class EndTraining(Exception):  # noqa: N818 - a request, not an error
    """Raised by an ``on_epoch`` hook to end training as early stopping does (``keel train
    --auto`` cuts a recipe this way): the run completes with its best weights. Under DDP every
    rank's hook must raise it at the same epoch."""


class ResourceError(KeelError):
    """A setting that needs more memory than this machine (or device) has available."""


class ExportError(KeelError):
    """A model that cannot be exported, or an export that does not match the model."""


def one_line(text: str, limit: int = 600) -> str:
    """A multi-line message (torch's, PyYAML's) as one line: its lines joined with "; ", cut to
    ``limit`` characters."""
    joined = "; ".join(" ".join(line.split()) for line in str(text).splitlines() if line.strip())
    return joined if len(joined) <= limit else joined[: limit - 3] + "..."


def closest(name: str, choices: Iterable[str]) -> str | None:
    """The choice nearest to ``name`` by edit similarity, or None when nothing is close."""
    matches = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.5)
    return matches[0] if matches else None


def unknown_choice(what: str, name: str, choices: Iterable[str]) -> str:
    """Message for a name that is not one of ``choices``: suggests the closest, lists them all."""
    choices = sorted(choices)
    hint = closest(name, choices)
    suggestion = f"did you mean '{hint}'? " if hint else ""
    return f"unknown {what} {str(name)!r}; {suggestion}(choices: {', '.join(choices)})"


def check_choice(what: str, name: str, choices: Iterable[str], error: type = ConfigError) -> str:
    """Return ``name`` if it is one of ``choices``, else raise ``error`` naming the closest one."""
    choices = list(choices)
    if name not in choices:
        raise error(unknown_choice(what, name, choices))
    return name


class DataWarning(UserWarning):
    """Data that was used with a documented fix-up (skipped files, replaced bytes, dropped
    columns); the CLI prints it as one 'warning:' line."""
