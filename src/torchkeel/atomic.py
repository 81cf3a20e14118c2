"""Atomic file writes: write a temporary file in the same folder, flush, fsync, rename.

A reader (or a crash) sees either the old file or the new one, never half of one. A write that
fails (disk full, read-only folder) raises WriteError and leaves the old file as it was.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from torchkeel.errors import WriteError

TEMP_SUFFIX = ".tmp"
# mkstemp creates files readable by the owner only; give them the mode open() would (0o666
# minus the umask). os.umask can only be read by setting it, so this is done once, at import.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK


def write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as e:
        raise _write_error(path, e) from None
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):  # not on Windows before Python 3.13
                os.fchmod(f.fileno(), FILE_MODE)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise _write_error(path, e) from None
        raise
    _fsync_dir(path.parent)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, allow_nan=True) + "\n")


def check_output(path: str | Path, option: str, *, inputs: Iterable[str | Path] = (), force: bool = False) -> None:
    """Refuse to write ``path`` (named by the command's ``option``) when it is one of the
    command's ``inputs`` (the same path, a link to it or a hard link: never, even with
    ``force``), a folder, or an existing file the user did not allow replacing with ``--force``."""
    path = Path(path)
    for source in map(Path, inputs):
        if _same_file(path, source):
            raise WriteError(
                f"{option} {path} is an input of this command; inputs are never overwritten: choose another file"
            )
    if path.is_dir():
        raise WriteError(f"{option} {path} is a folder: give a file name")
    if (path.exists() or path.is_symlink()) and not force:
        raise WriteError(f"{option} {path} already exists: choose another file, or add --force to replace it")
    if not path.parent.is_dir():
        raise WriteError(f"{option} {path}: folder {path.parent} does not exist")


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)  # hard links, bind mounts, case-insensitive file systems
    except OSError:  # one of them does not exist
        return False


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete temporary files a killed writer left in ``folder`` (``.NAME.XXXX.tmp``)."""
    removed = []
    if folder.is_dir():
        for tmp in folder.glob(f".*{TEMP_SUFFIX}"):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _write_error(path: Path, e: OSError) -> WriteError:
    reason = e.strerror or type(e).__name__
    return WriteError(f"cannot write {path}: {reason}; free some disk space or make {path.parent} writable")


def _fsync_dir(folder: Path) -> None:
    # makes the rename itself durable; not possible on every platform
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
