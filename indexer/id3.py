"""The values of ID3v2 text frames that hold several (artists, genres).

ID3v2.4 separates the values of one text frame with NUL ("Ann\\0Bob"); FFmpeg keeps only the
first, so the decoder reads those frames here. Only the tag at the start of the file, ID3v2.3
and v2.4, text frames; anything malformed gives nothing (FFmpeg's single value stands).
"""

from __future__ import annotations

import re

# frames whose several values the payload keeps: artist, album artist, genre
FRAMES = ("TPE1", "TPE2", "TCON")
_MAX_TAG = 16 << 20  # bytes: a tag with pictures is a few MB; a larger size is a broken header
_ENCODINGS = {0: "latin-1", 1: "utf-16", 2: "utf-16-be", 3: "utf-8"}
_GENRE_NUMBER = re.compile(r"\(?\d+\)?")  # an ID3v1 genre number, which FFmpeg names for us


def _synchsafe(data: bytes) -> int:
    return (data[0] << 21) | (data[1] << 14) | (data[2] << 7) | data[3]


def text_lists(path: str | bytes) -> dict[str, list[str]]:
    """FRAMES id -> its values, for the frames of the file's ID3v2 tag that hold more than one."""
    try:
        with open(path, "rb") as f:
            head = f.read(10)
            if len(head) < 10 or head[:3] != b"ID3" or head[3] not in (3, 4):
                return {}
            size = _synchsafe(head[6:10])
            tag = f.read(min(size, _MAX_TAG))
    except OSError:
        return {}
    try:
        return _frames(tag, head[3], head[5])
    except (IndexError, KeyError, ValueError, UnicodeDecodeError):
        return {}


def _frames(tag: bytes, version: int, flags: int) -> dict[str, list[str]]:
    if version == 3 and flags & 0x80:  # v2.3 unsynchronises the whole tag
        tag = tag.replace(b"\xff\x00", b"\xff")
    pos = 0
    if flags & 0x40:  # an extended header: its size counts itself in v2.4, not in v2.3
        ext = tag[:4]
        pos = _synchsafe(ext) if version == 4 else int.from_bytes(ext, "big") + 4
    out: dict[str, list[str]] = {}
    while pos + 10 <= len(tag) and tag[pos] != 0:
        frame, raw = tag[pos : pos + 4].decode("latin-1"), tag[pos + 4 : pos + 8]
        size = _synchsafe(raw) if version == 4 else int.from_bytes(raw, "big")
        fmt = tag[pos + 9]
        body = tag[pos + 10 : pos + 10 + size]
        pos += 10 + size
        if frame not in FRAMES or not body:
            continue
        if version == 4 and fmt & 0x01:  # a data length indicator precedes the data
            body = body[4:]
        if version == 4 and fmt & 0x02:
            body = body.replace(b"\xff\x00", b"\xff")
        if version == 4 and fmt & 0x0C:  # compressed or encrypted: not text we can read
            continue
        text = body[1:].decode(_ENCODINGS[body[0]])
        # UTF-16 gives each value its byte order mark; the first one is read as such
        values = [v.strip("\ufeff ") for v in text.split("\x00") if v.strip("\ufeff ")]
        if frame == "TCON" and any(_GENRE_NUMBER.fullmatch(v) for v in values):
            continue
        if len(values) > 1:
            out[frame] = values
    return out
