"""Listening: `GET /tracks/{id}/audio` streams a track's indexed file, `POST /session` lets a
browser's audio element in.

The file is found by track id only: the route serves one of the paths the index recorded for
that content, and only while it is the file that was indexed (same size and mtime), never a
path from the request. Starlette's FileResponse answers Range requests (206, 416, If-Range),
which is what lets a browser seek. The content type is the container's, read from the file's
first bytes (the extension is the fallback), so an `.mp3` that holds FLAC still plays.

An audio element cannot send an X-API-Key header, so with INDEXER_API_KEY set the page trades
the key (sent in the header) for a cookie that opens the audio route only: HttpOnly (scripts
cannot read it), SameSite=Strict, limited to /tracks, valid for SESSION_SECONDS, and an HMAC of
its expiry under the key, so the server keeps no state and changing the key ends every session.

No `from __future__ import annotations`: FastAPI reads the handlers' annotations.
"""

import hashlib
import hmac
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import FileResponse
from fastapi.security import APIKeyCookie, APIKeyHeader

from indexer.api.schemas import Problem
from indexer.search import Searcher
from indexer.store.base import local_path

COOKIE = "indexer_audio"
SESSION_SECONDS = 12 * 3600
# how far into a file its container's signature is looked for (ID3 tags may precede it)
_SNIFF_BYTES = 16

