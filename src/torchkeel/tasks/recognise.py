"""Speech recognition with CTC (Graves et al. 2006): a transcript per clip, no alignment given.

Targets are a ``Ragged`` of character ids per clip (1..V; 0 is CTC's blank), from the
alphabet of the training transcripts (``spec.extra["alphabet"]``). A model's output is
(B, frames, V + 2): columns 0..V are logits over blank and the characters, the last column
is 1 for frames inside the clip and 0 past its end, so the loss and the decoder know each
clip's true number of frames.

- loss: ``F.ctc_loss`` on log-softmax outputs with input and target lengths, blank 0,
  averaged over target lengths then the batch (PyTorch's ``reduction="mean"``). A clip too
  short for its transcript (fewer output frames than characters plus repeats) is left out of
  training with a line on stderr (``admit``), when the model says how many frames it makes;
  ``zero_infinity=True`` keeps any other such clip's inf loss out of the gradient;
- decoding: greedy (best path): the most likely class per frame, repeats merged, blanks
  dropped;
- metrics: word and character error rates through ``jiwer``, corpus-level: substitutions,
  deletions and insertions summed over all clips, over the reference words (characters)
  summed (not a mean of per-clip rates).
"""

from __future__ import annotations

import sys
from typing import Any

import torch
import torch.nn.functional as F

from torchkeel.tasks.base import Task
from torchkeel.tasks.meter import TrainMeter, add_loss


def frame_lengths(out: torch.Tensor) -> torch.Tensor:
    """(B,) frames inside each clip, from the output's mask column."""
    return out[..., -1].float().sum(1).round().long()  # float32: bf16 cannot count past 256


def ctc_loss(out: torch.Tensor, y: Any) -> torch.Tensor:
    log_probs = out[..., :-1].float().log_softmax(-1).transpose(0, 1)  # (frames, B, V + 1)
    targets = y.padded.long().clamp(min=0)
    return F.ctc_loss(log_probs, targets, frame_lengths(out), y.lengths, blank=0, reduction="mean", zero_infinity=True)


def needed_frames(y: Any) -> torch.Tensor:
    """(N,) the fewest output frames CTC can spell each target in: one per character, and a
    blank between two equal characters in a row."""
    padded = y.padded.long()
    repeats = ((padded[:, 1:] == padded[:, :-1]) & (padded[:, 1:] > 0)).sum(1)
    return y.lengths.long() + repeats


def admit(model: Any, split: Any) -> Any:
    """The training clips a model can spell its transcripts in: a model with
    ``output_frames(samples)`` (models/audio.py's ctc_gru) has the clips whose transcripts need
    more frames than it makes left out of training, with one line on stderr naming the first
    (their loss would be inf; ``zero_infinity`` would give them no gradient, silently). All of
    them too short is a DataError. Val and test keep every clip: their errors count."""
    from torchkeel.errors import DataError

    frames_of = getattr(model, "output_frames", None)
    if frames_of is None:
        return split
    samples = split.x[:, 1].sum(-1).round().long()
    frames, need = frames_of(samples), needed_frames(split.y)
    short = torch.nonzero(need > frames).flatten()
    if len(short) == 0:
        return split
    i = int(short[0])
    name = split.sources[i] if split.sources else f"training clip {i}"
    rate = float(getattr(model, "frame_seconds", 0.0))
    example = (
        f"e.g. {name}: {int(samples[i])} samples give {int(frames[i])} frames"
        + (f" of {rate * 1000:g} ms" if rate else "")
        + f", its transcript needs {int(need[i])}"
    )
    if len(short) == len(split):
        raise DataError(f"speech recognition: every training clip is too short for its transcript ({example})")
    if not (torch.distributed.is_initialized() and torch.distributed.get_rank() != 0):  # once per job
        print(
            f"speech recognition: {len(short)} of {len(split)} training clips are too short for their transcripts "
            f"and are left out of training ({example})",
            file=sys.stderr,
        )
    keep = torch.ones(len(split), dtype=torch.bool, device=short.device)
    keep[short] = False
    index = torch.nonzero(keep).flatten()
    sources = [split.sources[j] for j in index.tolist()] if split.sources else None
    return type(split)(split.x[index], split.y[index], sources)


