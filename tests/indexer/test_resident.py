"""The resident index (indexer/resident.py): the same hits as the store path, a current copy
after writes, a bounded size. Over the indexed search catalog (read-only) and over a small
Qdrant Edge store of random tracks written here."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from collap_model.model import CoLLAP
from indexer import service
from indexer.owner import SharedStore
from indexer.resident import ResidentIndex, int8_dots, quantize
from indexer.search import Hit, Page, Searcher, TrackNotFound
from indexer.store.base import (
    CLIP_VECTORS,
    TrackFilter,
    TrackPoint,
    collection_name,
    encode_clips,
)
from indexer.store.edge import EdgeStore
from tests.indexer.conftest import SearchCatalog

# Chamfer similarities from int8 clips are within ~1e-3 of those from the float16 ones
SCORE_TOLERANCE = 5e-3


@pytest.fixture
def both(search_catalog: SearchCatalog, model: CoLLAP) -> Iterator[tuple[Searcher, Searcher]]:
    """(the store path, the resident path) over the same open store."""
    with service.session(search_catalog.settings) as s:
        resident = Searcher(s.store, model)
        assert resident.keep_resident(64 << 20) is not None
        yield Searcher(s.store, model), resident


def same_ranking(got: list[Hit], want: list[Hit]) -> None:
    """The same hits in the same order, except that two whose scores lie within the int8
    rounding of each other may change places (at the page's end, one may give way to the next
    hit, as close)."""
    assert len(got) == len(want)
    wanted = {h.id: h for h in want}
    for g, w in zip(got, want, strict=True):
        assert g.score == pytest.approx(w.score, abs=SCORE_TOLERANCE)
        if g.id != w.id:
            near = wanted[g.id].score if g.id in wanted else want[-1].score
            assert abs(g.score - near) <= 2 * SCORE_TOLERANCE, (g.id, g.score, near)


def same(got: list[Hit], want: list[Hit]) -> None:
    same_ranking(got, want)
    wanted = {h.id: h for h in want}
    for g in got:
        w = wanted.get(g.id)
        if w is None:
            continue  # a near tie at the page's end (same_ranking)
        assert g.score == pytest.approx(w.score, abs=SCORE_TOLERANCE)
        assert g.first_stage == pytest.approx(w.first_stage, abs=1e-2)
        assert (g.path, g.title, g.artist, g.files, g.tags) == (
            w.path,
            w.title,
            w.artist,
            w.files,
            w.tags,
        )
        assert g.segments and w.segments


def test_int8_products_stand_for_the_float_ones() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((40, 256)).astype(np.float32)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b = a[:7] + 0.1 * rng.standard_normal((7, 256)).astype(np.float32)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    (qa, sa), (qb, sb) = quantize(a), quantize(b)
    assert qa.dtype == np.int8 and np.abs(qa).max() == 127
    assert np.abs(int8_dots(qa, sa, qb, sb) - a @ b.T).max() < SCORE_TOLERANCE


def test_similar_gives_the_store_paths_hits(
    both: tuple[Searcher, Searcher], search_catalog: SearchCatalog
) -> None:
    store, resident = both
    ids = search_catalog.ids
    pages = [
        Page(8),
        Page(3, offset=2),
        Page(5, per_artist=1),
        Page(6, exclude=(ids["dup3"], ids["song0"])),
    ]
    for seed in (ids["song3"], ids["ann"], ids["song6"]):
        for page in pages:
            same(resident.similar(seed, page=page), store.similar(seed, page=page))
        explained = resident.similar(seed, limit=3, explain=True)
        assert all(
            h.clips and len(h.clips) == len(store.locate(h.id, "x").clips) for h in explained
        )
    seeds = [ids["song3"], ids["dup3"], ids["bob"]]
    for got, want in zip(
        resident.similar_many(seeds, page=Page(4)),
        store.similar_many(seeds, page=Page(4)),
        strict=True,
    ):
        same(got, want)
    with pytest.raises(TrackNotFound):
        resident.similar(str(uuid.UUID(int=1)))


def test_filters_give_the_store_paths_hits(
    both: tuple[Searcher, Searcher], search_catalog: SearchCatalog
) -> None:
    """A filter sends the first stage to the store (by song vector, as before); the re-rank
    still runs over the copy."""
    store, resident = both
    ids = search_catalog.ids
    for where in (
        TrackFilter(artist="Ann"),
        TrackFilter(duration_min=20.0),
        TrackFilter(year_max=2000),
    ):
        same(resident.similar(ids["song3"], where=where), store.similar(ids["song3"], where=where))
        liked = [ids["song1"], ids["song4"]]
        same(resident.recommend(liked, where=where), store.recommend(liked, where=where))
    assert resident.similar(ids["song3"], where=TrackFilter(genre="none")) == []


def test_recommend_gives_the_store_paths_hits(
    both: tuple[Searcher, Searcher], search_catalog: SearchCatalog
) -> None:
    store, resident = both
    ids = search_catalog.ids
    asked = [
        ([ids["song3"]], [], Page(6)),
        ([ids["song1"], ids["song4"]], [ids["song7"]], Page(8)),
        ([ids["song1"], ids["song4"]], [ids["song7"]], Page(3, offset=3)),
        (
            [ids["song2"], ids["song5"]],
            [ids["song0"]],
            Page(5, per_artist=1, exclude=(ids["dup3"],)),
        ),
    ]
    for liked, disliked, page in asked:
        same(
            resident.recommend(liked, disliked, page=page),
            store.recommend(liked, disliked, page=page),
        )
    text = "fast loud drums from the start"
    got = resident.recommend([ids["song2"]], query=text, page=Page(6))
    want = store.recommend([ids["song2"]], query=text, page=Page(6))
    same_ranking(got, want)


# ---- a store written here: the copy follows its writes ----------------------------------------
def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    result: np.ndarray = x / np.linalg.norm(x, axis=1, keepdims=True)
    return result


def _point(j: int, clips: np.ndarray, first_stage_dim: int) -> TrackPoint:
    song = clips.mean(axis=0)
    song /= np.linalg.norm(song)
    times = [[5.0 * k, 5.0 * k + 10.0] for k in range(clips.shape[0])]
    payload = {
        "path": f"/catalog/{j}.flac", "title": f"track {j}", "artist": f"artist {j % 3}",
        "clip_times": times, "n_clips": clips.shape[0], CLIP_VECTORS: encode_clips(clips),
    }  # fmt: skip
    first = np.zeros(first_stage_dim, np.float32).tolist()
    return TrackPoint(str(uuid.UUID(int=j)), song.tolist(), clips.tolist(), first, payload)


@pytest.fixture
def written(tmp_path: Path, model: CoLLAP) -> Iterator[tuple[EdgeStore, str, list[np.ndarray]]]:
    dim = model.config.embed_dim
    rng = np.random.default_rng(1)
    tracks = [_unit(rng, int(rng.integers(2, 7)), dim) for _ in range(30)]
    store = EdgeStore(tmp_path / "qdrant", "tracks")
    name = collection_name("tracks", model.fingerprint)
    store.ensure_collection(name, dim, model.config.first_stage_dim)
    store.upsert(name, [_point(j, c, model.config.first_stage_dim) for j, c in enumerate(tracks)])
    store.switch_alias(name)
    try:
        yield store, name, tracks
    finally:
        store.close()


def test_the_copy_sees_tracks_added_and_deleted_after_it_was_built(
    written: tuple[EdgeStore, str, list[np.ndarray]], model: CoLLAP
) -> None:
    store, name, tracks = written
    searcher = Searcher(store, model)
    first = searcher.keep_resident(16 << 20)
    assert first is not None and len(first) == 30
    seed = str(uuid.UUID(int=4))
    assert str(uuid.UUID(int=100)) not in {h.id for h in searcher.similar(seed, limit=5)}
    # a near copy of the seed, written through the same store: the best hit from now on
    copy = tracks[4] + 0.01 * np.random.default_rng(2).standard_normal(tracks[4].shape)
    copy /= np.linalg.norm(copy, axis=1, keepdims=True)
    store.upsert(name, [_point(100, copy.astype(np.float32), model.config.first_stage_dim)])
    hits = searcher.similar(seed, limit=5)
    assert hits[0].id == str(uuid.UUID(int=100)) and hits[0].score > 0.98
    assert searcher._resident is not None and len(searcher._resident) == 31
    assert searcher.recommend([seed], page=Page(1))[0].id == str(uuid.UUID(int=100))
    store.delete(name, [str(uuid.UUID(int=100)), str(uuid.UUID(int=7))])
    after = searcher.similar(seed, limit=40)
    assert len(after) == 28 and not {str(uuid.UUID(int=100)), str(uuid.UUID(int=7))} & {
        h.id for h in after
    }
    with pytest.raises(TrackNotFound):
        searcher.similar(str(uuid.UUID(int=7)))


def test_the_copy_is_bounded_and_a_catalog_over_the_bound_reads_the_store(
    written: tuple[EdgeStore, str, list[np.ndarray]], model: CoLLAP
) -> None:
    store, name, tracks = written
    index = ResidentIndex.build(store, name, 0, model.config.embed_dim, 1 << 30)
    assert index is not None
    clips = sum(c.shape[0] for c in tracks)
    dim = model.config.embed_dim
    # int8 clips with a scale and times each; per track a float16 song, an int8 centroid
    assert index.nbytes < clips * (dim + 12) + len(tracks) * (3 * dim + 220) + 8
    assert ResidentIndex.build(store, name, 0, dim, index.nbytes) is not None
    assert ResidentIndex.build(store, name, 0, dim, index.nbytes - 1) is None
    bounded = Searcher(store, model)
    assert bounded.keep_resident(index.nbytes - 1) is None
    seed = str(uuid.UUID(int=3))
    want = Searcher(store, model).similar(seed, limit=8)
    assert [h.id for h in bounded.similar(seed, limit=8)] == [h.id for h in want]
    assert bounded._resident is None


def test_the_copy_waits_while_a_background_job_writes_and_is_rebuilt_after(
    written: tuple[EdgeStore, str, list[np.ndarray]], model: CoLLAP
) -> None:
    """A server's indexer writes batch after batch: requests read the store meanwhile rather
    than rebuild the copy per batch, and the indexer's thread rebuilds it once at the end."""
    store, name, tracks = written
    shared = SharedStore(store)
    searcher = Searcher(shared, model)  # type: ignore[arg-type]
    first = searcher.keep_resident(16 << 20)
    assert first is not None and len(first) == 30
    searcher.writing(True)
    seed, new = str(uuid.UUID(int=4)), str(uuid.UUID(int=100))
    copy = tracks[4] + 0.01 * np.random.default_rng(2).standard_normal(tracks[4].shape)
    copy /= np.linalg.norm(copy, axis=1, keepdims=True)
    shared.upsert(name, [_point(100, copy.astype(np.float32), model.config.first_stage_dim)])
    assert searcher.similar(seed, limit=5)[0].id == new  # the store's answer, current
    assert searcher.recommend([seed], page=Page(1))[0].id == new
    assert searcher._resident is first  # no request rebuilt it
    searcher.writing(False)
    rebuilt = searcher._resident
    assert rebuilt is not None and rebuilt is not first and len(rebuilt) == 31
    assert rebuilt.generation == shared.generation(name)
    assert searcher.similar(seed, limit=5)[0].id == new
    assert searcher._resident is rebuilt
    searcher.writing(False)  # nothing changed since: the copy is kept
    assert searcher._resident is rebuilt


def test_a_scan_of_a_shared_store_lets_other_calls_in_between_its_tracks(
    written: tuple[EdgeStore, str, list[np.ndarray]],
) -> None:
    store, name, _ = written
    shared = SharedStore(store)
    scan = shared.scan(name, ("artist",))
    first = next(scan)
    counted: list[int] = []
    other = threading.Thread(target=lambda: counted.append(shared.count(name)))
    other.start()
    other.join(timeout=10)
    assert counted == [30]  # answered while the scan was half read
    assert len({first.id, *(t.id for t in scan)}) == 30
