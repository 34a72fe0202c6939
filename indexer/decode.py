"""Audio decoding with PyAV: tags and stream facts, then mono float32 at the model's rate.

Decoding streams frame by frame through PyAV's resampler; nothing holds a whole file, so a
two-hour recording decodes in constant memory. Files that cannot give usable audio raise
`DecodeError` with a reason meant for the failure log.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import av
import av.error
import numpy as np

# a decoded length under this share of the declared one (and a second short) is a truncation
_TRUNCATED_SHARE = 0.9


class DecodeError(Exception):
    """A file that gives no usable audio; `reason` is one line for the failure log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class AudioInfo:
    """Container tags and stream facts (payload fields); duration is filled after decoding."""

    title: str | None = None
    artist: str | None = None
    album: str | None = None
    genre: str | None = None
    year: int | None = None
    track: int | None = None
    codec: str = ""
    sample_rate: int = 0
    channels: int = 0
    declared_seconds: float | None = None
    duration: float = 0.0

    def as_payload(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("declared_seconds")
        return data


def _first_int(value: str | None) -> int | None:
    if not value:
        return None
    m = re.search(r"\d+", value)
    return int(m.group()) if m else None


def _tags(container: Any, stream: Any) -> dict[str, str]:
    tags: dict[str, str] = {}
    for source in (container.metadata, stream.metadata):
        for key, value in source.items():
            if value and str(value).strip():
                tags.setdefault(key.lower(), str(value).strip())
    return tags


class AudioDecoder:
    """Open a file, read its tags, then stream mono float32 chunks at `rate` Hz."""

    def __init__(self, path: str, rate: int) -> None:
        self.path, self.rate = path, rate
        if os.path.getsize(path) == 0:
            raise DecodeError("empty file (0 bytes)")
        try:
            self.container = av.open(path, metadata_errors="ignore")
        except av.error.FFmpegError as err:
            raise DecodeError(f"not a readable audio file: {_why(err)}") from err
        if not self.container.streams.audio:
            self.container.close()
            raise DecodeError("no audio stream in the file")
        self.stream = self.container.streams.audio[0]
        ctx = self.stream.codec_context
        tags = _tags(self.container, self.stream)
        declared = None
        if self.stream.duration is not None and self.stream.time_base is not None:
            declared = float(self.stream.duration * self.stream.time_base)
        elif self.container.duration is not None:
            declared = self.container.duration / 1_000_000
        self.info = AudioInfo(
            title=tags.get("title"),
            artist=tags.get("artist") or tags.get("album_artist"),
            album=tags.get("album"),
            genre=tags.get("genre"),
            year=_first_int(tags.get("date") or tags.get("year")),
            track=_first_int(tags.get("track") or tags.get("tracknumber")),
            codec=ctx.codec.canonical_name or ctx.name or "",
            sample_rate=int(ctx.sample_rate or 0),
            channels=int(getattr(ctx.layout, "nb_channels", 0) or getattr(ctx, "channels", 0) or 0),
            declared_seconds=declared,
        )
        self.samples = 0

    def __enter__(self) -> AudioDecoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.container.close()

    def chunks(self) -> Iterator[np.ndarray]:
        """Mono float32 arrays at `rate`; raises DecodeError on corrupt data or no audio."""
        resampler = av.AudioResampler(format="flt", layout="mono", rate=self.rate)
        try:
            for frame in self.container.decode(self.stream):
                for out in resampler.resample(frame):
                    yield self._take(out)
            for out in resampler.resample(None):
                yield self._take(out)
        except av.error.FFmpegError as err:
            at = self.samples / self.rate
            raise DecodeError(f"corrupt audio data after {at:.1f} s: {_why(err)}") from err
        self.info.duration = self.samples / self.rate
        self._check_complete()

    def _take(self, frame: Any) -> np.ndarray:
        data = frame.to_ndarray().reshape(-1).astype(np.float32, copy=False)
        self.samples += data.size
        return data

    def _check_complete(self) -> None:
        if self.samples == 0:
            raise DecodeError("no audio could be decoded (empty or zero-length stream)")
        declared = self.info.declared_seconds
        got = self.info.duration
        if declared and got < _TRUNCATED_SHARE * declared and declared - got > 1.0:
            raise DecodeError(
                f"truncated: decoded {got:.1f} s of the {declared:.1f} s the file declares"
            )


def _why(err: BaseException) -> str:
    text = getattr(err, "strerror", None) or str(err)
    return " ".join(str(text).split())[:200]
