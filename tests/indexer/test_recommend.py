"""Recommendations (liked and disliked tracks, a steering text) and paged similar tracks, over
the indexed test catalogs (tests/indexer/conftest.py builds them; the style catalog with
collap-mini)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from collap_model.model import CoLLAP
from indexer import search as search_module
from indexer import service
from indexer.search import (
    NEGATIVE_WEIGHT,
    STEER_WEIGHT,
    Hit,
    Page,
    QueryError,
    Searcher,
    TrackNotFound,
    chamfer,
)
from indexer.store.base import Candidate, TrackFilter
from tests.indexer.conftest import SearchCatalog, StyleCatalog
from tests.indexer.test_resident import SCORE_TOLERANCE, same_ranking
from tests.indexer.test_search import cli

UNKNOWN = "00000000-0000-0000-0000-000000000000"


@pytest.fixture(params=["store", "resident"])
def searcher(
    request: pytest.FixtureRequest, search_catalog: SearchCatalog, model: CoLLAP
) -> Iterator[Searcher]:
    """Every test below runs twice: ranking from the store, and from the resident index that
    `indexer serve` keeps (indexer/resident.py)."""
    with service.session(search_catalog.settings) as s:
        found = Searcher(s.store, model)
        if request.param == "resident":
            assert found.keep_resident(64 << 20) is not None
        yield found


@pytest.fixture
def styles(style_catalog: StyleCatalog, compact_model: CoLLAP) -> Iterator[Searcher]:
    with service.session(style_catalog.settings) as s:
        yield Searcher(s.store, compact_model)


# ---- the re-rank's parts --------------------------------------------------------------------
def _unit(rng: np.random.Generator, n: int, dim: int = 16) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("pairs_per_block", [1 << 24, 50])
def test_chamfer_is_the_symmetric_mean_of_best_clip_matches(
    pairs_per_block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One product per block of seeds gives what a loop over (seed, candidate) pairs gives,
    also when the seeds are split into several blocks."""
    monkeypatch.setattr(search_module, "CLIP_PAIRS_PER_BLOCK", pairs_per_block)
    rng = np.random.default_rng(0)
    seeds = [_unit(rng, n) for n in (3, 1, 7, 2)]
    cands = [_unit(rng, n) for n in (4, 1, 6)]
    scores, best = chamfer(seeds, cands)
    assert scores.shape == (4, 3) and best.shape == (4, 11)
    for s, seed in enumerate(seeds):
        for c, cand in enumerate(cands):
            sim = seed @ cand.T
            want = 0.5 * (sim.max(axis=1).mean() + sim.max(axis=0).mean())
            assert scores[s, c] == pytest.approx(want, abs=1e-5)
        assert np.allclose(best[s], (seed @ np.concatenate(cands).T).max(axis=0), atol=1e-6)


def test_a_page_skips_offset_hits_and_keeps_per_artist_ones() -> None:
    artists = ["A", "a ", "B", None, "A", "C", "", "B", "D"]
    ranked = [Candidate(str(i), 0.0, {"artist": a}) for i, a in enumerate(artists)]
    assert Page(3).select(ranked) == [0, 1, 2]
    assert Page(3, offset=2).select(ranked) == [2, 3, 4]
    # artists compare without case and surrounding blanks; untagged tracks are not limited
    assert Page(4, per_artist=1).select(ranked) == [0, 2, 3, 5]
    assert Page(4, offset=3, per_artist=1).select(ranked) == [5, 6, 8]
    assert Page(3, per_artist=2).select(ranked) == [0, 1, 2]
    for bad in (Page(0), Page(1, offset=-1), Page(1, per_artist=0), Page(1, exclude=("x",))):
        with pytest.raises(QueryError):
            bad.check()


# ---- recommend --------------------------------------------------------------------------------
def test_one_liked_track_recommends_what_similar_finds(
    searcher: Searcher, search_catalog: SearchCatalog
) -> None:
    song3 = search_catalog.ids["song3"]
    recommended = searcher.recommend([song3], page=Page(6))
    similar = searcher.similar(song3, limit=6)
    assert [(h.id, h.score) for h in recommended] == [(h.id, h.score) for h in similar]
    assert recommended[0].id == search_catalog.ids["dup3"] and recommended[0].segments


