"""Reading table and text files into pandas DataFrames, with one clear error per problem.

Text that is not valid UTF-8 is decoded with U+FFFD replacement characters and a warning
(counting them), rather than refused: a few bad bytes in a large export should not stop a
run, and the warning says how to avoid it.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

from torchkeel.errors import DataError, DataWarning, closest

PARQUET = (".parquet", ".pq")
JSON_LINES = (".jsonl", ".ndjson", ".json")
TEXT_TABLES = (".csv", ".tsv", ".tab", ".txt")


def read_frame(path: str | Path, key: str = "data.path") -> Any:
    """A DataFrame from CSV, TSV, JSON lines or Parquet (by the file's suffix)."""
    import pandas as pd

    path = Path(os.path.expanduser(str(path)))
    if not path.is_file():
        raise DataError(f"{key}: no such file: {path}")
    suffix = path.suffix.lower()
    if suffix not in PARQUET + JSON_LINES + TEXT_TABLES:
        kinds = ", ".join(PARQUET + JSON_LINES + TEXT_TABLES)
        raise DataError(f"{path}: unknown file type '{suffix}'; give one of {kinds}")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    try:
        if suffix in PARQUET:
            frame = pd.read_parquet(path)
        else:
            text = decode_text(path.read_bytes(), path)
            if suffix in JSON_LINES:
                lines = not text.lstrip().startswith("[")  # a .json file may hold one array of records
                frame = pd.read_json(io.StringIO(text), lines=lines, dtype=False)
            else:
                frame = pd.read_csv(io.StringIO(text), sep="\t" if suffix in (".tsv", ".tab") else ",")
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty") from None
    except ImportError:
        raise DataError(f"{path}: reading Parquet needs pyarrow: pip install 'torchkeel[parquet]'") from None
    except (ValueError, OSError) as e:  # parser errors are ValueErrors
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{path}: not a readable {suffix.lstrip('.').upper()} file ({first})") from None
    if len(frame) == 0:
        raise DataError(f"{path}: no data rows (only a header?)")
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def read_verbatim(path: str | Path) -> Any:
    """The table in ``path`` as the text it holds, every value a string: CSV/TSV cells exactly
    as written (``007`` stays ``007``, an empty cell stays empty), JSON numbers as written, the
    header as in the file. Predictions are written beside these columns, so that the user's
    own values come back unchanged. Rows line up with :func:`read_frame`'s."""
    import pandas as pd

    path = Path(os.path.expanduser(str(path)))
    suffix = path.suffix.lower()
    if suffix in PARQUET:  # typed columns already; nullable dtypes keep integers integers
        return pd.read_parquet(path, dtype_backend="numpy_nullable").astype("string").fillna("")
    with warnings.catch_warnings():  # read_frame has warned about undecodable bytes already
        warnings.simplefilter("ignore", DataWarning)
        text = decode_text(path.read_bytes(), path)
    if suffix in JSON_LINES:
        return _json_as_text(text)
    sep = "\t" if suffix in (".tsv", ".tab") else ","
    # the header is read as a row so that repeated or padded column names are kept as written
    cells = pd.read_csv(io.StringIO(text), sep=sep, header=None, dtype=str, keep_default_na=False)
    cells = cells.fillna("")  # a short row's missing cells
    return pd.DataFrame(cells.values[1:], columns=list(cells.values[0]))


def _json_as_text(text: str) -> Any:
    import pandas as pd

    as_text = {"parse_float": str, "parse_int": str, "parse_constant": str}
    if text.lstrip().startswith("["):
        records = json.loads(text, **as_text)
    else:
        records = [json.loads(line, **as_text) for line in text.splitlines() if line.strip()]
    columns = list(dict.fromkeys(key for record in records for key in record))
    rows = [[_cell(record.get(key)) for key in columns] for record in records]
    return pd.DataFrame(rows, columns=columns, dtype=object)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value  # numbers were kept as their text by the parse_* hooks
    return json.dumps(value, ensure_ascii=False)  # true/false, lists, objects


def decode_text(raw: bytes, path: Path | str) -> str:
    """UTF-8 (a byte-order mark is dropped); bytes that are not UTF-8 become U+FFFD, with a warning."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("utf-8-sig", errors="replace")
        bad = text.count("\ufffd")
        warnings.warn(
            f"{path}: not valid UTF-8; {bad} undecodable byte sequence(s) replaced with U+FFFD "
            "(save the file as UTF-8 to keep those characters)",
            DataWarning,
            stacklevel=3,
        )
        return text


def require_columns(frame: Any, names: list[str], key: str, path: Any) -> None:
    """DataError naming the first missing column, the closest existing one and all of them."""
    columns = [str(c) for c in frame.columns]
    for name in names:
        if name not in columns:
            hint = closest(name, columns)
            suggestion = f"did you mean '{hint}'? " if hint else ""
            shown = ", ".join(columns[:30]) + (", ..." if len(columns) > 30 else "")
            raise DataError(f"{key}: no column '{name}' in {path}; {suggestion}(columns: {shown})")
