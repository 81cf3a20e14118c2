"""Audio models on (B, 2, T) inputs from data/audio.py (waveform and mask): ``logmel_cnn`` and
``ctc_gru`` on log-mel features computed in the model's first step (models/logmel.py), and
``m5`` on the waveform itself. Frames past a clip's end are left out of every stage and of the
pooling, so a clip's outputs do not depend on the padding or the clips beside it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from torchkeel.data.bundle import DataSpec
from torchkeel.errors import ConfigError
from torchkeel.models.layers import Probability, Width
from torchkeel.models.logmel import LogMel, planes, trim_to_longest


def pad_to_multiple(h: torch.Tensor, mask: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``h`` and ``mask`` zero-padded on the last axis to a multiple of ``step``."""
    short = (step - h.shape[-1] % step) % step
    return F.pad(h, (0, short)), F.pad(mask, (0, short))


def masked_stages(
    stages: nn.Module, h: torch.Tensor, mask: torch.Tensor, strides: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``stages`` with each one's input zeroed past the clip's end (as a conv's own padding
    is), so a clip's values do not depend on the padding or the clips beside it. ``strides``:
    each stage's downsampling of the last axis; the mask follows it. Returns the masked output
    and its mask."""
    for stage, stride in zip(stages, strides, strict=True):
        h = stage(h * mask)
        mask = mask[..., ::stride][..., : h.shape[-1]]
    return h * mask, mask


class LogMelCNN(nn.Module):
    def __init__(
        self, frontend: LogMel, channels: tuple[int, ...], dropout: float, outputs: int, band_means: bool = False
    ) -> None:
        super().__init__()
        self.frontend = frontend
        self.band_means = band_means
        stages: list[nn.Module] = []
        c = 2 if band_means else 1
        for out in channels:
            conv = nn.Conv2d(c, out, 3, padding=1, bias=False)
            stages.append(nn.Sequential(conv, nn.BatchNorm2d(out), nn.ReLU(), nn.MaxPool2d(2)))
            c = out
        self.features = nn.Sequential(*stages)
        self.pools = len(channels)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * c * (frontend.mel.shape[0] >> len(channels)), outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(*self.frontend(x))

    def classify(self, feats: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Logits from features (B, n_mels, frames) and their frames' mask (B, frames): the
        model after its front end (the report's saliency over time x frequency starts here)."""
        # frames padded to a multiple of the pooling, and every stage's input masked, so frames
        # past a clip's end are zero at every depth, as a conv's own zero padding is: a clip
        # gets the same logits alone, beside a longer clip or padded for export
        feats, valid = pad_to_multiple(feats, valid, 2**self.pools)
        # (B, planes, mels, frames) and (B, 1, 1, frames) through the stages, each pooling by 2
        h, mask = masked_stages(
            self.features, planes(feats, valid, self.band_means), valid[:, None, None], [2] * self.pools
        )
        h = h.flatten(1, 2)  # channels x mel bands, kept apart: (B, C * mels', frames')
        valid = mask[:, 0]  # (B, 1, frames')
        count = valid.sum(-1).clamp(min=1)
        mean = (h * valid).sum(-1) / count
        peak = h.masked_fill(valid == 0, float("-inf")).amax(-1)
        peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
        return self.head(self.dropout(torch.cat([mean, peak], dim=1)))


def logmel_cnn(
    spec: DataSpec,
    *,
    channels: tuple[Width, ...] = (32, 64, 128, 128),
    dropout: Probability = 0.2,
    n_mels: int = 40,
    win_ms: float = 25.0,
    hop_ms: float = 10.0,
    spec_augment: bool = True,
    warp: float = 0.1,
    band_means: bool = True,
) -> nn.Module:
    """Log-mel CNN for sound: features computed in the model, conv stages, pooled over time.

    STFT, mel filterbank, log, per-utterance normalisation and SpecAugment (models/audio.py's
    header); two planes, the features and (``band_means``) each band minus its mean over the
    clip, so the net sees the spectrum with and without the recording's frequency response
    (``planes``); then 3x3 conv-BN-ReLU-pool stages over mels x frames; mean and max over time
    of every channel and mel band (pooling over frequency too would lose where in the spectrum
    a sound is).

    Any clip length: the batch is trimmed to its longest clip and frames past each clip's end
    are left out of the pooling. ``n_mels`` mel bins from ``win_ms`` windows every ``hop_ms``.
    """
    rate = int(spec.extra.get("sample_rate", 16000))
    if not channels:
        raise ConfigError("logmel_cnn: model.channels needs at least one conv width, e.g. [32, 64]")
    if n_mels < 2 ** len(channels):
        raise ConfigError(f"logmel_cnn: {len(channels)} pooling stages need n_mels >= {2 ** len(channels)}")
    frontend = LogMel(rate, n_mels, win_ms, hop_ms, spec_augment=spec_augment, warp=warp)
    return LogMelCNN(frontend, tuple(channels), dropout, spec.output_size, band_means)


class WaveCNN(nn.Module):
    """M5 over (B, 2, T): each clip divided by its RMS (a gain cancels), then strided 1-D
    convolutions with every stage's input masked past the clip's end."""

    def __init__(self, channels: tuple[int, ...], first_kernel: int, first_stride: int, dropout: float, outputs: int):
        super().__init__()
        stages: list[nn.Module] = []
        c = 1
        for i, out in enumerate(channels):
            kernel, stride = (first_kernel, first_stride) if i == 0 else (3, 1)
            conv = nn.Conv1d(c, out, kernel, stride=stride, padding=kernel // 2, bias=False)
            stages.append(nn.Sequential(conv, nn.BatchNorm1d(out), nn.ReLU(), nn.MaxPool1d(4)))
            c = out
        self.features = nn.Sequential(*stages)
        self.first_stride = first_stride
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(c, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = trim_to_longest(x)
        mask = x[:, 1:2]  # (B, 1, T)
        count = mask.sum(-1, keepdim=True).clamp(min=1)
        wave = x[:, 0:1] * mask
        wave = wave / torch.sqrt(wave.square().sum(-1, keepdim=True) / count + 1e-8)
        strides = [self.first_stride * 4] + [4] * (len(self.features) - 1)  # each conv's stride, then pool 4
        h, mask = pad_to_multiple(wave, mask, math.prod(strides))
        h, mask = masked_stages(self.features, h, mask, strides)
        mean = h.sum(-1) / mask.sum(-1).clamp(min=1)
        return self.head(self.dropout(mean))


def m5(
    spec: DataSpec,
    *,
    channels: tuple[Width, ...] = (128, 128, 256, 512),
    first_kernel: int = 80,
    first_stride: int = 4,
    dropout: Probability = 0.0,
) -> nn.Module:
    """M5 raw-waveform 1-D CNN (Dai et al. 2017): a long strided first conv, then 3-wide convs.

    Each clip is divided by its RMS; every stage's input is masked past the clip's end; the
    last stage's frames are averaged over the clip. ``first_kernel`` 80 is 10 ms at 8 kHz.
    """
    if not channels:
        raise ConfigError("m5: model.channels needs at least one conv width, e.g. [128, 128]")
    return WaveCNN(tuple(channels), first_kernel, first_stride, dropout, spec.output_size)


class CTCRecogniser(nn.Module):
    """Log-mel features, two strided conv layers (4x fewer frames), a bidirectional GRU packed
    by each clip's true frames, and per-frame logits over blank + characters; the output's last
    column is the frame mask (tasks/recognise.py)."""

    def __init__(
        self, frontend: LogMel, conv: int, hidden: int, layers: int, dropout: float, outputs: int, band_means: bool
    ):
        super().__init__()
        self.frontend = frontend
        self.band_means = band_means
        mels = frontend.mel.shape[0]
        first = 2 if band_means else 1
        self.conv = nn.ModuleList(
            [
                nn.Sequential(nn.Conv2d(first, conv, 3, stride=2, padding=1), nn.BatchNorm2d(conv), nn.ReLU()),
                nn.Sequential(nn.Conv2d(conv, conv, 3, stride=2, padding=1), nn.BatchNorm2d(conv), nn.ReLU()),
            ]
        )
        self.rnn = nn.GRU(
            conv * ((mels + 3) // 4), hidden, layers, batch_first=True, bidirectional=True,
            dropout=dropout if layers > 1 else 0.0,
        )  # fmt: skip
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * hidden, outputs - 1)

    @property
    def frame_seconds(self) -> float:
        return 4 * self.frontend.hop / self.frontend.rate

    def output_frames(self, samples: torch.Tensor) -> torch.Tensor:
        """(N,) output frames inside clips of ``samples`` (N,) samples: one every hop, then
        halved (rounding up) by each stride-2 conv, as the frame mask is."""
        frames = torch.div(samples + self.frontend.hop - 1, self.frontend.hop, rounding_mode="floor")
        for _ in self.conv:
            frames = torch.div(frames + 1, 2, rounding_mode="floor")
        return frames

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats, valid = self.frontend(x)  # (B, mels, frames), (B, frames)
        # each conv's input masked past the clip's end (zeros, as its own padding), so a clip's
        # frames do not depend on the clips beside it
        h, mask = masked_stages(self.conv, planes(feats, valid, self.band_means), valid[:, None, None], [2, 2])
        h = h.flatten(1, 2).transpose(1, 2)  # (B, frames', features)
        mask = mask[:, 0, 0]  # (B, frames')
        logits = self.head(self.dropout(masked_bigru(self.rnn, h, mask)))
        return torch.cat([logits, mask[..., None].to(logits.dtype)], dim=-1)


def masked_bigru(rnn: nn.GRU, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A bidirectional, batch-first ``rnn`` over (B, T, features) clips of the lengths in
    ``mask`` (B, T), as if each ran alone: the forward direction reads the frames as they are
    (padding comes after a clip's frames, so it never reaches them), the backward direction
    reads each clip reversed within its own length. The same numbers as a packed sequence,
    with the module's own weights, and plain tensor ops that ``torch.export`` and ONNX take
    (a PackedSequence is neither)."""
    steps = torch.arange(h.shape[1], device=h.device)[None, :]  # (1, T)
    lengths = mask.sum(1, keepdim=True).long()  # (B, 1)
    flip = torch.where(steps < lengths, lengths - 1 - steps, steps)  # its own inverse
    index = flip[..., None]
    for layer in range(rnn.num_layers):
        if layer and rnn.dropout and rnn.training:
            h = F.dropout(h, rnn.dropout, training=True)
        outs = []
        for direction, suffix in ((0, ""), (1, "_reverse")):
            weights = [
                getattr(rnn, f"{name}_l{layer}{suffix}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            ]
            seq = h if direction == 0 else h.gather(1, index.expand_as(h))
            zero = h.new_zeros(1, h.shape[0], rnn.hidden_size)
            out, _ = torch.gru(seq, zero, weights, True, 1, 0.0, rnn.training, False, True)
            outs.append(out if direction == 0 else out.gather(1, index.expand_as(out)))
        h = torch.cat(outs, dim=-1) * mask[..., None]
    return h


def ctc_gru(
    spec: DataSpec,
    *,
    conv: Width = 32,
    hidden: Width = 128,
    layers: int = 2,
    dropout: Probability = 0.1,
    n_mels: int = 40,
    spec_augment: bool = True,
    warp: float = 0.1,
    band_means: bool = True,
) -> nn.Module:
    """CTC acoustic model: log-mel, two stride-2 convs, a bidirectional GRU, per-frame logits.

    The log-mel features in two planes, as logmel_cnn's (the second with band means removed).

    For speech recognition data (a transcript per clip): ``conv`` channels, a ``layers``-deep
    GRU of ``hidden`` units per direction; frames every 40 ms after the convs (10 ms hop).
    """
    rate = int(spec.extra.get("sample_rate", 16000))
    frontend = LogMel(rate, n_mels, spec_augment=spec_augment, warp=warp)
    return CTCRecogniser(frontend, conv, hidden, layers, dropout, spec.output_size, band_means)
