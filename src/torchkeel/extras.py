"""Optional dependencies (pyproject extras): a clear error naming the extra to install."""

from __future__ import annotations

import importlib.util

from torchkeel.errors import KeelError


def require(extra: str, *modules: str) -> None:
    """Raise a KeelError unless every module of ``extra`` is importable."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise KeelError(f"this needs {', '.join(missing)}: pip install 'torchkeel[{extra}]'")
