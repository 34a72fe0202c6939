"""The HTTP API through a real `indexer serve` process (uvicorn) over the indexed test catalog."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.indexer.conftest import SearchCatalog

KEY = "test-key-123"
UNKNOWN = "00000000-0000-0000-0000-000000000000"


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[str]
    env: dict[str, str]

    def call(
        self,
        method: str,
        route: str,
        body: Any = None,
        key: str | None = KEY,
        raw: bytes | None = None,
    ) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["X-API-Key"] = key
        request = urllib.request.Request(
            self.url + route, data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                payload = response.read()
                status = response.status
        except urllib.error.HTTPError as err:
            payload, status = err.read(), err.code
        try:
            return status, json.loads(payload)
        except ValueError:
            return status, payload.decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env_for(data_dir: Path, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "INDEXER_DATA_DIR": str(data_dir),
        **extra,
    }


def start(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "indexer.cli", "serve", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@contextlib.contextmanager
def serving(env: dict[str, str], ready_within: float = 90) -> Iterator[Server]:
    """`indexer serve` on a free port with `env`, once /readyz answers 200; stopped after."""
    port = free_port()
    proc = start(env, "--port", str(port))
    srv = Server(f"http://127.0.0.1:{port}", proc, env)
    deadline = time.monotonic() + ready_within
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited: {proc.stdout.read() if proc.stdout else ''}")
        try:
            if srv.call("GET", "/readyz", key=None)[0] == 200:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "serve did not become ready"
        time.sleep(0.3)
    try:
        yield srv
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server(search_catalog: SearchCatalog) -> Iterator[Server]:
    env = env_for(search_catalog.settings.data_dir, INDEXER_API_KEY=KEY)
    with serving(env) as srv:
        yield srv


def test_health_needs_no_key(server: Server) -> None:
    assert server.call("GET", "/healthz", key=None) == (
        200,
        {"status": "ok", "tracks": None, "fingerprint": None},
    )
    status, body = server.call("GET", "/readyz", key=None)
    assert status == 200 and body["status"] == "ready" and body["tracks"] == 11


def test_everything_else_needs_the_key(server: Server, search_catalog: SearchCatalog) -> None:
    tid = search_catalog.ids["song0"]
    for method, route, body in (
        ("POST", "/search", {"query": "piano"}),
        ("POST", "/similar", {"id": tid}),
        ("POST", "/batch/similar", {"ids": [tid]}),
        ("POST", "/recommend", {"positive": [tid]}),
        ("GET", f"/tracks/{tid}", None),
        ("POST", f"/tracks/{tid}/locate", {"query": "piano"}),
        ("GET", "/metrics", None),
    ):
        assert server.call(method, route, body, key=None)[0] == 401, route
        assert server.call(method, route, body, key="wrong")[0] == 401, route
        assert server.call(method, route, body)[0] == 200, route


def test_search_finds_the_described_song(server: Server, search_catalog: SearchCatalog) -> None:
    song = search_catalog.songs[5]
    status, body = server.call("POST", "/search", {"query": song["caption"], "limit": 3})
    assert status == 200
    hits = body["hits"]
    assert hits[0]["id"] == search_catalog.ids["song5"] and len(hits) == 3
    assert hits[0]["segments"] and set(hits[0]["segments"][0]) == {"start", "end", "score"}
    assert body["took_ms"] > 0


def test_search_filters(server: Server, search_catalog: SearchCatalog) -> None:
    folder = str(search_catalog.root / "tagged")
    status, body = server.call(
        "POST", "/search", {"query": "music", "filters": {"folder": folder, "year_min": 2000}}
    )
    assert status == 200 and [h["id"] for h in body["hits"]] == [search_catalog.ids["bob"]]


def test_similar_and_track(server: Server, search_catalog: SearchCatalog) -> None:
    ids = search_catalog.ids
    status, body = server.call("POST", "/similar", {"id": ids["song3"], "limit": 2})
    assert status == 200 and body["hits"][0]["id"] == ids["dup3"]
    status, track = server.call("GET", f"/tracks/{ids['ann']}")
    assert status == 200
    assert (track["artist"], track["title"], track["year"]) == (["Ann"], "Blue", 1995)
    assert "clip_vectors" not in track and "dirs" not in track


def test_similar_pages_and_batches(server: Server, search_catalog: SearchCatalog) -> None:
    ids = search_catalog.ids
    status, whole = server.call("POST", "/similar", {"id": ids["song3"], "limit": 6})
    assert status == 200
    order = [h["id"] for h in whole["hits"]]
    body = {"id": ids["song3"], "limit": 3, "offset": 1, "exclude": [order[2]], "per_artist": 1}
    status, paged = server.call("POST", "/similar", body)
    assert status == 200 and [h["id"] for h in paged["hits"]] == [order[1], *order[3:5]]
    seeds = [ids["song3"], ids["ann"]]
    status, batch = server.call("POST", "/batch/similar", {"ids": seeds, "limit": 6})
    assert status == 200 and [r["id"] for r in batch["results"]] == seeds
    assert batch["results"][0]["hits"] == whole["hits"] and batch["took_ms"] >= 0


def test_recommend(server: Server, search_catalog: SearchCatalog) -> None:
    ids = search_catalog.ids
    liked, disliked = [ids["song3"], ids["song1"]], [ids["song6"]]
    body = {"positive": liked, "negative": disliked, "exclude": [ids["dup3"]], "limit": 20,
            "query": "soft piano opening", "filters": {"duration_min": 20}}  # fmt: skip
    status, got = server.call("POST", "/recommend", body)
    assert status == 200 and got["took_ms"] >= 0
    found = [h["id"] for h in got["hits"]]
    assert len(found) == 5 and not {*liked, *disliked, ids["dup3"]} & set(found)
    assert {ids["ann"], ids["bob"]}.isdisjoint(found)  # under 20 s: filtered out
    status, page = server.call("POST", "/recommend", {**body, "offset": 2, "limit": 2})
    assert status == 200 and [h["id"] for h in page["hits"]] == found[2:4]


@pytest.mark.parametrize(
    ("method", "route", "body", "status"),
    [
        ("POST", "/recommend", {"positive": []}, 422),
        ("POST", "/recommend", {"negative": ["00000000-0000-0000-0000-000000000000"]}, 422),
        ("POST", "/recommend", {"positive": ["00000000-0000-0000-0000-000000000000"]}, 404),
        ("POST", "/recommend", {"positive": ["00000000-0000-0000-0000-000000000001"] * 51}, 422),
        ("POST", "/recommend", {"positive": ["not-a-uuid"]}, 422),
        ("POST", "/similar", {"id": "00000000-0000-0000-0000-000000000000", "offset": -1}, 422),
        ("POST", "/similar", {"id": "00000000-0000-0000-0000-000000000000", "offset": 1001}, 422),
        ("POST", "/similar", {"id": "00000000-0000-0000-0000-000000000000", "per_artist": 0}, 422),
        ("POST", "/batch/similar", {"ids": []}, 422),
        ("POST", "/batch/similar", {"ids": ["00000000-0000-0000-0000-000000000000"]}, 404),
        ("POST", "/search", {"query": ""}, 422),
        ("POST", "/search", {"query": "   "}, 422),
        ("POST", "/search", {"query": "piano", "limit": 0}, 422),
        ("POST", "/search", {"query": "piano", "limit": 101}, 422),
        ("POST", "/search", {"query": "x" * 20_001}, 422),
        ("POST", "/search", {"query": "la " * 5000}, 400),  # over the model's 1024 words
        (
            "POST",
            "/search",
            {"query": "piano", "filters": {"year_min": 2000, "year_max": 1990}},
            422,
        ),
        ("POST", "/search", {"query": "piano", "filters": {"mood": "sad"}}, 422),
        ("POST", "/search", {"query": "piano", "filters": {"folder": "relative/dir"}}, 422),
        ("POST", "/similar", {"id": "not-a-uuid"}, 422),
        ("POST", "/similar", {"id": "00000000-0000-0000-0000-000000000000"}, 404),
        ("POST", "/similar", {"path": "/etc/passwd"}, 422),  # the API never reads paths
        ("GET", "/tracks/00000000-0000-0000-0000-000000000000", None, 404),
        ("GET", "/tracks/nope", None, 422),
        ("POST", f"/tracks/{UNKNOWN}/locate", {"query": "drums"}, 404),
        ("POST", "/tracks/nope/locate", {"query": "drums"}, 422),
        ("POST", f"/tracks/{UNKNOWN}/locate", {"query": ""}, 422),
        ("POST", f"/tracks/{UNKNOWN}/locate", {"query": "  "}, 422),
        ("POST", f"/tracks/{UNKNOWN}/locate", {"query": "x" * 20_001}, 422),
        ("POST", f"/tracks/{UNKNOWN}/locate", {"text": "drums"}, 422),
        ("POST", f"/tracks/{UNKNOWN}/locate", {"query": "drums", "limit": 3}, 422),
        ("POST", f"/tracks/{UNKNOWN}/locate", None, 422),
    ],
)
def test_bad_requests_are_4xx(
    server: Server, method: str, route: str, body: Any, status: int
) -> None:
    got, detail = server.call(method, route, body)
    assert got == status, detail


def test_locate_gives_what_the_cli_prints(server: Server, search_catalog: SearchCatalog) -> None:
    tid = search_catalog.ids["song4"]
    status, body = server.call("POST", f"/tracks/{tid}/locate", {"query": "the drums come in"})
    assert status == 200, body
    assert body["id"] == tid and body["clips"] and 1 <= len(body["segments"]) <= 3
    status, track = server.call("GET", f"/tracks/{tid}")
    assert len(body["clips"]) == track["n_clips"]
    # through the serving owner, `indexer locate --json` prints the route's answer
    out = subprocess.run(
        [sys.executable, "-m", "indexer.cli", "locate", tid, "the drums come in", "--json"],
        env=server.env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == body
    long = server.call("POST", f"/tracks/{tid}/locate", {"query": "la " * 5000})
    assert long[0] == 400 and "words" in long[1]["detail"]
    unknown = subprocess.run(
        [sys.executable, "-m", "indexer.cli", "locate", UNKNOWN, "drums"],
        env=server.env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1, unknown.stderr
    assert "no track with id" in unknown.stderr and "Traceback" not in unknown.stderr


def test_body_limit(server: Server) -> None:
    """A declared body over the limit is refused from its headers, before any of it is read.
    (The test sends only the headers: a client still sending a body the server has already
    refused may see a broken pipe instead of the 413.)"""
    parts = urllib.parse.urlsplit(server.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        conn.putrequest("POST", "/search")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("X-API-Key", KEY)
        conn.putheader("Content-Length", str(1_100_000))
        conn.endheaders()
        response = conn.getresponse()
        status, body = response.status, json.loads(response.read())
    finally:
        conn.close()
    assert status == 413 and "over" in body["detail"]
    assert server.call("POST", "/search", raw=b"{not json")[0] == 422


def test_metrics(server: Server) -> None:
    server.call("POST", "/search", {"query": "drums"})
    status, text = server.call("GET", "/metrics")
    assert status == 200
    assert 'indexer_http_requests_total{method="POST",route="/search",status="200"}' in text
    assert "indexer_http_request_seconds_bucket" in text
    assert "indexer_index_tracks 11.0" in text


def test_concurrent_requests(server: Server, search_catalog: SearchCatalog) -> None:
    from concurrent.futures import ThreadPoolExecutor

    queries = [s["queries"][0] for s in search_catalog.songs] * 2
    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(lambda q: server.call("POST", "/search", {"query": q, "limit": 1}), queries)
        )
    assert all(status == 200 and len(body["hits"]) == 1 for status, body in results)
    assert server.call("GET", "/healthz", key=None)[0] == 200


def test_cli_query_goes_through_the_serving_owner(
    server: Server, search_catalog: SearchCatalog
) -> None:
    song = search_catalog.songs[5]
    query = song["queries"][0]
    out = subprocess.run(
        [sys.executable, "-m", "indexer.cli", "query", query, "--json", "--limit", "2"],
        env=server.env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[0]["id"] == search_catalog.ids["song5"]
    bad = subprocess.run(
        [sys.executable, "-m", "indexer.cli", "query", "piano", "--filter", "year=1990..1980"],
        env=server.env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "reversed" in bad.stderr
    nan = subprocess.run(
        [sys.executable, "-m", "indexer.cli", "query", "piano", "--filter", "duration=nan..inf"],
        env=server.env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert nan.returncode == 2 and "finite" in nan.stderr and "Traceback" not in nan.stderr


def test_the_client_answers_with_the_searchers_types(
    server: Server, search_catalog: SearchCatalog
) -> None:
    from indexer.client import Client
    from indexer.search import Hit, Located, Segment
    from indexer.store.base import TrackFilter

    ids = search_catalog.ids
    with Client(server.url, KEY) as api:
        assert api.ready()["tracks"] == 11
        hits = api.search("soft piano", limit=3, explain=True)
        assert len(hits) == 3 and all(isinstance(h, Hit) for h in hits)
        assert isinstance(hits[0].segments[0], Segment) and hits[0].clips
        assert [h.id for h in api.search("x", filters=TrackFilter(artist="Ann"))] == [ids["ann"]]
        assert api.similar(ids["song3"], 2)[0].id == ids["dup3"]
        paged = api.similar(ids["song3"], 2, offset=1, exclude=[ids["song0"]], per_artist=1)
        assert ids["song0"] not in {h.id for h in paged}
        rows = api.batch_similar([ids["song3"], ids["dup3"]], limit=1)
        assert {k: [h.id for h in v] for k, v in rows.items()} == {
            ids["song3"]: [ids["dup3"]],
            ids["dup3"]: [ids["song3"]],
        }
        liked = [ids["song3"], ids["song1"]]
        over20 = {"duration_min": 20}
        recommended = api.recommend(liked, [ids["song6"]], "drums", 4, filters=over20)
        body = {"positive": liked, "negative": [ids["song6"]], "query": "drums", "limit": 4,
                "filters": over20}  # fmt: skip
        raw = server.call("POST", "/recommend", body)
        assert [h.as_dict() for h in recommended] == raw[1]["hits"]
        assert api.track(ids["ann"])["artist"] == ["Ann"]  # artists are stored as lists
        located = api.locate(ids["song4"], "the drums come in")
        assert isinstance(located, Located) and isinstance(located.segments[0], Segment)
        raw = server.call("POST", f"/tracks/{ids['song4']}/locate", {"query": "the drums come in"})
        assert located.as_dict() == raw[1]


def test_the_client_raises_the_searchers_errors(server: Server) -> None:
    from indexer.client import Client, NotFound, RequestRefused, Unreachable
    from indexer.search import QueryError, TrackNotFound

    unknown = "00000000-0000-0000-0000-000000000000"
    with Client(server.url, KEY) as api:
        with pytest.raises(TrackNotFound, match=f"no track with id {unknown}") as found:
            api.recommend([unknown])
        assert isinstance(found.value, NotFound) and found.value.status == 404
        with pytest.raises(QueryError, match="positive") as refused:
            api.recommend([])
        assert isinstance(refused.value, RequestRefused) and refused.value.status == 422
        with pytest.raises(TrackNotFound, match=f"no track with id {unknown}"):
            api.locate(unknown, "drums")
    with Client(server.url, "wrong") as api, pytest.raises(RequestRefused) as key:
        api.search("piano")
    assert key.value.status == 401
    with Client(f"http://127.0.0.1:{free_port()}") as api, pytest.raises(Unreachable):
        api.search("piano")
    with pytest.raises(ValueError, match="not an http"):
        Client("ftp://example.org")


def test_cli_recommend_goes_through_the_serving_owner(
    server: Server, search_catalog: SearchCatalog
) -> None:
    ids = search_catalog.ids
    out = subprocess.run(
        [sys.executable, "-m", "indexer.cli", "recommend", ids["song3"], "--not", ids["song6"],
         "--query", "drums", "--limit", "3", "--json"],
        env=server.env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[0]["id"] == ids["dup3"]
    unknown = "00000000-0000-0000-0000-000000000000"
    bad = subprocess.run(
        [sys.executable, "-m", "indexer.cli", "recommend", ids["song3"], "--not", unknown],
        env=server.env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
    assert f"no track with id {unknown}" in bad.stderr and "Traceback" not in bad.stderr


def test_cli_similar_to_an_unindexed_file_through_the_owner_says_why(
    server: Server, search_catalog: SearchCatalog
) -> None:
    """Through a serving owner a file is named by its content; one that is not indexed cannot
    be embedded (the API reads no paths): say so, instead of "no track with id <uuid>"."""
    out = subprocess.run(
        [sys.executable, "-m", "indexer.cli", "similar", str(search_catalog.outside)],
        env=server.env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert f"{search_catalog.outside} is not indexed" in out.stderr
    assert "only indexed tracks" in out.stderr and "no track with id" not in out.stderr
    indexed = search_catalog.songs[3]["audio"]  # an indexed file still works through it
    ok = subprocess.run(
        [sys.executable, "-m", "indexer.cli", "similar", indexed, "--json", "--limit", "1"],
        env=server.env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)[0]["id"] == search_catalog.ids["dup3"]


def test_schemathesis_finds_no_server_errors(server: Server, tmp_path: Path) -> None:
    st = str(Path(sys.executable).with_name("st"))  # schemathesis, from the dev extra
    out = subprocess.run(
        [st, "run", f"{server.url}/openapi.json", "--checks", "not_a_server_error",
         "-H", f"X-API-Key: {KEY}", "--max-examples", "25", "--seed", "1",
         "--request-timeout", "30"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,  # its cache: not in the repo
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-4000:]


def test_refuses_public_bind_without_a_key(search_catalog: SearchCatalog, tmp_path: Path) -> None:
    proc = start(env_for(tmp_path), "--host", "0.0.0.0", "--port", str(free_port()))
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert output.strip().splitlines() == [
        "indexer: error: refusing to serve on 0.0.0.0 without an API key: set INDEXER_API_KEY "
        "(clients send it in X-API-Key) or bind to 127.0.0.1"
    ]


# ---- hostile input: every route, old and new, answers 4xx (issues 18 and 20) --------------------
def app_routes() -> list[tuple[str, str, str]]:
    """(method, route, path) of every route of the app, hidden ones too; the path is the route
    with its parameters filled in."""
    import re

    from indexer.api.app import create_app
    from indexer.api.guards import leaf_routes
    from indexer.settings import Settings

    app = create_app(Settings(_env_file=None))  # type: ignore[call-arg]
    out = []
    for template, route in leaf_routes(app.routes):
        path = re.sub(r"\{[^}]+\}", "00000000-0000-0000-0000-000000000000", template)
        out += [(m, template, path) for m in sorted(getattr(route, "methods", None) or ["GET"])]
    return out


HOSTILE_BODIES = [
    b'{"query": "x", "filters": {"duration_min": NaN}}',
    b'{"query": "x", "limit": Infinity}',
    b'{"id": "00000000-0000-0000-0000-000000000000", "limit": -Infinity}',
    b'{"query": "x", "filters": {"duration_max": 1e999}}',
    b'{"query": "\\ud800"}',
    b'{"query": "x", "filters": {"artist": "\\udfff"}}',
    b'"\\ud800"',
    b"NaN",
]


@pytest.mark.parametrize("body", HOSTILE_BODIES)
def test_hostile_bodies_are_4xx_on_every_route(server: Server, body: bytes) -> None:
    for method, _, route in app_routes():
        for key in (KEY, None):
            status, detail = server.call(method, route, raw=body, key=key)
            assert 400 <= status < 500, (method, route, key, status, detail)


def test_non_json_bodies_are_4xx_with_a_body_json_can_carry(server: Server) -> None:
    parts = urllib.parse.urlsplit(server.url)
    for kind, body in (
        ("text/plain", b"\xff\xfe not utf-8"),
        ("application/json", b'{"q": "\xff"}'),
    ):
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        try:
            conn.request("POST", "/search", body, {"Content-Type": kind, "X-API-Key": KEY})
            response = conn.getresponse()
            status, raw = response.status, response.read()
        finally:
            conn.close()
        assert 400 <= status < 500, raw
        json.loads(raw)


def _resolve(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    if "anyOf" in schema:
        schema = next(s for s in schema["anyOf"] if s.get("type") != "null")
        return _resolve(schema, spec)
    return schema


def _example(schema: dict[str, Any], spec: dict[str, Any], track: str) -> Any:
    """A valid value with every optional field present, so that every leaf can be mutated."""
    schema = _resolve(schema, spec)
    match schema.get("type"):
        case "object":
            props = schema.get("properties", {})
            return {k: _example(v, spec, track) for k, v in props.items()}
        case "array":
            return [_example(schema["items"], spec, track)] * max(1, schema.get("minItems", 1))
        case "integer" | "number":
            return schema.get("minimum", 1)
        case "boolean":
            return False
        case _:
            if schema.get("format") == "uuid":
                return track
            return "/" if schema.get("pattern") == "^/" else "piano"


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Any]]:
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in _leaves(v, (*path, k))]
    if isinstance(value, list):
        return [leaf for i, v in enumerate(value) for leaf in _leaves(v, (*path, i))]
    return [(path, value)]


def _with(body: Any, path: tuple[Any, ...], value: Any) -> Any:
    body = json.loads(json.dumps(body))
    *parents, last = path
    node = body
    for p in parents:
        node = node[p]
    node[last] = value
    return body


def test_schema_fuzz_with_values_json_has_not_got(
    server: Server, search_catalog: SearchCatalog
) -> None:
    """Every JSON body of the schema, each leaf in turn set to NaN, +-Infinity, 1e999 (numbers)
    or a lone surrogate (strings): 422; NUL, escape codes and huge integers: never a 5xx."""
    spec = server.call("GET", "/openapi.json")[1]
    track = search_catalog.ids["song0"]
    checked = 0
    for template, operations in spec["paths"].items():
        route = template.replace("{track_id}", track)  # a route of one track: a real one
        for method, op in operations.items():
            content = (op.get("requestBody") or {}).get("content", {})
            if "application/json" not in content:
                continue
            valid = _example(content["application/json"]["schema"], spec, track)
            status, detail = server.call(method.upper(), route, valid)
            # this server may index no folder (INDEXER_SERVE_CATALOGS): POST /index refuses
            # a valid body by configuration, and still reads every mutated one first
            assert status == 200 or (route, status) == ("/index", 403), (route, detail)
            for path, leaf in _leaves(valid):
                if isinstance(leaf, int | float) and not isinstance(leaf, bool):
                    refused = [float("nan"), float("inf"), float("-inf"), "1e999"]
                    tolerated: list[Any] = [10**30, -(10**30)]
                else:
                    refused = ["\ud800", "ok\udc80"]
                    tolerated = ["\x00", "\x1b]0;PWNED\x07\x1b[2J", "\u202e"]
                for value in refused + tolerated:
                    text = json.dumps(_with(body=valid, path=path, value=value))
                    raw = text.replace('"1e999"', "1e999").encode()
                    status, detail = server.call(method.upper(), route, raw=raw)
                    if value in refused or value != value:
                        assert status == 422, (route, path, value, detail)
                    else:
                        assert status < 500, (route, path, value, detail)
                    checked += 1
    assert checked > 50


def test_metrics_stay_bounded_and_count_every_status(server: Server) -> None:
    """Made-up methods and paths fold into "other"; the 413 of the body limit and the 422 of
    a NaN body are counted (once measured inside the body limit: never)."""
    before = server.call("GET", "/metrics")[1]
    for i in range(200):
        server.call(f"MADEUP{i:03d}", "/search", {"query": "x"}, key=None)
        server.call("GET", f"/nowhere/{i}", key=None)
    server.call("POST", "/search", raw=b'{"query": "x", "filters": {"duration_min": NaN}}')
    # the server may answer 413 and close before the whole body is written (a broken pipe
    # here); the answer is counted either way
    with contextlib.suppress(urllib.error.URLError, BrokenPipeError, ConnectionResetError):
        server.call("POST", "/search", raw=b'{"query": "' + b"x" * 1_000_001 + b'"}')
    after = server.call("GET", "/metrics")[1]
    assert "MADEUP" not in after and "/nowhere" not in after
    assert len(after) - len(before) < 6_000, (len(before), len(after))
    assert 'indexer_http_requests_total{method="other",route="/search",status="405"}' in after
    assert 'indexer_http_requests_total{method="GET",route="other",status="404"}' in after
    assert 'indexer_http_requests_total{method="POST",route="/search",status="413"}' in after
    assert 'indexer_http_requests_total{method="POST",route="/search",status="422"}' in after


def test_only_the_documented_routes_answer_without_the_key(server: Server) -> None:
    """Every route of the app (routes added later included) needs X-API-Key but OPEN_PATHS,
    and README.md names each open one."""
    from indexer.api.app import OPEN_PATHS

    routes = app_routes()
    assert {r for _, r, _ in routes} >= OPEN_PATHS
    for method, route, path in routes:
        status, _ = server.call(method, path, key=None)
        if route in OPEN_PATHS:  # /static/{name} of a made-up name: 404
            assert status in (200, 404) and (status == 200 or "{" in route), (method, path)
        else:
            assert status == 401, (method, path, status)
    readme = (Path(__file__).parents[3] / "README.md").read_text()
    for route in OPEN_PATHS:
        assert f"`{route}`" in readme, route
