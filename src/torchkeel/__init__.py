"""torchkeel: a deep-learning workbench on PyTorch.

    import torchkeel as keel
    data = keel.data.load("digits")
    model = keel.models.build("simple_cnn", data.spec)
    run = keel.fit(model, data, epochs=5, optimizer="sgd", lr=0.05, momentum=0.9)
    print(run.evaluate("test"))

Submodules are imported on first use, so importing the package (and ``keel --help``) does not
pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

__all__ = ["Generator", "KeelError", "Run", "__version__", "data", "fit", "load_config", "models", "weights"]

_LAZY = {
    "fit": ("torchkeel.train.loop", "fit"),
    "Run": ("torchkeel.train.loop", "Run"),
    "load_config": ("torchkeel.config", "load_config"),
    "KeelError": ("torchkeel.errors", "KeelError"),
    "Generator": ("torchkeel.generation", "Generator"),
    "data": ("torchkeel.data", None),
    "models": ("torchkeel.models", None),
    "weights": ("torchkeel.weights", None),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'torchkeel' has no attribute '{name}'")
    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