def test_hits_never_hold_a_liked_disliked_or_excluded_track(
    searcher: Searcher, search_catalog: SearchCatalog
) -> None:
    ids = search_catalog.ids
    named = {ids["song3"], ids["song0"], ids["song5"], ids["dup3"]}
    hits = searcher.recommend(
        [ids["song3"], ids["song0"], ids["song3"]],  # a repeated id counts once
        [ids["song5"]],
        page=Page(20, exclude=(ids["dup3"],)),
    )
    assert len(hits) == 11 - 4 and not named & {h.id for h in hits}
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)


def test_a_disliked_track_takes_half_its_similarity_off(
    searcher: Searcher, search_catalog: SearchCatalog
) -> None:
    """score(liked, disliked) = Chamfer to the liked one - NEGATIVE_WEIGHT x Chamfer to the
    disliked one: the tracks most like the disliked one fall."""
    ids = search_catalog.ids
    liked, disliked = ids["song1"], ids["song6"]
    alone = {h.id: h.score for h in searcher.recommend([liked], page=Page(20))}
    to_disliked = {h.id: h.score for h in searcher.similar(disliked, limit=20)}
    pushed = searcher.recommend([liked], [disliked], page=Page(20))
    assert len(pushed) == 9
    for h in pushed:
        want = alone[h.id] - NEGATIVE_WEIGHT * to_disliked[h.id]
        assert h.score == pytest.approx(want, abs=2e-5), h.id


def test_a_steering_text_adds_its_fusion_score(
    searcher: Searcher, search_catalog: SearchCatalog, request: pytest.FixtureRequest
) -> None:
    # the resident copy scores the steering text against its int8 clips, `search` against the
    # stored ones: they agree to the int8 rounding (on an AMD EPYC host 1.4e-3 apart)
    resident = request.node.callspec.params["searcher"] == "resident"
    tolerance = SCORE_TOLERANCE if resident else 1e-3
    ids = search_catalog.ids
    text = "fast loud drums from the start"
    alone = {h.id: h.score for h in searcher.recommend([ids["song2"]], page=Page(20))}
    fusion = {h.id: h.score for h in searcher.search(text, limit=20)}
    steered = searcher.recommend([ids["song2"]], query=text, page=Page(20))
    assert len(steered) == 10
    for h in steered:
        want = alone[h.id] + STEER_WEIGHT * fusion[h.id]
        assert h.score == pytest.approx(want, abs=tolerance)


def test_recommend_filters_and_pages(searcher: Searcher, search_catalog: SearchCatalog) -> None:
    ids = search_catalog.ids
    liked = [ids["song1"], ids["song4"]]
    only_ann = searcher.recommend(liked, where=TrackFilter(artist="Ann"))
    assert [h.id for h in only_ann] == [ids["ann"]]
    whole = [h.id for h in searcher.recommend(liked, [ids["song7"]], page=Page(8))]
    for offset, limit in ((0, 3), (2, 3), (6, 5)):
        part = searcher.recommend(liked, [ids["song7"]], page=Page(limit, offset=offset))
        assert [h.id for h in part] == whole[offset : offset + limit]


def test_recommend_refuses_bad_requests(searcher: Searcher, search_catalog: SearchCatalog) -> None:
    ids = search_catalog.ids
    with pytest.raises(QueryError, match="at least one"):
        searcher.recommend([])
    with pytest.raises(TrackNotFound, match=UNKNOWN):
        searcher.recommend([ids["song1"], UNKNOWN])
    with pytest.raises(TrackNotFound):
        searcher.recommend([ids["song1"]], [UNKNOWN])
    with pytest.raises(QueryError, match="not a track id"):
        searcher.recommend(["song1"])
    with pytest.raises(QueryError, match="at most 50"):
        searcher.recommend([str(__import__("uuid").UUID(int=i)) for i in range(51)])
    with pytest.raises(QueryError, match="empty"):
        searcher.recommend([ids["song1"]], query="  ")


