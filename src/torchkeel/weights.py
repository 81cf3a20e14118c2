"""Importing weights from outside torchkeel, safely: a plain PyTorch state dict (``.pt``/``.pth``)
or a ``.safetensors`` file, never arbitrary pickled objects.

A ``.pt`` file is a zip holding a pickle, and unpickling can run any code the file's author
chose. So it is read with ``torch.load(weights_only=True)``, whose unpickler only builds
tensors, numbers, strings and containers and refuses every other global, and with ``mmap=True``,
so tensor data comes from the file itself rather than from sizes the pickle declares (a small
file cannot make it allocate gigabytes). The pre-1.6 format and bare pickles are refused.

    from torchkeel.weights import import_state_dict, load_weights
    state = import_state_dict("resnet.pth")      # {name: tensor}
    load_weights(model, "resnet.pth")            # or in a config: model: {init_from: resnet.pth}
"""

from __future__ import annotations

import pickle
import re
import struct
import warnings
from pathlib import Path

import torch
from torch import nn

from torchkeel.errors import DataError

ZIP_MAGIC = b"PK\x03\x04"
# where training scripts commonly nest the state dict inside a larger checkpoint dict
NESTED_KEYS = ("state_dict", "model_state_dict", "model", "module", "net")
# prefixes that wrappers add to every key: DDP, torch.compile, Lightning modules
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")
RESAVE = "save just the weights with torch.save(model.state_dict(), path) where the model was built"


def import_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a plain state dict in ``path`` (.pt/.pth zip format, or .safetensors).
    Raises DataError, without running anything from the file, for anything else."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such weights file")
    with path.open("rb") as f:
        head = f.read(16)
    if head.startswith(ZIP_MAGIC):
        loaded = _torch_load(path)
    elif _looks_like_safetensors(head):
        loaded = _safetensors_load(path)
    elif head[:1] == b"\x80":
        raise DataError(
            f"{path}: a bare pickle or the pre-1.6 torch.save format; torchkeel does not unpickle files "
            f"(unpickling can run code): load it once in a trusted environment and {RESAVE}"
        )
    else:
        raise DataError(f"{path}: not a PyTorch (.pt/.pth) or safetensors weights file")
    return _find_state_dict(loaded, path)


def load_weights(model: nn.Module, path: str | Path) -> int:
    """Copy the weights in ``path`` into ``model`` (names matched, wrapper prefixes such as
    ``module.`` removed); every tensor of the model must be there with its shape. Returns
    the number of tensors loaded."""
    state = match_keys(import_state_dict(path), model.state_dict().keys())
    expected = model.state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        problems = [
            f"missing {_few(missing)}" if missing else "",
            f"not in the model {_few(unexpected)}" if unexpected else "",
            f"shape file vs model: {_few(shapes)}" if shapes else "",
        ]
        raise DataError(f"{path}: weights do not fit this model: " + "; ".join(p for p in problems if p))
    model.load_state_dict(state)
    return len(state)


def match_keys(state: dict[str, torch.Tensor], wanted: object) -> dict[str, torch.Tensor]:
    """``state`` with a wrapper prefix removed from every key when that makes the keys match."""
    wanted = set(wanted)  # type: ignore[arg-type]
    for prefix in WRAPPER_PREFIXES:
        if set(state) != wanted and state and all(k.startswith(prefix) for k in state):
            stripped = {k[len(prefix) :]: v for k, v in state.items()}
            if len(stripped.keys() & wanted) > len(state.keys() & wanted):
                state = stripped
    return state


def _torch_load(path: Path) -> object:
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 0": the error below says what matters
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:
        # torch names the refused global: "... unsupported GLOBAL posix.system whose module ..."
        named = re.search(r"GLOBAL ([\w.]+)", str(e))
        refused = named.group(1) if named else "objects"
        raise DataError(
            f"{path}: holds Python objects ({refused}), not only tensors; torchkeel loads weights with "
            f"torch.load(weights_only=True) and does not run code from files: {RESAVE}"
        ) from None
    except Exception as e:  # a damaged zip or tensor record surfaces as RuntimeError, ValueError, ...
        raise DataError(f"{path}: not a readable PyTorch weights file ({type(e).__name__}: {_first_line(e)})") from None


def _looks_like_safetensors(head: bytes) -> bool:
    # 8-byte little-endian header length, then the JSON header
    return len(head) >= 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < 100_000_000


def _safetensors_load(path: Path) -> dict[str, torch.Tensor]:
    import safetensors.torch

    try:
        return safetensors.torch.load_file(str(path))
    except Exception as e:  # safetensors reports damage as SafetensorError, OSError, ...
        raise DataError(f"{path}: not a readable safetensors file ({_first_line(e)})") from None


def _find_state_dict(loaded: object, path: Path) -> dict[str, torch.Tensor]:
    """The {name: tensor} dict itself, or one nested under a usual key of a training checkpoint."""
    if _is_state_dict(loaded):
        return dict(loaded)  # type: ignore[arg-type]
    if isinstance(loaded, dict):
        for key in NESTED_KEYS:
            if _is_state_dict(loaded.get(key)):
                return dict(loaded[key])
        keys = ", ".join(repr(k) for k in list(loaded)[:8])
        raise DataError(f"{path}: no state dict in it (top-level keys: {keys}); expected {{name: tensor}}")
    raise DataError(f"{path}: holds a {type(loaded).__name__}, not a state dict {{name: tensor}}")


def _is_state_dict(value: object) -> bool:
    return (
        isinstance(value, dict)
        and bool(value)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())
    )


def _few(items: list[str]) -> str:
    return ", ".join(items[:3]) + (f" and {len(items) - 3} more" if len(items) > 3 else "")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__
