"""Production variation: what a mix and a master do to a song, drawn per song from its seed.

A render straight out of FluidSynth is one clean, dry, loudness-normalised sound; real
recordings are reverberant or dry, bright or dark, compressed, noisy, mastered to different
levels, and a stereo image that collapses to mono with comb filtering. A model trained on the
clean renders alone learns the renders. Each song of `collap synth --produce` gets one draw:

    reverb    FluidSynth's reverb: room size, damping, width and level (or off)
    chorus    FluidSynth's chorus level and depth (or off)
    eq        low shelf at 200 Hz and high shelf at 4 kHz, each within ±8 dB, and one peaking
              band (300 Hz to 5 kHz, ±6 dB)
    compress  a feed-forward RMS compressor (threshold -30 to -10 dB, ratio 1.5 to 6), or none
    width     one channel delayed 0 to 12 ms before the mono downmix (a widened stereo image
              heard in mono: comb filtering), or none
    noise     a hiss or hum floor at 25 to 60 dB below the music, or none
    level     the master's peak, -12 to -0.5 dBFS

The draw is stored in the manifest (`production`), so a song can be rendered again as it was.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class Production:
    reverb: tuple[float, float, float, float] | None  # room size, damping, width, level
    chorus: tuple[float, float] | None  # level, depth
    eq: tuple[float, float, float, float]  # low shelf dB, high shelf dB, peak Hz, peak dB
    compress: tuple[float, float] | None  # threshold dB, ratio
    width_ms: float  # delay of the right channel before the downmix (0: none)
    noise: tuple[str, float] | None  # "hiss" | "hum", dB below the music's rms
    peak_db: float  # final peak level, dBFS

    def fluidsynth_options(self) -> list[str]:
        """FluidSynth command-line settings for this draw's reverb and chorus."""
        opts = ["-R", "1" if self.reverb else "0", "-C", "1" if self.chorus else "0"]
        if self.reverb:
            room, damp, width, level = self.reverb
            for key, value in (("room-size", room), ("damp", damp), ("width", width),
                               ("level", level)):  # fmt: skip
                opts += ["-o", f"synth.reverb.{key}={value:.3f}"]
        if self.chorus:
            level, depth = self.chorus
            opts += ["-o", f"synth.chorus.level={level:.3f}"]
            opts += ["-o", f"synth.chorus.depth={depth:.3f}"]
        return opts

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def draw_production(seed: int) -> Production:
    """The production of song `seed` (deterministic)."""
    rng = random.Random(f"{seed}:production")
    reverb = None
    if rng.random() < 0.75:
        reverb = (rng.uniform(0.1, 0.95), rng.uniform(0.0, 0.8), rng.uniform(0.2, 1.0),
                  rng.uniform(0.1, 0.9))  # fmt: skip
    chorus = (rng.uniform(0.5, 3.0), rng.uniform(2.0, 15.0)) if rng.random() < 0.4 else None
    peak_hz = math.exp(rng.uniform(math.log(300), math.log(5000)))
    eq = (rng.uniform(-8, 8), rng.uniform(-8, 8), peak_hz, rng.uniform(-6, 6))
    compress = (rng.uniform(-30, -10), rng.uniform(1.5, 6.0)) if rng.random() < 0.6 else None
    width = rng.uniform(0.0, 12.0) if rng.random() < 0.3 else 0.0
    noise = None
    if rng.random() < 0.5:
        noise = (rng.choice(("hiss", "hum")), rng.uniform(25.0, 60.0))
    return Production(reverb, chorus, eq, compress, width, noise, rng.uniform(-12.0, -0.5))


def apply_production(stereo: np.ndarray, rate: int, p: Production, seed: int) -> np.ndarray:
    """Stereo (T, 2) float32 from FluidSynth -> the produced mono mix (T,), peak at p.peak_db."""
    import numpy as np
    import torch
    import torchaudio.functional as AF

    left, right = stereo[:, 0], stereo[:, 1]
    delay = round(p.width_ms * rate / 1000)
    if delay:
        right = np.concatenate([np.zeros(delay, np.float32), right[:-delay]])
    mono = torch.from_numpy(((left + right) / 2).astype(np.float32))
    low, high, peak_hz, peak_db = p.eq
    mono = AF.bass_biquad(mono, rate, low, 200.0)
    mono = AF.treble_biquad(mono, rate, high, 4000.0)
    mono = AF.equalizer_biquad(mono, rate, peak_hz, peak_db, 1.0)
    wave = mono.numpy().astype(np.float64)
    if p.compress:
        wave = _compress(wave, rate, *p.compress)
    if p.noise:
        rms = float(np.sqrt(np.mean(wave**2))) + 1e-9
        wave = wave + _noise(len(wave), rate, p.noise, rms, seed)
    peak = float(np.abs(wave).max()) or 1.0
    return (wave * (10 ** (p.peak_db / 20) / peak)).astype(np.float32)


def _compress(wave: np.ndarray, rate: int, threshold_db: float, ratio: float) -> np.ndarray:
    """Feed-forward compression on a 10 ms rms envelope with 5 ms attack / 100 ms release."""
    import numpy as np

    hop = max(1, rate // 100)
    n = len(wave) // hop + 1
    padded = np.pad(wave, (0, n * hop - len(wave)))
    rms = np.sqrt(np.mean(padded.reshape(n, hop) ** 2, axis=1) + 1e-12)
    level = 20 * np.log10(rms / (np.abs(wave).max() + 1e-12) + 1e-12)  # dB re. the peak
    over = np.maximum(level - threshold_db, 0.0)
    target = -over * (1 - 1 / ratio)  # gain reduction in dB per 10 ms frame
    attack, release = math.exp(-10 / 5), math.exp(-10 / 100)
    gain = np.empty(n)
    g = 0.0
    for i, t in enumerate(target):  # a one-pole smoother: fast down, slow up
        coeff = attack if t < g else release
        g = coeff * g + (1 - coeff) * t
        gain[i] = g
    per_sample = np.interp(np.arange(len(wave)) / hop, np.arange(n), gain)
    return np.asarray(wave * 10 ** (per_sample / 20))


def _noise(n: int, rate: int, kind: tuple[str, float], rms: float, seed: int) -> np.ndarray:
    import numpy as np

    name, below_db = kind
    gen = np.random.default_rng(seed)
    if name == "hum":  # mains hum and its harmonics
        t = np.arange(n) / rate
        base = gen.choice((50.0, 60.0))
        floor = sum(np.sin(2 * np.pi * base * k * t + gen.uniform(0, 6.3)) / k for k in (1, 2, 3))
    else:  # tape-like hiss: white noise tilted towards the highs
        floor = np.diff(gen.standard_normal(n + 1))
    floor = floor / (np.sqrt(np.mean(floor**2)) + 1e-12)
    return np.asarray(floor * rms * 10 ** (-below_db / 20))
