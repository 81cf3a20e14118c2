"""Models by name: ``build(cfg, spec)`` returns an ``nn.Module`` sized from the DataSpec.

Every builder takes the DataSpec and keyword-only options; the options a config may give are
exactly the builder's keyword arguments, checked (names and types) when the config is loaded.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from pydantic import ConfigDict, ValidationError, create_model
from torch import nn

from torchkeel.data.bundle import DataSpec
from torchkeel.errors import ConfigError, check_choice, unknown_choice
from torchkeel.models.cnn import simple_cnn
from torchkeel.models.layers import ACTIVATIONS
from torchkeel.models.mlp import mlp
from torchkeel.models.text import embedding_bag

MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp,
    "simple_cnn": simple_cnn,
    "embedding_bag": embedding_bag,
}


def build(cfg: Any, spec: DataSpec) -> nn.Module:
    """Build by ``ModelConfig``, by a name (``build("mlp", spec)``) or by a dict with ``name``."""
    if isinstance(cfg, str):
        name, options = cfg, {}
    elif isinstance(cfg, dict):
        name, options = cfg.get("name", ""), {k: v for k, v in cfg.items() if k != "name"}
    else:
        name, options = cfg.name, cfg.options()
    check_choice("model", name, MODELS)
    return MODELS[name](spec, **check_options(name, options))


def check_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Validate a model's options against its builder's signature; return every option of
    the builder (defaults filled in), coerced to the annotated types."""
    schema = _options_schema(name)
    for key in options:
        if key not in schema.model_fields:
            raise ConfigError(f"model '{name}': " + unknown_choice("option", key, schema.model_fields))
    if "activation" in options:
        check_choice("activation", options["activation"], ACTIVATIONS)
    try:
        parsed = schema.model_validate(options)
    except ValidationError as e:
        first = e.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"model '{name}' option '{key}': {first['msg']} (got {first.get('input')!r})") from None
    return {k: getattr(parsed, k) for k in schema.model_fields}


@functools.cache
def _options_schema(name: str) -> type:
    fields = {
        p.name: (p.annotation, p.default)
        for p in inspect.signature(MODELS[name], eval_str=True).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    return create_model(f"{name}_options", __config__=ConfigDict(extra="forbid"), **fields)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["MODELS", "build", "check_options", "count_parameters"]
