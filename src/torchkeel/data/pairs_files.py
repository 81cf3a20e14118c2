"""Reading parallel text for ``text_pairs``: sentence pairs from a folder of aligned files, from
``NAME.<source>`` beside ``NAME.<target>``, or from one TSV/CSV or JSONL file; any of them
gzip-compressed (``.gz``). Every problem is one DataError that names the file (and the line).

A line is what ends in ``\\n``: aligned corpora count lines that way (``wc -l``), and splitting
at the other characters Python calls line ends (U+2028, form feed, ...) would shift one file
against its partner.
"""

from __future__ import annotations

import csv
import gzip
import json
from dataclasses import dataclass
from pathlib import Path

from torchkeel.errors import DataError

TABLES = (".tsv", ".csv", ".txt")  # one pair per row; .txt is tab-separated (Tatoeba / Anki exports)
JSON_LINES = (".jsonl", ".ndjson")
VAL_STEMS = ("val", "valid", "dev")


@dataclass
class RawPairs:
    """One split's sentence pairs as read (each side stripped), and where each pair came from."""

    source: list[str]
    target: list[str]
    files: tuple[Path, Path]  # the file of each side: one file twice for a table
    lines: list[int]  # each pair's line number in its file(s)

    def take(self, keep: list[int]) -> RawPairs:
        pick = [self.source[i] for i in keep], [self.target[i] for i in keep], [self.lines[i] for i in keep]
        return RawPairs(pick[0], pick[1], self.files, pick[2])

    def where(self, i: int, side: int = 0) -> str:
        return f"{self.files[side]}:{self.lines[i]}"


@dataclass
class PairFiles:
    """The splits as read: ``val`` / ``test`` None when the data has none (they are cut from train)."""

    train: RawPairs
    val: RawPairs | None
    test: RawPairs | None
    names: tuple[str, str]  # the source and target languages (or columns)


def read_pairs(root: str | None, path: str | None, test_path: str | None, languages: tuple, test: str | None):
    """The splits of ``data.root`` (a folder) or ``data.path`` (a file), and ``data.test_path``.
    ``languages``: (data.source, data.target), either None when unset; ``test``: data.pairs.test."""
    if root and path:
        raise DataError("text_pairs: set data.root (a folder of aligned files) or data.path (one file), not both")
    if root:
        read = read_folder(Path(root).expanduser(), languages, test)
    else:
        if test:
            raise DataError("data.pairs.test names test files in data.root; with data.path give data.test_path")
        train, names = read_file(Path(str(path)).expanduser(), languages, "data.path")
        read = PairFiles(train, None, None, names)
    if test_path:
        read.test = read_file(Path(test_path).expanduser(), languages, "data.test_path")[0]
    return read


