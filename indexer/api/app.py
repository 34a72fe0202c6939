"""The HTTP API (FastAPI): search, similar tracks (one seed or a batch), recommendations, track
lookup, health, Prometheus metrics.

`create_app(settings)` builds the app; its lifespan opens the store (the embedded one under the
data directory's lock) and loads the model once. Handlers are plain `def`s, so FastAPI runs
them in its thread pool and the event loop never waits on the model or the store.

No `from __future__ import annotations` here: FastAPI reads the handlers' annotations, and the
request models are built per app from the settings (so the schema states the real limits).
"""

import contextlib
import hmac
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any
from uuid import UUID

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from indexer.api import audio, guards, page
from indexer.api.schemas import (
    BatchHits,
    Health,
    Hits,
    IndexRequest,
    JobOne,
    JobsOut,
    LocatedOut,
    Problem,
    Ready,
    Track,
    request_models,
)
from indexer.background import BackgroundIndexer, NotAllowed, allowed_catalog
from indexer.search import EMPTY, IndexUnavailable, QueryError, Searcher, TrackNotFound
from indexer.settings import Settings

log = logging.getLogger(__name__)

# routes that answer without X-API-Key, none with catalog data: the health checks (probes send
# no key), the page and its files (it asks the user for the key; indexer/api/page.py), and the
# API's description: the schema holds routes and limits, and a browser opening /docs cannot
# send the header its page would need to fetch the schema. Every other route checks the key;
# tests/indexer/api check both ways, on every route of the app, and that README names these.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/", "/static/{name}", "/openapi.json", "/docs"})
API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, description="INDEXER_API_KEY")
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "bad request"},
    401: {"model": Problem, "description": "missing or wrong X-API-Key"},
    409: {"model": Problem, "description": "the index is empty or was built by another model"},
    413: {"model": Problem, "description": "request body too large"},
}
# routes naming tracks by id
NAMED = {**ERRORS, 404: {"model": Problem, "description": "no track with a given id"}}


