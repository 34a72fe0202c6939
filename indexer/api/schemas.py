"""Request and response bodies of the HTTP API (pydantic; no torch, so the schema is cheap).

Request models are built from the settings so the OpenAPI schema states the real limits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from indexer.search import MAX_SEEDS, Page
from indexer.settings import Settings
from indexer.store.base import DURATION_MAX, YEAR_MAX, TrackFilter
from indexer.tags import MAX_TAG_CHARS, tag_value

Tag = Annotated[str, Field(min_length=1, max_length=512)]
# a facet (indexer/tags.py), normalised as stored; empty, long or control characters: a 422
Facet = Annotated[str, Field(min_length=1, max_length=MAX_TAG_CHARS), AfterValidator(tag_value)]
MAX_FILTER_TAGS = 20
EXPLAIN = (
    "each hit also lists every clip's evidence, weight and similarity (`clips`), in time order"
)
QUERY = "free text: a short query or a paragraph describing a whole song"


class Filters(BaseModel):
    """First-stage conditions; every field is optional and they combine with AND."""

    # NaN and infinities are refused here too, not only by the app's strict JSON reading: a
    # NaN range panics inside Qdrant Edge
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    artist: Tag | None = Field(None, description="exact artist tag")
    album: Tag | None = Field(None, description="exact album tag")
    genre: Tag | None = Field(None, description="exact genre tag")
    year_min: int | None = Field(None, ge=0, le=YEAR_MAX)
    year_max: int | None = Field(None, ge=0, le=YEAR_MAX)
    duration_min: float | None = Field(None, ge=0, le=DURATION_MAX, description="seconds")
    duration_max: float | None = Field(None, ge=0, le=DURATION_MAX, description="seconds")
    folder: str | None = Field(
        None,
        min_length=1,
        max_length=4096,
        pattern=r"^/",
        description="absolute folder of the catalog: tracks with a file under it",
    )
    tags: list[Facet] = Field(
        default_factory=list,
        max_length=MAX_FILTER_TAGS,
        description="facets a tagged model heard (e.g. piano, jazz, female vocal): tracks with "
        "every one of them; tracks of a model without a tagger have none",
    )

    @model_validator(mode="after")
    def _ranges(self) -> Filters:
        for low, high in ((self.year_min, self.year_max), (self.duration_min, self.duration_max)):
            if low is not None and high is not None and low > high:
                raise ValueError("a range's minimum is above its maximum")
        return self

    def to_filter(self) -> TrackFilter:
        data = self.model_dump()
        folder = data.pop("folder")
        tags = tuple(data.pop("tags"))
        return TrackFilter(
            **data, folder=(folder.rstrip("/") or "/") if folder else None, tags=tags
        )


@dataclass(frozen=True)
class RequestModels:
    search: type[BaseModel]
    similar: type[BaseModel]
    batch_similar: type[BaseModel]
    recommend: type[BaseModel]
    locate: type[BaseModel]


# excluded ids one request may name, and seed tracks one /batch/similar call may name
MAX_EXCLUDE = 1000
MAX_BATCH = 100
TrackIds = list[UUID]


def request_models(settings: Settings) -> RequestModels:
    Limit = Annotated[int, Field(ge=1, le=settings.max_limit, description="hits to return")]
    Offset = Annotated[
        int, Field(ge=0, le=settings.max_offset, description="hits to skip (paging)")
    ]
    Text = Annotated[
        str,
        Field(min_length=1, max_length=settings.max_query_chars, pattern=r"\S", description=QUERY),
    ]

    class Paged(BaseModel):
        """What the paged routes (similar, batch similar, recommend) share."""

        model_config = ConfigDict(extra="forbid")

        limit: Limit = 10
        offset: Offset = 0
        filters: Filters | None = None
        exclude: TrackIds = Field(
            default_factory=list, max_length=MAX_EXCLUDE, description="track ids never to return"
        )
        per_artist: int | None = Field(
            None, ge=1, description="at most this many hits per artist (untagged tracks: no limit)"
        )
        explain: bool = Field(False, description=EXPLAIN)

        def page(self) -> Page:
            return Page(self.limit, self.offset, self.per_artist, tuple(map(str, self.exclude)))

        def where(self) -> TrackFilter | None:
            return self.filters.to_filter() if self.filters else None

    class SearchRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")

        query: str = Field(
            min_length=1,
            max_length=settings.max_query_chars,
            pattern=r"\S",
            description=QUERY,
        )
        limit: int = Field(10, ge=1, le=settings.max_limit, description="hits to return")
        filters: Filters | None = None
        explain: bool = Field(False, description=EXPLAIN)

    class SimilarRequest(Paged):
        id: UUID = Field(description="an indexed track id")

    class BatchSimilarRequest(Paged):
        ids: TrackIds = Field(
            min_length=1,
            max_length=MAX_BATCH,
            description="indexed track ids: one list of similar tracks for each, in this order",
        )

    class RecommendRequest(Paged):
        positive: TrackIds = Field(
            min_length=1, max_length=MAX_SEEDS, description="liked track ids: more like these"
        )
        negative: TrackIds = Field(
            default_factory=list, max_length=MAX_SEEDS, description="disliked: less like these"
        )
        query: Text | None = Field(
            None, description="optional text that steers, scored by the same fusion as search"
        )

    class LocateRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")

        query: Text

    return RequestModels(
        SearchRequest, SimilarRequest, BatchSimilarRequest, RecommendRequest, LocateRequest
    )


EVIDENCE = "evidence that the text happens here (higher is better; the model's own scale)"


class SegmentOut(BaseModel):
    start: float = Field(description="seconds, the start of its first clip")
    end: float = Field(description="seconds, the end of its last clip")
    score: float = Field(description="mean evidence of its clips (as the timeline's `score`)")


class ClipOut(BaseModel):
    start: float = Field(description="seconds")
    end: float = Field(description="seconds")
    score: float = Field(description=EVIDENCE)
    weight: float = Field(description="share of the track's fusion weight on this clip (0..1)")
    similarity: float = Field(description="how well the clip matches (cosine scale)")


class TimelineClipOut(BaseModel):
    start: float = Field(description="seconds")
    end: float = Field(description="seconds")
    score: float = Field(description=EVIDENCE)


class LocatedOut(BaseModel):
    id: str
    query: str
    path: str
    title: str | None
    artist: str | None
    duration: float | None
    segments: list[SegmentOut] = Field(description="the best stretches, best first")
    clips: list[TimelineClipOut] = Field(description="every clip, in time order")


class HitOut(BaseModel):
    id: str
    score: float = Field(description="ranking score (fusion score for search)")
    first_stage: float = Field(
        description="first-stage similarity (search: query . pooled clips; similar: song "
        "cosine; recommend: the best score of the first-stage queries that found it)"
    )
    rerank: float = Field(description="the re-ranking score")
    path: str
    title: str | None
    artist: str | None
    album: str | None
    duration: float | None
    segments: list[SegmentOut]
    files: list[str]
    clips: list[ClipOut] | None = Field(None, description="with `explain` only")
    tags: dict[str, float] = Field(
        default_factory=dict,
        description="facets a tagged model heard, best first, with their song-level scores "
        "(0..1); {} when the index's model has no tagger",
    )


class Hits(BaseModel):
    hits: list[HitOut]
    took_ms: float


class SeedHits(BaseModel):
    id: str = Field(description="the seed track")
    hits: list[HitOut]


class BatchHits(BaseModel):
    results: list[SeedHits] = Field(description="one per seed track, in the request's order")
    took_ms: float


class TagClipOut(BaseModel):
    start: float = Field(description="seconds")
    end: float = Field(description="seconds")
    tags: dict[str, float] = Field(description="the clip's best facets (0..1), best first")


class Track(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    path: str | None = None
    tags: dict[str, float] = Field(
        default_factory=dict, description="as a hit's `tags`; {} when the model has no tagger"
    )
    tag_timeline: list[TagClipOut] = Field(
        default_factory=list, description="per clip, in time order, its best facets"
    )


class Problem(BaseModel):
    detail: Any


class IndexRequest(BaseModel):
    """A folder to index: one of INDEXER_SERVE_CATALOGS or a folder inside one."""

    model_config = ConfigDict(extra="forbid")

    catalog: str = Field(min_length=1, max_length=4096, pattern=r"^/", description="absolute path")


class IndexSummaryOut(BaseModel):
    indexed: int
    unchanged: int
    failed: int
    skipped_failed: int
    removed: int
    audio_seconds: float
    seconds: float
    collection: str
    fingerprint: str
    alias_switched: bool


class JobOut(BaseModel):
    id: str
    paths: list[str]
    source: str = Field(description='"api", or the command that handed it over')
    state: str = Field(description="queued, indexing, optimizing, done, failed or stopped")
    submitted: float = Field(description="Unix time")
    started: float | None = None
    finished: float | None = None
    files_done: int = Field(description="files embedded or failed so far")
    files_total: int = Field(description="files the job embeds (0 until it has planned)")
    audio_seconds: float
    summary: IndexSummaryOut | None = Field(None, description="what `indexer index --json` prints")
    error: str | None = None
    queued: int | None = Field(None, description="jobs waiting (in /readyz)")


class JobOne(BaseModel):
    job: JobOut


class JobsOut(BaseModel):
    jobs: list[JobOut] = Field(description="newest first (the last 100 finished ones kept)")
    catalogs: list[str] = Field(description="the folders POST /index may index")


class Health(BaseModel):
    status: str
    tracks: int | None = None
    fingerprint: str | None = None


class Ready(Health):
    indexing: JobOut | None = Field(
        None, description="the index job this server runs now, or the next queued one"
    )
