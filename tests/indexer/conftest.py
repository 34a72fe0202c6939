from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from indexer import service
from indexer.decode import AudioDecoder
from indexer.pipeline import IndexSummary, ModelHandle
from indexer.scan import content_hash
from indexer.settings import Settings
from indexer.store.base import point_id
from tests.indexer.fixtures import write_audio

TIMGM = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", decode_workers=1, _env_file=None)  # type: ignore[call-arg]


@pytest.fixture
def index(model) -> Callable[..., IndexSummary]:  # type: ignore[no-untyped-def]
    """Run an indexing pass with the session's model (loaded once for the whole suite)."""

    def run(settings: Settings, *paths: Path) -> IndexSummary:
        return service.index(settings, list(paths), model=ModelHandle(settings, model=model))

    return run


@dataclass(frozen=True)
class SearchCatalog:
    """An indexed catalog for search tests: synthetic songs with captions, tagged files, a
    near duplicate, and a copy kept outside the catalog."""

    settings: Settings
    root: Path
    songs: list[dict[str, Any]]  # manifest rows, `audio` made absolute
    ids: dict[str, str]  # name -> track id ("song0".., "ann", "bob", "dup3")
    outside: Path  # an opus copy of song 5, not indexed


def _samples(path: Path, rate: int) -> np.ndarray:
    with AudioDecoder(str(path), rate) as dec:
        return np.concatenate(list(dec.chunks()))


@pytest.fixture(scope="session")
def search_catalog(tmp_path_factory: pytest.TempPathFactory, model) -> SearchCatalog:  # type: ignore[no-untyped-def]
    from collap_model.synth.dataset import generate_dataset, read_manifest

    if shutil.which("fluidsynth") is None or not TIMGM.exists():
        pytest.skip("needs fluidsynth and the TimGM6mb soundfont (apt-get install both)")
    base = tmp_path_factory.mktemp("search")
    root = base / "catalog"
    generate_dataset(root / "synth", 8, seed=0, soundfont=TIMGM, min_seconds=30, max_seconds=60)
    songs = []
    for row in read_manifest(root / "synth" / "manifest.jsonl"):
        songs.append({**row.model_dump(), "audio": str(Path(row.audio_path).resolve())})
    ann = {"title": "Blue", "artist": "Ann", "genre": "jazz", "date": "1995"}
    bob = {"title": "Red", "artist": "Bob", "genre": "rock", "date": "2005"}
    write_audio(root / "tagged" / "ann.flac", 12.0, seed=11, tags=ann)
    write_audio(root / "tagged" / "bob.mp3", 15.0, seed=12, tags=bob)
    rate = 44_100
    # a near duplicate as catalogs hold them: the same master re-encoded lossy, a little quieter
    song3 = _samples(Path(songs[3]["audio"]), rate)
    write_audio(root / "dups" / "copy-of-3.mp3", 0, rate=rate, samples=0.8 * song3)
    outside = write_audio(base / "outside" / "five.opus", 0, samples=_samples(
        Path(songs[5]["audio"]), 48_000))  # fmt: skip
    settings = Settings(data_dir=base / "data", decode_workers=1, _env_file=None)  # type: ignore[call-arg]
    service.index(settings, [root], model=ModelHandle(settings, model=model))
    ids = {f"song{i}": point_id(content_hash(s["audio"])) for i, s in enumerate(songs)}
    for name, rel in (("ann", "tagged/ann.flac"), ("bob", "tagged/bob.mp3"),
                      ("dup3", "dups/copy-of-3.mp3")):  # fmt: skip
        ids[name] = point_id(content_hash(str(root / rel)))
    return SearchCatalog(settings, root, songs, ids, outside)


# seeds of `collap synth` songs by style (plan_song(seed).style; 30-40 s songs)
STYLE_SEEDS = {"rock": (1, 3, 4, 8), "electronic": (7, 13, 16), "ambient": (0, 2, 6)}


@dataclass(frozen=True)
class StyleCatalog:
    """An indexed catalog of synthetic songs in a few styles, each file tagged with its style's
    artists (two per style), for recommendation quality."""

    settings: Settings
    ids: dict[str, list[str]]  # style -> track ids, in STYLE_SEEDS order
    style: dict[str, str]  # track id -> style


