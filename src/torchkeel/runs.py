"""Run folders: create one per training run, resolve ``latest``, list them.

``runs/<YYYYmmdd-HHMMSS>-<name>/`` holds config.yaml, env.json, metrics.jsonl, checkpoint/,
and when training finished model.safetensors, model.json and summary.json. ``runs/latest`` is
a symlink to the newest run folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torchkeel.errors import DataWarning, KeelError, RunError, WriteError

LATEST = "latest"
# what loading a trained run reads: no command's output may replace one of them
RUN_INPUTS = ("config.yaml", "model.json", "model.safetensors", "data.json")
_WARNED: set[tuple[str, int]] = set()  # metrics files already warned about (file, damaged lines)


def create_run(out_dir: str | Path, name: str) -> Path:
    """A new, empty run folder; ``latest`` is pointed at it."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"cannot create the runs folder {out}: {e.strerror}") from None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for attempt in range(1, 1000):
        suffix = "" if attempt == 1 else f"-{attempt}"
        path = out / f"{stamp}-{_safe(name)}{suffix}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as e:
            raise RunError(f"cannot create run folder {path}: {e.strerror}") from None
        point_latest(out, path)
        return path
    raise RunError(f"too many runs named {name} in {out} this second")


def resolve_run(ref: str | Path, out_dir: str | Path = "runs") -> Path:
    """A run folder from a path, a run name under ``out_dir``, or ``latest``."""
    ref = str(ref)
    candidates = [Path(ref), Path(out_dir) / ref]
    if ref == LATEST:
        newest = find_runs(out_dir)
        candidates = newest[-1:] if newest else []
    for path in candidates:
        if (path / "config.yaml").is_file():
            return path.resolve()
    if ref == LATEST:
        raise RunError(f"no runs in {out_dir}/ yet: train one with `keel train`")
    if Path(ref).is_dir():
        raise RunError(f"{ref} is not a run folder (it has no config.yaml)")
    raise RunError(f"run folder not found: {ref} (`keel runs` lists the runs in {out_dir}/)")


def find_runs(out_dir: str | Path = "runs") -> list[Path]:
    """Run folders in ``out_dir``, oldest first (their names start with a timestamp)."""
    out = Path(out_dir)
    if not out.is_dir():
        return []
    return sorted(p for p in out.iterdir() if p.is_dir() and not p.is_symlink() and (p / "config.yaml").is_file())


@dataclass
class RunInfo:
    path: Path
    status: str  # "done" | "incomplete" | "damaged"
    config: dict[str, Any]
    summary: dict[str, Any]
    damage: str | None = None  # what is wrong with a damaged run's files


def read_run(path: Path) -> RunInfo:
    """A run's config and summary. A damaged config.yaml or summary.json does not raise: the run
    comes back with status "damaged" and ``damage`` saying which file and why, so a listing of
    many runs shows the others."""
    from torchkeel.config_yaml import read_yaml

    try:
        config = read_yaml(path / "config.yaml")  # bounded: a run folder may come from anyone
        summary = _read_summary(path / "summary.json")
    except KeelError as e:
        return RunInfo(path, "damaged", {}, {}, str(e))
    return RunInfo(path, "done" if summary else "incomplete", config, summary)


def _read_summary(file: Path) -> dict[str, Any]:
    summary = read_json(file)
    if not isinstance(summary.get("test", {}), dict):
        raise RunError(f"{file}: not a run summary (its 'test' is not a JSON object)")
    return summary


def read_json(file: Path) -> dict[str, Any]:
    """A run folder's JSON object file (summary.json, env.json, ...); {} when it is missing, one
    RunError naming the file when it is damaged."""
    if not file.is_file():
        return {}
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:  # JSONDecodeError is a ValueError
        raise RunError(f"{file}: damaged, not valid JSON ({type(e).__name__}); train the run again") from None
    if not isinstance(doc, dict):
        raise RunError(f"{file}: damaged, not a JSON object; train the run again")
    return doc


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a run's metrics.jsonl (empty when it has none yet). A line that is not a
    JSON object (the last line of a run killed while writing it) is skipped, with one warning."""
    file = path / "metrics.jsonl"
    if not file.is_file():
        return []
    records, bad = [], 0
    for line in file.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            bad += 1
    if bad and (str(file), bad) not in _WARNED:
        _WARNED.add((str(file), bad))  # once per file: compare reads a run's records many times
        warnings.warn(f"{file}: skipped {bad} damaged line(s) that are not JSON records", DataWarning, stacklevel=2)
    return records


def point_latest(out: Path, target: Path | None = None) -> None:
    """Point ``out/latest`` at ``target`` (default: the newest run; removed when none)."""
    link = out / LATEST
    if target is None:
        found = find_runs(out)
        if not found:
            link.unlink(missing_ok=True)
            return
        target = found[-1]
    tmp = out / f".{LATEST}.{os.getpid()}"
    try:
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target.name, target_is_directory=True)
        os.replace(tmp, link)  # atomic swap of the link
    except OSError:
        tmp.unlink(missing_ok=True)  # no symlinks here: `latest` still resolves by name


@contextlib.contextmanager
def lock_run(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``run_dir/.lock`` while training writes into the run, so two
    processes never resume the same run at once. The OS releases the lock however the process
    ends (SIGKILL included); where there is no ``fcntl`` (Windows) nothing is locked."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    try:
        fd = os.open(run_dir / ".lock", os.O_RDONLY | os.O_CREAT, 0o644)
    except OSError as e:
        raise WriteError(f"cannot write in the run folder {run_dir}: {e.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise RunError(
                f"{run_dir.name} is being trained by another process right now; let it finish or stop it first"
            ) from None
        yield
    finally:
        os.close(fd)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80] or "run"
