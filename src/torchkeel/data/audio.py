"""Sound files as inputs: WAV, FLAC and OGG through ``soundfile``, for audio classification.

A clip is read as float32 (up to ``data.audio.max_seconds``) (soundfile converts 8/16/24/32-bit PCM and float files
alike), mixed down to mono by the mean of its channels, and resampled to the data's rate
with a polyphase FIR filter (``scipy.signal.resample_poly``: a Kaiser-windowed sinc
low-pass at the lower of the two Nyquist rates, the up/down factors reduced by their gcd).
Nothing loops over samples in Python.

A split's ``x`` is (N, 2, T): channel 0 the waveform, zero-padded to the longest clip kept,
channel 1 its mask (1 where the clip has samples), so every clip's true length travels with
it through the loaders, the device and export; the model trims each batch to its longest
clip and reads the mask for normalisation and pooling (models/audio.py). Clips longer than
``data.audio.max_seconds`` are cut, and the run's output says how many.

Levels are left as recorded: the model normalises each utterance's log-mel features.
"""

from __future__ import annotations

import math
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchkeel.config_data import AudioConfig, DataConfig
from torchkeel.data.bundle import DataBundle, DataSpec, Split
from torchkeel.data.splits import split_indices
from torchkeel.errors import DataError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
FSDD_NAME = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")


