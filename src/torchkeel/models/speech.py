"""The CTC acoustic model for speech recognition (tasks/recognise.py): log-mel features as
models/audio.py computes them, two strided convs, a bidirectional GRU that reads each clip
within its own length, per-frame logits over CTC's blank and the characters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from torchkeel.data.bundle import DataSpec
from torchkeel.models.audio import LogMel, masked_stages, planes
from torchkeel.models.layers import Probability, Width


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
