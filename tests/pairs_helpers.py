"""Tiny parallel corpora written as real files, for the translation tests.

``invented_pairs``: a made-up language whose words map one to one onto English words, in the
reverse order, so that a model must attend to the right source word for each output word (a
copy at a fixed offset does not solve it)."""

from __future__ import annotations

import random
from pathlib import Path

SOURCE_WORDS = ["zab", "lupo", "kir", "memna", "tos", "vahe", "drun", "pelit", "ost", "quam"]
TARGET_WORDS = ["red", "dog", "runs", "over", "green", "field", "small", "child", "eats", "bread"]


def invented_pairs(n: int, seed: int = 0, lengths: tuple[int, int] = (2, 5)) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        idx = [rng.randrange(len(SOURCE_WORDS)) for _ in range(rng.randint(*lengths))]
        source = " ".join(SOURCE_WORDS[i] for i in idx) + "."
        target = " ".join(TARGET_WORDS[i] for i in reversed(idx)).capitalize() + "."
        pairs.append((source, target))
    return pairs


def write_tsv(path: Path, pairs: list[tuple[str, str]], header: tuple[str, str] | None = ("xx", "en")) -> Path:
    rows = ([header] if header else []) + pairs
    path.write_text("".join(f"{s}\t{t}\n" for s, t in rows), encoding="utf-8")
    return path


def pairs_config(path: Path, **pairs: object) -> dict:
    """A data config for a TSV of invented pairs (source column xx, target en)."""
    return {
        "name": "text_pairs",
        "path": str(path),
        "source": "xx",
        "target": "en",
        "pairs": {"vocab_size": 300, **pairs},
    }


def copy_pairs(n: int, seed: int = 0, reverse: bool = False) -> list[tuple[str, str]]:
    """Sentences of the invented words and themselves (``reverse``: their words reversed)."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        words = [rng.choice(SOURCE_WORDS) for _ in range(rng.randint(2, 6))]
        pairs.append((" ".join(words), " ".join(reversed(words) if reverse else words)))
    return pairs
