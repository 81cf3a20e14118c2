"""Optional dependencies (pyproject extras): a clear error naming the extra to install."""

from __future__ import annotations

import functools
import importlib.util

from torchkeel.errors import KeelError


def require(extra: str, *modules: str) -> None:
    """Raise a KeelError unless every module of ``extra`` is importable (each module is looked
    up once per process: loaders call this per file)."""
    missing = [m for m in modules if not _found(m)]
    if missing:
        raise KeelError(f"this needs {', '.join(missing)}: pip install 'torchkeel[{extra}]'")


@functools.cache
def _found(module: str) -> bool:
    return importlib.util.find_spec(module) is not None
