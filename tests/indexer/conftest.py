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