class Metrics:
    """Prometheus metrics of one app (its own registry, so several apps can live in a test)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "indexer_http_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "indexer_http_request_seconds",
            "HTTP request latency by route",
            ["method", "route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.tracks = Gauge(
            "indexer_index_tracks", "tracks in the searched collection", registry=self.registry
        )

    def observe(self, method: str, route: str, status: str, seconds: float) -> None:
        """One answered request; the labels are bounded (guards.Measure)."""
        self.requests.labels(method, route, status).inc()
        self.latency.labels(method, route).observe(seconds)


def create_app(
    settings: Settings | None = None, open_searcher: Callable[[], Searcher] | None = None
) -> FastAPI:
    """The app; `open_searcher`: a searcher over a store another part of this process owns
    (an `indexer index` run serving searches while it writes), built on the first request
    that needs it, instead of the store and model the lifespan opens for `indexer serve`."""
    settings = settings or Settings()
    models = request_models(settings)
    SearchRequest, SimilarRequest = models.search, models.similar
    BatchSimilarRequest, RecommendRequest = models.batch_similar, models.recommend
    LocateRequest = models.locate
    metrics = Metrics()
    key = settings.api_key.get_secret_value().encode() if settings.api_key else None
    state: dict[str, Searcher] = {}
    jobs: dict[str, BackgroundIndexer] = {}  # `indexer serve`'s, while it runs

    opening = threading.Lock()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from indexer import service

        if open_searcher is not None:
            yield
            state.clear()
            return
        from indexer.background import HANDOFF
        from indexer.pipeline import ModelHandle

        url = f"http://{settings.host}:{settings.port}"
        with service.serving(settings, url) as (session, searcher):
            # built before the first request, as the model is (at 100k tracks ~35 s)
            searcher.keep_resident(settings.resident_mb << 20)
            state["searcher"] = searcher
            metrics.tracks.set_function(searcher.size)
            indexer = BackgroundIndexer(
                settings,
                searcher.store,
                ModelHandle(settings, model=searcher.model),  # type: ignore[arg-type]
                publish=session.publish,
                # commands hand jobs over through the data directory (embedded store only:
                # with a Qdrant server they index themselves)
                inbox=settings.data_dir / HANDOFF if settings.embedded else None,
                busy=searcher.writing,
            )
            indexer.start()
            jobs["indexer"] = indexer
            session.announce(jobs=True)
            log.info("serving %s on %s", settings.collection, url)
            try:
                yield
            finally:
                session.announce(jobs=False)
                jobs.clear()
                indexer.close()
                state.clear()

    def searcher() -> Searcher:
        found = state.get("searcher")
        if found is None and open_searcher is not None:
            with opening:
                found = state.get("searcher") or open_searcher()
                state["searcher"] = found
        if found is None:
            raise HTTPException(503, "the index is not open yet")
        return found

    def check_key(given: str | None = Depends(API_KEY)) -> None:
        if key is not None and not hmac.compare_digest((given or "").encode(), key):
            raise HTTPException(401, "missing or wrong X-API-Key")

    app = FastAPI(
        title="collap-indexer",
        version="0.1.0",
        summary="Search a music catalog by what the music does over time (CoLLAP).",
        lifespan=lifespan,
        # one documentation page (Swagger UI, /docs); no OAuth2 here, so no redirect page
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )

    # every route, those added later included: strict JSON bodies, the body limit, JSON-safe
    # error bodies, request metrics under bounded labels (indexer/api/guards.py)
    guards.install(app, settings.max_body_bytes, metrics.observe)

    @app.exception_handler(QueryError)
    async def bad_query(request: Request, err: QueryError) -> JSONResponse:
        return guards.problem(404 if isinstance(err, TrackNotFound) else 400, str(err))

    @app.exception_handler(IndexUnavailable)
    async def unavailable(request: Request, err: IndexUnavailable) -> JSONResponse:
        return guards.problem(409, str(err))

    guarded = [Depends(check_key)]
    Open = Annotated[Searcher, Depends(searcher)]

    @app.post("/search", response_model=Hits, responses=ERRORS, dependencies=guarded)
    def search(body: SearchRequest, s: Open) -> dict[str, Any]:  # type: ignore[valid-type]
        """Free text -> tracks ranked by CoLLAP fusion, with the matching segments."""
        began = time.perf_counter()
        where = body.filters.to_filter() if body.filters else None  # type: ignore[attr-defined]
        hits = s.search(body.query, body.limit, where, body.explain)  # type: ignore[attr-defined]
        return {"hits": [h.as_dict() for h in hits], "took_ms": _ms(began)}

    @app.post("/similar", response_model=Hits, responses=NAMED, dependencies=guarded)
    def similar(body: SimilarRequest, s: Open) -> dict[str, Any]:  # type: ignore[valid-type]
        """Tracks most like an indexed track (by id; the API never reads a path it is given),
        paged (`offset`), at most `per_artist` per artist, never an `exclude`d one."""
        began = time.perf_counter()
        b: Any = body
        hits = s.similar(str(b.id), where=b.where(), explain=b.explain, page=b.page())
        return {"hits": [h.as_dict() for h in hits], "took_ms": _ms(began)}

    @app.post("/batch/similar", response_model=BatchHits, responses=NAMED, dependencies=guarded)
    def batch_similar(body: BatchSimilarRequest, s: Open) -> dict[str, Any]:  # type: ignore[valid-type]
        """`/similar` for many seed tracks in one call (e.g. a nightly job recomputing "more
        like this" rows): one list per seed, in the request's order; an unknown id is a 404."""
        began = time.perf_counter()
        b: Any = body
        ids = [str(i) for i in b.ids]
        lists = s.similar_many(ids, where=b.where(), explain=b.explain, page=b.page())
        results = [
            {"id": i, "hits": [h.as_dict() for h in hits]}
            for i, hits in zip(ids, lists, strict=True)
        ]
        return {"results": results, "took_ms": _ms(began)}

    @app.post("/recommend", response_model=Hits, responses=NAMED, dependencies=guarded)
    def recommend(body: RecommendRequest, s: Open) -> dict[str, Any]:  # type: ignore[valid-type]
        """Tracks like the `positive` ones and unlike the `negative` ones, ranked at clip
        level, optionally steered by a text `query` (scored by the same fusion as search);
        never a positive, negative or excluded track. An unknown id is a 404."""
        began = time.perf_counter()
        b: Any = body
        hits = s.recommend(
            [str(i) for i in b.positive],
            [str(i) for i in b.negative],
            b.query,
            b.where(),
            b.page(),
            b.explain,
        )
        return {"hits": [h.as_dict() for h in hits], "took_ms": _ms(began)}

    @app.get(
        "/tracks/{track_id}",
        response_model=Track,
        responses={**ERRORS, 404: {"model": Problem, "description": "no such track"}},
        dependencies=guarded,
    )
    def track(track_id: UUID, s: Open) -> dict[str, Any]:
        """One indexed track's metadata."""
        return s.track(str(track_id))

    @app.post(
        "/tracks/{track_id}/locate",
        response_model=LocatedOut,
        responses={**ERRORS, 404: {"model": Problem, "description": "no such track"}},
        dependencies=guarded,
    )
    def locate(track_id: UUID, body: LocateRequest, s: Open) -> dict[str, Any]:  # type: ignore[valid-type]
        """Where a text happens in one track: every clip's evidence and the best segments
        (what `indexer locate --json` prints)."""
        return s.locate(str(track_id), body.query).as_dict()  # type: ignore[attr-defined]

    def background() -> BackgroundIndexer:
        found = jobs.get("indexer")
        if found is None:
            raise HTTPException(
                409,
                "this process is an `indexer index` run, which takes no other jobs: its "
                "folders are indexed when it ends (or index through `indexer serve`)",
            )
        return found

    Jobs = Annotated[BackgroundIndexer, Depends(background)]

    @app.post(
        "/index",
        status_code=202,
        response_model=JobOne,
        responses={
            **ERRORS,
            403: {"model": Problem, "description": "not a folder of INDEXER_SERVE_CATALOGS"},
            404: {"model": Problem, "description": "no such folder (inside an allowed one)"},
            409: {"model": Problem, "description": "this process takes no index jobs"},
        },
        dependencies=guarded,
    )
    def start_index(body: IndexRequest, j: Jobs) -> dict[str, Any]:
        """Index a catalog folder in the background while the server answers: one of
        INDEXER_SERVE_CATALOGS or a folder inside one (never another path); a job already
        queued for the folder is answered instead of a second. Follow it with GET /index."""
        try:
            folder = allowed_catalog(settings, body.catalog)
        except NotAllowed as err:
            raise HTTPException(403, str(err)) from None
        except FileNotFoundError as err:
            raise HTTPException(404, str(err)) from None
        return {"job": j.submit([str(folder)], "api").as_dict()}

    @app.get("/index", response_model=JobsOut, responses=ERRORS, dependencies=guarded)
    def list_jobs(j: Jobs) -> dict[str, Any]:
        """The index jobs (POST /index, and those `indexer index` and `indexer watch` handed
        over), newest first, with their progress and summary."""
        return {"jobs": j.jobs(), "catalogs": list(settings.serve_catalogs)}

    @app.get("/healthz", response_model=Health)
    def healthz() -> dict[str, Any]:
        """The process is up (liveness)."""
        return {"status": "ok"}

    @app.get("/readyz", response_model=Ready, responses={503: {"model": Ready}})
    def readyz(response: Response) -> dict[str, Any]:
        """The model is loaded and the index is searchable (readiness)."""
        s = state.get("searcher") if open_searcher is None else searcher()
        indexer = jobs.get("indexer")
        indexing = {"indexing": indexer.current()} if indexer is not None else {}
        if s is None:
            response.status_code = 503
            return {"status": "starting"}
        try:
            target = s.collection()
        except IndexUnavailable as err:
            response.status_code = 503
            return {"status": str(err), **indexing}
        tracks = s.size()
        if tracks == 0:
            response.status_code = 503
            return {"status": EMPTY, "tracks": 0, **indexing}
        return {
            "status": "ready",
            "tracks": tracks,
            "fingerprint": target.removeprefix(s.store.alias + "-"),
            **indexing,
        }

    @app.get("/metrics", dependencies=guarded, response_class=Response)
    def prometheus() -> Response:
        """Prometheus metrics: request counts and latencies by route, index size."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(audio.router(key, searcher))
    app.include_router(page.router())

    return app


def check_bind(settings: Settings) -> None:
    """Refuse to serve beyond this machine without an API key."""
    if settings.api_key is None and not _loopback(settings.host):
        raise ValueError(
            f"refusing to serve on {settings.host} without an API key: set INDEXER_API_KEY "
            "(clients send it in X-API-Key) or bind to 127.0.0.1"
        )


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _ms(began: float) -> float:
    return round((time.perf_counter() - began) * 1000, 2)
