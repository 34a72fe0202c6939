"""Audio fixtures made by the tests with PyAV: several codecs, rates and channel layouts,
with tags, plus corrupt files. Signals are chords with a beat, distinct per `seed`."""

from __future__ import annotations

import json
import math
import struct
import subprocess
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np

# extension -> (container format, codec, sample format the encoder takes)
CODECS = {
    "mp3": ("mp3", "mp3", "fltp"),
    "flac": ("flac", "flac", "s16"),
    "opus": ("ogg", "libopus", "flt"),
    "m4a": ("ipod", "aac", "fltp"),
    "alac.m4a": ("ipod", "alac", "s16p"),
    "wav": ("wav", "pcm_s16le", "s16"),
}


def signal(seconds: float, rate: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    freqs = 110.0 * 2 ** (rng.integers(0, 36, 3) / 12.0)
    x = sum(np.sin(2 * math.pi * f * t) for f in freqs) / 3
    beat = (np.sin(2 * math.pi * (1 + seed % 5 / 2) * t) > 0.5).astype(np.float64)
    return (0.3 * x * (0.4 + 0.6 * beat) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def write_audio(
    path: Path,
    seconds: float,
    seed: int = 0,
    rate: int = 44_100,
    channels: int = 2,
    tags: dict[str, str] | None = None,
    samples: np.ndarray | None = None,
) -> Path:
    """Encode a test signal (or `samples`, mono float32) into `path`; codec from its name."""
    key = "alac.m4a" if path.name.endswith(".alac.m4a") else path.suffix.lstrip(".")
    fmt, codec, sample_fmt = CODECS[key]
    if codec == "libopus":
        rate = 48_000
    mono = signal(seconds, rate, seed) if samples is None else samples
    data = np.stack([mono] * channels)
    path.parent.mkdir(parents=True, exist_ok=True)
    layout = "stereo" if channels == 2 else "mono"
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        for k, v in (tags or {}).items():
            out.metadata[k] = v
        frame_size = stream.codec_context.frame_size or 1024
        for i in range(0, data.shape[1], frame_size):
            chunk = np.ascontiguousarray(data[:, i : i + frame_size])
            frame = av.AudioFrame.from_ndarray(
                _as(chunk, sample_fmt), format=sample_fmt, layout=layout
            )
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def _as(chunk: np.ndarray, sample_fmt: str) -> np.ndarray:
    match sample_fmt:
        case "s16":
            return (chunk.T.reshape(1, -1) * 32767).astype(np.int16)
        case "s16p":
            return (chunk * 32767).astype(np.int16)
        case "flt":
            return chunk.T.reshape(1, -1).astype(np.float32)
        case _:
            return chunk.astype(np.float32)


def write_long_wav(path: Path, seconds: float, rate: int = 16_000) -> Path:
    """A long mono 16-bit WAV written in chunks (fast, constant memory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        block = (signal(60.0, rate, 7) * 32767).astype(np.int16).tobytes()
        for _ in range(int(seconds // 60)):
            w.writeframes(block)
    return path


def write_flac_comments(path: Path, seconds: float, comments: list[str], seed: int = 0) -> Path:
    """A FLAC file whose Vorbis comment block holds exactly `comments` ("KEY=value", a key
    may repeat, as taggers write several artists or genres)."""
    write_audio(path, seconds, seed=seed, rate=16_000, channels=1)
    data = path.read_bytes()
    pos, blocks = 4, []
    while True:  # metadata blocks: a header byte (last flag, type), a 24-bit size
        kind, size = data[pos] & 0x7F, int.from_bytes(data[pos + 1 : pos + 4], "big")
        blocks.append((kind, data[pos + 4 : pos + 4 + size]))
        pos += 4 + size
        if data[pos - 4 - size] & 0x80:
            break
    body = struct.pack("<I", 4) + b"test" + struct.pack("<I", len(comments))
    for comment in comments:
        body += struct.pack("<I", len(comment.encode())) + comment.encode()
    blocks = [b for b in blocks if b[0] != 4] + [(4, body)]  # 4: VORBIS_COMMENT
    out = b"fLaC"
    for i, (kind, block) in enumerate(blocks):
        last = 0x80 if i == len(blocks) - 1 else 0
        out += bytes([kind | last]) + len(block).to_bytes(3, "big") + block
    path.write_bytes(out + data[pos:])
    return path


def _synchsafe(n: int) -> bytes:
    return bytes([(n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F])


def write_id3v24(path: Path, seconds: float, frames: dict[str, tuple[int, list[str]]]) -> Path:
    """An MP3 behind an ID3v2.4 tag of text frames: id -> (encoding, values), the values
    NUL-separated as v2.4 lists them (encoding 3 UTF-8, 1 UTF-16 with a byte order mark
    before each value)."""
    write_audio(path, seconds, rate=16_000, channels=1)
    body = b""
    for frame, (encoding, values) in frames.items():
        if encoding == 1:
            text = b"\0\0".join(b"\xff\xfe" + v.encode("utf-16-le") for v in values)
        else:
            text = "\0".join(values).encode("utf-8")
        data = bytes([encoding]) + text
        body += frame.encode() + _synchsafe(len(data)) + b"\0\0" + data
    path.write_bytes(b"ID3\x04\x00\x00" + _synchsafe(len(body)) + body + path.read_bytes())
    return path


def _ogg_crc_table() -> list[int]:
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else r << 1
        table.append(r & 0xFFFFFFFF)
    return table


_OGG_CRC = _ogg_crc_table()


def _ogg_pages(data: bytes) -> list[bytearray]:
    pages, pos = [], 0
    while pos < len(data):
        segments = data[pos + 26]
        end = pos + 27 + segments + sum(data[pos + 27 : pos + 27 + segments])
        pages.append(bytearray(data[pos:end]))
        pos = end
    return pages


def _ogg_page(page: bytearray, sequence: int, first: bool) -> bytes:
    """The page renumbered, its beginning-of-stream flag set or not, its CRC recomputed."""
    page[5] = page[5] | 2 if first else page[5] & ~2
    struct.pack_into("<II", page, 18, sequence, 0)
    crc = 0
    for byte in page:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _OGG_CRC[((crc >> 24) ^ byte) & 0xFF]
    struct.pack_into("<I", page, 22, crc)
    return bytes(page)


def write_ogg_repeated_headers(
    path: Path, samples: np.ndarray, rate: int, tags: dict[str, str] | None = None
) -> tuple[Path, Path]:
    """An Ogg Vorbis file of `samples` (T, channels) and a copy whose header packets repeat
    before the first audio page, as in three of Debian's hyperrogue-music tracks (an encoder
    restarting its stream): players and libsndfile play it, FFmpeg's Ogg demuxer refuses a
    second identification header ("Invalid data found when processing input").
    Returns (plain, repeated)."""
    import soundfile

    plain = path.with_name(f"plain-{path.name}")
    with soundfile.SoundFile(
        str(plain), "w", rate, samples.shape[1], format="OGG", subtype="VORBIS"
    ) as out:
        for key, value in (tags or {}).items():
            setattr(out, key, value)
        out.write(samples)
    pages = _ogg_pages(plain.read_bytes())
    # the header pages are those before the first that ends an audio packet (granule > 0)
    headers = next(i for i, p in enumerate(pages) if struct.unpack_from("<q", p, 6)[0] > 0)
    repeated = pages[:headers] + [bytearray(p) for p in pages[:headers]] + pages[headers:]
    path.write_bytes(b"".join(_ogg_page(p, i, i == 0) for i, p in enumerate(repeated)))
    return plain, path


def corrupt_files(folder: Path) -> dict[str, Path]:
    """Bad input with audio extensions: name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    empty = folder / "empty.mp3"
    empty.write_bytes(b"")
    text = folder / "notes.flac"
    text.write_text("this is a text file, not audio\n" * 50)
    silent = write_audio(
        folder / "silence.wav", 8.0, samples=np.zeros(8 * 44_100, dtype=np.float32)
    )
    full = write_audio(folder / "full.flac", 30.0, seed=3)
    truncated = folder / "truncated.flac"
    truncated.write_bytes(full.read_bytes()[: full.stat().st_size // 3])
    full.unlink()
    garbage = folder / "garbage.wav"
    garbage.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 40)
    return {
        "empty": empty,
        "text": text,
        "silent": silent,
        "truncated": truncated,
        "garbage": garbage,
    }


def wait_for_status(
    proc: subprocess.Popen[Any],
    data: Path,
    reached: Callable[[dict[str, Any]], bool],
    every: float = 0.05,
    within: float = 240,
) -> dict[str, Any]:
    """Read an `indexer index` run's status.json (in the data directory `data`) every `every`
    seconds until `reached` holds of it, the run ends or `within` seconds pass; the last status
    read ({} before the first)."""
    deadline = time.monotonic() + within
    status: dict[str, Any] = {}
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            status = json.loads((data / "status.json").read_text())
        except (OSError, ValueError):
            status = {}
        if reached(status):
            break
        time.sleep(every)
    return status
