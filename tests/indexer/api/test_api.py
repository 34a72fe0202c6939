"""The HTTP API through a real `indexer serve` process (uvicorn) over the indexed test catalog."""

from __future__ import annotations

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


@pytest.fixture(scope="module")
def server(search_catalog: SearchCatalog) -> Iterator[Server]:
    port = free_port()
    env = env_for(search_catalog.settings.data_dir, INDEXER_API_KEY=KEY)
    proc = start(env, "--port", str(port))
    srv = Server(f"http://127.0.0.1:{port}", proc, env)
    deadline = time.monotonic() + 90
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
    yield srv
    proc.terminate()
    proc.wait(timeout=30)


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
        ("GET", f"/tracks/{tid}", None),
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
    assert hits[0]["segments"] and set(hits[0]["segments"][0]) == {
        "start",
        "end",
        "score",
        "similarity",
    }
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
    assert (track["artist"], track["title"], track["year"]) == ("Ann", "Blue", 1995)
    assert "clip_vectors" not in track and "dirs" not in track


@pytest.mark.parametrize(
    ("method", "route", "body", "status"),
    [
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
    ],
)
def test_bad_requests_are_4xx(
    server: Server, method: str, route: str, body: Any, status: int
) -> None:
    got, detail = server.call(method, route, body)
    assert got == status, detail


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
