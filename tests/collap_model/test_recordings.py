"""Real recordings as training data: measuring a track, writing its caption, finding the files
(archives and stems), and production variation for synthetic songs."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from collap_model.recordings.analysis import RATE, analyse
from collap_model.recordings.captions import describe_recording, standout
from collap_model.recordings.catalog import _from_package
from collap_model.synth.produce import apply_production, draw_production
from collap_model.tagger.labels import LABELS

TAGS = LABELS["MTT_musicnn"] + LABELS["MSD_musicnn"]


def clicks(seconds: float, bpm: float, level: float, rate: int = RATE) -> np.ndarray:
    """Short noise bursts on every beat, over a faint hiss."""
    gen = np.random.default_rng(int(bpm))
    wave = 0.001 * gen.standard_normal(int(seconds * rate))
    step = int(rate * 60 / bpm)
    for start in range(0, len(wave) - 400, step):
        wave[start : start + 400] += level * gen.standard_normal(400) * np.hanning(400)
    return wave.astype(np.float32)


def test_analysis_finds_the_level_the_pulse_and_the_change() -> None:
    quiet, loud = clicks(30, 120, 0.05), clicks(30, 120, 0.6)
    song = np.concatenate([quiet, loud])
    a = analyse(song)
    assert a.duration == 60.0
    assert a.tempo is not None and abs(a.tempo - 120) < 4
    assert any(abs(b - 30) <= 3 for b in a.boundaries[1:])
    assert a.mean_over(a.loudness, 35, 60) > a.mean_over(a.loudness, 0, 25) + 15
    assert 1.0 < a.mean_over(a.onsets, 5, 25) < 3.5  # two beats a second


def test_caption_narrates_the_measured_sections_with_timestamps() -> None:
    song = np.concatenate([clicks(30, 90, 0.05), clicks(30, 90, 0.6)])
    a = analyse(song)
    times = np.array([[s, s + 10] for s in range(0, 51, 5)], dtype=np.float32)
    probs = np.full((len(times), len(TAGS)), 0.05, dtype=np.float32)
    z = np.zeros_like(probs)
    piano, drums = TAGS.index("piano"), TAGS.index("drums")
    probs[:, piano], z[:, piano] = 0.6, 2.0
    late = times[:, 0] >= 30
    probs[late, drums], z[late, drums] = 0.7, 2.5
    text = describe_recording(a, times, probs, z, TAGS, seed="test")
    assert "piano" in text.caption and "drums" in text.caption
    assert "0:30" in text.caption or "0:29" in text.caption or "0:31" in text.caption
    assert "louder" in text.caption or "swells" in text.caption or "volume rises" in text.caption
    assert (
        "drums come in" in text.caption
        or "drums enter" in text.caption
        or "drums join in" in text.caption
    )
    assert text.queries and all(5 <= len(q.split()) <= 15 for q in text.queries)
    assert text.sections[0]["start"] == 0.0 and text.sections[-1]["end"] == a.duration
    again = describe_recording(a, times, probs, z, TAGS, seed="test")
    assert again == text  # deterministic for one track


def test_standout_keeps_tags_that_are_both_likely_and_unusual() -> None:
    probs = np.full(len(TAGS), 0.5, dtype=np.float32)
    z = np.zeros(len(TAGS), dtype=np.float32)
    guitar, jazz, no_vocals = TAGS.index("guitar"), TAGS.index("jazz"), TAGS.index("no vocals")
    z[[guitar, jazz, no_vocals]] = 3.0
    got = standout(probs, z, TAGS)
    assert got.instruments == ["guitar"] and got.genres == ["jazz"]
    assert "no vocals" not in got.words()  # a negation is nothing to narrate
    probs[guitar] = 0.01
    assert "guitar" not in standout(probs, z, TAGS).words()


def test_catalog_extracts_archive_audio_and_mixes_stems(tmp_path: Path) -> None:
    from collap_model.synth.render import write_flac

    data = tmp_path / "pkg"
    tone = (0.3 * np.sin(np.arange(16_000 * 3) / 16_000 * 2 * np.pi * 440)).astype(np.float32)
    (data / "music").mkdir(parents=True)
    write_flac(data / "music" / "intro.flac", tone)
    with zipfile.ZipFile(data / "music.pk3", "w") as z:
        z.write(data / "music" / "intro.flac", "sound/music/theme.flac")
        z.writestr("maps/level1.bsp", b"not audio")
    song = data / "songs" / "tune"
    song.mkdir(parents=True)
    write_flac(song / "song.flac", tone)
    shutil.copy(song / "song.flac", song / "guitar.ogg")  # any decodable stem
    shutil.copy(song / "song.flac", song / "song.ogg")
    (song / "song.flac").unlink()
    files = sorted(p for p in data.rglob("*") if p.is_file())
    found = list(_from_package("pkg", files, tmp_path / "out"))
    names = sorted(r.title for r in found)
    assert names == ["intro", "theme", "tune"]
    theme = next(r for r in found if r.title == "theme")
    assert theme.path.is_file() and theme.path.is_relative_to(tmp_path / "out")
    tune = next(r for r in found if r.title == "tune")
    assert tune.path.suffix == ".flac" and tune.path.is_relative_to(tmp_path / "out")


def test_production_is_drawn_per_song_and_sets_the_master_level() -> None:
    a, b = draw_production(3), draw_production(3)
    assert a == b and draw_production(4) != a
    assert json.loads(json.dumps(a.as_dict()))["peak_db"] == pytest.approx(a.peak_db)
    gen = np.random.default_rng(0)
    stereo = (0.2 * gen.standard_normal((16_000 * 4, 2))).astype(np.float32)
    for seed in range(8):
        p = draw_production(seed)
        out = apply_production(stereo, 16_000, p, seed)
        assert out.shape == (16_000 * 4,) and out.dtype == np.float32
        assert 20 * np.log10(np.abs(out).max()) == pytest.approx(p.peak_db, abs=0.01)
        opts = p.fluidsynth_options()
        assert opts[:4] == ["-R", "1" if p.reverb else "0", "-C", "1" if p.chorus else "0"]


def test_manifest_names_written_files_so_a_relative_output_folder_reads_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from collap_model.recordings.dataset import manifest_audio
    from collap_model.synth.dataset import MANIFEST, read_manifest, write_manifest

    monkeypatch.chdir(tmp_path)
    out = Path("data") / "rec"  # as `collap recordings data/rec` gives it
    extracted = out / "files" / "pkg" / "theme.flac"
    extracted.parent.mkdir(parents=True)
    extracted.write_bytes(b"")
    packaged = (tmp_path / "usr" / "theme.ogg").resolve()
    packaged.parent.mkdir()
    packaged.write_bytes(b"")
    entries = [
        {"audio": manifest_audio(path, out), "caption": "A calm piece.", "queries": ["calm"]}
        for path in (extracted, packaged)
    ]
    assert entries[0]["audio"] == "files/pkg/theme.flac"
    assert entries[1]["audio"] == str(packaged)
    write_manifest(out / MANIFEST, entries)
    read = read_manifest(out / MANIFEST)
    assert [e.audio_path.resolve() for e in read] == [extracted.resolve(), packaged]