def read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 file (gzip-compressed when its name ends in .gz), without their ends."""
    lines = []
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
            for number, raw in enumerate(f, 1):
                try:
                    lines.append(raw.decode("utf-8").rstrip("\r\n"))
                except UnicodeDecodeError as e:
                    raise DataError(
                        f"{path}: line {number} is not UTF-8 (byte {e.start + 1} of the line); save the file as UTF-8"
                    ) from None
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: cannot be read ({e})") from None
    if lines:
        lines[0] = lines[0].removeprefix("\ufeff")  # a byte-order mark
    return lines


def read_aligned(source: Path, target: Path) -> RawPairs:
    """Pairs from two files aligned by line: line i of one translates line i of the other."""
    src, tgt = read_lines(source), read_lines(target)
    if len(src) != len(tgt):
        short = min(len(src), len(tgt))
        raise DataError(
            f"{source.name} has {len(src):,} lines but {target.name} {len(tgt):,}: the files are not aligned; "
            f"lines after {short:,} have no partner (in {source.parent})"
        )
    return RawPairs([s.strip() for s in src], [t.strip() for t in tgt], (source, target), list(range(1, len(src) + 1)))


def _suffix(path: Path) -> str:
    return Path(path.name.removesuffix(".gz")).suffix.lower()


def read_file(path: Path, languages: tuple, key: str) -> tuple[RawPairs, tuple[str, str]]:
    """The pairs of one file (a table, JSON lines, or NAME.lang beside its partner) and the names
    of its two sides."""
    if not path.is_file():
        raise DataError(f"{key}: no such file: {path}")
    suffix = _suffix(path)
    if suffix in JSON_LINES:
        return read_jsonl(path, languages)
    if suffix in TABLES:
        return read_table(path, languages)
    source, target = languages
    if not (source and target):
        found = ", ".join(sorted(_languages(path.parent, _stem(path)))) or "none"
        raise DataError(
            f"data.source and data.target: set the two languages; {path.name} is read with its partner file "
            f"beside it (languages there: {found}), or give a .tsv, .csv or .jsonl file"
        )
    lang = suffix[1:]
    if lang not in (source, target):
        raise DataError(
            f"{key}: {path.name} ends in neither .{source} nor .{target} (data.source, data.target), "
            "nor is it a .tsv, .csv, .txt or .jsonl file"
        )
    other = target if lang == source else source
    partner = _partner(path, other)
    pairs = read_aligned(path, partner) if lang == source else read_aligned(partner, path)
    return pairs, (source, target)


def _stem(path: Path) -> str:
    return path.name.removesuffix(".gz").rpartition(".")[0]


def _partner(path: Path, lang: str) -> Path:
    stem = _stem(path)
    for name in (f"{stem}.{lang}", f"{stem}.{lang}.gz"):
        if (path.parent / name).is_file():
            return path.parent / name
    found = ", ".join(sorted(_languages(path.parent, stem)))
    raise DataError(f"{path}: no partner file {stem}.{lang} beside it (languages there: {found})")


def _languages(folder: Path, stem: str) -> set[str]:
    return set(_folder_files(folder).get(stem, {}))


def read_table(path: Path, languages: tuple) -> tuple[RawPairs, tuple[str, str]]:
    """Pairs from a TSV (``.tsv``, ``.txt``) or CSV file. Its first row is a header when it holds
    the names data.source and data.target; otherwise the first two columns are the pair and any
    further ones (Tatoeba's attribution) are ignored. A TSV line is split at its tabs and nothing
    else: Tatoeba and Anki do not quote, and a sentence that starts with a quotation mark must
    not swallow the lines after it, as a CSV reader's quoting would."""
    lines = read_lines(path)
    if _suffix(path) == ".csv":
        reader = csv.reader(line + "\n" for line in lines)
        rows = [(reader.line_num, row) for row in reader]
    else:
        rows = [(number, line.split("\t")) for number, line in enumerate(lines, 1)]
    rows = [(number, [cell.strip() for cell in row]) for number, row in rows if any(c.strip() for c in row)]
    if not rows:
        raise DataError(f"{path}: the file holds no pairs")
    source, target = languages
    header = rows[0][1]
    if len(header) < 2:
        sep = "a comma" if _suffix(path) == ".csv" else "a tab"
        raise DataError(f"{path}: has one column; a pair file holds the source and the target separated by {sep}")
    if source and target and source in header and target in header:
        columns, names, rows = (header.index(source), header.index(target)), (source, target), rows[1:]
    else:
        columns, names = (0, 1), (source or "source", target or "target")
    need = max(columns) + 1
    for number, row in rows:
        if len(row) < need:
            raise DataError(f"{path}: line {number} has {len(row)} column(s), not the {need} of the first row")
    pairs = RawPairs(
        [row[columns[0]] for _, row in rows], [row[columns[1]] for _, row in rows], (path, path), [n for n, _ in rows]
    )
    return pairs, names


def read_jsonl(path: Path, languages: tuple) -> tuple[RawPairs, tuple[str, str]]:
    """Pairs from JSON lines: one object per line with the keys data.source and data.target
    (default "source" and "target")."""
    names = (languages[0] or "source", languages[1] or "target")
    source, target, numbers = [], [], []
    for number, line in [(n, line) for n, line in enumerate(read_lines(path), 1) if line.strip()]:
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: line {number} is not JSON ({e.msg})") from None
        missing = [k for k in names if not isinstance(row, dict) or k not in row]
        if missing:
            keys = ", ".join(map(str, list(row)[:20])) if isinstance(row, dict) else "not an object"
            raise DataError(
                f"{path}: line {number} has no key '{missing[0]}' (it has: {keys}); "
                "set data.source and data.target to the keys of the two languages"
            )
        source.append("" if row[names[0]] is None else str(row[names[0]]).strip())
        target.append("" if row[names[1]] is None else str(row[names[1]]).strip())
        numbers.append(number)
    if not numbers:
        raise DataError(f"{path}: the file holds no pairs")
    return RawPairs(source, target, (path, path), numbers), names


def _folder_files(root: Path) -> dict[str, dict[str, Path]]:
    """``{stem: {language: file}}`` of the files ``stem.language`` (or ``.gz``) in a folder."""
    found: dict[str, dict[str, Path]] = {}
    for path in sorted(root.iterdir()):
        stem, dot, lang = path.name.removesuffix(".gz").rpartition(".")
        if dot and stem and lang and path.is_file():
            found.setdefault(stem, {}).setdefault(lang, path)  # train.de before train.de.gz
    return found


def read_folder(root: Path, languages: tuple, test: str | None) -> PairFiles:
    """``train.<lang>``; val from val, valid or dev; test from ``test`` (data.pairs.test), else
    the stem ``test``, else the first ``test*`` in sorted order (Multi30k: test_2016_flickr)."""
    if not root.is_dir():
        raise DataError(f"data.root: {root} is not a folder")
    files = _folder_files(root)
    source, target = languages
    if "train" not in files:
        there = ", ".join(p.name for p in sorted(root.iterdir())[:20]) or "nothing"
        raise DataError(
            f"data.root: {root} has no train files (train.{source or 'LANG'}, train.{target or 'LANG'}, "
            f"optionally .gz); it holds: {there}"
        )
    found = ", ".join(sorted(files["train"]))
    if not (source and target):
        raise DataError(
            f"data.source and data.target: set the languages to translate between (train files in {root}: {found})"
        )
    for key, lang in (("data.source", source), ("data.target", target)):
        if lang not in files["train"]:
            raise DataError(f"{key} '{lang}': {root} has no train.{lang} (its train files are in: {found})")

    def both(stem: str) -> bool:
        return source in files.get(stem, {}) and target in files.get(stem, {})

    tests = sorted(stem for stem in files if stem.startswith("test") and both(stem))
    if test is not None and not both(test):
        raise DataError(
            f"data.pairs.test '{test}': {root} has no {test}.{source} and {test}.{target} "
            f"(test files there: {', '.join(tests) or 'none'})"
        )
    test = test or ("test" if both("test") else next(iter(tests), None))
    val = next((stem for stem in VAL_STEMS if both(stem)), None)

    def read(stem: str | None) -> RawPairs | None:
        return None if stem is None else read_aligned(files[stem][source], files[stem][target])

    return PairFiles(read("train"), read(val), read(test), (source, target))
