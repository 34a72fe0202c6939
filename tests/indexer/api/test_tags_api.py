"""Tags through the HTTP API: a real `indexer serve` with collap-tagger over a catalog it
indexed (tests/indexer/conftest.py's tagged_catalog)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.indexer.api.test_api import KEY, Server, env_for, serving
from tests.indexer.conftest import TaggedCatalog


@pytest.fixture(scope="module")
def tagged_server(tagged_catalog: TaggedCatalog) -> Iterator[Server]:
    env = env_for(
        tagged_catalog.settings.data_dir, INDEXER_API_KEY=KEY, INDEXER_MODEL="collap-tagger"
    )
    with serving(env, ready_within=300) as srv:  # collap-tagger loads musicnn too
        yield srv


def test_tracks_show_their_tags_and_timeline(
    tagged_server: Server, tagged_catalog: TaggedCatalog
) -> None:
    status, track = tagged_server.call("GET", f"/tracks/{tagged_catalog.ids['electronic']}")
    assert status == 200
    assert {"electronic", "synth", "techno"} & set(track["tags"])
    assert len(track["tag_timeline"]) == track["n_clips"]
    assert set(track["tag_timeline"][0]) == {"start", "end", "tags"}
    assert "tag_scores" not in track


def test_search_filters_by_tags(tagged_server: Server, tagged_catalog: TaggedCatalog) -> None:
    ids = tagged_catalog.ids
    tags = {n: tagged_server.call("GET", f"/tracks/{i}")[1]["tags"] for n, i in ids.items()}
    only = next(t for t in tags["electronic"] if t not in tags["ambient"])

    def found(route: str, body: dict) -> list[str]:  # type: ignore[type-arg]
        status, answer = tagged_server.call("POST", route, body)
        assert status == 200, answer
        return [h["id"] for h in answer["hits"]]

    hits = found("/search", {"query": "music", "filters": {"tags": [only.upper()]}})
    assert ids["electronic"] in hits and ids["ambient"] not in hits
    _, body = tagged_server.call("POST", "/search", {"query": "music", "limit": 3})
    assert all(h["tags"] == tags[_name(ids, h["id"])] for h in body["hits"])
    assert found("/search", {"query": "music", "filters": {"tags": ["glockenspiel"]}}) == []
    every = {"tags": [only, "glockenspiel"]}  # every tag must match
    assert found("/similar", {"id": ids["chords"], "filters": every}) == []
    assert found("/recommend", {"positive": [ids["chords"]], "filters": every}) == []


def _name(ids: dict[str, str], tid: str) -> str:
    return next(n for n, i in ids.items() if i == tid)


BAD_TAGS = [[""], ["  "], ["x" * 65], ["pi\x1bano"], ["jazz\n"], ["\ud800"], "piano", [1]]


@pytest.mark.parametrize("tags", [*BAD_TAGS, ["a"] * 21])
def test_bad_tags_are_4xx(
    tagged_server: Server, tagged_catalog: TaggedCatalog, tags: object
) -> None:
    for route, body in (
        ("/search", {"query": "music"}),
        ("/similar", {"id": tagged_catalog.ids["chords"]}),
        ("/recommend", {"positive": [tagged_catalog.ids["chords"]]}),
    ):
        status, answer = tagged_server.call("POST", route, {**body, "filters": {"tags": tags}})
        assert status in (400, 422), (route, tags, answer)
