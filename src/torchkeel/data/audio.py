"""Sound files as inputs: WAV, FLAC and OGG through ``soundfile``, for audio classification.

A clip is read whole as float32 (soundfile converts 8/16/24/32-bit PCM and float files
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
    return audio_bundle(name, files, y, classes, _parts(given, y, len(y), cfg, seed), audio)


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
    _check_speakers(parts, cfg.audio)
    y = np.array([int(digit) for digit, _, _ in parts])
    given = np.array(["test" if _held_out(speaker, take, cfg.audio) else "train" for _, speaker, take in parts])
    split = _parts(given, y, len(y), cfg, seed)  # val: data.val_fraction of all clips, from train
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
    from torchkeel.extras import require

    require("audio", "soundfile", "scipy")
    import soundfile as sf

    if rate is not None:  # waveforms made at ``rate``
        return _bundle(name, list(files), y, classes, split, audio, rate)
    rates: Counter[int] = Counter()
    for f in files[:2000]:
        try:
            rates[sf.info(str(f)).samplerate] += 1
        except (sf.LibsndfileError, RuntimeError) as e:
            raise DataError(f"{f}: not a readable WAV/FLAC/OGG file ({e})") from None
    rate = audio.sample_rate or rates.most_common(1)[0][0]
    clips = [read_audio(f, rate, max_seconds=audio.max_seconds)[0] for f in files]
    return _bundle(name, clips, y, classes, split, audio, rate)


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


# ---- transcripts, for speech recognition (tasks/recognise.py)

UNKNOWN = "\u2047"  # ⁇: a val/test character the training transcripts do not have
YESNO_NAME = re.compile(r"^([01](?:_[01])*)\.wav$")


def load_audio_transcripts(cfg: DataConfig, seed: int) -> DataBundle:
    """A CSV of ``file,transcript`` rows (``data.path``; ``data.target`` names the transcript
    column, default ``transcript``; an optional ``split`` column keeps its splits)."""
    if not cfg.path:
        raise DataError("audio_transcripts reads a CSV of file,transcript rows: set data.path")
    target = cfg.target or "transcript"
    files, texts, given = _files_from_csv(Path(cfg.path), Path(cfg.root) if cfg.root else None, target, True)
    return transcript_bundle(Path(cfg.path).stem, files, texts, _parts(given, None, len(files), cfg, seed), cfg)


def load_yesno(cfg: DataConfig, seed: int) -> DataBundle:
    """The OpenSLR "yesno" corpus (``data.root``: its waves_yesno/ folder): 60 clips of 8
    words, the name is the transcript (1 = yes, 0 = no). Its usual split: the names sorted,
    even positions train, odd test; val is drawn from train."""
    root = Path(cfg.root or "data/yesno/waves_yesno")
    files = sorted(p for p in root.iterdir() if YESNO_NAME.match(p.name)) if root.is_dir() else []
    if not files:
        raise DataError(f"yesno: no 1_0_1_...wav files in {root}; set data.root to the waves_yesno/ folder")
    texts = [" ".join("yes" if b == "1" else "no" for b in f.stem.split("_")) for f in files]
    given = np.array(["train" if i % 2 == 0 else "test" for i in range(len(files))])
    return transcript_bundle("yesno", files, texts, _parts(given, None, len(files), cfg, seed), cfg)


def load_fsdd_digits(cfg: DataConfig, seed: int) -> DataBundle:
    """Connected digit strings made from the FSDD (``data.root``: its recordings/): each string
    is 2-7 recordings of one speaker, each trimmed of its silence (frames 40 dB under the
    clip's peak), after a 50 ms lead-in and joined by 50-150 ms gaps of low-level noise
    (Gaussian, 30 dB under the string's speech RMS, so a gap is a quiet room rather than
    digital silence); the transcript is the digits with spaces ("3 1 4"). Train and val
    strings use takes 5-49, test strings takes 0-4 (the official split), or with
    ``data.audio.test_speakers`` the other speakers and those, so no recording (or held-out
    voice) is in two splits; the strings are drawn with a fixed seed (0), the same for every
    run."""
    root = Path(cfg.root or "data/fsdd/recordings")
    files = sorted(p for p in root.iterdir() if FSDD_NAME.match(p.name)) if root.is_dir() else []
    if not files:
        raise DataError(f"fsdd_digits: no {{digit}}_{{speaker}}_{{take}}.wav files in {root}; set data.root")
    audio = cfg.audio or AudioConfig()
    rate = audio.sample_rate or 8000
    parts = [FSDD_NAME.match(p.name).groups() for p in files]  # type: ignore[union-attr]
    _check_speakers(parts, audio)
    clips = [_trim(read_audio(f, rate, max_seconds=audio.max_seconds)[0]) for f in files]
    rng = np.random.default_rng(0)
    waves, texts, given = [], [], []
    for part, count in (("train", audio.strings), ("test", max(1, audio.strings // 4))):
        pool: dict[str, dict[str, list[int]]] = {}
        for i, (digit, speaker, take) in enumerate(parts):
            if _held_out(speaker, take, audio) == (part == "test"):
                pool.setdefault(speaker, {}).setdefault(digit, []).append(i)
        speakers = sorted(pool)
        for _ in range(count):
            speaker = pool[speakers[rng.integers(len(speakers))]]
            digits = [str(d) for d in rng.integers(0, 10, rng.integers(2, 8))]
            spoken = [clips[speaker[d][rng.integers(len(speaker[d]))]] for d in digits]
            gaps = [int(rate * 0.05)] + [int(rate * rng.uniform(0.05, 0.15)) for _ in digits]
            level = float(np.sqrt(np.mean(np.concatenate(spoken) ** 2))) * 10 ** (-30 / 20)
            noise = [(level * rng.standard_normal(n)).astype(np.float32) for n in gaps]
            waves.append(np.concatenate([noise[0], *(x for pair in zip(spoken, noise[1:], strict=True) for x in pair)]))
            texts.append(" ".join(digits))
            given.append(part)
    split = _parts(np.array(given), None, len(waves), cfg, seed)
    return transcript_bundle("fsdd_digits", waves, texts, split, cfg, rate)


def _held_out(speaker: str, take: str, audio: AudioConfig | None) -> bool:
    """Whether an FSDD recording is a test one: a test speaker's (``audio.test_speakers``),
    else takes 0-4 (the official split). An unknown test speaker is an error, not an empty set."""
    if audio is None or not audio.test_speakers:
        return int(take) < 5
    return speaker in audio.test_speakers


def _check_speakers(parts: list[tuple[str, ...]], audio: AudioConfig | None) -> None:
    known = sorted({speaker for _, speaker, _ in parts})
    unknown = [s for s in (audio.test_speakers or []) if s not in known] if audio else []
    if unknown:
        raise DataError(
            f"data.audio.test_speakers: no speaker {unknown[0]!r} in the FSDD (speakers: {', '.join(known)})"
        )


def _trim(clip: np.ndarray, frame: int = 80) -> np.ndarray:
    """The clip from its first to its last 10 ms frame within 40 dB of its loudest."""
    n = len(clip) // frame
    if n < 3:
        return clip
    energy = (clip[: n * frame].reshape(n, frame) ** 2).mean(1)
    loud = np.flatnonzero(energy >= energy.max() * 1e-4)
    return clip[loud[0] * frame : (loud[-1] + 1) * frame]


def _parts(
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


def _source(item: Any, name: str, i: int) -> str:
    return str(item) if isinstance(item, str | Path) else f"{name} clip {i}"


def transcript_bundle(
    name: str, files: list[Any], texts: list[str], split: tuple, cfg: DataConfig, rate: int | None = None
) -> DataBundle:
    """Clips and their transcripts as character ids over the training transcripts' alphabet.
    A character only val or test use becomes one more symbol, UNKNOWN, that no training target
    has (so the model never learns to say it): it stays in their references and counts as an
    error, rather than being dropped, which would flatter the error rates."""
    from torchkeel.data.ragged import Ragged

    texts = [" ".join(t.split()) for t in texts]  # runs of whitespace as one space
    alphabet = "".join(sorted({c for i in split[0] for c in texts[i]}))
    if not alphabet:
        raise DataError(f"{name}: the training transcripts are empty")
    unknown = sum(c not in alphabet for t in texts for c in t)
    if unknown:
        alphabet += UNKNOWN
        print(
            f"audio: {unknown} characters of val/test transcripts are not in the training transcripts; "
            f"they stay in the references as {UNKNOWN} and count as errors",
            file=sys.stderr,
        )
    index = {c: i + 1 for i, c in enumerate(alphabet)}  # 0 is CTC's blank
    bundle = audio_bundle(
        name, files, np.zeros(len(files), dtype=np.int64), [], split, cfg.audio or AudioConfig(), rate
    )
    ids = [torch.tensor([index.get(c, len(alphabet)) for c in t], dtype=torch.int64) for t in texts]

    def targets(part: np.ndarray) -> Ragged:
        return Ragged.from_list([ids[i] for i in part])

    for split_obj, part in zip((bundle.train, bundle.val, bundle.test), split, strict=True):
        if split_obj is not None:
            split_obj.y = targets(part)
            split_obj.sources = [_source(files[i], name, i) for i in part]
    bundle.spec.task = "speech_recognition"
    bundle.spec.classes = None
    bundle.spec.extra["alphabet"] = alphabet
    return bundle
