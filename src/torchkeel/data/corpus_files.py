"""The text of a corpus, read in pieces: a UTF-8 file, a folder of .txt files, or one column
of a JSONL or CSV/TSV file. Nothing here holds a whole file in memory; a piece is at most
about ``PIECE_CHARS`` characters and ends at a line end when the file has any.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from torchkeel.errors import DataError

PIECE_CHARS = 1 << 20
COLUMN_SUFFIXES = (".jsonl", ".csv", ".tsv")


@dataclass(frozen=True)
class TextSource:
    """One file of the corpus; ``column`` for a JSONL/CSV file (each row's text then ends with
    a blank line, so documents stay apart)."""

    path: Path
    column: str | None = None

    def pieces(self) -> Iterator[str]:
        try:
            if self.column is None:
                yield from _text_pieces(self.path)
            else:
                yield from _grouped(self._column_texts())
        except UnicodeDecodeError as e:
            raise DataError(
                f"{self.path}: not UTF-8 text (byte {e.start} cannot be decoded; is it a binary file?)"
            ) from None

    def _column_texts(self) -> Iterator[str]:
        rows = _jsonl_rows(self.path) if self.path.suffix == ".jsonl" else _csv_rows(self.path)
        for i, row in enumerate(rows):
            if self.column not in row:
                keys = ", ".join(map(str, list(row)[:20]))
                raise DataError(
                    f"{self.path}: row {i + 1} has no column '{self.column}' (it has: {keys}); "
                    "set data.corpus.column to the text's column"
                )
            value = row[self.column]
            yield ("" if value is None else str(value)) + "\n\n"


def sources(path: str | Path, column: str) -> list[TextSource]:
    """The files of ``data.path``: the file itself, or every .txt file under a folder."""
    root = Path(path)
    if root.is_dir():
        files = sorted(p for p in root.rglob("*.txt") if p.is_file())
        if not files:
            raise DataError(f"data.path: the folder {root} has no .txt files (a text corpus is .txt files)")
        return [TextSource(p) for p in files]
    if not root.is_file():
        raise DataError(f"data.path: {root} does not exist (give a UTF-8 text file or a folder of .txt files)")
    return [TextSource(root, column if root.suffix.lower() in COLUMN_SUFFIXES else None)]


def cut(source: TextSource, start: int, stop: int) -> Iterator[str]:
    """The characters [start, stop) of a source, in pieces."""
    at = 0
    for piece in source.pieces():
        end = at + len(piece)
        if end > start and at < stop:
            yield piece[max(start - at, 0) : stop - at]
        if end >= stop:
            return
        at = end


def count_chars(source: TextSource) -> int:
    """Characters in a source; a NUL character means a binary file."""
    n = 0
    for piece in source.pieces():
        if "\x00" in piece:
            raise DataError(f"{source.path}: holds NUL bytes: a binary file, not text")
        n += len(piece)
    return n


def content_hash(files: list[TextSource], settings: str) -> str:
    """A hash of the files' bytes (and names) and of the settings that shape the encoding."""
    h = hashlib.blake2b(settings.encode(), digest_size=16)
    for source in files:
        h.update(f"\0{source.path.name}\0{source.column}\0".encode())
        with open(source.path, "rb") as f:
            while block := f.read(PIECE_CHARS):
                h.update(block)
    return h.hexdigest()


def _text_pieces(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8", newline="") as f:  # newline="": "\r\n" stays two characters
        yield from _grouped(iter(lambda: f.readline(PIECE_CHARS), ""))


def _grouped(lines: Iterator[str]) -> Iterator[str]:
    """Lines joined into pieces of about PIECE_CHARS characters."""
    buffer: list[str] = []
    size = 0
    for line in lines:
        buffer.append(line)
        size += len(line)
        if size >= PIECE_CHARS:
            yield "".join(buffer)
            buffer, size = [], 0
    if buffer:
        yield "".join(buffer)


def _jsonl_rows(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: line {number} is not JSON ({e.msg})") from None
            yield row if isinstance(row, dict) else {}


def _csv_rows(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        yield from csv.DictReader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