# ---- similar: pages, exclusions, batches ------------------------------------------------------
def test_similar_pages_and_excludes(searcher: Searcher, search_catalog: SearchCatalog) -> None:
    ids = search_catalog.ids
    whole = [h.id for h in searcher.similar(ids["song3"], limit=8)]
    assert whole[0] == ids["dup3"]
    assert [h.id for h in searcher.similar(ids["song3"], page=Page(3, offset=4))] == whole[4:7]
    without = searcher.similar(ids["song3"], page=Page(7, exclude=(ids["dup3"],)))
    assert [h.id for h in without] == whole[1:8]


def test_batch_similar_answers_each_seed_as_similar_does(
    searcher: Searcher, search_catalog: SearchCatalog
) -> None:
    ids = search_catalog.ids
    seeds = [ids["song3"], ids["dup3"], ids["ann"], ids["song3"]]
    batch = searcher.similar_many(seeds, page=Page(4, exclude=(ids["song0"],)))
    assert len(batch) == 4 and batch[0] == batch[3]
    for seed, hits in zip(seeds, batch, strict=True):
        alone = searcher.similar(seed, page=Page(4, exclude=(ids["song0"],)))
        assert [(h.id, h.score) for h in hits] == [(h.id, h.score) for h in alone]
        assert seed not in {h.id for h in hits} and ids["song0"] not in {h.id for h in hits}
    # a seed may be in another seed's list (only its own is excluded)
    assert batch[0][0].id == ids["dup3"] and batch[1][0].id == ids["song3"]
    with pytest.raises(TrackNotFound, match=UNKNOWN):
        searcher.similar_many([ids["song3"], UNKNOWN])


# ---- quality: styles (the target) -----------------------------------------------------
def test_liked_style_wins_over_the_disliked_one(
    styles: Searcher, style_catalog: StyleCatalog
) -> None:
    """Positives from one synthetic style and a negative from another: the top hits are the
    remaining tracks of the positives' style."""
    rock, electronic = style_catalog.ids["rock"], style_catalog.ids["electronic"]
    hits = styles.recommend(rock[:2], [electronic[0]], page=Page(5))
    assert [style_catalog.style[h.id] for h in hits[:2]] == ["rock", "rock"]
    hits = styles.recommend(electronic[:2], [rock[0]], page=Page(5))
    assert style_catalog.style[hits[0].id] == "electronic"


def test_a_steering_text_moves_the_hits(styles: Searcher, style_catalog: StyleCatalog) -> None:
    """Liked rock, steered towards ambient: the ambient tracks climb, the hits match the text
    better, and the liked style stays on top."""
    text = "slow ambient pads, calm and quiet"
    rock = style_catalog.ids["rock"]
    plain = styles.recommend(rock[:1], page=Page(9))
    steered = styles.recommend(rock[:1], query=text, page=Page(9))
    fusion = {h.id: h.score for h in styles.search(text, limit=10)}

    def ranks(hits: list[search_module.Hit], style: str) -> list[int]:
        return [i for i, h in enumerate(hits) if style_catalog.style[h.id] == style]

    assert sum(ranks(steered, "ambient")) <= sum(ranks(plain, "ambient")) - 2
    top = 4
    assert (
        np.mean([fusion[h.id] for h in steered[:top]])
        > np.mean([fusion[h.id] for h in plain[:top]]) + 0.05
    )
    assert style_catalog.style[steered[0].id] == "rock"


def test_per_artist_keeps_one_track_of_each_artist(
    styles: Searcher, style_catalog: StyleCatalog
) -> None:
    rock = style_catalog.ids["rock"]
    every = styles.recommend(rock[:1], page=Page(9))
    one_each = styles.recommend(rock[:1], page=Page(9, per_artist=1))
    artists = [h.artist for h in one_each]
    assert len(artists) == len(set(artists)) == 6  # three styles, two artists each
    seen: set[str | None] = set()
    firsts = [h.id for h in every if not (h.artist in seen or seen.add(h.artist))]
    assert [h.id for h in one_each] == firsts