def read_audio(
    source: str | Path | object, rate: int | None, name: str | None = None, max_seconds: float | None = None
) -> tuple[np.ndarray, int]:
    """(samples float32 mono, rate): the file at ``rate`` (its own rate when ``rate`` is None).
    ``source`` is a path or a binary file object; a file soundfile cannot read is a DataError.
    With ``max_seconds``, only that much of the file (and one sample more, so a caller can
    tell it was cut) is read: a 2-hour recording costs what its first seconds do."""
    from torchkeel.extras import require

    require("audio", "soundfile", "scipy")
    import soundfile as sf

    label = name or str(source)
    try:
        with sf.SoundFile(source) as f:
            file_rate, frames = f.samplerate, f.frames
            if max_seconds is not None:
                frames = min(frames, math.ceil(max_seconds * file_rate) + 1)
            data = f.read(frames, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise DataError(f"{label}: not a readable WAV/FLAC/OGG file ({e})") from None
    if data.shape[1] == 0:
        raise DataError(f"{label}: the file has no channels")
    if data.shape[0] == 0:
        raise DataError(f"{label}: the file holds no samples")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(mono).all():
        raise DataError(f"{label}: the file holds nan or inf samples")
    return resample(mono, file_rate, rate or file_rate), rate or file_rate


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """``samples`` at ``rate`` resampled to ``target`` (polyphase FIR, scipy.signal.resample_poly)."""
    if rate == target:
        return np.ascontiguousarray(samples, dtype=np.float32)
    from scipy.signal import resample_poly

    g = math.gcd(rate, target)
    return resample_poly(samples, target // g, rate // g).astype(np.float32)


def pad_clips(clips: list[np.ndarray], length: int) -> torch.Tensor:
    """(N, 2, length): waveforms cut or zero-padded to ``length``, and their masks."""
    x = torch.zeros(len(clips), 2, length)
    for i, clip in enumerate(clips):
        n = min(len(clip), length)
        x[i, 0, :n] = torch.from_numpy(clip[:n])
        x[i, 1, :n] = 1.0
    return x


def load_audio_folder(cfg: DataConfig, seed: int) -> DataBundle:
    """A folder with one subfolder of sound files per class (``data.root``), or a CSV of
    ``file,label`` rows (``data.path``; files relative to the CSV or to ``data.root``). A CSV's
    optional ``split`` column (train / val / test) keeps the splits it gives, as a speaker-
    disjoint protocol needs; a part it leaves out is cut from train, stratified and seeded."""
    audio = cfg.audio or AudioConfig()
    given = None
    if cfg.path:
        files, labels, given = _files_from_csv(Path(cfg.path), Path(cfg.root) if cfg.root else None, cfg.target)
        name = Path(cfg.path).stem
    else:
        root = Path(cfg.root or "")
        files, labels = _files_from_folders(root)
        name = root.name
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise DataError(f"{name}: found {len(classes)} class of sound files; need at least two")
    y = np.array([classes.index(label) for label in labels])
    return audio_bundle(name, files, y, classes, split_parts(given, y, len(y), cfg, seed), audio)


def load_fsdd(cfg: DataConfig, seed: int) -> DataBundle:
    """The Free Spoken Digit Dataset (``data.root``: its ``recordings/`` folder of
    ``{digit}_{speaker}_{take}.wav``), with its official split: takes 0-4 of every speaker
    and digit are the test set, the rest train; val is drawn from train (stratified, seeded),
    ``data.val_fraction`` of all the clips, as a CSV's ``split`` column has it drawn."""
    root = Path(cfg.root or "data/fsdd/recordings")
    if not root.is_dir():
        raise DataError(f"fsdd: no folder {root}; set data.root to the recordings/ folder of the FSDD")
    files = sorted(p for p in root.iterdir() if FSDD_NAME.match(p.name))
    if not files:
        raise DataError(f"fsdd: no {{digit}}_{{speaker}}_{{take}}.wav files in {root}")
    parts = [FSDD_NAME.match(p.name).groups() for p in files]  # type: ignore[union-attr]
    check_speakers(parts, cfg.audio)
    y = np.array([int(digit) for digit, _, _ in parts])
    given = np.array(["test" if held_out(speaker, take, cfg.audio) else "train" for _, speaker, take in parts])
    split = split_parts(given, y, len(y), cfg, seed)  # val: data.val_fraction of all clips, from train
    return audio_bundle("fsdd", files, y, [str(d) for d in range(10)], split, cfg.audio or AudioConfig())


def audio_bundle(
    name: str,
    files: list[Any],
    y: np.ndarray,
    classes: list[str],
    split: tuple,
    audio: AudioConfig,
    rate: int | None = None,
) -> DataBundle:
    """Read every file once at one rate (``audio.sample_rate``, else the most common rate among
    the files) and cut the splits; ``files`` may be waveforms already at ``rate``."""
    if rate is not None:  # waveforms made at ``rate``
        return _bundle(name, list(files), y, classes, split, audio, rate)
    clips, rate = read_clips(files, audio)
    return _bundle(name, clips, y, classes, split, audio, rate)


def read_clips(files: list[Any], audio: AudioConfig) -> tuple[list[np.ndarray], int]:
    """Every file read once, at ``audio.sample_rate`` or else the files' most common rate, up to
    ``audio.max_seconds`` (and one sample more: a longer file is seen to be cut)."""
    from torchkeel.extras import require

    require("audio", "soundfile", "scipy")
    import soundfile as sf

    rates: Counter[int] = Counter()
    for f in files[:2000]:
        try:
            rates[sf.info(str(f)).samplerate] += 1
        except (sf.LibsndfileError, RuntimeError) as e:
            raise DataError(f"{f}: not a readable WAV/FLAC/OGG file ({e})") from None
    rate = audio.sample_rate or rates.most_common(1)[0][0]
    return [read_audio(f, rate, max_seconds=audio.max_seconds)[0] for f in files], rate


def _bundle(
    name: str, clips: list[np.ndarray], y: np.ndarray, classes: list[str], split: tuple, audio: AudioConfig, rate: int
) -> DataBundle:
    limit = int(audio.max_seconds * rate)
    longest = max(len(c) for c in clips)
    cut = sum(len(c) > limit for c in clips)
    if cut:
        note = f"audio: {cut} of {len(clips)} clips are longer than {audio.max_seconds:g} s and were cut"
        print(f"{note} (data.audio.max_seconds)", file=sys.stderr)
    length = min(longest, limit)
    yt = torch.as_tensor(y, dtype=torch.int64)
    # each split padded on its own (one copy of the set in memory, not a padded whole and its slices)
    parts = [Split(pad_clips([clips[j] for j in i], length), yt[torch.as_tensor(i, dtype=torch.long)]) for i in split]
    seconds = [len(c) / rate for c in clips]
    spec = DataSpec(
        name=name,
        kind="audio",
        task="classification",
        input_shape=(2, length),
        classes=classes,
        extra={
            "sample_rate": rate,
            "max_seconds": audio.max_seconds,
            "clips_cut": cut,
            "seconds": {"min": min(seconds), "median": float(np.median(seconds)), "max": max(seconds)},
        },
    )
    return DataBundle(spec, parts[0], parts[1] if len(split[1]) else None, parts[2])


def _files_from_folders(root: Path) -> tuple[list[Path], list[str]]:
    if not root.is_dir():
        raise DataError(f"audio_folder: no folder {root} (data.root)")
    files, labels = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(folder.rglob("*")):
            if f.suffix.lower() in AUDIO_SUFFIXES and f.is_file():
                files.append(f)
                labels.append(folder.name)
    if not files:
        raise DataError(f"audio_folder: no .wav/.flac/.ogg files in the class folders of {root}")
    return files, labels


def _files_from_csv(
    path: Path, root: Path | None, target: str | None, transcripts: bool = False
) -> tuple[list[Path], list[str], np.ndarray | None]:
    from torchkeel.data.frames import read_frame

    frame = read_frame(path, "data.path")
    label = target or "label"
    if "file" not in frame.columns or label not in frame.columns:
        raise DataError(f"{path}: needs columns 'file' and '{label}' (has {', '.join(map(str, frame.columns))})")
    base = root or path.parent
    files = [Path(f) if Path(f).is_absolute() else base / f for f in frame["file"].astype(str)]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DataError(f"{path}: {len(missing)} files are missing, e.g. {missing[0]}")
    given = None
    if "split" in frame.columns:
        given = frame["split"].astype(str).str.strip().str.lower().to_numpy()
        odd = sorted(set(given) - {"train", "val", "test"})
        if odd:
            raise DataError(f"{path}: column 'split' holds {odd[0]!r}; use train, val or test")
    values = frame[label]
    if transcripts:  # an empty cell is a clip with no words
        return files, [str(v) for v in values.fillna("")], given
    if values.isna().any():
        row = int(values.isna().to_numpy().nonzero()[0][0]) + 2
        raise DataError(f"{path}, line {row}: no '{label}' value; every clip needs its label")
    return files, [str(v) for v in values], given


def held_out(speaker: str, take: str, audio: AudioConfig | None) -> bool:
    """Whether an FSDD recording is a test one: a test speaker's (``audio.test_speakers``),
    else takes 0-4 (the official split). An unknown test speaker is an error, not an empty set."""
    if audio is None or not audio.test_speakers:
        return int(take) < 5
    return speaker in audio.test_speakers


def check_speakers(parts: list[tuple[str, ...]], audio: AudioConfig | None) -> None:
    known = sorted({speaker for _, speaker, _ in parts})
    unknown = [s for s in (audio.test_speakers or []) if s not in known] if audio else []
    if unknown:
        raise DataError(
            f"data.audio.test_speakers: no speaker {unknown[0]!r} in the FSDD (speakers: {', '.join(known)})"
        )


def split_parts(
    given: np.ndarray | None, labels: np.ndarray | None, n: int, cfg: DataConfig, seed: int
) -> tuple[np.ndarray, ...]:
    """(train, val, test) indices: the given splits, and the parts they leave out cut from
    train as fractions of the whole set (stratified by ``labels`` when given, seeded)."""
    if given is None:
        val, test, train = split_indices(labels, n, (cfg.val_fraction, cfg.test_fraction), seed)
        return train, val, test
    parts = {part: np.flatnonzero(given == part) for part in ("train", "val", "test")}
    rest = parts["train"]
    if len(rest) == 0:
        raise DataError("the 'split' column gives no train rows")
    cut = [(part, f) for part, f in (("val", cfg.val_fraction), ("test", cfg.test_fraction)) if len(parts[part]) == 0]
    if cut:
        shares = tuple(min(0.9, f * n / max(1, len(rest))) for _, f in cut)
        *pieces, kept = split_indices(None if labels is None else labels[rest], len(rest), shares, seed)
        parts.update({part: rest[piece] for (part, _), piece in zip(cut, pieces, strict=True)})
        parts["train"] = rest[kept]
        if len(kept) < len(rest) / 2:
            raise DataError(
                f"cutting {' and '.join(p for p, _ in cut)} ({' + '.join(f'{f:g}' for _, f in cut)} of {n} rows) from "
                f"the {len(rest)} train rows of the 'split' column leaves {len(kept)}: give those splits in the column"
            )
    return parts["train"], parts["val"], parts["test"]
