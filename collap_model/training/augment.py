"""Training-time augmentation of cached log-mel features (the compact encoder's input).

The cache holds each clip's features once, so augmentation happens in the feature domain:
    mel   = exp(4 x - 4) - ε                     undo the front-end's fixed affine log
    mel'  = g · mel + σ² · n · γ                 gain g, a noise floor of rms σ
    x'    = (log(mel' + ε) + 4) / 4
with n (n_mels,) the mel power of unit-rms white noise through the same front-end, and
γ ~ U(0.5, 1.5) per band and frame (a noise floor fluctuates). Real recordings have noise
floors that synthetic renders lack; an encoder trained on clean renders alone mistakes a faint
hiss for different music. The gain stays small: loudness carries the dynamics captions describe.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from collap_model.frontend import SILENCE, LogMel, compress, expand

NOISE_PROB = 0.5  # share of clips that get a noise floor
NOISE_RMS = (1e-4, 1e-2)  # the floor's rms, log-uniform between these (full scale = 1)
GAIN_DB = 3.0  # gain drawn uniformly in ±GAIN_DB


class LogMelAugment:
    def __init__(self, logmel: LogMel, sample_rate: int) -> None:
        gen = torch.Generator().manual_seed(0)
        noise = torch.randn(8, 2 * sample_rate, generator=gen)
        valid = torch.full((8,), noise.shape[1], dtype=torch.long)
        with torch.inference_mode():
            feats, _ = logmel(noise.to(logmel.window.device), valid.to(logmel.window.device))
        self.profile = expand(feats.cpu()).mean(dim=(0, 2))  # (n_mels,)

    def __call__(self, feats: Tensor, mask: Tensor) -> Tensor:
        """feats (M, n_mels, F), mask (M, F) valid frames -> augmented features, same shape.
        Draws from torch's global generator (training seeds it per step)."""
        m = feats.shape[0]
        gain = 10 ** ((torch.rand(m) * 2 - 1) * GAIN_DB / 10)  # (M,) power
        out = feats + (torch.log(gain) / 4.0)[:, None, None]  # a gain is a shift of the log
        noisy = torch.nonzero(torch.rand(m) < NOISE_PROB).squeeze(1)
        if noisy.numel():
            lo, hi = (2 * math.log(r) for r in NOISE_RMS)
            var = torch.exp(lo + torch.rand(noisy.numel()) * (hi - lo))  # (M',)
            floor = var[:, None, None] * self.profile[None, :, None]
            sub = out[noisy]
            fluct = 0.5 + torch.rand(sub.shape)
            out[noisy] = compress(expand(sub) + floor * fluct)
        return out.masked_fill(~mask[:, None, :], SILENCE)
