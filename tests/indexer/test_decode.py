from __future__ import annotations

from pathlib import Path

import pytest

from indexer.decode import AudioDecoder, DecodeError
from indexer.decoders import DecodeParams, decode_job
from tests.indexer.fixtures import corrupt_files, write_audio

TAGS = {
    "title": "Morning",
    "artist": "Ann Lee",
    "album": "Days",
    "genre": "Folk",
    "date": "1999-02-01",
    "track": "3/12",
}


@pytest.mark.parametrize(
    ("name", "rate", "channels", "codec"),
    [
        ("a.mp3", 44_100, 2, "mp3"),
        ("b.flac", 22_050, 1, "flac"),
        ("c.opus", 48_000, 2, "opus"),
        ("d.m4a", 32_000, 2, "aac"),
        ("e.alac.m4a", 44_100, 1, "alac"),
        ("f.wav", 8_000, 1, "pcm_s16le"),
    ],
)
def test_formats_decode_to_mono_at_the_model_rate(
    tmp_path: Path, name: str, rate: int, channels: int, codec: str
) -> None:
    path = write_audio(tmp_path / name, 12.0, seed=1, rate=rate, channels=channels, tags=TAGS)
    with AudioDecoder(str(path), 16_000) as dec:
        chunks = list(dec.chunks())
        info = dec.info
    assert all(c.ndim == 1 and c.dtype.name == "float32" for c in chunks)
    assert sum(c.size for c in chunks) / 16_000 == pytest.approx(12.0, abs=0.1)
    assert info.duration == pytest.approx(12.0, abs=0.1)
    assert info.codec == codec
    assert info.channels == channels
    assert info.sample_rate == (48_000 if codec == "opus" else rate)
    assert (info.title, info.artist, info.album, info.genre, info.year, info.track) == (
        "Morning", "Ann Lee", "Days", "Folk", 1999, 3
    )  # fmt: skip


def test_bad_files_raise_with_a_reason(tmp_path: Path) -> None:
    bad = corrupt_files(tmp_path)
    params = DecodeParams(
        rate=16_000, clip=160_000, hop=80_000, clips_per_message=8, silence_peak=1e-3
    )
    reasons = {}
    for name, path in bad.items():
        with pytest.raises(DecodeError) as err:
            decode_job(0, str(path), params, lambda msg: None)
        reasons[name] = err.value.reason
    assert reasons["empty"] == "empty file (0 bytes)"
    assert reasons["silent"].startswith("silent")
    assert "truncated" in reasons["truncated"] or "corrupt" in reasons["truncated"]
    assert "no audio" in reasons["text"] or "not a readable" in reasons["text"]
    assert "not a readable" in reasons["garbage"] or "no audio" in reasons["garbage"]


def test_decode_job_streams_all_clips_then_done(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "x.flac", 37.0, seed=2, rate=16_000, channels=1)
    params = DecodeParams(
        rate=16_000, clip=160_000, hop=80_000, clips_per_message=3, silence_peak=1e-3
    )
    sent: list[tuple] = []  # type: ignore[type-arg]
    decode_job(5, str(path), params, sent.append)
    kinds = [m[0] for m in sent]
    assert kinds[-1] == "done" and set(kinds[:-1]) == {"clips"}
    starts = [int(s) for m in sent[:-1] for s in m[2]]
    assert starts == [0, 80_000, 160_000, 240_000, 320_000, 400_000, 432_000]
    assert max(len(m[2]) for m in sent[:-1]) <= 3
    assert sent[-1][3] == 37 * 16_000
