"""Tags as facets: a tagged model's tags stored per track and per clip, shown, and filtered on
(indexer/tags.py), over a catalog indexed with collap-tagger."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from collap_model.model import CoLLAP
from collap_model.tagger.labels import LABELS
from indexer import service
from indexer.search import QueryError, Searcher, parse_filters
from indexer.store.base import PAYLOAD_INDEXES, FieldType, TrackFilter
from indexer.store.edge import EdgeStore
from indexer.tags import MAX_TAGS, TAG_THRESHOLD, TIMELINE_TAGS, Facets, facet, tag_value
from tests.indexer.conftest import TaggedCatalog

NAMES = LABELS["MTT_musicnn"] + LABELS["MSD_musicnn"]


# ---- facets from clip probabilities -----------------------------------------------------------
def test_facets_merge_the_vocabularies_and_read_as_typed() -> None:
    f = Facets(NAMES)
    assert len(NAMES) == 100 and len(f.names) == len(set(f.names)) < 100
    assert {"hip hop", "2000s", "mellow", "r&b", "female vocal", "no vocals"} <= set(f.names)
    assert facet("Progressive rock") == "progressive rock"
    guitar = [i for i, n in enumerate(NAMES) if n == "guitar"]
    assert len(guitar) == 2  # MTT and MSD both name it
    probs = np.zeros((2, 100), dtype=np.float32)
    probs[0, guitar[0]], probs[0, guitar[1]] = 0.2, 0.6
    probs[1, guitar[0]] = 0.4
    clips = f.of_clips(probs)
    assert clips[:, f.names.index("guitar")].tolist() == pytest.approx([0.6, 0.4])


def test_payload_keeps_the_best_tags_above_the_threshold() -> None:
    f = Facets(NAMES)
    rng = np.random.default_rng(0)
    probs = rng.uniform(0, 0.05, (4, 100)).astype(np.float32)
    piano, jazz, cello = NAMES.index("piano"), NAMES.index("jazz"), NAMES.index("cello")
    probs[:, piano] = [0.9, 0.8, 0.7, 0.6]  # mean 0.75
    probs[:, jazz] = [0.0, 0.0, 0.2, 0.4]  # mean 0.15: kept, above the threshold
    probs[3, cello] = 0.3  # mean 0.075: only in its clip's timeline
    p = f.payload(probs)
    assert p["tags"] == ["piano", "jazz"] and p["tag_scores"] == [0.75, 0.15]
    timeline = p["tag_timeline"]
    assert timeline["names"] == ["piano", "jazz", "cello"]
    assert timeline["clips"] == [[[0, 0.9]], [[0, 0.8]], [[0, 0.7], [1, 0.2]],
                                 [[0, 0.6], [1, 0.4], [2, 0.3]]]  # fmt: skip
    everything = f.payload(np.full((3, 100), 0.5, dtype=np.float32))
    assert len(everything["tags"]) == MAX_TAGS
    assert all(len(c) == TIMELINE_TAGS for c in everything["tag_timeline"]["clips"])
    silent = f.payload(np.zeros((2, 100), dtype=np.float32))
    assert silent["tags"] == silent["tag_scores"] == []
    assert silent["tag_timeline"] == {"names": [], "clips": [[], []]}


# ---- tag values in filters --------------------------------------------------------------------
def test_tag_values_are_normalised_or_refused() -> None:
    assert tag_value("  Female   Vocal ") == "female vocal"
    for bad in ("", "   ", "x" * 65, "pi\x1bano", "jazz\n", "a\u200bb", "\ud800"):
        with pytest.raises(ValueError):
            tag_value(bad)
    assert parse_filters(["tag=Piano", "tag=jazz", "tag=piano"]).tags == ("piano", "jazz")
    for bad in ("tag=", "tag= ", f"tag={'x' * 65}", "tag=pi\x07ano"):
        with pytest.raises(QueryError, match="bad filter"):
            parse_filters([bad])
    with pytest.raises(ValueError):
        TrackFilter(tags=("ok", "bad\x00"))  # whatever builds a filter
    assert TrackFilter(tags=()).is_empty() and not TrackFilter(tags=("piano",)).is_empty()
    assert TrackFilter(tags=("piano", "jazz")).matches() == [("tags", "piano"), ("tags", "jazz")]


def test_the_cli_refuses_a_bad_tag_in_one_line(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "INDEXER_DATA_DIR": str(tmp_path / "data")}
    for value in ("x" * 65, "pi\x1b[2Jano"):
        out = subprocess.run(
            [sys.executable, "-m", "indexer.cli", "query", "music", "--filter", f"tag={value}"],
            capture_output=True, text=True, env=env, cwd=Path(__file__).parents[2],
        )  # fmt: skip
        assert out.returncode == 2 and out.stdout == ""
        lines = out.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("indexer: error: bad filter"), out.stderr
        assert "\x1b" not in out.stderr


def test_the_tag_field_has_a_keyword_index() -> None:
    # both stores create every PAYLOAD_INDEXES entry with the collection
    assert PAYLOAD_INDEXES["tags"] is FieldType.KEYWORD


# ---- an index built with a tagged model -------------------------------------------------------
@pytest.fixture
def searcher(tagged_catalog: TaggedCatalog, tagged_model: CoLLAP) -> Iterator[Searcher]:
    with service.session(tagged_catalog.settings) as s:
        yield Searcher(s.store, tagged_model)


def test_every_track_gets_tags_and_a_timeline(
    searcher: Searcher, tagged_catalog: TaggedCatalog
) -> None:
    ids = tagged_catalog.ids
    tracks = {name: searcher.track(tid) for name, tid in ids.items()}
    for name, t in tracks.items():
        scores = list(t["tags"].values())
        assert t["tags"] and len(scores) <= MAX_TAGS, name
        assert scores == sorted(scores, reverse=True) and min(scores) >= TAG_THRESHOLD
        timeline = t["tag_timeline"]
        assert len(timeline) == t["n_clips"] == len(t["clip_times"])
        assert [[c["start"], c["end"]] for c in timeline] == t["clip_times"]
        assert all(len(c["tags"]) <= TIMELINE_TAGS for c in timeline)
        assert "tag_scores" not in t
    # what musicnn hears in them (measured: electronic, synth, techno lead the electronic song;
    # classical, violin, strings the ambient one with strings, cello and celesta)
    assert {"electronic", "synth", "techno"} & set(list(tracks["electronic"]["tags"])[:3])
    assert {"classical", "violin", "strings", "cello"} & set(list(tracks["ambient"]["tags"])[:3])
    store = searcher.store
    assert isinstance(store, EdgeStore)
    info = store._shard(searcher.collection()).info()
    assert "tags" in info.payload_schema  # the embedded store's keyword index


def _ids(hits: list) -> set[str]:  # type: ignore[type-arg]
    return {h.id for h in hits}


def test_tag_filters_keep_and_exclude(searcher: Searcher, tagged_catalog: TaggedCatalog) -> None:
    ids = tagged_catalog.ids
    tags = {name: searcher.track(tid)["tags"] for name, tid in ids.items()}
    only = next(t for t in tags["electronic"] if t not in tags["ambient"])
    shared = next(t for t in tags["electronic"] if t in tags["ambient"])
    everyone = set(ids.values())
    found = _ids(searcher.search("music", limit=10, where=TrackFilter(tags=(only,))))
    assert ids["electronic"] in found and ids["ambient"] not in found
    found = _ids(searcher.search("music", limit=10, where=TrackFilter(tags=(shared,))))
    assert {ids["electronic"], ids["ambient"]} <= found
    # every tag must match
    both = TrackFilter(tags=(shared, only))
    assert ids["ambient"] not in _ids(searcher.search("music", limit=10, where=both))
    # the same filter on similar tracks, and a tag as typed (case, blanks)
    hits = searcher.similar(ids["chords"], where=TrackFilter(tags=(f"  {only.upper()} ",)))
    assert ids["electronic"] in _ids(hits) and _ids(hits) <= everyone - {ids["ambient"]}
    hit = searcher.search("music", limit=1, where=TrackFilter(tags=(only,)))[0]
    assert hit.tags == tags[_name(ids, hit.id)] and only in hit.tags
    # an unknown tag matches nothing (no error: tags are open-ended)
    assert searcher.search("music", where=TrackFilter(tags=("glockenspiel",))) == []
    assert searcher.similar(ids["chords"], where=TrackFilter(tags=("glockenspiel",))) == []


def _name(ids: dict[str, str], tid: str) -> str:
    return next(n for n, i in ids.items() if i == tid)


def test_the_server_store_filters_tags_as_the_embedded_one(
    searcher: Searcher, tagged_catalog: TaggedCatalog, tagged_model: CoLLAP, tmp_path: Path
) -> None:
    from qdrant_client import QdrantClient

    from indexer.store.base import FIRST_STAGE, SONG, TrackPoint
    from indexer.store.server import ServerStore

    # the searcher's session holds the embedded store (one owner): read the points through it
    edge = searcher.store
    assert isinstance(edge, EdgeStore)
    target = searcher.collection()
    recs = edge._shard(target).retrieve(list(tagged_catalog.ids.values()), True, True)
    points = [
        TrackPoint(str(r.id), v[SONG], v["clips"], v[FIRST_STAGE], dict(r.payload or {}))
        for r in recs
        for v in [dict(r.vector or {})]  # type: ignore[arg-type]
    ]
    server = ServerStore(QdrantClient(path=str(tmp_path / "local")), edge.alias)
    try:
        server.ensure_collection(target, tagged_model.config.embed_dim, len(points[0].first_stage))
        server.upsert(target, points)
        server.switch_alias(target)
        remote = Searcher(server, tagged_model)
        ids = tagged_catalog.ids
        for tid in ids.values():
            assert remote.track(tid)["tags"] == searcher.track(tid)["tags"]
        tags = {name: searcher.track(tid)["tags"] for name, tid in ids.items()}
        only = next(t for t in tags["electronic"] if t not in tags["ambient"])
        shared = next(t for t in tags["electronic"] if t in tags["ambient"])
        for where in (TrackFilter(tags=(only,)), TrackFilter(tags=(shared,))):
            want = _ids(searcher.search("music", limit=10, where=where))
            assert _ids(remote.search("music", limit=10, where=where)) == want
        assert remote.search("music", where=TrackFilter(tags=("glockenspiel",))) == []
    finally:
        server.close()


def test_a_model_without_a_tagger_writes_no_tags(
    tmp_path: Path, tagged_catalog: TaggedCatalog
) -> None:
    from collap_model import load_model
    from indexer.pipeline import ModelHandle
    from indexer.settings import Settings

    mini = load_model("collap-mini", device="cpu")
    assert mini.tag_names == ()
    settings = Settings(data_dir=tmp_path / "data", decode_workers=1, _env_file=None)  # type: ignore[call-arg]
    chords = tagged_catalog.root / "chords.flac"
    service.index(settings, [chords], model=ModelHandle(settings, mini))
    with service.session(settings) as s:
        searcher = Searcher(s.store, mini)
        track = searcher.track(tagged_catalog.ids["chords"])
        assert track["tags"] == {} and track["tag_timeline"] == []
        assert searcher.search("music")[0].tags == {}
        assert searcher.search("music", where=TrackFilter(tags=("piano",))) == []
