from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import av.error
import numpy as np
import pytest

from indexer.decode import AudioDecoder, DecodeError
from indexer.decoders import DecodeParams, decode_job
from tests.indexer.fixtures import (
    corrupt_files,
    signal,
    write_audio,
    write_id3v24,
    write_ogg_repeated_headers,
)

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
        "Morning", ["Ann Lee"], "Days", ["Folk"], 1999, 3
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


def _decoded(path: Path, rate: int = 16_000) -> tuple[np.ndarray, Any]:
    with AudioDecoder(str(path), rate) as dec:
        return np.concatenate(list(dec.chunks())), dec.info


def test_an_ogg_ffmpeg_refuses_is_read_by_libsndfile_with_the_same_samples(
    tmp_path: Path,
) -> None:
    """Ogg Vorbis whose headers repeat (three hyperrogue-music tracks): libsndfile reads it, and
    its samples go through the same resampler, so they equal FFmpeg's of the same packets."""
    rate = 44_100
    mono = signal(20.0, rate, seed=4)
    tags = {"title": "Caribbean", "artist": "Will Savino", "genre": "Game"}
    plain, repeated = write_ogg_repeated_headers(
        tmp_path / "caribbean.ogg", np.stack([mono, 0.5 * mono], axis=1), rate, tags
    )
    with pytest.raises(av.error.InvalidDataError):
        av.open(str(repeated)).close()  # what this covers: FFmpeg refuses the file
    by_ffmpeg, _ = _decoded(plain)
    by_sndfile, info = _decoded(repeated)
    assert by_sndfile.size == by_ffmpeg.size == 20 * 16_000
    assert np.abs(by_sndfile - by_ffmpeg).max() < 1e-4  # the decoders' float rounding
    assert (info.title, info.artist, info.genre) == ("Caribbean", ["Will Savino"], ["Game"])
    assert (info.codec, info.sample_rate, info.channels) == ("vorbis", rate, 2)
    assert info.duration == pytest.approx(20.0)


def test_a_file_neither_decoder_reads_names_what_each_said(tmp_path: Path) -> None:
    with pytest.raises(DecodeError) as err:
        AudioDecoder(str(corrupt_files(tmp_path)["garbage"]), 16_000)
    assert err.value.reason.startswith("not a readable audio file: FFmpeg: ")
    assert "; libsndfile: " in err.value.reason and "garbage.wav" not in err.value.reason


def test_an_error_of_any_type_inside_a_decoder_is_the_files_reason(tmp_path: Path) -> None:
    """A WAV whose format tag is 0 gives PyAV a stream without a codec, on which reading the
    stream's facts raised AttributeError (found by mutating the fixtures); a stream whose
    format changes on the way raised ValueError in the resampler. Each is a file's reason."""
    wav = bytearray(write_audio(tmp_path / "ok.wav", 2.0, rate=16_000, channels=1).read_bytes())
    wav[20:22] = b"\0\0"
    (tmp_path / "tag0.wav").write_bytes(wav)
    params = DecodeParams(
        rate=16_000, clip=160_000, hop=80_000, clips_per_message=8, silence_peak=1e-3
    )
    with pytest.raises(DecodeError) as err:
        decode_job(0, str(tmp_path / "tag0.wav"), params, lambda msg: None)
    assert err.value.reason.startswith(
        "not a readable audio file: FFmpeg: no decoder for its audio codec; libsndfile: "
    )


def test_a_stream_whose_format_changes_decodes_on(tmp_path: Path) -> None:
    """MP3 frames at another rate and channel count in the middle of a file (the fuzzed
    fixture that made PyAV's resampler raise "Frame does not match AudioResampler setup")."""
    path = write_audio(tmp_path / "a.mp3", 1.0, seed=1, rate=16_000, channels=1)
    data = bytearray(path.read_bytes())
    for at, value in ((59, 255), (62, 255), (76, 255), (309, 150), (658, 227), (899, 99),
                      (2604, 255), (2970, 0)):  # fmt: skip
        data[at] = value
    path.write_bytes(data)
    samples, info = _decoded(path)
    assert info.duration == pytest.approx(1.0, abs=0.2) and np.abs(samples).max() > 0.01


def test_id3v24_lists_keep_every_value(tmp_path: Path) -> None:
    frames = {
        "TIT2": (3, ["Duet"]),
        "TPE1": (3, ["Ann", "Bob"]),
        "TCON": (1, ["Rock", "Jazz"]),  # UTF-16, a byte order mark on each value
    }
    path = write_id3v24(tmp_path / "duet.mp3", 3.0, frames)
    with av.open(str(path)) as container:  # what this covers: FFmpeg keeps the first only
        assert (container.metadata["artist"], container.metadata["genre"]) == ("Ann", "Rock")
    _, info = _decoded(path)
    assert (info.title, info.artist, info.genre) == ("Duet", ["Ann", "Bob"], ["Rock", "Jazz"])


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
