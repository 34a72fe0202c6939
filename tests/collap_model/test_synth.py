from __future__ import annotations

import argparse
import itertools
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from collap_model.synth import cli as synth_cli
from collap_model.synth.arrange import arrange
from collap_model.synth.captions import QUERY_WORDS, clock, describe, words
from collap_model.synth.dataset import ManifestError, generate_dataset, read_manifest
from collap_model.synth.midi import read_markers
from collap_model.synth.phrases import HELDOUT, PHRASEBOOKS, TRAIN, TRAIN_ALT, Phrasebook
from collap_model.synth.render import SAMPLE_RATE, render_song, resolve_soundfont
from collap_model.synth.structure import (
    SectionKind,
    Shape,
    SongPlan,
    SynthError,
    plan_song,
)

needs_fluidsynth = pytest.mark.skipif(
    shutil.which("fluidsynth") is None,
    reason="the fluidsynth binary is not installed (apt-get install fluidsynth)",
)
TIMGM = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")
# (min, max) seconds: short, fixed-length, default, and long songs
LENGTHS = [(30, 30), (30, 300), (20, 60), (200, 300), (300, 600)]
SEEDS = range(60)


def plans() -> list[SongPlan]:
    return [plan_song(seed, *LENGTHS[seed % len(LENGTHS)]) for seed in SEEDS]


def soundfont() -> Path:
    # the small GM font keeps the test fast; without it, the default lookup explains what to install
    return TIMGM if TIMGM.is_file() else resolve_soundfont()


def fake_soundfont(tmp_path: Path) -> Path:
    sf = tmp_path / "fake.sf2"
    sf.write_bytes(b"RIFF\x04\x00\x00\x00sfbk")
    return sf


def decode(path: Path) -> tuple[int, int, list[float]]:
    """(sample rate, channels, samples) of an audio file, decoded with PyAV."""
    import av
    import numpy as np

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        chunks = []
        channels = 0
        for frame in container.decode(stream):
            channels = frame.layout.nb_channels
            chunks.append(frame.to_ndarray().reshape(channels, -1)[0])
        rate = stream.codec_context.sample_rate
    samples = np.concatenate(chunks).astype(np.float64) / 32768.0
    return rate, channels, samples.tolist()


# -- plans ------------------------------------------------------------------------------------


def test_plans_midi_and_text_are_deterministic_from_the_seed() -> None:
    for seed in (0, 1, 17):
        a, b = plan_song(seed), plan_song(seed)
        assert a == b
        assert arrange(a) == arrange(b)
        for phrasing in ("train", "heldout"):
            assert describe(a, phrasing) == describe(b, phrasing)
    assert plan_song(0) != plan_song(1)
    assert describe(plan_song(0)).caption != describe(plan_song(1)).caption


def test_plans_have_contiguous_sections_within_the_length_bounds() -> None:
    for plan, (low, high) in zip(plans(), [LENGTHS[s % len(LENGTHS)] for s in SEEDS], strict=True):
        assert low - 0.01 <= plan.duration <= high
        assert plan.sections[0].start == 0.0
        for a, b in zip(plan.sections, plan.sections[1:], strict=False):
            assert a.end == pytest.approx(b.start)
            assert a.end_tick == b.start_tick
        assert all(s.parts for s in plan.sections)
        last = plan.sections[-1]  # the held final chord fills less than about a bar
        assert last.tail_ticks <= 1.25 * last.meter.bar_ticks
        assert all(len(set(s.instruments)) == len(s.instruments) for s in plan.sections)


