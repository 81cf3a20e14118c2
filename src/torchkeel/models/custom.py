"""The user's own ``nn.Module`` by reference: ``"path/to/file.py:MyNet"`` or ``"package.module:MyNet"``.

Trust model: a config the user runs names code to import (as a script would), so ``keel train``
imports a config's target. A run folder is data: loading one (eval, predict, report, export,
serve, resume) never imports, calls or instantiates what its model.json or config.yaml names.
A custom model is rebuilt there only from code the user names at load time
(``--model-code TARGET`` / ``model_cls=Net``), and the stored target must match it
(:func:`trusted_factory`).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from pathlib import Path
from typing import Any

from torch import nn

from torchkeel.data.bundle import DataSpec
from torchkeel.errors import ConfigError, RunError


def custom(spec: DataSpec, *, target: str, kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Your own nn.Module: target "file.py:Class" or "package.module:Class", built with kwargs.

    The class (or any function returning an ``nn.Module``) gets ``kwargs`` as keyword
    arguments, and also ``spec=`` (the DataSpec: input shape, classes, output size, vocabulary)
    when its signature has a ``spec`` parameter, so it can size itself from the data. A file
    path is relative to the working directory.
    """
    return build_custom(spec, resolve_target(target), target, kwargs)


def build_custom(spec: DataSpec, factory: Any, target: str, kwargs: dict[str, Any] | None) -> nn.Module:
    """Call ``factory`` (the class or function ``target`` names) with ``kwargs``, and ``spec=``
    when its signature takes it."""
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


def trusted_factory(stored: str, code: str | Any | None, run_name: str) -> Any:
    """The factory for a run's custom model, from ``code`` the user named at load time (a
    target string, or the class/function itself), after checking that it is the code the run
    was trained with: the same class or function name, and the same module (its last dotted
    part, or the file's stem, since the path may differ between machines). Without ``code``:
    a RunError saying how to trust the run's code."""
    if code is None:
        raise RunError(
            f"{run_name} was trained with your own model code '{stored}', and loading a run never "
            f"imports code it names: if you trust that code, name it yourself with "
            f"--model-code {stored} (Python: model_cls=YourClass)"
        )
    given = code if isinstance(code, str) else _target_of(code)
    if _identity(given) != _identity(stored):
        raise RunError(
            f"{run_name} was trained with model code '{stored}', not '{given}': "
            f"pass --model-code with the class it was trained with"
        )
    return resolve_target(code) if isinstance(code, str) else code


def _target_of(obj: Any) -> str:
    """``module:Name`` of a class or function given in Python."""
    try:
        where = str(Path(inspect.getfile(obj)).with_suffix(".py").name)
    except (TypeError, OSError):
        where = getattr(obj, "__module__", "?")
    return f"{where}:{getattr(obj, '__qualname__', type(obj).__name__)}"


def _identity(target: str) -> tuple[str, str]:
    """("nets", "Net") for "path/to/nets.py:Net", "nets.py:Net", "mypkg.nets:Net" and "nets:Net"."""
    where, _, name = target.rpartition(":")
    module = Path(where).stem if where.endswith(".py") else where.rpartition(".")[2]
    return module, name


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
