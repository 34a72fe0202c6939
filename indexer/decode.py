"""Audio decoding with PyAV, and libsndfile where FFmpeg refuses a file: tags and stream
facts, then mono float32 at the model's rate.

Decoding streams frame by frame through FFmpeg's resampler (libsndfile's frames too); nothing
holds a whole file, so a two-hour recording decodes in constant memory. Files that cannot give
usable audio raise `DecodeError` with a reason meant for the failure log.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import av
import av.error
import numpy as np

from indexer import id3

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
    artist: list[str] = field(default_factory=list)  # every artist, as tagged (artist_values)
    album: str | None = None
    genre: list[str] = field(default_factory=list)  # every genre (genre_values)
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


# FFmpeg joins a repeated Vorbis comment with ";"; taggers join values with "; " and, for
# genres (ID3v2.3's convention), "/". A "/" splits an artist only with spaces around it:
# "AC/DC" is one band.
_ARTIST_SPLIT = re.compile(r"\s*;\s*|\s+/\s+")
_GENRE_SPLIT = re.compile(r"\s*[;/]\s*")


def _values(text: str | None, split: re.Pattern[str]) -> list[str]:
    """The distinct values of a tag that may hold several, in their order."""
    out: list[str] = []
    for value in split.split(text or ""):
        value = value.strip()
        if value and value not in out:
            out.append(value)
    return out


def artist_values(text: str | None) -> list[str]:
    return _values(text, _ARTIST_SPLIT)


def genre_values(text: str | None) -> list[str]:
    return _values(text, _GENRE_SPLIT)


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


class _Unreadable(Exception):
    """One decoder could not open or read a file; `reason` says what it said."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _FFmpegSource:
    """The file through PyAV: its tags and stream facts, then its decoded frames."""

    name = "FFmpeg"

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self.container = av.open(path, metadata_errors="ignore")
        except Exception as err:  # any error inside the library is this file's
            raise _Unreadable(_why(err)) from err
        try:
            if not self.container.streams.audio:
                raise _Unreadable("no audio stream in the file")
            self.stream = self.container.streams.audio[0]
            self.info = self._info()
        except _Unreadable:
            self.container.close()
            raise
        except Exception as err:
            self.container.close()
            raise _Unreadable(_why(err)) from err

    def _info(self) -> AudioInfo:
        ctx = self.stream.codec_context
        if ctx is None or ctx.codec is None:
            raise _Unreadable("no decoder for its audio codec")
        tags = _tags(self.container, self.stream)
        lists = id3.text_lists(self.path)  # the values of ID3v2.4 frames FFmpeg cuts to one
        artists = lists.get("TPE1") or artist_values(tags.get("artist"))
        declared = None
        if self.stream.duration is not None and self.stream.time_base is not None:
            declared = float(self.stream.duration * self.stream.time_base)
        elif self.container.duration is not None:
            declared = self.container.duration / 1_000_000
        return AudioInfo(
            title=tags.get("title"),
            artist=artists or lists.get("TPE2") or artist_values(tags.get("album_artist")),
            album=tags.get("album"),
            genre=lists.get("TCON") or genre_values(tags.get("genre")),
            year=_first_int(tags.get("date") or tags.get("year")),
            track=_first_int(tags.get("track") or tags.get("tracknumber")),
            codec=ctx.codec.canonical_name or ctx.name or "",
            sample_rate=int(ctx.sample_rate or 0),
            channels=int(getattr(ctx.layout, "nb_channels", 0) or getattr(ctx, "channels", 0) or 0),
            declared_seconds=declared,
        )

    def frames(self) -> Iterator[Any]:
        return self.container.decode(self.stream)

    def close(self) -> None:
        self.container.close()


# channel counts FFmpeg's resampler takes as input with a default layout; more are mixed first
_LAYOUTS = {1: "mono", 2: "stereo", **{n: f"{n}c" for n in range(3, 9)}}
_SNDFILE_BLOCK = 8192  # frames per read: a few hundred KB, so memory stays bounded


class _SndfileSource:
    """The file through libsndfile, whose frames go through the same FFmpeg resampler as
    PyAV's: a file both can read gives the same samples. `start` skips that many frames (at
    the file's own rate): where FFmpeg stopped decoding."""

    name = "libsndfile"

    def __init__(self, path: str, start: int = 0) -> None:
        import soundfile

        try:
            # as bytes: soundfile encodes a str as UTF-8, which a name that is not cannot be
            self.file = soundfile.SoundFile(os.fsencode(path))
        except Exception as err:
            raise _Unreadable(_why(err)) from err
        try:
            if start:
                self.file.seek(min(start, self.file.frames))
            self.info = self._info()
        except Exception as err:
            self.file.close()
            raise _Unreadable(_why(err)) from err

    def _info(self) -> AudioInfo:
        f = self.file

        def tag(name: str) -> str | None:
            value = str(getattr(f, name, "") or "").strip()
            return value or None

        rate = int(f.samplerate)
        return AudioInfo(
            title=tag("title"),
            artist=artist_values(tag("artist")),
            album=tag("album"),
            genre=genre_values(tag("genre")),
            year=_first_int(tag("date")),
            track=_first_int(tag("tracknumber")),
            codec=str(f.subtype).lower(),
            sample_rate=rate,
            channels=int(f.channels),
            declared_seconds=f.frames / rate if rate and f.frames > 0 else None,
        )

    def frames(self) -> Iterator[Any]:
        rate, channels = int(self.file.samplerate), int(self.file.channels)
        layout = _LAYOUTS.get(channels, "mono")
        for block in self.file.blocks(_SNDFILE_BLOCK, dtype="float32", always_2d=True):
            data = block if channels in _LAYOUTS else block.mean(axis=1, keepdims=True)
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(data).reshape(1, -1), format="flt", layout=layout
            )
            frame.sample_rate = rate
            yield frame

    def close(self) -> None:
        self.file.close()