def test_plans_vary_structure_instrumentation_tempo_key_and_dynamics() -> None:
    every = [s for plan in plans() for s in plan.sections]
    assert {s.kind for s in every} == set(SectionKind)
    assert {s.shape for s in every} == set(Shape)
    changes = {"tempo": 0, "key": 0, "meter": 0, "drums in": 0}
    for plan in plans():
        for a, b in zip(plan.sections, plan.sections[1:], strict=False):
            changes["tempo"] += a.tempo_end != b.tempo
            changes["key"] += a.key != b.key
            changes["meter"] += a.meter != b.meter
            changes["drums in"] += b.has_drums and not a.has_drums
    assert all(n > 0 for n in changes.values()), changes
    # choruses are full-band and loud; breakdowns thin and very soft
    for s in every:
        if s.kind is SectionKind.CHORUS:
            assert len(s.parts) >= 4 and s.levels[0] in ("f", "ff")
        if s.kind is SectionKind.BREAKDOWN:
            assert len(s.parts) <= 2 and s.levels == ("pp", "pp") and not s.has_drums


def test_midi_markers_sit_at_the_section_starts() -> None:
    for plan in plans()[:20]:
        markers = read_markers(arrange(plan))
        assert [t for t, _ in markers] == pytest.approx([s.start for s in plan.sections], abs=1e-6)
        assert [m.split()[0] for _, m in markers] == [str(s.kind) for s in plan.sections]


def test_bad_song_lengths_are_refused() -> None:
    with pytest.raises(SynthError, match="min-seconds"):
        plan_song(0, 60, 30)
    with pytest.raises(SynthError, match="min-seconds"):
        plan_song(0, 5, 30)


# -- captions and queries --------------------------------------------------------------------


@pytest.mark.parametrize("phrasing", ["train", "train-alt", "heldout"])
def test_captions_are_150_to_400_words_with_true_section_timestamps(phrasing: str) -> None:
    for plan in plans():
        caption = describe(plan, phrasing).caption
        assert 150 <= words(caption) <= 400, (plan.seed, words(caption))
        stamps = re.findall(r"\b\d+:\d\d\b", caption)
        assert set(stamps) == {clock(s.start) for s in plan.sections[1:]}, plan.seed
        seconds = [int(m) * 60 + int(s) for m, s in (t.split(":") for t in stamps)]
        assert seconds == sorted(seconds)  # narrated in order


@pytest.mark.parametrize("phrasing", ["train", "train-alt", "heldout"])
def test_queries_are_five_short_distinct_texts(phrasing: str) -> None:
    for plan in plans():
        queries = describe(plan, phrasing).queries
        assert len(queries) == 5 and len(set(queries)) == 5
        for q in queries:
            assert QUERY_WORDS[0] <= words(q) <= QUERY_WORDS[1], q
            assert "{" not in q and "}" not in q
        times = {clock(s.start) for s in plan.sections}
        for stamp in re.findall(r"\b\d+:\d\d\b", " ".join(queries)):
            assert stamp in times


@pytest.mark.parametrize("phrasing", ["train", "train-alt", "heldout"])
def test_most_queries_name_the_songs_style_and_a_main_instrument(phrasing: str) -> None:
    """A fact like "the tempo gets slower at 1:20" is true of many songs; queries lead with
    which song they mean, so that one query can find one song in a catalog."""
    book = PHRASEBOOKS[phrasing]
    named = total = 0
    for plan in plans():
        styles = book.styles[plan.style]
        names = {n for s in plan.sections for n in s.instruments if n != "drums"}
        aliases = {a for n in names for a in book.aliases.get(n, (n,))}
        for q in describe(plan, phrasing).queries:
            total += 1
            named += any(s in q for s in styles) and any(a in q for a in aliases)
    assert named >= 0.7 * total, (named, total)


@pytest.mark.parametrize("book", [TRAIN, TRAIN_ALT], ids=lambda b: b.name)
def test_heldout_phrasings_share_no_template_or_descriptive_word_with_training(
    book: Phrasebook,
) -> None:
    assert book.templates().isdisjoint(HELDOUT.templates())
    assert vocab(book).isdisjoint(vocab(HELDOUT))
    # an instrument's other names: a held-out one is never a training one
    heldout_names = {a for names in HELDOUT.aliases.values() for a in names}
    for canonical, names in book.aliases.items():
        assert heldout_names.isdisjoint(set(names) - {canonical}), canonical
        assert set(names).isdisjoint(HELDOUT.aliases.get(canonical, ())), canonical
    for plan in plans()[:10]:
        train, heldout = describe(plan, book.name), describe(plan, "heldout")
        assert train.caption != heldout.caption
        assert set(train.queries).isdisjoint(heldout.queries)


