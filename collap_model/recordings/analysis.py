"""What can be measured in a recording without a label: loudness, onsets, tempo, sections.

All on mono audio at 16 kHz (the model's rate), per second where a caption needs it:
    loudness   rms level in dBFS of each second
    onsets     onsets per second: peaks of the spectral flux (positive change of a 40-band
               log-mel, 100 frames per second) above its local mean
    tempo      the onset envelope's autocorrelation between 50 and 200 BPM, weighted towards
               120 BPM (a log-normal prior one octave wide); None when no lag stands out
    sections   boundaries where the music changes: Foote novelty (a checkerboard kernel along
               the diagonal of the cosine self-similarity of per-second features: mean log-mel
               and loudness, standardised), peaks above mean + std/2, at least 12 s apart
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

RATE = 16_000
_FPS = 100  # analysis frames per second
_MIN_SECTION = 12.0  # seconds between section boundaries, and from either end
_KERNEL = 8  # half-width of the novelty kernel, seconds


@dataclass(frozen=True)
class TrackAnalysis:
    duration: float  # seconds analysed
    loudness: np.ndarray  # (S,) dBFS per second
    onsets: np.ndarray  # (S,) onsets per second
    tempo: float | None  # beats per minute, None without a clear pulse
    boundaries: list[float]  # section starts in seconds, the first is 0.0

    def sections(self) -> list[tuple[float, float]]:
        """[start, end) of every section."""
        ends = [*self.boundaries[1:], self.duration]
        return list(zip(self.boundaries, ends, strict=True))

    def mean_over(self, curve: np.ndarray, start: float, end: float) -> float:
        lo, hi = int(start), max(int(start) + 1, math.ceil(end))
        part = curve[lo:hi]
        return float(part.mean()) if part.size else float(curve.mean())


def analyse(wave: np.ndarray, rate: int = RATE) -> TrackAnalysis:
    """Mono samples (T,) at `rate` -> TrackAnalysis."""
    import torch
    import torchaudio

    if rate != RATE:
        wave = torchaudio.functional.resample(torch.from_numpy(wave), rate, RATE).numpy()
    wave = np.asarray(wave, dtype=np.float32)
    seconds = len(wave) // RATE
    if seconds < 1:
        raise ValueError("a recording of under one second cannot be analysed")
    per_second = wave[: seconds * RATE].reshape(seconds, RATE)
    loudness = 10 * np.log10(np.mean(per_second.astype(np.float64) ** 2, axis=1) + 1e-10)
    hop = RATE // _FPS
    spec = torch.stft(torch.from_numpy(wave), 1024, hop, 1024, torch.hann_window(1024),
                      center=True, return_complex=True).abs() ** 2  # fmt: skip
    fb = torchaudio.functional.melscale_fbanks(513, 30.0, 8000.0, 40, RATE)
    logmel = torch.log(fb.T @ spec + 1e-10).numpy()  # (40, F)
    flux = np.maximum(np.diff(logmel, axis=1), 0.0).sum(axis=0)  # (F - 1,)
    onsets = _onsets_per_second(flux, seconds)
    tempo = _tempo(flux)
    frames = logmel[:, : seconds * _FPS].reshape(40, seconds, _FPS).mean(axis=2).T  # (S, 40)
    feats = np.concatenate([frames, loudness[:, None]], axis=1)
    boundaries = [0.0, *_boundaries(feats)]
    return TrackAnalysis(float(seconds), loudness, onsets, tempo, boundaries)


def _onsets_per_second(flux: np.ndarray, seconds: int) -> np.ndarray:
    width = 25  # frames of the local mean (0.25 s)
    local = np.convolve(flux, np.ones(2 * width + 1) / (2 * width + 1), mode="same")
    floor = local + 0.5 * flux.std()
    peak = (flux[1:-1] > flux[:-2]) & (flux[1:-1] >= flux[2:]) & (flux[1:-1] > floor[1:-1])
    idx = np.nonzero(peak)[0] + 1
    counts = np.bincount(np.minimum(idx // _FPS, seconds - 1), minlength=seconds)
    # a listener hears density over a few seconds, not in single ones
    return np.convolve(counts.astype(np.float64), np.ones(5) / 5, mode="same")


def _tempo(flux: np.ndarray) -> float | None:
    env = flux - flux.mean()
    if env.size < 4 * _FPS or not env.any():
        return None
    n = 1 << math.ceil(math.log2(2 * env.size))
    spectrum = np.fft.rfft(env, n)
    ac = np.fft.irfft(spectrum * np.conj(spectrum), n)[: env.size]
    ac /= ac[0]
    lags = np.arange(int(60 * _FPS / 200), int(60 * _FPS / 50) + 1)
    bpm = 60 * _FPS / lags
    prior = np.exp(-0.5 * (np.log2(bpm / 120.0)) ** 2)
    score = ac[lags] * prior
    best = int(np.argmax(score))
    if ac[lags[best]] < 0.1:
        return None
    return float(bpm[best])


def _boundaries(feats: np.ndarray) -> list[float]:
    s = feats.shape[0]
    if s < 2 * _MIN_SECTION:
        return []
    z = (feats - feats.mean(axis=0)) / (feats.std(axis=0) + 1e-6)
    z /= np.linalg.norm(z, axis=1, keepdims=True) + 1e-9
    ssm = z @ z.T
    k = _KERNEL
    grid = np.arange(-k, k) + 0.5
    taper = np.exp(-0.5 * (grid / (0.5 * k)) ** 2)
    kernel = np.outer(taper, taper) * np.sign(grid)[:, None] * np.sign(grid)[None, :]
    padded = np.pad(ssm, k, mode="edge")
    novelty = np.array([np.sum(kernel * padded[t : t + 2 * k, t : t + 2 * k]) for t in range(s)])
    threshold = novelty.mean() + 0.5 * novelty.std()
    picked: list[int] = []
    for t in np.argsort(-novelty):
        if novelty[t] < threshold:
            break
        if t < _MIN_SECTION or s - t < _MIN_SECTION:
            continue
        if all(abs(t - p) >= _MIN_SECTION for p in picked):
            picked.append(int(t))
    return [float(t) for t in sorted(picked)]
