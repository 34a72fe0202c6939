"""Reading whole audio files for training and evaluation: mono float32 at the model's rate.

The model package reads its own data sets (the indexer streams catalogs with its own decoder,
indexer/decode.py). PyAV decodes and resamples the way the indexer does (FFmpeg's resampler to
mono float), so a song's features in training equal those the index computes for it. Files that
FFmpeg cannot open are read by libsndfile (`soundfile`), as some Vorbis files in the wild need,
and resampled by torchaudio.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class AudioReadError(ValueError):
    """A file neither decoder could read; the message names what each one said."""


def read_audio(path: str | Path, rate: int) -> np.ndarray:
    """The whole file as mono float32 samples (T,) at `rate` Hz."""
    import av
    import av.error

    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise AudioReadError(f"{path}: no audio stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            parts = [
                out.to_ndarray().reshape(-1)
                for frame in container.decode(stream)
                for out in resampler.resample(frame)
            ]
            parts += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
        wave = np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
        if wave.size:
            return wave
        ffmpeg = "no samples decoded"
    except av.error.FFmpegError as err:
        ffmpeg = " ".join(str(getattr(err, "strerror", None) or err).split())
    return _read_soundfile(Path(path), rate, ffmpeg)


def _read_soundfile(path: Path, rate: int, ffmpeg: str) -> np.ndarray:
    import soundfile
    import torch
    import torchaudio

    try:
        data, native = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as err:
        raise AudioReadError(f"{path}: FFmpeg: {ffmpeg}; libsndfile: {err}") from err
    if data.size == 0:
        raise AudioReadError(f"{path}: FFmpeg: {ffmpeg}; libsndfile: no samples")
    mono = torch.from_numpy(data.mean(axis=1))
    if native != rate:
        mono = torchaudio.functional.resample(mono, native, rate)
    return mono.numpy().astype(np.float32)
