"""YAML config files and dotted key paths: reading a file with bounds against hostile input,
``--set key.path=value`` values, and moving between nested and dotted forms. The schema that
validates the result is torchkeel.config (which re-exports these)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from torchkeel.errors import ConfigError

# A config is a page of YAML; these bounds keep a hostile file (a huge one, or a few lines whose
# aliases expand to billions of values, the "billion laughs") from exhausting time or memory.
MAX_CONFIG_BYTES = 1_000_000
MAX_CONFIG_VALUES = 100_000


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader, except that a key given twice in one mapping is an error (PyYAML
    keeps the last silently, so a repeated ``lr:`` would quietly override the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:  # the mapping's own keys: a merge (<<) may be overridden
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {str(key)[:80]!r}: give each key once", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config {path} is a folder, not a file; give the YAML file in it")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: {size:,} bytes is too large for a config (limit {MAX_CONFIG_BYTES:,})")
    try:
        doc = _safe_unique(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        reason = " ".join(str(getattr(e, "problem", None) or e).split())  # PyYAML's messages span lines
        raise ConfigError(f"{path}: not valid YAML{where}: {reason}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a config") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: a config must be a mapping of sections, got {type(doc).__name__}")
    check_bounded(doc, path)
    return doc


def check_bounded(doc: Any, path: Path) -> None:
    """At most MAX_CONFIG_VALUES values once aliases are expanded, and no alias that contains
    itself (PyYAML builds such a document as a list or dict that contains itself)."""
    count = 0
    stack: list[tuple[Any, frozenset[int]]] = [(doc, frozenset())]
    while stack:
        node, ancestors = stack.pop()
        count += 1
        if count > MAX_CONFIG_VALUES:
            raise ConfigError(f"{path}: more than {MAX_CONFIG_VALUES:,} values (after expanding YAML aliases)")
        if isinstance(node, dict | list):
            if id(node) in ancestors:
                raise ConfigError(f"{path}: a YAML alias refers to itself")
            inner = ancestors | {id(node)}
            stack.extend((child, inner) for child in (node.values() if isinstance(node, dict) else node))


def set_path(raw: dict[str, Any], dotted: str, value: Any) -> None:
    node = raw
    keys = dotted.split(".")
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[keys[-1]] = value


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"optimizer": {"lr": 0.1}}}`` -> ``{"train.optimizer.lr": 0.1}`` (the inverse
    of set_path; empty sections stay as ``{}``)."""
    flat: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def parse_override(key: str, value: str) -> Any:
    """The value of ``--set key=value`` read as YAML (``0.1``, ``true``, ``[64, 32]``)."""
    if not value.strip():
        return None
    try:
        return yaml.safe_load(value)
    except (yaml.YAMLError, RecursionError) as e:
        what = type(e).__name__
        raise ConfigError(f"--set {key[:80]!r}: {value[:80]!r} is not a valid YAML value ({what})") from None


def _safe_unique(text: str) -> object:
    """One YAML document through UniqueKeyLoader (a SafeLoader that refuses duplicate keys),
    driven as ``yaml.safe_load`` drives SafeLoader."""
    loader = UniqueKeyLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