def test_the_second_training_book_is_new_wording_that_brings_no_heldout_word() -> None:
    assert TRAIN_ALT.templates().isdisjoint(TRAIN.templates())
    assert vocab(TRAIN_ALT).isdisjoint(vocab(TRAIN))

    def words(phrases: set[str]) -> set[str]:
        found = {w for p in phrases for w in re.findall(r"[a-z][a-z'-]*", p.lower())}
        return found - {"a", "an", "the", "of", "on", "in", "with", "and", "to"}

    # every descriptive word it shares with the held-out book, the first book already uses
    brought = words(vocab(TRAIN_ALT)) & words(vocab(HELDOUT))
    assert brought <= words(vocab(TRAIN)), brought - words(vocab(TRAIN))


def vocab(book: Phrasebook) -> set[str]:
    out: set[str] = set()
    for table in ("styles", "moods", "sections", "levels", "grooves"):
        for options in getattr(book, table).values():
            out.update(options)
    out.update(w for pace in book.paces for w in pace)
    return out


def test_the_second_book_words_each_section_change_where_the_next_section_begins() -> None:
    names = TRAIN_ALT.sections
    for plan in plans():
        timed = describe(plan, "train-alt").timed
        for prev, s in itertools.pairwise(plan.sections):
            at = [t for t, when in timed if when == round(s.start, 3)]
            assert any(
                any(n in t for n in names[prev.kind]) and any(n in t for n in names[s.kind])
                for t in at
            ), (plan.seed, s.start, at)
    # the other books word no such query: their data sets read as they did
    assert TRAIN.q_transition == TRAIN.q_transition_up == HELDOUT.q_transition == ()


def test_unknown_phrasing_is_an_error() -> None:
    with pytest.raises(SynthError, match="phrasing"):
        describe(plan_song(0), "test")


# -- manifest --------------------------------------------------------------------------------


def write_lines(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_manifest_reader_validates_and_resolves_paths(tmp_path: Path) -> None:
    (tmp_path / "a.flac").write_bytes(b"")
    good = {
        "audio": "a.flac",
        "caption": "a piano intro, then drums at 0:20",
        "sections": [
            {"name": "intro", "start": 0, "end": 20},
            {"name": "verse", "start": 20, "end": 40, "tempo": 90},
        ],
        "duration": 40.0,
        "title": "kept as an extra field",
    }
    manifest = write_lines(
        tmp_path / "manifest.jsonl",
        json.dumps(good),
        "",
        json.dumps({"audio": "a.flac", "caption": "x"}),
    )
    entries = read_manifest(manifest)
    assert len(entries) == 2
    assert entries[0].audio_path == tmp_path / "a.flac"
    assert entries[0].sections is not None and entries[0].sections[1].model_extra == {"tempo": 90}
    assert entries[1].queries == [] and entries[1].sections is None


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"audio": "a.flac", "caption": "x"', "line 2: not valid JSON"),
        ('["a.flac", "x"]', "line 2: expected a JSON object"),
        ('{"audio": "a.flac"}', "line 2: caption: Field required"),
        ('{"audio": "a.flac", "caption": "  "}', "line 2: caption must not be blank"),
        ('{"audio": "a.flac", "caption": "x", "queries": "one"}', "line 2: queries"),
        ('{"audio": "a.flac", "caption": "x", "duration": -1}', "line 2: duration"),
        (
            '{"audio": "a.flac", "caption": "x", "sections": [{"name": "b", "start": 5, "end": 9}, '
            '{"name": "a", "start": 0, "end": 5}]}',
            "line 2: sections must be in time order",
        ),
        (
            '{"audio": "a.flac", "caption": "x", '
            '"sections": [{"name": "a", "start": 3, "end": 1}]}',
            "line 2: sections.0",
        ),
        ('{"audio": "missing.flac", "caption": "x"}', "line 2: audio file not found"),
    ],
)
def test_manifest_reader_names_the_bad_line(tmp_path: Path, line: str, message: str) -> None:
    (tmp_path / "a.flac").write_bytes(b"")
    manifest = write_lines(tmp_path / "m.jsonl", '{"audio": "a.flac", "caption": "fine"}', line)
    with pytest.raises(ManifestError, match=re.escape(message)) as info:
        read_manifest(manifest)
    assert str(manifest) in str(info.value) and "\n" not in str(info.value)