# container signatures: (offset, bytes) that must all match -> content type
_SIGNATURES: tuple[tuple[tuple[tuple[int, bytes], ...], str], ...] = (
    (((0, b"fLaC"),), "audio/flac"),
    (((0, b"OggS"),), "audio/ogg"),
    (((0, b"RIFF"), (8, b"WAVE")), "audio/wav"),
    (((4, b"ftyp"),), "audio/mp4"),
    (((0, b"FORM"), (8, b"AIFF")), "audio/aiff"),
    (((0, b"FORM"), (8, b"AIFC")), "audio/aiff"),
    (((0, b"wvpk"),), "audio/wavpack"),
    (((0, b"MAC "),), "audio/x-ape"),
    (((0, b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"),), "audio/x-ms-wma"),
    (((0, b"\x1a\x45\xdf\xa3"),), "audio/webm"),
)
# by extension, when the first bytes say nothing (raw streams without a container header)
_BY_EXTENSION = {
    ".mp3": "audio/mpeg",
    ".flac": "audio/flac",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".opus": "audio/ogg",
    ".m4a": "audio/mp4",
    ".mp4": "audio/mp4",
    ".alac": "audio/mp4",
    ".aac": "audio/aac",
    ".wav": "audio/wav",
    ".wave": "audio/wav",
    ".aif": "audio/aiff",
    ".aiff": "audio/aiff",
    ".aifc": "audio/aiff",
    ".wma": "audio/x-ms-wma",
    ".wv": "audio/wavpack",
    ".ape": "audio/x-ape",
}
OCTETS = "application/octet-stream"


def content_type(path: str) -> str:
    """The audio content type of a file's container (from its first bytes, else its name)."""
    by_name = _BY_EXTENSION.get(Path(path).suffix.lower(), OCTETS)
    with open(path, "rb") as f:
        head = f.read(_SNIFF_BYTES)
        if head[:3] == b"ID3" and len(head) >= 10:
            # an ID3v2 tag in front of the stream (its size: four 7-bit bytes, plus a 10-byte
            # footer when flagged); the stream behind it is usually MP3, sometimes FLAC
            size = 0
            for b in head[6:10]:
                size = size << 7 | b & 0x7F
            f.seek(10 + size + (10 if head[5] & 0x10 else 0))
            return _sniff(f.read(_SNIFF_BYTES)) or (by_name if by_name != OCTETS else "audio/mpeg")
    return _sniff(head) or by_name


def _sniff(head: bytes) -> str | None:
    for checks, kind in _SIGNATURES:
        if all(head[at : at + len(magic)] == magic for at, magic in checks):
            return kind
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        # an MPEG audio frame header: layer bits 00 mark ADTS (AAC), anything else MP3/MP2
        return "audio/aac" if head[1] & 0x06 == 0 else "audio/mpeg"
    return None


def indexed_file(track: dict[str, Any]) -> str | None:
    """The first of a track's recorded files still on disk as it was indexed (same size and
    modification time), or None."""
    for f in track.get("files", []):
        try:
            path = local_path(f["path"])
            st = os.stat(path)
        except (OSError, KeyError, TypeError, ValueError):
            continue
        if (
            stat.S_ISREG(st.st_mode)
            and st.st_size == f.get("size")
            and st.st_mtime_ns == f.get("mtime_ns")
        ):
            return path
    return None


def session_token(key: bytes, expires: int) -> str:
    return hmac.new(key, f"audio session until {expires}".encode(), hashlib.sha256).hexdigest()


def session_valid(key: bytes, value: str, now: float) -> bool:
    expires, _, mac = value.partition(".")
    if not expires.isdigit() or int(expires) < now:
        return False
    return hmac.compare_digest(mac.encode(), session_token(key, int(expires)).encode())


def router(key: bytes | None, searcher: Callable[[], Searcher]) -> APIRouter:
    """The audio routes of one app; `key` is INDEXER_API_KEY (None: open), `searcher` the
    app's dependency that yields its open Searcher."""
    header = APIKeyHeader(name="X-API-Key", auto_error=False, description="INDEXER_API_KEY")
    cookie = APIKeyCookie(
        name=COOKIE, auto_error=False, description="set by POST /session (browsers' audio)"
    )
    routes = APIRouter()
    Open = Annotated[Searcher, Depends(searcher)]

    def key_in_header(given: str | None) -> bool:
        return key is None or hmac.compare_digest((given or "").encode(), key)

    def check_header(given: str | None = Depends(header)) -> None:
        if not key_in_header(given):
            raise HTTPException(401, "missing or wrong X-API-Key")

    def check_listener(
        given: str | None = Depends(header), session: str | None = Depends(cookie)
    ) -> None:
        if key_in_header(given):
            return
        if key is not None and session and session_valid(key, session, time.time()):
            return
        raise HTTPException(401, "missing or wrong X-API-Key (or audio session cookie)")

    refused: dict[int | str, dict[str, Any]] = {
        401: {"model": Problem, "description": "missing or wrong X-API-Key"}
    }

    @routes.post(
        "/session", status_code=204, responses=refused, dependencies=[Depends(check_header)]
    )
    def session(request: Request, response: Response) -> None:
        """Set the cookie that lets this browser's audio element fetch /tracks/{id}/audio
        (which cannot send X-API-Key); without INDEXER_API_KEY there is nothing to set."""
        if key is None:
            return
        expires = int(time.time()) + SESSION_SECONDS
        response.set_cookie(
            COOKIE,
            f"{expires}.{session_token(key, expires)}",
            max_age=SESSION_SECONDS,
            path="/tracks",
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )

    @routes.get(
        "/tracks/{track_id}/audio",
        response_class=FileResponse,
        responses={
            **refused,
            200: {"content": {"audio/*": {}}, "description": "the file as indexed"},
            206: {"description": "the requested byte range"},
            404: {"model": Problem, "description": "no such track, or its file is gone"},
            416: {"description": "the byte range is outside the file"},
        },
        dependencies=[Depends(check_listener)],
    )
    def audio(track_id: UUID, s: Open) -> FileResponse:
        """Stream a track's indexed file (by id only; HTTP Range requests, so players seek)."""
        path = indexed_file(s.track(str(track_id)))
        if path is None:
            raise HTTPException(
                404,
                "the track's files are gone or changed since they were indexed "
                "(run `indexer index` again)",
            )
        return FileResponse(
            path,
            media_type=content_type(path),
            headers={"Cache-Control": "private, no-cache"},
            content_disposition_type="inline",
        )

    return routes
