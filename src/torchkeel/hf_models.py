"""Pretrained Hugging Face ``transformers`` encoders and their tokenisers, from a local folder
(offline) or a hub name (online, or in the local hub cache).

``transformers`` is an optional extra (``pip install 'torchkeel[hf-models]'``); it is imported
here only, when a pretrained model or tokeniser is asked for. Weights load from safetensors
only (``use_safetensors=True``): a checkpoint that exists only as a pickle is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from torchkeel.errors import ConfigError


def transformers_module(what: str) -> Any:
    """The ``transformers`` module, or a one-line ConfigError saying how to install it."""
    try:
        import transformers
    except ImportError:
        raise ConfigError(f"{what} needs Hugging Face 'transformers': pip install 'torchkeel[hf-models]'") from None
    return transformers


def load_pretrained(part: str, source: str, what: str) -> Any:
    """``AutoTokenizer``, ``AutoConfig``, ``AutoModel`` or ``AutoModelForCausalLM`` (``part``:
    "tokenizer" | "config" | "model" | "causal_lm") from ``source``: an existing folder is read
    offline; anything else is a hub name. Any failure (offline, unknown name, no safetensors)
    becomes one ConfigError line naming ``what`` (the config key)."""
    tf = transformers_module(what)
    tf.utils.logging.disable_progress_bar()  # its per-tensor "Loading weights" bar would interleave with ours
    local = Path(source).expanduser().is_dir()
    options: dict[str, Any] = {"local_files_only": True} if local else {}
    try:
        if part == "tokenizer":
            return tf.AutoTokenizer.from_pretrained(source, **options)
        if part == "config":  # the architecture's settings alone, no weights
            return tf.AutoConfig.from_pretrained(source, **options)
        auto = tf.AutoModelForCausalLM if part == "causal_lm" else tf.AutoModel
        if torch.get_default_device().type == "meta":
            # shapes only (a run's weights are checked before loading): the architecture, no weights
            return auto.from_config(tf.AutoConfig.from_pretrained(source, **options))
        return auto.from_pretrained(source, use_safetensors=True, **options)
    except Exception as e:  # transformers raises OSError, ValueError, HTTP errors ... for the same causes
        reason = " ".join((str(e).strip() or type(e).__name__).split())[:300]
        where = "the folder" if local else "the Hugging Face Hub (is this machine online?)"
        raise ConfigError(f"{what}: could not load the {part} of '{source}' from {where}: {reason}") from None


def context_length(source: str, what: str) -> int | None:
    """The positions a pretrained causal LM has (GPT-2: 1,024), from its config; None if unstated."""
    config = load_pretrained("config", source, what)
    positions = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    return positions if isinstance(positions, int) else None