def test_manifest_reader_errors_on_missing_or_empty_files(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="cannot read manifest"):
        read_manifest(tmp_path / "nope.jsonl")
    with pytest.raises(ManifestError, match="no entries"):
        read_manifest(write_lines(tmp_path / "empty.jsonl", ""))


# -- environment errors ----------------------------------------------------------------------


def test_missing_soundfont_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(SynthError, match="cannot read soundfont") as info:
        generate_dataset(tmp_path / "out", 1, soundfont=tmp_path / "none.sf2")
    assert "\n" not in str(info.value)
    not_sf2 = tmp_path / "x.sf2"
    not_sf2.write_text("hello")
    with pytest.raises(SynthError, match="not a SoundFont"):
        resolve_soundfont(not_sf2)


def test_missing_fluidsynth_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SynthError, match="fluidsynth is not installed"):
        generate_dataset(tmp_path / "out", 1, soundfont=fake_soundfont(tmp_path))
    assert not (tmp_path / "out").exists()  # nothing is created before the checks pass


def test_unwritable_output_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("collap_model.synth.render.find_fluidsynth", lambda: "fluidsynth")
    blocker = tmp_path / "file"
    blocker.write_text("a file where OUT's parent should be")
    with pytest.raises(SynthError, match="cannot write to") as info:
        generate_dataset(blocker / "out", 1, soundfont=fake_soundfont(tmp_path))
    assert "\n" not in str(info.value)


# -- command line ----------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="collap")
    synth_cli.add_parser(root.add_subparsers(dest="command", required=True))
    return root


def test_cli_registers_synth_with_defaults() -> None:
    args = parser().parse_args(["synth", "out"])
    assert args.func is synth_cli.run
    assert (args.songs, args.seed, args.phrasings, args.jobs) == (100, 0, None, None)
    assert (args.min_seconds, args.max_seconds, args.soundfont) == (30.0, 300.0, None)
    assert args.queries == 5
    assert parser().parse_args(["synth", "out", "--queries", "10"]).queries == 10
    books = ["--phrasings", "train", "--phrasings", "train-alt"]
    assert parser().parse_args(["synth", "out", *books]).phrasings == ["train", "train-alt"]
    for bad in (["--phrasings", "test"], ["--queries", "0"]):
        with pytest.raises(SystemExit):
            parser().parse_args(["synth", "out", *bad])


def test_training_data_can_have_ten_distinct_queries_per_song() -> None:
    """The recipe's training set (`--queries 10`): more phrasings of each song's facts."""
    for plan in plans():
        queries = describe(plan, "train", 10).queries
        assert len(queries) == 10 and len(set(queries)) == 10, plan.seed
        assert all(QUERY_WORDS[0] <= words(q) <= QUERY_WORDS[1] for q in queries)