class AudioDecoder:
    """Open a file, read its tags, then stream mono float32 chunks at `rate` Hz.

    PyAV (FFmpeg) decodes; a file it cannot open, or stops decoding, is read by libsndfile
    (from where FFmpeg stopped), as some Ogg Vorbis files in the wild need: ones whose headers
    repeat, which FFmpeg refuses and players play. Any error inside either library is this
    file's DecodeError, whose reason says what each decoder said.
    """

    def __init__(self, path: str, rate: int) -> None:
        self.path, self.rate = path, rate
        try:
            with open(path, "rb") as f:  # what the decoders would say less clearly
                size = os.fstat(f.fileno()).st_size
        except FileNotFoundError as err:
            raise DecodeError("vanished before it was read") from err
        except OSError as err:
            raise DecodeError(f"cannot read the file: {err.strerror or err}") from err
        if size == 0:
            raise DecodeError("empty file (0 bytes)")
        self.samples = 0
        self.said: dict[str, str] = {}  # decoder name -> why it could not read the file
        self.source: _FFmpegSource | _SndfileSource
        try:
            self.source = _FFmpegSource(path)
        except _Unreadable as err:
            self.said[_FFmpegSource.name] = err.reason
            self.source = self._fallback("not a readable audio file", 0)
        self.info = self.source.info

    def _fallback(self, failure: str, start: int) -> _SndfileSource:
        """libsndfile from frame `start`, or the DecodeError naming what each decoder said."""
        try:
            return _SndfileSource(self.path, start)
        except _Unreadable as err:
            self.said[_SndfileSource.name] = err.reason
            raise DecodeError(f"{failure}: {self._said()}") from err

    def _said(self) -> str:
        return "; ".join(f"{name}: {why}" for name, why in self.said.items())

    def __enter__(self) -> AudioDecoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.source.close()

    def chunks(self) -> Iterator[np.ndarray]:
        """Mono float32 arrays at `rate`; raises DecodeError on corrupt data or no audio."""
        if isinstance(self.source, _FFmpegSource):
            try:
                yield from self._resampled(self.source)
            except _Unreadable as err:
                self.said[self.source.name] = err.reason
            else:
                if self.samples:
                    self._complete()
                    return
                self.said[self.source.name] = "no samples decoded"
            # FFmpeg stopped: libsndfile goes on from there (at the file's own rate)
            self.source.close()
            at = self.samples / self.rate
            failure = (
                f"corrupt audio data after {at:.1f} s"
                if self.samples
                else "no audio could be decoded"
            )
            self.source = self._fallback(failure, round(at * self.info.sample_rate))
        try:
            yield from self._resampled(self.source)
        except _Unreadable as err:
            self.said[self.source.name] = err.reason
            at = self.samples / self.rate
            raise DecodeError(f"corrupt audio data after {at:.1f} s: {self._said()}") from err
        self._complete()

    def _resampled(self, source: _FFmpegSource | _SndfileSource) -> Iterator[np.ndarray]:
        """The source's frames as mono float32 at `rate`; a stream whose format changes on the
        way (MP3s joined end to end) gets a fresh resampler for each format."""
        resampler: Any = None
        shape: tuple[Any, ...] | None = None
        try:
            for frame in source.frames():
                now = (frame.format.name, frame.layout.name, frame.sample_rate)
                if now != shape:
                    if resampler is not None:
                        for out in resampler.resample(None):
                            yield self._take(out)
                    resampler = av.AudioResampler(format="flt", layout="mono", rate=self.rate)
                    shape = now
                for out in resampler.resample(frame):
                    yield self._take(out)
            if resampler is not None:
                for out in resampler.resample(None):
                    yield self._take(out)
        except Exception as err:  # any error inside the library: this decoder gives up here
            raise _Unreadable(_why(err)) from err

    def _take(self, frame: Any) -> np.ndarray:
        data = frame.to_ndarray().reshape(-1).astype(np.float32, copy=False)
        self.samples += data.size
        return data

    def _complete(self) -> None:
        self.info.duration = self.samples / self.rate
        if self.samples == 0:
            raise DecodeError("no audio could be decoded (empty or zero-length stream)")
        declared = self.info.declared_seconds
        got = self.info.duration
        if declared and got < _TRUNCATED_SHARE * declared and declared - got > 1.0:
            said = f" ({self._said()})" if self.said else ""
            raise DecodeError(
                f"truncated: decoded {got:.1f} s of the {declared:.1f} s the file declares{said}"
            )


def _why(err: BaseException) -> str:
    """One line from a library's exception; the type is named when it is not FFmpeg's own (a
    ZeroDivisionError says little without it)."""
    # FFmpeg's strerror and libsndfile's error_string leave out the path
    said = getattr(err, "strerror", None) or getattr(err, "error_string", None) or err
    text = " ".join(str(said).split())
    if not isinstance(err, av.error.FFmpegError) and not hasattr(err, "error_string"):
        text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return text[:200]
