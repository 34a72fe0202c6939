"""Audio embedding throughput: the default encoder beside the CLAP audio tower (HTSAT).

Both embed the same clips of the same songs (the default front-end's 10 s clips every 5 s).
Ours runs the whole `encode_audio` path (clip cutting, log-mel, encoder, song pooling); HTSAT
(`ClapAudioModel` with its default config, random weights) gets its own 48 kHz log-mel front-end
(torchaudio, timed) on the same audio resampled beforehand (not timed). Rates are seconds of
song audio embedded per wall second.
"""

from __future__ import annotations

import math
import statistics
import time

import torch
import torchaudio

SONGS = 6
SONG_SECONDS = 60.0
HTSAT_BATCH = 8


def make_songs(rate: int) -> list[torch.Tensor]:
    """Deterministic music-like signals: chords of partials with a changing beat and noise."""
    gen = torch.Generator().manual_seed(0)
    t = torch.arange(round(SONG_SECONDS * rate), dtype=torch.float32) / rate
    songs = []
    for i in range(SONGS):
        freqs = 110.0 * 2 ** (torch.randint(0, 36, (4,), generator=gen) / 12.0)
        wave = sum(torch.sin(2 * math.pi * float(f) * t) for f in freqs) / 4
        beat = (torch.sin(2 * math.pi * (1.5 + i / 4) * t) > 0.6).float()
        songs.append(0.3 * wave * (0.5 + 0.5 * beat) + 0.02 * torch.randn(t.shape, generator=gen))
    return songs


def time_ours(songs: list[torch.Tensor], rate: int) -> float:
    from collap_model import load_model

    model = load_model(device="cpu")
    model.encode_audio(songs[0], rate)  # warm-up
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        for wave in songs:
            model.encode_audio(wave, rate)
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def time_htsat(songs: list[torch.Tensor], rate: int) -> float:
    from transformers import ClapAudioConfig, ClapAudioModel

    from collap_model.config import load_preset
    from collap_model.frontend import clip_spans, cut_clips

    fe = load_preset("collap-mini").frontend
    htsat = ClapAudioModel(ClapAudioConfig()).eval()
    mel = torchaudio.transforms.MelSpectrogram(
        48_000, n_fft=1024, hop_length=480, f_min=50, f_max=14_000, n_mels=64
    )
    clip_sets = []
    for wave in songs:
        clips, _ = cut_clips(wave, clip_spans(wave.shape[0], fe), fe.clip_samples)
        clip_sets.append(torchaudio.functional.resample(clips, rate, 48_000))

    def embed(clips: torch.Tensor) -> None:
        for batch in clips.split(HTSAT_BATCH):
            feats = torch.log(mel(batch) + 1e-6).transpose(1, 2)[:, None]  # (B, 1, frames, 64)
            htsat(input_features=feats)

    with torch.inference_mode():
        embed(clip_sets[0][:HTSAT_BATCH])  # warm-up
        start = time.perf_counter()
        for clips in clip_sets:
            embed(clips)
        return time.perf_counter() - start


def run() -> str:
    rate = 16_000
    songs = make_songs(rate)
    audio = SONGS * SONG_SECONDS
    ours = audio / time_ours(songs, rate)
    htsat = audio / time_htsat(songs, rate)
    ratio = ours / htsat
    verdict = "meets" if ratio >= 15 else "misses"
    return f"""## Audio encoder throughput (issue 2)

`python -m benchmarks.run encoder`: {SONGS} songs x {SONG_SECONDS:.0f} s, the same 10 s clips
every 5 s for both encoders, CPU.

| encoder | audio s / wall s |
|---|---|
| collap-mini (`encode_audio`, log-mel + compact encoder + pooling) | {ours:.0f} |
| CLAP audio tower HTSAT (`ClapAudioModel`, default config, 48 kHz log-mel) | {htsat:.1f} |
| **ratio** | **{ratio:.1f}x** (target >= 15x: {verdict}) |
"""