def test_registering_the_command_imports_neither_torch_nor_the_generator() -> None:
    code = (
        "import sys, argparse\n"
        "from collap_model.synth.cli import add_parser\n"
        "add_parser(argparse.ArgumentParser().add_subparsers())\n"
        "heavy = ('torch', 'numpy', 'av', 'pydantic', 'collap_model.synth.dataset')\n"
        "loaded = [m for m in heavy if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


# -- rendering -------------------------------------------------------------------------------


@needs_fluidsynth
def test_end_to_end_two_songs_render_to_flac_with_a_valid_manifest(tmp_path: Path) -> None:
    args = parser().parse_args(
        [
            "synth",
            str(tmp_path / "a"),
            "--songs",
            "2",
            "--seed",
            "3",
            "--soundfont",
            str(soundfont()),
            "--min-seconds",
            "30",
            "--max-seconds",
            "30",
            "--jobs",
            "2",
        ]
    )
    assert args.func(args) == 0
    entries = read_manifest(tmp_path / "a" / "manifest.jsonl")
    assert [e.seed for e in entries] == [3, 4]
    for entry in entries:
        assert entry.duration == pytest.approx(30.0, abs=0.01)
        rate, channels, samples = decode(entry.audio_path)
        assert (rate, channels) == (SAMPLE_RATE, 1)
        assert len(samples) / SAMPLE_RATE == pytest.approx(entry.duration, abs=1e-3)
        assert max(abs(x) for x in samples) > 0.5  # normalised, not silence
        assert entry.sections is not None and entry.sections[0].start == 0.0
        assert entry.sections[-1].end == pytest.approx(entry.duration, abs=1e-3)
        assert len(entry.queries) == 5
    # same seed and options (even with other --jobs): the same manifest and MIDI files
    generate_dataset(
        tmp_path / "b", 2, 3, soundfont=soundfont(), min_seconds=30, max_seconds=30, jobs=1
    )
    for name in ("manifest.jsonl", "midi/00000.mid", "midi/00001.mid"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


@needs_fluidsynth
def test_several_phrasebooks_word_each_song_from_one_drawn_by_its_seed(tmp_path: Path) -> None:
    books = ["train", "train-alt"]
    kwargs: dict[str, Any] = {"soundfont": soundfont(), "min_seconds": 30, "max_seconds": 30}
    generate_dataset(tmp_path / "mixed", 6, 10, phrasings=books, **kwargs)
    generate_dataset(tmp_path / "one", 6, 10, phrasings="train", **kwargs)
    mixed = read_manifest(tmp_path / "mixed" / "manifest.jsonl")
    drawn = [str(e.model_extra["phrasings"]) for e in mixed]  # type: ignore[index]
    assert set(drawn) == set(books), drawn  # both books, each song worded by its own
    for entry, book in zip(mixed, drawn, strict=True):
        assert entry.caption == describe(plan_song(entry.seed or 0, 30, 30), book).caption
    # the songs themselves do not depend on the wording
    for name in (f"midi/0000{i}.mid" for i in range(6)):
        assert (tmp_path / "mixed" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()
    with pytest.raises(SynthError, match="phrasings"):
        generate_dataset(tmp_path / "bad", 1, 0, phrasings=["train", "test"], **kwargs)


@needs_fluidsynth
def test_a_sudden_drop_is_heard_at_its_timestamp(tmp_path: Path) -> None:
    import numpy as np

    plan = next(
        p
        for p in (plan_song(seed, 60, 90) for seed in range(500))
        if any(s.shape is Shape.DROP and s.start > 4 for s in p.sections)
    )
    midi = tmp_path / "song.mid"
    midi.write_bytes(arrange(plan))
    render_song(
        midi, tmp_path / "song.flac", soundfont(), plan.duration, shutil.which("fluidsynth") or ""
    )
    _, _, samples = decode(tmp_path / "song.flac")
    wave = np.asarray(samples)
    drop = next(s for s in plan.sections if s.shape is Shape.DROP)

    def rms(a: float, b: float) -> float:
        return float(np.sqrt(np.mean(wave[round(a * SAMPLE_RATE) : round(b * SAMPLE_RATE)] ** 2)))

    # the last two seconds before the drop are far louder than the two after it starts
    # (the first half second is skipped: reverb and release tails ring on)
    assert rms(drop.start - 2, drop.start) > 4 * rms(drop.start + 0.5, drop.start + 2.5)
