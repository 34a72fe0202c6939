"""A typed Python client for the HTTP API of `indexer serve`.

    from indexer.client import Client

    with Client("http://127.0.0.1:8000", api_key="...") as api:
        hits = api.recommend([liked_id], negative=[disliked_id], query="calmer", per_artist=1)
        rows = api.batch_similar(seed_ids, limit=20)  # {seed id: [Hit, ...]}
        where = api.locate(track_id, "the saxophone solo")  # .segments, .clips

Answers are the Searcher's own types (indexer.search.Hit with its Segment and ClipMatch;
Located), and refusals its exceptions, so code written against the embedded Searcher reads the
same: a 404 is TrackNotFound, a 409 IndexUnavailable, another 4xx QueryError; each carries the
HTTP status (`RequestRefused.status`). A server that does not answer is `Unreachable` (an
OSError). The CLI goes through this client when `indexer serve` owns the store.

One kept-alive connection per client, used by one request at a time (a lock): every route is
a read, so a request the server dropped on an idle connection is sent once more on a new one.
Standard library only: the client imports neither torch nor the server's dependencies.
"""

from __future__ import annotations

import http.client
import json
import threading
import urllib.parse
from collections.abc import Sequence
from dataclasses import asdict, fields
from http.client import HTTPConnection
from types import TracebackType
from typing import Any

from indexer.search import (
    ClipMatch,
    Hit,
    IndexUnavailable,
    Located,
    QueryError,
    Segment,
    TimelineClip,
    TrackNotFound,
)
from indexer.store.base import TrackFilter


class RequestRefused(QueryError):
    """The server refused the request (a 4xx other than 404 and 409); `status` says which."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class NotFound(RequestRefused, TrackNotFound):
    """A named track is not indexed (404)."""


class Unavailable(IndexUnavailable):
    """The index is empty or was built by another model (409), or not open yet (503)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Unreachable(OSError):
    """The server does not answer, or answered with a server error (5xx)."""


Filters = TrackFilter | dict[str, Any] | None


