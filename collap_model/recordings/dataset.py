"""`collap recordings OUT`: a training set of real recordings with machine-written captions.

Finds Debian's game music on this machine (catalog.py), runs the model's tagger over every clip
through the training feature cache (so `collap train` later reuses those features instead of
tagging the audio again: the cache sits in OUT/.collap-cache, keyed like any other), measures
each track (analysis.py) and writes its caption, queries and measured sections (captions.py)
into OUT/manifest.jsonl, in the manifest format of synth/dataset.py. Tracks are described as
far as training reads them (`frontend.max_seconds` of each).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from collap_model.synth.dataset import MANIFEST, write_manifest
from collap_model.training.cache import DATA_CACHE

log = logging.getLogger("collap.recordings")


@dataclass(frozen=True)
class RecordingsReport:
    manifest: Path
    tracks: int
    skipped: int  # too short, or unreadable
    audio_seconds: float
    wall_seconds: float


def build_recordings(
    out: Path,
    preset: str,
    min_seconds: float = 30.0,
    queries: int = 8,
    device: str = "auto",
    packages: list[str] | None = None,
) -> RecordingsReport:
    import torch

    from collap_model.audio_io import AudioReadError, read_audio
    from collap_model.checkpoint import resolve_device
    from collap_model.config import load_preset
    from collap_model.model import CoLLAP
    from collap_model.recordings.analysis import RATE, analyse
    from collap_model.recordings.captions import describe_recording
    from collap_model.recordings.catalog import PACKAGES, find_recordings
    from collap_model.training.cache import audio_cache

    began = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    config = load_preset(preset)
    if config.audio.tagger is None:
        raise ValueError(f"preset {preset!r} has no tagger to write captions from")
    cap = config.frontend.max_seconds
    unknown = sorted(set(packages or ()) - set(PACKAGES))
    if unknown:
        raise ValueError(f"unknown package {unknown[0]!r}; known: {', '.join(PACKAGES)}")
    chosen = {p: PACKAGES[p] for p in packages} if packages else None
    found = find_recordings(out / "files", chosen)
    kept = []
    for rec in found:
        seconds = _duration(rec.path)
        if seconds is None or seconds >= min_seconds:
            kept.append(rec)
    skipped = len(found) - len(kept)
    if not kept:
        raise ValueError(
            "no recordings found: install Debian's game-music packages "
            "(collap_model/recordings/catalog.py lists them)"
        )
    log.info("recordings: %d tracks (%d skipped); tagging", len(kept), skipped)
    with torch.random.fork_rng(devices=[]):
        model = CoLLAP(config).to(resolve_device(device)).eval()
    cache = audio_cache(model, [r.path for r in kept], out / DATA_CACHE, cap)
    assert cache.tagger is not None
    k = config.tag_dims
    probs = np.asarray(cache.tagger[:, :k], dtype=np.float32)
    mean, std = probs.mean(axis=0), probs.std(axis=0) + 1e-6
    labels = model.tag_names
    entries = []
    for s, rec in enumerate(kept):
        lo, hi = int(cache.offsets[s]), int(cache.offsets[s + 1])
        try:
            wave = read_audio(rec.path, RATE)[: int(cap * RATE)]
        except AudioReadError as err:
            log.warning("recordings: skipping %s", err)
            skipped += 1
            continue
        if len(wave) < min_seconds * RATE:
            skipped += 1
            continue
        analysis = analyse(wave, RATE)
        text = describe_recording(
            analysis, np.asarray(cache.times[lo:hi]), probs[lo:hi], (probs[lo:hi] - mean) / std,
            labels, seed=f"{rec.package}/{rec.title}", queries=queries,
        )  # fmt: skip
        entries.append(
            {
                "audio": manifest_audio(rec.path, out),
                "caption": text.caption,
                "queries": text.queries,
                "sections": text.sections,
                "duration": analysis.duration,
                "source": rec.package,
                "title": rec.title,
                "tempo": analysis.tempo,
            }
        )
    manifest = out / MANIFEST
    write_manifest(manifest, entries)
    seconds = float(sum(e["duration"] for e in entries))  # type: ignore[misc]
    return RecordingsReport(manifest, len(entries), skipped, seconds, time.monotonic() - began)


def manifest_audio(path: Path, out: Path) -> str:
    """How the manifest in `out` names an audio file: relative to `out` for the files written
    below it (read_manifest resolves against the manifest's folder, so a relative `out` such
    as `collap recordings data/rec` must not leave `data/rec` in them), else as found (the
    packages' own files, absolute)."""
    return str(path.relative_to(out)) if path.is_relative_to(out) else str(path)


def _duration(path: Path) -> float | None:
    """The duration a file's container declares (None: unknown or unreadable by FFmpeg)."""
    import av
    import av.error

    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            return None if container.duration is None else container.duration / 1_000_000
    except av.error.FFmpegError:
        return None
