"""Front-end: waveform -> mono at the model's rate -> clip spans -> clip waveforms -> log-mel.

Clips are cut from the waveform (not from one long spectrogram) so each clip depends only on
its own samples: streaming a file chunk by chunk gives the same clips as the whole file.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torchaudio
from torch import Tensor, nn

from collap_model.clipping import clip_spans_samples
from collap_model.config import FrontendConfig

# added to the mel power before the log, so digital silence has finite features
_LOG_EPS = 1e-5
# clips per STFT call (see LogMel)
_CHUNK = 16
# a fixed affine keeps loudness information (dynamics matter to captions) while bringing
# typical music into roughly [-1, 1]: features = (log(mel + eps) + 4) / 4
SILENCE = (math.log(_LOG_EPS) + 4.0) / 4.0  # features of digital silence, and of padding


def compress(mel: Tensor) -> Tensor:
    """Mel power -> the encoder's log features."""
    return (torch.log(mel + _LOG_EPS) + 4.0) / 4.0


def expand(features: Tensor) -> Tensor:
    """The encoder's log features -> mel power (the inverse of `compress`, floored at 0)."""
    return (torch.exp(4.0 * features - 4.0) - _LOG_EPS).clamp(min=0.0)


def clip_spans(num_samples: int, config: FrontendConfig) -> list[tuple[int, int]]:
    """Clip boundaries in samples for the config's clip/hop (see `collap_model.clipping`)."""
    return clip_spans_samples(num_samples, config.clip_samples, config.hop_samples)


def to_mono(waveform: Tensor | np.ndarray) -> Tensor:
    """(T,), (C, T) -> (T,) float32 by averaging channels."""
    wave = torch.as_tensor(waveform)
    if not wave.is_floating_point():
        raise TypeError(f"waveform must be floating point samples in [-1, 1], got {wave.dtype}")
    wave = wave.to(torch.float32)
    match wave.dim():
        case 1:
            return wave
        case 2:
            return wave.mean(dim=0)
        case _:
            raise ValueError(
                f"waveform must be (samples,) or (channels, samples), got {tuple(wave.shape)}"
            )


def prepare_waveform(waveform: Tensor | np.ndarray, sample_rate: int, target_rate: int) -> Tensor:
    """Mono float32 at `target_rate`: (T,) or (C, T) at `sample_rate` -> (T',)."""
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    wave = to_mono(waveform)
    if sample_rate != target_rate:
        wave = torchaudio.functional.resample(wave, sample_rate, target_rate)
    return wave


def cut_clips(
    wave: Tensor, spans: list[tuple[int, int]], clip_samples: int
) -> tuple[Tensor, Tensor]:
    """(T,) -> clip waveforms (N, clip_samples) zero-padded, and valid lengths (N,)."""
    out = wave.new_zeros(len(spans), clip_samples)
    valid = torch.empty(len(spans), dtype=torch.long)
    for i, (s, e) in enumerate(spans):
        out[i, : e - s] = wave[s:e]
        valid[i] = e - s
    return out, valid


def clip_times(spans: list[tuple[int, int]], sample_rate: int, offset: float = 0.0) -> Tensor:
    """(N, 2) start/end seconds of each span (plus `offset`)."""
    t = torch.tensor(spans, dtype=torch.float64).reshape(-1, 2) / sample_rate + offset
    return t.to(torch.float32)


class LogMel(nn.Module):
    """Clip waveforms (B, S) -> normalised log-mel (B, n_mels, F) and a frame mask (B, F).

    A centred STFT (torch) and torchaudio's mel filterbank; computed in small chunks of clips,
    which keeps the spectrogram in cache and runs about 2.5x faster on a CPU than one large call.
    """

    window: Tensor
    fb_t: Tensor

    def __init__(self, config: FrontendConfig) -> None:
        super().__init__()
        self.n_fft = config.n_fft
        self.hop_length = config.hop_length
        self.win_length = config.win_length
        self.register_buffer("window", torch.hann_window(config.win_length), persistent=False)
        fb = torchaudio.functional.melscale_fbanks(
            config.n_fft // 2 + 1, config.f_min, config.f_max, config.n_mels, config.sample_rate
        )  # (n_fft/2 + 1, n_mels)
        self.register_buffer("fb_t", fb.T.contiguous(), persistent=False)  # (n_mels, n_fft/2 + 1)

    def forward(self, clips: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        parts = []
        with torch.autocast(clips.device.type, enabled=False):
            for chunk in clips.float().split(_CHUNK):
                spec = torch.stft(
                    chunk,
                    self.n_fft,
                    self.hop_length,
                    self.win_length,
                    self.window,
                    center=True,
                    return_complex=True,
                )  # (b, n_fft/2 + 1, F)
                power = torch.view_as_real(spec).pow(2).sum(-1)
                parts.append(self.fb_t @ power)  # (b, n_mels, F)
        mel = torch.cat(parts)
        logmel = compress(mel)
        frames = mel.shape[-1]
        n_valid = torch.clamp(
            torch.div(valid, self.hop_length, rounding_mode="floor") + 1, max=frames
        )
        mask = (
            torch.arange(frames, device=clips.device)[None, :] < n_valid.to(clips.device)[:, None]
        )
        logmel = logmel.masked_fill(~mask[:, None, :], SILENCE)
        return logmel, mask