class Client:
    """The API's routes as methods; `url` is the server's base address."""

    def __init__(
        self, url: str = "http://127.0.0.1:8000", api_key: str | None = None, timeout: float = 60
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self._parts = parts
        self._conn: HTTPConnection | None = None
        self._lock = threading.Lock()

    # ---- routes -------------------------------------------------------------------------------
    def search(
        self, query: str, limit: int = 10, filters: Filters = None, explain: bool = False
    ) -> list[Hit]:
        """POST /search: free text -> tracks ranked by CoLLAP fusion."""
        body = {"query": query, "limit": limit, "filters": _filters(filters), "explain": explain}
        return _hits(self._post("/search", body)["hits"])

    def similar(
        self,
        track_id: str,
        limit: int = 10,
        *,
        offset: int = 0,
        per_artist: int | None = None,
        exclude: Sequence[str] = (),
        filters: Filters = None,
        explain: bool = False,
    ) -> list[Hit]:
        """POST /similar: tracks most like an indexed one."""
        body = {"id": track_id, **_paged(limit, offset, per_artist, exclude, filters, explain)}
        return _hits(self._post("/similar", body)["hits"])

    def batch_similar(
        self,
        track_ids: Sequence[str],
        limit: int = 10,
        *,
        offset: int = 0,
        per_artist: int | None = None,
        exclude: Sequence[str] = (),
        filters: Filters = None,
        explain: bool = False,
    ) -> dict[str, list[Hit]]:
        """POST /batch/similar: `similar` for each seed, in one call; seed id -> its hits (in
        the order given)."""
        body = {"ids": list(track_ids), **_paged(limit, offset, per_artist, exclude, filters,
                                                  explain)}  # fmt: skip
        results = self._post("/batch/similar", body)["results"]
        return {r["id"]: _hits(r["hits"]) for r in results}

    def recommend(
        self,
        positive: Sequence[str],
        negative: Sequence[str] = (),
        query: str | None = None,
        limit: int = 10,
        *,
        offset: int = 0,
        per_artist: int | None = None,
        exclude: Sequence[str] = (),
        filters: Filters = None,
        explain: bool = False,
    ) -> list[Hit]:
        """POST /recommend: tracks like the liked ones, unlike the disliked ones, optionally
        steered by a text; never a named or excluded track."""
        body: dict[str, Any] = {"positive": list(positive), "negative": list(negative)}
        if query is not None:
            body["query"] = query
        body.update(_paged(limit, offset, per_artist, exclude, filters, explain))
        return _hits(self._post("/recommend", body)["hits"])

    def locate(self, track_id: str, query: str) -> Located:
        """POST /tracks/{id}/locate: where the text happens in that track (every clip's
        evidence and the best segments)."""
        route = f"/tracks/{urllib.parse.quote(track_id)}/locate"
        found = self._post(route, {"query": query})
        known = {k: v for k, v in found.items() if k in _LOCATED_FIELDS}
        known["segments"] = [Segment(**s) for s in found.get("segments", [])]
        known["clips"] = [TimelineClip(**c) for c in found.get("clips", [])]
        return Located(**known)

    def track(self, track_id: str) -> dict[str, Any]:
        """GET /tracks/{id}: one indexed track's metadata."""
        found: dict[str, Any] = self._call("GET", f"/tracks/{urllib.parse.quote(track_id)}")
        return found

    def ready(self) -> dict[str, Any]:
        """GET /readyz: {"status": "ready", "tracks": ..., "fingerprint": ...} once searchable;
        Unavailable until then."""
        found: dict[str, Any] = self._call("GET", "/readyz")
        return found

    def index(self, catalog: str) -> dict[str, Any]:
        """POST /index: start indexing a folder the server is configured to index (one of
        INDEXER_SERVE_CATALOGS or inside one) in the background; the job (id, state, ...)."""
        found: dict[str, Any] = self._post("/index", {"catalog": catalog})["job"]
        return found

    def jobs(self) -> list[dict[str, Any]]:
        """GET /index: the server's index jobs, newest first, with progress and summary."""
        found: list[dict[str, Any]] = self._call("GET", "/index")["jobs"]
        return found

    # ---- transport ----------------------------------------------------------------------------
    def _post(self, route: str, body: dict[str, Any]) -> dict[str, Any]:
        found: dict[str, Any] = self._call("POST", route, body)
        return found

    def _call(self, method: str, route: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body, allow_nan=False).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["X-API-Key"] = self.api_key
        path = (self._parts.path.rstrip("/") or "") + route
        with self._lock:
            status, payload = self._send(method, path, data, headers)
        if status < 300:
            return json.loads(payload)
        detail = _detail(payload)
        match status:
            case 404:
                raise NotFound(detail, status)
            case 409 | 503:
                raise Unavailable(detail, status)
            case _ if status < 500:
                raise RequestRefused(detail, status)
            case _:
                raise Unreachable(f"{self.url} answered {status}: {detail}")

    def _send(
        self, method: str, path: str, data: bytes | None, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        for attempt in (1, 2):
            fresh = self._conn is None
            conn = self._conn or self._connect()
            try:
                conn.request(method, path, data, headers)
                response = conn.getresponse()
                payload = response.read()
            except (http.client.HTTPException, OSError) as err:
                conn.close()
                self._conn = None
                if fresh or attempt == 2:  # not an idle connection the server dropped
                    raise Unreachable(f"{self.url} does not answer: {err}") from None
                continue
            if response.will_close:
                conn.close()
                self._conn = None
            return response.status, payload
        raise AssertionError("unreachable")

    def _connect(self) -> HTTPConnection:
        host, port = self._parts.hostname or "", self._parts.port
        kind = http.client.HTTPSConnection if self._parts.scheme == "https" else HTTPConnection
        conn = kind(host, port, timeout=self.timeout)
        self._conn = conn
        return conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        err: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _filters(filters: Filters) -> dict[str, Any] | None:
    if isinstance(filters, TrackFilter):
        # no tags is the empty tuple, not None
        return {k: v for k, v in asdict(filters).items() if v is not None and v != ()} or None
    return filters or None


def _paged(
    limit: int,
    offset: int,
    per_artist: int | None,
    exclude: Sequence[str],
    filters: Filters,
    explain: bool,
) -> dict[str, Any]:
    return {
        "limit": limit,
        "offset": offset,
        "per_artist": per_artist,
        "exclude": list(exclude),
        "filters": _filters(filters),
        "explain": explain,
    }


# a hit's and a located track's fields the client reads (a newer server may send more)
_HIT_FIELDS = frozenset(f.name for f in fields(Hit))
_LOCATED_FIELDS = frozenset(f.name for f in fields(Located))


def _hits(rows: list[dict[str, Any]]) -> list[Hit]:
    out = []
    for row in rows:
        known = {k: v for k, v in row.items() if k in _HIT_FIELDS}
        clips = row.get("clips")
        known["segments"] = [Segment(**s) for s in row.get("segments", [])]
        known["clips"] = None if clips is None else [ClipMatch(**c) for c in clips]
        out.append(Hit(**known))
    return out


def _detail(body: bytes) -> str:
    try:
        detail = json.loads(body)["detail"]
    except (ValueError, KeyError, TypeError):
        return body.decode(errors="replace")[:300]
    if isinstance(detail, list):  # a validation error: say which field and why
        return "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}" for d in detail)
    return str(detail)
