"""The audio route's parts: the content type of a file's format, which recorded file is served,
the audio session cookie."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from indexer.api.audio import content_type, indexed_file, session_token, session_valid
from tests.indexer.fixtures import write_audio


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("a.mp3", "audio/mpeg"),
        ("a.flac", "audio/flac"),
        ("a.opus", "audio/ogg"),
        ("a.m4a", "audio/mp4"),
        ("a.alac.m4a", "audio/mp4"),
        ("a.wav", "audio/wav"),
    ],
)
def test_content_type_of_each_format(tmp_path: Path, name: str, kind: str) -> None:
    path = write_audio(tmp_path / name, 1.0, tags={"title": "x"})
    assert content_type(str(path)) == kind
    # the bytes decide, not the name: a FLAC named .mp3 is served as FLAC
    renamed = path.rename(tmp_path / ("renamed" + (".mp3" if kind != "audio/mpeg" else ".flac")))
    assert content_type(str(renamed)) == kind


def test_content_type_behind_an_id3_tag(tmp_path: Path) -> None:
    flac = write_audio(tmp_path / "a.flac", 1.0).read_bytes()
    body = b"TIT2" + (20).to_bytes(4, "big") + b"\0\0" + b"\0" * 20
    tag = b"ID3\x04\x00\x00" + bytes([0, 0, 0, len(body)]) + body
    tagged = tmp_path / "tagged.flac"
    tagged.write_bytes(tag + flac)
    assert content_type(str(tagged)) == "audio/flac"
    unknown = tmp_path / "raw.aac"
    unknown.write_bytes(b"\0" * 64)
    assert content_type(str(unknown)) == "audio/aac"  # no signature: the extension's type
    nothing = tmp_path / "raw.bin"
    nothing.write_bytes(b"")
    assert content_type(str(nothing)) == "application/octet-stream"


def test_only_a_recorded_file_unchanged_since_indexing_is_served(tmp_path: Path) -> None:
    def record(path: Path) -> dict[str, object]:
        st = path.stat()
        return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}

    first = write_audio(tmp_path / "first.flac", 1.0)
    second = write_audio(tmp_path / "second.flac", 1.0)
    track = {"files": [record(first), record(second)]}
    assert indexed_file(track) == str(first)
    os.utime(first, ns=(first.stat().st_atime_ns, first.stat().st_mtime_ns + 10**9))
    assert indexed_file(track) == str(second)  # the first changed since it was indexed
    second.write_bytes(second.read_bytes()[:100])
    assert indexed_file(track) is None  # changed too: nothing is served
    assert indexed_file({"files": [{"path": str(tmp_path / "gone.flac")}]}) is None
    assert indexed_file({"files": [{"path": str(tmp_path), "size": 0, "mtime_ns": 0}]}) is None
    assert indexed_file({}) is None


def test_session_cookie() -> None:
    key = b"secret"
    value = f"2000.{session_token(key, 2000)}"
    assert session_valid(key, value, now=1999)
    assert not session_valid(key, value, now=2001)  # expired
    assert not session_valid(b"another key", value, now=1999)  # the key changed
    assert not session_valid(key, f"3000.{session_token(key, 2000)}", now=1999)  # moved
    for bad in ("", ".", "abc", "2000", "2000.", "-1.x", "2000.zz"):
        assert not session_valid(key, bad, now=0)
