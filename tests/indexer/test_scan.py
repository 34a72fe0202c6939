from __future__ import annotations

import os
from pathlib import Path

import pytest

from indexer.scan import ScanError, resolve_roots, scan
from indexer.settings import AUDIO_EXTENSIONS


def test_scan_finds_audio_skips_hidden_and_survives_symlink_loops(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    for rel in (
        "a/one.mp3",
        "a/b/two.FLAC",
        "a/notes.txt",
        ".hidden/three.mp3",
        "a/.four.mp3",
        "five.ogg",
    ):
        (tmp_path / rel).write_bytes(b"x")
    os.symlink(tmp_path / "a", tmp_path / "a" / "b" / "loop")  # a/b/loop -> a: a cycle
    found = sorted(
        Path(f.path).relative_to(tmp_path).as_posix() for f in scan([tmp_path], AUDIO_EXTENSIONS)
    )
    assert found == ["a/b/two.FLAC", "a/one.mp3", "five.ogg"]
    entry = next(scan([tmp_path / "five.ogg"], AUDIO_EXTENSIONS))
    assert entry.size == 1 and entry.mtime_ns > 0


def test_missing_root_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ScanError, match="no such file"):
        resolve_roots([tmp_path / "nope"])


def test_extensions_come_from_settings(tmp_path: Path) -> None:
    from indexer.settings import Settings

    (tmp_path / "x.mp3").write_bytes(b"x")
    (tmp_path / "y.wav").write_bytes(b"x")
    s = Settings(extensions="WAV, .flac", _env_file=None)  # type: ignore[call-arg, arg-type]
    assert s.extensions == (".wav", ".flac")
    assert [Path(f.path).name for f in scan([tmp_path], s.extensions)] == ["y.wav"]
