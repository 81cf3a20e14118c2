"""Small shared building blocks for the built-in models."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import Annotated, Any

from pydantic import Field
from torch import nn

from torchkeel.errors import ConfigError

# option types for builder signatures: checked when a config is loaded
Probability = Annotated[float, Field(ge=0.0, lt=1.0)]
Width = Annotated[int, Field(ge=1)]

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.01),
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}


def activation(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


def fit_to_data(model: nn.Module, split: Any) -> None:
    """Data-dependent initialisation before training: every layer of ``model`` with a
    ``fit_data(x)`` method and a ``fitted`` buffer that has not been fitted (a fresh model, not
    loaded weights) sees the training inputs once: airbench's whitening conv (the images'
    patch covariance), linear_bow's tf-idf (the texts' document frequencies)."""
    layers = [m for m in model.modules() if callable(getattr(m, "fit_data", None)) and not bool(m.fitted)]
    if not layers:
        return
    x = getattr(split, "x", None)
    for layer in layers:
        if x is None:
            raise ConfigError(f"{type(layer).__name__} (fitted to the data before training) needs {layer.fit_needs}")
        layer.fit_data(x)


_WHOLE = contextvars.ContextVar("whole_inputs", default=False)


@contextlib.contextmanager
def whole_inputs() -> Iterator[None]:
    """Inside it, models that cut a batch to its content in eager mode (a sound batch trimmed to
    its longest clip) take the input whole, as an exported graph does; export's parity check
    runs the PyTorch model this way, so both give outputs of one shape."""
    token = _WHOLE.set(True)
    try:
        yield
    finally:
        _WHOLE.reset(token)


def keep_whole() -> bool:
    return _WHOLE.get()