@pytest.fixture(scope="session")
def compact_model():  # type: ignore[no-untyped-def]
    """collap-mini, on the CPU: the recommendation quality tests' model. Their thresholds were
    measured with it, trained on TimGM6mb songs like the style catalog's; the default
    collap-tagger moved the steered ambient tracks by one rank there, not two (2026-12-02)."""
    from collap_model import load_model

    return load_model("collap-mini", device="cpu")


@pytest.fixture(scope="session")
def style_catalog(tmp_path_factory: pytest.TempPathFactory, compact_model) -> StyleCatalog:  # type: ignore[no-untyped-def]
    from collap_model.synth.dataset import generate_dataset, read_manifest

    if shutil.which("fluidsynth") is None or not TIMGM.exists():
        pytest.skip("needs fluidsynth and the TimGM6mb soundfont (apt-get install both)")
    base = tmp_path_factory.mktemp("styles")
    ids: dict[str, list[str]] = {}
    style: dict[str, str] = {}
    for name, seeds in STYLE_SEEDS.items():
        for k, seed in enumerate(seeds):
            generate_dataset(base / "synth" / str(seed), 1, seed=seed, soundfont=TIMGM,
                             min_seconds=30, max_seconds=40)  # fmt: skip
            (row,) = read_manifest(base / "synth" / str(seed) / "manifest.jsonl")
            assert row.model_extra and row.model_extra["style"] == name, (seed, row.model_extra)
            tags = {"title": f"{name} {seed}", "artist": f"{name} band {k % 2}"}
            path = write_audio(base / "catalog" / f"{name}-{seed}.flac", 0, rate=44_100,
                               samples=_samples(row.audio_path, 44_100), tags=tags)  # fmt: skip
            pid = point_id(content_hash(str(path)))
            ids.setdefault(name, []).append(pid)
            style[pid] = name
    settings = Settings(data_dir=base / "data", decode_workers=1, _env_file=None)  # type: ignore[call-arg]
    service.index(settings, [base / "catalog"], model=ModelHandle(settings, model=compact_model))
    return StyleCatalog(settings, ids, style)


@pytest.fixture(scope="session")
def tagged_model():  # type: ignore[no-untyped-def]
    """collap-tagger (musicnn inside the clip encoder), on the CPU: a model whose tracks get
    tags, whatever the default model is."""
    from collap_model import load_model

    return load_model("collap-tagger", device="cpu")


@dataclass(frozen=True)
class TaggedCatalog:
    """A catalog indexed with collap-tagger: an ambient song (strings, celesta, cello), an
    electronic one (synths) and a plain chord file."""

    settings: Settings
    root: Path
    ids: dict[str, str]  # "ambient", "electronic", "chords" -> track id


@pytest.fixture(scope="session")
def tagged_catalog(tmp_path_factory: pytest.TempPathFactory, tagged_model) -> TaggedCatalog:  # type: ignore[no-untyped-def]
    from collap_model.synth.dataset import generate_dataset, read_manifest

    if shutil.which("fluidsynth") is None or not TIMGM.exists():
        pytest.skip("needs fluidsynth and the TimGM6mb soundfont (apt-get install both)")
    base = tmp_path_factory.mktemp("tagged")
    root = base / "catalog"
    ids: dict[str, str] = {}
    for name, seed in (("ambient", STYLE_SEEDS["ambient"][0]),
                       ("electronic", STYLE_SEEDS["electronic"][0])):  # fmt: skip
        generate_dataset(base / "synth" / name, 1, seed=seed, soundfont=TIMGM,
                         min_seconds=30, max_seconds=40)  # fmt: skip
        (row,) = read_manifest(base / "synth" / name / "manifest.jsonl")
        assert row.model_extra and row.model_extra["style"] == name, (seed, row.model_extra)
        path = write_audio(root / f"{name}.flac", 0, rate=44_100,
                           samples=_samples(row.audio_path, 44_100))  # fmt: skip
        ids[name] = point_id(content_hash(str(path)))
    chords = write_audio(root / "chords.flac", 12.0, seed=3)
    ids["chords"] = point_id(content_hash(str(chords)))
    settings = Settings(data_dir=base / "data", decode_workers=1, model="collap-tagger",  # type: ignore[call-arg]
                        _env_file=None)  # fmt: skip
    service.index(settings, [root], model=ModelHandle(settings, model=tagged_model))
    return TaggedCatalog(settings, root, ids)