def build_loss(name: str, spec: Any, label_smoothing: float = 0.0, weights: Any = None):
    return ctc_loss


def greedy(out: torch.Tensor, alphabet: str) -> list[str]:
    """Best-path decoding: per clip, the argmax per frame, repeats merged, blanks dropped."""
    best = out[..., :-1].argmax(-1).cpu()  # (B, frames)
    lengths = frame_lengths(out).cpu().tolist()
    texts = []
    for row, n in zip(best, lengths, strict=True):
        ids = torch.unique_consecutive(row[:n])
        texts.append("".join(alphabet[i - 1] for i in ids.tolist() if i > 0))
    return texts


def references(y: Any, alphabet: str) -> list[str]:
    return ["".join(alphabet[i - 1] for i in item.tolist()) for item in y.items()]


class ErrorRates:
    """Word and character error counts (jiwer), summed as tensors so ranks can add them."""

    def __init__(self, spec: Any, names: list[str], device: torch.device, top_k: int = 3, *, details: bool = False):
        from torchkeel.extras import require

        require("audio", "jiwer")
        self.alphabet = spec.extra["alphabet"]
        self.names = [n for n in names if n in ("wer", "cer")]
        self.sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, count
        self.counts = torch.zeros(4, dtype=torch.float64, device=device)  # word errors, words, char errors, chars
        self.has_loss = False
        self.keep = details
        self.examples: list[tuple[str, str]] = []

    @torch.no_grad()
    def update(self, out: torch.Tensor, y: Any, loss: torch.Tensor | None = None) -> None:
        import jiwer

        self.has_loss |= add_loss(self.sums, loss, len(y))
        hyps, refs = greedy(out, self.alphabet), references(y, self.alphabet)
        # jiwer refuses an empty reference; a clip with no words counts its hypothesis as insertions
        pairs = [(r, h) for r, h in zip(refs, hyps, strict=True) if r.strip()]
        extra_words = sum(len(h.split()) for r, h in zip(refs, hyps, strict=True) if not r.strip())
        extra_chars = sum(len(h) for r, h in zip(refs, hyps, strict=True) if not r.strip())
        words = chars = 0
        if pairs:
            r, h = [p[0] for p in pairs], [p[1] for p in pairs]
            w = jiwer.process_words(r, [x if x.strip() else "" for x in h])
            c = jiwer.process_characters(r, h)
            words = w.substitutions + w.deletions + w.insertions
            chars = c.substitutions + c.deletions + c.insertions
        ref_words = sum(len(r.split()) for r in refs)
        ref_chars = sum(len(r) for r in refs)
        found = [words + extra_words, ref_words, chars + extra_chars, ref_chars]
        self.counts += torch.tensor(found, dtype=torch.float64, device=self.counts.device)
        if self.keep and len(self.examples) < 50:
            self.examples += list(zip(refs, hyps, strict=True))[: 50 - len(self.examples)]

    def compute(self) -> dict[str, float]:
        word_errors, words, char_errors, chars = self.counts.tolist()
        loss_sum, n = self.sums.tolist()
        values = {"wer": word_errors / max(words, 1), "cer": char_errors / max(chars, 1)}
        return ({"loss": loss_sum / max(n, 1)} if self.has_loss else {}) | {k: values[k] for k in self.names}

    def details(self) -> dict[str, Any]:
        return {"transcripts": [{"reference": r, "hypothesis": h} for r, h in self.examples]}


SPEECH = Task(
    name="speech_recognition",
    description="speech recognition (CTC)",
    losses=("ctc",),
    metrics=("wer", "cer"),
    key_metric="wer",
    lower_is_better=frozenset({"loss", "wer", "cer"}),
    uses=frozenset({"predict", "eval", "serve", "export"}),
    output_size=lambda spec: len(spec.extra["alphabet"]) + 2,
    build_loss=build_loss,
    admit=admit,
    accumulator=ErrorRates,
    train_meter=lambda spec, device: TrainMeter(device, None),
    decode=lambda out, spec, k: [{"transcript": t} for t in greedy(out, spec.extra["alphabet"])],
    report_sections=("transcripts",),
    export_output="(batch, frames, alphabet + 2): logits over CTC blank and the characters, then the frame mask",
)