# ---- the command line -------------------------------------------------------------------------
def test_cli_recommend(search_catalog: SearchCatalog) -> None:
    ids = search_catalog.ids
    out = cli(search_catalog.settings, "recommend", ids["song3"], ids["song0"], "--not",
              ids["song5"], "--query", "soft piano", "--limit", "4", "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    hits = json.loads(out.stdout)
    assert len(hits) == 4 and not {ids["song3"], ids["song0"], ids["song5"]} & {
        h["id"] for h in hits
    }
    table = cli(search_catalog.settings, "recommend", ids["song3"], "--limit", "1")
    assert table.returncode == 0 and "copy-of-3.mp3" in table.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["recommend", "song3"], "'song3' is not a track id"),
        (["recommend", UNKNOWN], f"no track with id {UNKNOWN}"),
        (["recommend", UNKNOWN, "--limit", "0"], "--limit must be 1..100"),
        (["recommend", UNKNOWN, "--query", " "], "--query is empty"),
        (["recommend", UNKNOWN, "--not", "x"], "'x' is not a track id"),
    ],
)
def test_cli_recommend_errors_are_one_line(
    search_catalog: SearchCatalog, args: list[str], message: str
) -> None:
    out = cli(search_catalog.settings, *args)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and message in out.stderr and "Traceback" not in out.stderr


# ---- the server store -------------------------------------------------------------------------
@pytest.fixture
def server_searcher(
    search_catalog: SearchCatalog, model: CoLLAP, tmp_path: Path
) -> Iterator[Searcher]:
    """The catalog's points copied into qdrant-client's local mode (standing in for a Qdrant
    server), under the same collection and alias."""
    from qdrant_client import QdrantClient

    from indexer.store.base import FIRST_STAGE, SONG, TrackPoint
    from indexer.store.edge import EdgeStore
    from indexer.store.server import ServerStore

    with service.session(search_catalog.settings) as s:
        assert isinstance(s.store, EdgeStore)
        target = s.store.alias_target()
        assert target is not None
        ids = [r.id for r in s.store.records(target)]
        recs = s.store._shard(target).retrieve(ids, True, True)
        points = [
            TrackPoint(str(r.id), v[SONG], v["clips"], v[FIRST_STAGE], dict(r.payload or {}))
            for r in recs
            for v in [dict(r.vector or {})]  # type: ignore[arg-type]
        ]
    server = ServerStore(QdrantClient(path=str(tmp_path / "local")), s.store.alias)
    try:
        server.ensure_collection(target, model.config.embed_dim, len(points[0].first_stage))
        server.upsert(target, points)
        server.switch_alias(target)
        yield Searcher(server, model)
    finally:
        server.close()


def test_the_server_store_recommends_as_the_embedded_one(
    server_searcher: Searcher,
    searcher: Searcher,
    search_catalog: SearchCatalog,
    request: pytest.FixtureRequest,
) -> None:
    resident = request.node.callspec.params["searcher"] == "resident"

    def agree(embedded: list[Hit], server: list[Hit]) -> None:
        if resident:
            # int8 clips (indexer/resident.py): two hits within their rounding may swap
            same_ranking(embedded, server)
            return
        assert [h.id for h in embedded] == [h.id for h in server]
        # the embedded store keeps the first stage in float16, local mode in float32
        assert [h.score for h in embedded] == pytest.approx([h.score for h in server], abs=2e-3)

    ids = search_catalog.ids
    asks = [
        {"positive": [ids["song3"], ids["song1"]], "negative": [ids["song6"]]},
        {"positive": [ids["song2"]], "query": "fast loud drums from the start",
         "page": Page(4, offset=1, exclude=(ids["song0"],))},
    ]  # fmt: skip
    for ask in asks:
        agree(searcher.recommend(**ask), server_searcher.recommend(**ask))  # type: ignore[arg-type]
    seeds = [ids["song3"], ids["ann"]]
    served = server_searcher.similar_many(seeds, page=Page(5, per_artist=1))
    embedded = searcher.similar_many(seeds, page=Page(5, per_artist=1))
    assert len(served) == len(embedded) == len(seeds)
    for mine, theirs in zip(embedded, served, strict=True):
        agree(mine, theirs)
