"""The user's own ``nn.Module`` by reference: ``"path/to/file.py:MyNet"`` or ``"package.module:MyNet"``."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from pathlib import Path
from typing import Any

from torch import nn

from torchkeel.data.bundle import DataSpec
from torchkeel.errors import ConfigError


def custom(spec: DataSpec, *, target: str, kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Your own nn.Module: target "file.py:Class" or "package.module:Class", built with kwargs.

    The class (or any function returning an ``nn.Module``) gets ``kwargs`` as keyword
    arguments, and also ``spec=`` (the DataSpec: input shape, classes, output size, vocabulary)
    when its signature has a ``spec`` parameter, so it can size itself from the data. A file
    path is relative to the working directory.
    """
    factory = resolve_target(target)
    options = dict(kwargs or {})
    if "spec" in _parameters(factory):
        options["spec"] = spec
    try:
        model = factory(**options)
    except TypeError as e:
        raise ConfigError(f"model 'custom': {target} rejected model.kwargs {sorted(kwargs or {})}: {e}") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model 'custom': {target} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def resolve_target(target: str) -> Any:
    """The object named by ``"file.py:Name"`` or ``"package.module:Name"``. Importing runs the
    file's top-level code, as ``python file.py`` would."""
    where, sep, name = target.rpartition(":")
    if not sep or not where or not name:
        raise ConfigError(
            f"model.target '{target}': expected 'path/to/file.py:ClassName' or 'package.module:ClassName'"
        )
    module = _load_file(where, target) if where.endswith(".py") else _import_module(where, target)
    if not hasattr(module, name):
        found = [n for n, v in vars(module).items() if inspect.isclass(v) and issubclass(v, nn.Module)]
        listed = ", ".join(sorted(found)) or "none"
        raise ConfigError(f"model.target '{target}': {where} has no '{name}' (nn.Module classes there: {listed})")
    return getattr(module, name)


def _load_file(path_text: str, target: str) -> Any:
    path = Path(path_text)
    if not path.is_file():
        raise ConfigError(f"model.target '{target}': file not found: {path.resolve()}")
    spec = importlib.util.spec_from_file_location(f"torchkeel_custom_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise ConfigError(f"model.target '{target}': importing {path} failed: {type(e).__name__}: {e}") from None
    return module


def _import_module(name: str, target: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise ConfigError(f"model.target '{target}': cannot import module '{name}': {e}") from None


def _parameters(factory: Any) -> set[str]:
    try:
        return set(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        return set()
