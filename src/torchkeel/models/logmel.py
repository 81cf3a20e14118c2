"""Log-mel features computed in an audio model's first step (models/audio.py).

The input is (B, 2, T) from data/audio.py: waveform and mask. ``LogMel`` turns it into
normalised log-mel features on the model's device, batched:

- the batch is trimmed to its longest clip (eager mode; kept whole under export);
- STFT (``torch.stft``, periodic Hann window of ``win_ms``, hop ``hop_ms``, centred on zero
  padding, so a clip ends the same alone or beside a longer one) to a
  power spectrogram;
- a mel filterbank on the HTK mel scale, m = 2595 log10(1 + f / 700), triangular filters
  between ``f_min`` and the Nyquist rate, peak 1, no area normalisation (librosa's
  ``filters.mel(htk=True, norm=None)``);
- log(mel power + a floor 80 dB under the clip's loudest bin), a floor that scales with the
  clip's gain as librosa's ``power_to_db(top_db=80)`` clips there;
- per-utterance normalisation: the clip's log-mel values minus their mean over all its bins
  and frames, divided by their std. A gain is a constant added to every log-mel value, so
  recording levels (13x apart between speakers in the FSDD) cancel out, while the spectral
  shape stays (a mean per mel bin, as cepstral mean normalisation takes, would erase the
  spectrum of a steady sound: a tone or a hum is all mean). The CNNs also get that per-band
  form as a second plane (``planes``): a microphone's or room's frequency response is a
  constant per band there and cancels, which is what a new speaker's recording setup needs;
- SpecAugment (Park et al. 2019) while training: ``freq_masks`` bands of up to ``freq_width``
  mel bins and ``time_masks`` spans of up to ``time_width`` of the clip's frames set to zero
  (the normalised mean), drawn from torch's seeded generator; and with it VTLP (Jaitly &
  Hinton 2013): each clip's filterbank centres moved by a factor in 1 +- ``warp`` (default
  0.1), as a speaker with a shorter or longer vocal tract moves the formants.

Frames past a clip's end are zero after normalisation and left out of the pooling.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from torchkeel.models.layers import keep_whole


def hz_to_mel(f: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(n_mels: int, n_fft: int, rate: int, f_min: float = 0.0, f_max: float | None = None) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) triangular filters on the HTK mel scale, peak 1 (no norm)."""
    f_max = f_max or rate / 2
    bins = torch.linspace(0, rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    low_mel, high_mel = (2595.0 * math.log10(1.0 + f / 700.0) for f in (f_min, f_max))  # floats: meta-safe
    edges = mel_to_hz(torch.linspace(low_mel, high_mel, n_mels + 2, dtype=torch.float64))
    return triangles(edges, bins).float()


def triangles(edges: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """(..., n, bins) triangular filters, peak 1, from (..., n + 2) edge frequencies in Hz."""
    low, centre, high = edges[..., :-2, None], edges[..., 1:-1, None], edges[..., 2:, None]
    rising = (bins - low) / (centre - low)
    falling = (high - bins) / (high - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0)


def vtlp(freqs: torch.Tensor, alpha: torch.Tensor, nyquist: float, boundary: float = 0.8) -> torch.Tensor:
    """Vocal tract length perturbation's piecewise-linear warp (Jaitly & Hinton 2013): each
    row's frequencies (B, n) scaled by its ``alpha`` (B,) up to a knee, then a straight line
    to the Nyquist rate, so 0 and Nyquist stay where they are."""
    a = alpha[:, None]
    knee = boundary * nyquist * torch.clamp(a, max=1.0) / a
    above = nyquist - (nyquist - a * knee) / (nyquist - knee) * (nyquist - freqs)
    return torch.where(freqs <= knee, a * freqs, above)


def trim_to_longest(x: torch.Tensor) -> torch.Tensor:
    """(B, 2, T) cut to the batch's longest clip (eager mode; whole under export, on meta and
    inside ``layers.whole_inputs``)."""
    if x.is_meta or keep_whole() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return x
    return x[..., : int(x[:, 1].sum(-1).max().clamp(min=1))]


class LogMel(nn.Module):
    def __init__(
        self,
        rate: int,
        n_mels: int = 40,
        win_ms: float = 25.0,
        hop_ms: float = 10.0,
        f_min: float = 0.0,
        spec_augment: bool = True,
        freq_masks: int = 2,
        freq_width: int = 8,
        time_masks: int = 2,
        time_width: float = 0.1,
        warp: float = 0.1,
    ) -> None:
        super().__init__()
        self.win = max(8, round(rate * win_ms / 1000))
        self.hop = max(1, round(rate * hop_ms / 1000))
        self.n_fft = 2 ** math.ceil(math.log2(self.win))
        self.rate, self.warp = rate, warp
        self.register_buffer("window", torch.hann_window(self.win), persistent=False)
        self.register_buffer("mel", mel_filterbank(n_mels, self.n_fft, rate, f_min), persistent=False)
        high = 2595.0 * math.log10(1.0 + rate / 2 / 700.0)
        low = 2595.0 * math.log10(1.0 + f_min / 700.0)
        self.register_buffer("edges", mel_to_hz(torch.linspace(low, high, n_mels + 2)), persistent=False)
        self.register_buffer("bins", torch.linspace(0, rate / 2, self.n_fft // 2 + 1), persistent=False)
        self.spec_augment, self.freq_masks, self.freq_width = spec_augment, freq_masks, freq_width
        self.time_masks, self.time_width = time_masks, time_width

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 2, T) -> features (B, n_mels, frames) and the frames' mask (B, frames)."""
        x = trim_to_longest(x)
        wave, mask = x[:, 0] * x[:, 1], x[:, 1]
        spec = torch.stft(
            wave, self.n_fft, self.hop, self.win, self.window, center=True, pad_mode="constant", return_complex=True
        )
        power = torch.matmul(self._filters(wave.shape[0]), spec.real.square() + spec.imag.square())  # (B, mels, t)
        floor = power.amax(dim=(1, 2), keepdim=True) * 1e-8 + 1e-12  # 80 dB under the clip's peak
        feats = torch.log(power + floor)
        frames = feats.shape[-1]
        lengths = mask.sum(-1)  # (B,) samples
        valid = (torch.arange(frames, device=x.device) * self.hop < lengths[:, None]).to(feats.dtype)  # (B, frames)
        w = valid[:, None]  # (B, 1, frames)
        frames_kept = valid.sum(-1).clamp(min=1)  # (B,)
        count = (frames_kept * feats.shape[1]).view(-1, 1, 1)
        mean = (feats * w).sum(dim=(1, 2), keepdim=True) / count
        var = ((feats - mean).square() * w).sum(dim=(1, 2), keepdim=True) / count
        feats = (feats - mean) / torch.sqrt(var + 1e-5) * w
        if self.training and self.spec_augment:
            feats = self._augment(feats, frames_kept)
        return feats, valid

    def _filters(self, batch: int) -> torch.Tensor:
        """The mel filterbank; while training with ``warp``, one per clip with its centre
        frequencies warped by a factor drawn from 1 +- ``warp`` (VTLP: a new voice's formants sit
        a few percent higher or lower, as a shorter or longer vocal tract puts them)."""
        if not (self.training and self.spec_augment and self.warp > 0):
            return self.mel
        alpha = 1.0 + (2.0 * torch.rand(batch, device=self.edges.device) - 1.0) * self.warp
        edges = vtlp(self.edges.expand(batch, -1), alpha, self.rate / 2)
        return triangles(edges, self.bins)

    def _augment(self, feats: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        b, m, t = feats.shape
        keep = torch.ones_like(feats)
        mel_axis = torch.arange(m, device=feats.device)[None, :, None]
        time_axis = torch.arange(t, device=feats.device)[None, None, :]
        for _ in range(self.freq_masks):
            width = torch.randint(0, self.freq_width + 1, (b, 1, 1), device=feats.device)
            start = (torch.rand(b, 1, 1, device=feats.device) * (m - width + 1)).floor()
            keep = keep * ~((mel_axis >= start) & (mel_axis < start + width))
        for _ in range(self.time_masks):
            most = (frames * self.time_width).floor().view(b, 1, 1)
            width = (torch.rand(b, 1, 1, device=feats.device) * (most + 1)).floor()
            start = (torch.rand(b, 1, 1, device=feats.device) * (frames.view(b, 1, 1) - width + 1)).floor()
            keep = keep * ~((time_axis >= start) & (time_axis < start + width))
        return feats * keep


def planes(feats: torch.Tensor, valid: torch.Tensor, band_means: bool) -> torch.Tensor:
    """(B, 1 or 2, mels, frames) for a 2-D conv: the features; with ``band_means`` a second
    plane of each mel band minus its mean over the clip's frames (cepstral mean normalisation's
    log-mel form: a microphone's or room's frequency response is a constant per band, and
    cancels), beside the first, which keeps the spectral shape a steady sound is made of."""
    if not band_means:
        return feats[:, None]
    w = valid[:, None]  # (B, 1, frames)
    means = (feats * w).sum(-1, keepdim=True) / w.sum(-1, keepdim=True).clamp(min=1)
    return torch.stack([feats, (feats - means) * w], dim=1)
