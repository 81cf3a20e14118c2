"""Sound files with transcripts, for speech recognition (tasks/recognise.py): a CSV of
``file,transcript`` rows, the OpenSLR yesno corpus, and connected digit strings made from the
FSDD. Clips are read as data/audio.py reads them; targets are each transcript's characters
over the training transcripts' alphabet (0 is CTC's blank).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchkeel.config_data import AudioConfig, DataConfig
from torchkeel.data.audio import (
    FSDD_NAME,
    _bundle,
    _files_from_csv,
    check_speakers,
    held_out,
    read_audio,
    read_clips,
    split_parts,
)
from torchkeel.data.bundle import DataBundle
from torchkeel.errors import DataError

UNKNOWN = "\u2047"  # ⁇: a val/test character the training transcripts do not have
YESNO_NAME = re.compile(r"^([01](?:_[01])*)\.wav$")


def load_audio_transcripts(cfg: DataConfig, seed: int) -> DataBundle:
    """A CSV of ``file,transcript`` rows (``data.path``; ``data.target`` names the transcript
    column, default ``transcript``; an optional ``split`` column keeps its splits)."""
    if not cfg.path:
        raise DataError("audio_transcripts reads a CSV of file,transcript rows: set data.path")
    target = cfg.target or "transcript"
    files, texts, given = _files_from_csv(Path(cfg.path), Path(cfg.root) if cfg.root else None, target, True)
    return transcript_bundle(Path(cfg.path).stem, files, texts, split_parts(given, None, len(files), cfg, seed), cfg)


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
    return transcript_bundle("yesno", files, texts, split_parts(given, None, len(files), cfg, seed), cfg)


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
    check_speakers(parts, audio)
    clips = [_trim(read_audio(f, rate, max_seconds=audio.max_seconds)[0]) for f in files]
    rng = np.random.default_rng(0)
    waves, texts, given = [], [], []
    for part, count in (("train", audio.strings), ("test", max(1, audio.strings // 4))):
        pool: dict[str, dict[str, list[int]]] = {}
        for i, (digit, speaker, take) in enumerate(parts):
            if held_out(speaker, take, audio) == (part == "test"):
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
    split = split_parts(np.array(given), None, len(waves), cfg, seed)
    return transcript_bundle("fsdd_digits", waves, texts, split, cfg, rate)


def _trim(clip: np.ndarray, frame: int = 80) -> np.ndarray:
    """The clip from its first to its last 10 ms frame within 40 dB of its loudest."""
    n = len(clip) // frame
    if n < 3:
        return clip
    energy = (clip[: n * frame].reshape(n, frame) ** 2).mean(1)
    loud = np.flatnonzero(energy >= energy.max() * 1e-4)
    return clip[loud[0] * frame : (loud[-1] + 1) * frame]


def _whole_clips(
    name: str, files: list[Any], clips: list[np.ndarray], split: tuple, audio: AudioConfig, rate: int
) -> tuple[np.ndarray, ...]:
    """The splits without clips longer than ``audio.max_seconds``: cut, a clip would lose words
    its transcript still has. Told on stderr with the first one; all of train is a DataError."""
    limit = audio.max_seconds * rate
    long = np.array([len(c) > limit for c in clips])
    if not long.any():
        return split
    first = _source(files[int(np.flatnonzero(long)[0])], name, int(np.flatnonzero(long)[0]))
    kept = tuple(np.asarray(part)[~long[np.asarray(part, dtype=int)]] for part in split)
    what = f"longer than data.audio.max_seconds ({audio.max_seconds:g} s), e.g. {first}"
    if len(kept[0]) == 0:
        raise DataError(f"{name}: every training clip is {what}; raise data.audio.max_seconds")
    print(
        f"audio: {int(long.sum())} of {len(clips)} clips are {what}, and are left out "
        "(cut, a clip would lose words its transcript has)",
        file=sys.stderr,
    )
    return kept


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
    audio = cfg.audio or AudioConfig()
    clips, rate = (list(files), rate) if rate is not None else read_clips(files, audio)
    split = _whole_clips(name, files, clips, split, audio, rate)
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
    bundle = _bundle(name, clips, np.zeros(len(files), dtype=np.int64), [], split, audio, rate)
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
