"""Search: text -> first stage (a scan with filters, exact re-scoring) -> fusion -> hits.

Fusion scores every (text, clip) pair, so over a whole catalog it costs O(tracks x clips). The
model's fusion is built so that its score is one dot product between a text vector and a
per-track vector (collap_model/fusion.py): each track stores its clips pooled by every fusion
attention pattern (`first_stage`). The store scans an int8 copy of those vectors for
`candidates` x oversampling tracks and re-ranks them by the exact fusion score (the dot product
with the stored float16 vectors); the best `limit` are the fusion top hits. Only those are read
whole: their clips give the fusion score again in float32 and say where in each track the text
matches (CoLLAP.locate's per-clip evidence becomes segments, exactly as `locate` finds them in
one track). Reading the clips of every candidate instead cost ~100 random reads per query, the
latency tail once the OS had dropped the payload pages.

Similar tracks use the song vector first, then a clip-level re-rank: the symmetric mean of
best clip matches (Chamfer similarity), so a track that shares whole passages with the query
track ranks above one that only sounds alike on average. A batch of seed tracks shares one
planned first stage (the store's `neighbours`) and one read of the candidates.

Recommendations from liked (positive) and disliked (negative) tracks reuse both mechanisms. The
first stage gathers candidates with song vectors, as Qdrant's recommend API would, but as a
union: the average-vector query (2·mean(positive) − mean(negative), Qdrant's strategy) for
AVERAGE_SHARE x the candidates, and each liked track's own neighbours, so a candidate close to
one liked track is not lost to the average of several different ones; with a steering text,
the text search's fusion first stage adds its own candidates. The re-rank is at clip level: a
candidate's Chamfer similarity to each liked track, averaged (one liked track: exactly
`similar`'s score), minus NEGATIVE_WEIGHT x its highest Chamfer similarity to a disliked track,
plus STEER_WEIGHT x the text's fusion score. Liked, disliked and excluded tracks are excluded
inside the store's search, so pages are full.

`indexer serve` runs both from the resident index (indexer/resident.py), a copy in memory of
every track's clips (int8) and clip centroid: the first stage scans the centroids, the re-rank
reads clips from memory over SIMILAR_WIDTH / RECOMMEND_WIDTH times the candidates, and only the
page's hits are read from the store, so a cold page cache costs a few reads, not hundreds. With
a filter, the first stage stays the store's (by song vector).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from indexer.resident import ResidentIndex, centroid, int8_dots, quantize
from indexer.store.base import (
    CLIP_VECTORS,
    DURATION_MAX,
    FIRST_STAGE,
    YEAR_MAX,
    Candidate,
    Store,
    StoredTrack,
    TrackFilter,
    decode_clips,
    point_id,
)
from indexer.tags import shown_tags, shown_track, tag_value

if TYPE_CHECKING:
    from collap_model.light import LightModel
    from collap_model.model import CoLLAP
    from collap_model.outputs import AudioEmbedding
    from collap_model.scoring import TextScorer

log = logging.getLogger(__name__)

# similar tracks and recommendations over the resident index (indexer/resident.py) re-rank this
# many times the candidates a first stage through the store gathers: its clips are in memory,
# so a wider net costs ~1 ms per 1000 tracks, not a read each. At 100k tracks (the
# benchmarks/cold.py catalog) recall@10 against exhaustive Chamfer scoring was, for similar,
# 0.94 at 10x, 0.96 at 20x, 0.97 at 40x (the store path's 100: 0.65); for recommend, whose
# first stage is already 3x wider, 0.97 at 10x, 0.98 at 20x, 0.99 at 40x, where every 10x
# more cost ~20 ms p50 (20x: 58 against 38 ms in one run)
SIMILAR_WIDTH = 20
RECOMMEND_WIDTH = 10
# a segment keeps the clips whose evidence lies in the top SEGMENT_KEEP of the range from the
# track's median clip to its best one: relative to the track, so it holds for any scale of
# evidence (the WhereHead's logits, the fusion's cosine-scale clip match, Chamfer similarity)
SEGMENT_KEEP = 0.5
MAX_SEGMENTS = 3
# temperature turning clip match scores into weights for similar-track explanations
SIMILAR_TEMPERATURE = 0.05
# recommend: a disliked track's Chamfer similarity counts half a liked one's, the 2 : 1 of
# Qdrant's average-vector strategy (it searches 2·mean(positive) − mean(negative))
NEGATIVE_WEIGHT = 0.5
# recommend: the steering text's fusion score counts as much as a disliked track: fusion scores
# spread over about the range of Chamfer similarities between songs (-0.5..0.6 against
# -0.1..0.8 for 16 synthetic songs of four styles with collap-mini), so it moves hits without
# outweighing the liked tracks
STEER_WEIGHT = 0.5
# recommend: the average-vector query fetches this many times the candidates, each liked
# track's own query a share of them; with 3 liked tracks and 1 disliked at 10k tracks
# (benchmarks/recommend.py), the average query's candidates held 0.76 of the exhaustive
# clip-level top 10 at 100, 0.86 at 200, 0.94 at 400, and 100 per liked track added less
# than 100 more for the average (0.83 against 0.86)
AVERAGE_SHARE = 2
MAX_SEEDS = 50  # liked tracks, and separately disliked tracks, one recommendation may name
# with per_artist, the first stage fetches this many times the hits asked for, since keeping
# few tracks per artist drops some of the best candidates
PER_ARTIST_SLACK = 4
# the re-rank's similarity blocks hold at most this many clip pairs (float32: 64 MB)
CLIP_PAIRS_PER_BLOCK = 1 << 24
# payload keys callers never see (internal copies and bookkeeping)
HIDDEN_PAYLOAD = frozenset({CLIP_VECTORS, "dirs"})
FILTER_KEYS = ("artist", "album", "genre", "year", "duration", "path", "tag")


EMPTY = "the index is empty: run `indexer index PATH` first"


class QueryError(ValueError):
    """The request itself is wrong (empty text, bad filter, unknown track): a 4xx."""


class TrackNotFound(QueryError):
    """The track id names no indexed track: a 404."""


class IndexUnavailable(RuntimeError):
    """Nothing to search, or the index was built by another model: a 409."""


@dataclass(frozen=True)
class Segment:
    """A contiguous stretch of neighbouring clips where the text matches, edges on the clip
    grid: from its first clip's start to its last clip's end."""

    start: float  # seconds
    end: float
    score: float  # the mean evidence of its clips (the timeline's scale; higher is better)


@dataclass(frozen=True)
class TimelineClip:
    """One clip of a located track's timeline."""

    start: float  # seconds
    end: float
    score: float  # the evidence that the text happens here (CoLLAP.locate; higher is better)


@dataclass(frozen=True)
class ClipMatch:
    """One clip's part in a hit: what the page shades along the track's timeline."""

    start: float  # seconds
    end: float
    score: float  # where the text happens: the evidence segments are made from (locate)
    weight: float  # its share of the track's fusion weight (0..1; the clips' weights sum to 1)
    similarity: float  # how well this clip matches (cosine scale)


@dataclass
class Located:
    """Where a text happens in one track: every clip's evidence and the best segments."""

    id: str
    query: str
    path: str
    title: str | None
    artist: str | None
    duration: float | None
    segments: list[Segment]  # best first
    clips: list[TimelineClip]  # every clip, in time order

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Hit:
    id: str
    score: float  # the ranking score: fusion score (search) or clip-level similarity (similar)
    first_stage: float  # first-stage similarity (search: v · p, float16; similar: song cosine)
    rerank: float  # the re-ranking score (equal to `score`; kept as its own part)
    path: str
    title: str | None
    artist: str | None
    album: str | None
    duration: float | None
    segments: list[Segment] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    # every clip's weight and similarity in time order; only when asked for (explain): a long
    # file has over a thousand clips, which most callers never read
    clips: list[ClipMatch] | None = None
    # the track's facets and their scores, best first ({}: its model has no tagger)
    tags: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Page:
    """Which hits of a ranking a request wants: `limit` of them after skipping `offset`, with
    at most `per_artist` per artist (tracks without an artist tag count as their own artists),
    never one of `exclude` (track ids)."""

    limit: int = 10
    offset: int = 0
    per_artist: int | None = None
    exclude: tuple[str, ...] = ()

    def check(self) -> Page:
        """The page with its excluded ids in canonical form; QueryError if it asks for
        nothing or names a bad id."""
        _check_limit(self.limit)
        if self.offset < 0:
            raise QueryError(f"offset must be at least 0 (got {self.offset})")
        if self.per_artist is not None and self.per_artist < 1:
            raise QueryError(f"per_artist must be at least 1 (got {self.per_artist})")
        return Page(self.limit, self.offset, self.per_artist, track_ids(self.exclude))

    def fetch(self, candidates: int) -> int:
        """How many first-stage candidates this page needs at least."""
        need = self.offset + self.limit
        return max(candidates, need * (PER_ARTIST_SLACK if self.per_artist else 1))

    def select(self, ranked: Sequence[Candidate]) -> list[int]:
        """Positions in `ranked` (best first) of this page's hits."""
        kept: list[int] = []
        per: dict[str, int] = {}
        for i, cand in enumerate(ranked):
            # the track's whole credit ("Ann; Bob"): a duet is not one more track of Ann's
            artist = shown_values(cand.payload.get("artist"))
            if self.per_artist is not None and artist and artist.strip():
                key = artist.strip().casefold()
                if per.get(key, 0) >= self.per_artist:
                    continue
                per[key] = per.get(key, 0) + 1
            kept.append(i)
            if len(kept) == self.offset + self.limit:
                break
        return kept[self.offset :]


@dataclass(frozen=True)
class Seed:
    """A track to rank others against: an indexed one (id) or a file embedded on the fly."""

    id: str | None
    song: np.ndarray  # (D,) unit
    clips: np.ndarray  # (N, D) unit
    times: np.ndarray  # (N, 2) seconds


def chamfer(
    seeds: Sequence[np.ndarray], candidates: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Seeds' clips (N_s, D) each and candidates' clips (N_c, D) each, unit vectors ->
    (S, C) symmetric Chamfer similarity (the mean of the seed clips' best matches in the
    candidate and of the candidate clips' best matches in the seed, averaged), and (S, ΣN_c)
    each candidate clip's best match in each seed (the candidates' clips concatenated).

    One matrix product per block of seeds instead of a loop over pairs: a recommendation
    compares up to 50 liked tracks with hundreds of candidates."""
    cand = np.concatenate(candidates)  # (ΣN_c, D)
    seed = np.concatenate(seeds)  # (ΣN_s, D)
    return chamfer_of(
        np.array([s.shape[0] for s in seeds]),
        np.array([c.shape[0] for c in candidates]),
        lambda first, last: seed[first:last] @ cand.T,
    )


def chamfer_of(
    s_sizes: np.ndarray, c_sizes: np.ndarray, product: Callable[[int, int], np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """`chamfer` from the seeds' and candidates' clip counts and `product(first, last)`: the
    cosines (last - first, ΣN_c) of the seeds' clips first..last with every candidate clip
    (float32 from the stored clips, or from their int8 copy: indexer/resident.py)."""
    total = int(c_sizes.sum())
    c_starts = np.concatenate([[0], np.cumsum(c_sizes)[:-1]])
    s_first = np.concatenate([[0], np.cumsum(s_sizes)])
    scores = np.empty((len(s_sizes), len(c_sizes)), dtype=np.float32)
    best_in_seed = np.empty((len(s_sizes), total), dtype=np.float32)
    rows_per_block = max(1, CLIP_PAIRS_PER_BLOCK // max(1, total))
    first = 0
    while first < len(s_sizes):
        last, rows = first, 0
        while last < len(s_sizes) and (last == first or rows + s_sizes[last] <= rows_per_block):
            rows += s_sizes[last]
            last += 1
        sim = product(int(s_first[first]), int(s_first[last]))  # (ΣN_s, ΣN_c) cosine
        sizes = s_sizes[first:last]
        s_starts = s_first[first:last] - s_first[first]
        best_in_cand = np.maximum.reduceat(sim, c_starts, axis=1)  # (ΣN_s, C)
        forward = np.add.reduceat(best_in_cand, s_starts, axis=0) / sizes[:, None]  # (S_b, C)
        best = np.maximum.reduceat(sim, s_starts, axis=0)  # (S_b, ΣN_c)
        backward = np.add.reduceat(best, c_starts, axis=1) / c_sizes[None, :]  # (S_b, C)
        scores[first:last] = 0.5 * (forward + backward)
        best_in_seed[first:last] = best
        first = last
    return scores, best_in_seed


def parse_filters(items: Sequence[str]) -> TrackFilter:
    """CLI `key=value` filters -> TrackFilter.

    artist/album/genre: exact tag; year=1999 or 1990..1999; duration=SECONDS or MIN..MAX in
    seconds or m:ss (either side of `..` may be empty); path=FOLDER (tracks under it);
    tag=FACET (repeatable: every one must match; indexer/tags.py).
    """
    values: dict[str, Any] = {}
    tags: list[str] = []
    for item in items:
        key, sep, value = item.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not sep or not value:
            raise QueryError(f"bad filter {item!r}: expected key=value")
        if key not in FILTER_KEYS:
            raise QueryError(f"unknown filter {key!r}; use one of {', '.join(FILTER_KEYS)}")
        if key in ("artist", "album", "genre"):
            values[key] = value
        elif key == "year":
            values["year_min"], values["year_max"] = _range(value, _year, item)
        elif key == "duration":
            values["duration_min"], values["duration_max"] = _range(value, _seconds, item)
        elif key == "tag":
            try:
                tags.append(tag_value(value))
            except ValueError as err:
                raise QueryError(f"bad filter {item!r}: {err}") from None
        else:
            values["folder"] = normalise_folder(value)
    return TrackFilter(**values, tags=tuple(tags))


def normalise_folder(value: str) -> str:
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = Path.cwd() / path
    return str(Path(*path.parts))


def _range(value: str, convert: Any, item: str) -> tuple[Any, Any]:
    low, sep, high = value.partition("..")
    try:
        if not sep:
            exact = convert(low)
            return exact, exact
        lo = convert(low) if low.strip() else None
        hi = convert(high) if high.strip() else None
    except _OutOfRange as err:
        raise QueryError(f"bad filter {item!r}: {err}") from None
    except ValueError:
        raise QueryError(f"bad filter {item!r}: not a number or range (a..b)") from None
    if lo is None and hi is None:
        raise QueryError(f"bad filter {item!r}: empty range")
    if lo is not None and hi is not None and lo > hi:
        raise QueryError(f"bad filter {item!r}: the range is reversed")
    return lo, hi


class _OutOfRange(ValueError):
    pass


def _year(text: str) -> int:
    year = int(text.strip())
    if not 0 <= year <= YEAR_MAX:
        raise _OutOfRange(f"a year is 0..{YEAR_MAX}")
    return year


def _seconds(text: str) -> float:
    """'95', '95.5' or '1:35' -> seconds (finite, 0..DURATION_MAX: nan and inf are refused)."""
    parts = text.strip().split(":")
    if len(parts) > 2:
        raise ValueError(text)
    seconds = float(parts[-1])
    if len(parts) == 2:
        seconds += 60 * int(parts[0])
    if not 0 <= seconds <= DURATION_MAX:  # false for nan too
        raise _OutOfRange(f"a duration is a finite number of seconds, 0..{DURATION_MAX:.0f}")
    return seconds


def segments_from_evidence(times: np.ndarray, evidence: np.ndarray) -> list[Segment]:
    """Clip times (N, 2) and per-clip evidence (N,) -> the best segments, best first.

    A clip is kept when its evidence is at least median + SEGMENT_KEEP x (max - median);
    neighbouring kept clips (they overlap in time) merge into one segment, scored by the mean
    evidence of its clips. What `locate` shows and what search hits carry.
    """
    if evidence.size == 0:
        return []
    best, middle = float(evidence.max()), float(np.median(evidence))
    keep = evidence >= middle + SEGMENT_KEEP * (best - middle) - 1e-9 * max(1.0, abs(best))
    runs: list[tuple[int, int]] = []
    for i in np.flatnonzero(keep).tolist():
        if runs and runs[-1][1] == i - 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    out = [
        Segment(
            round(float(times[first, 0]), 2),
            round(float(times[last, 1]), 2),
            round(float(evidence[first : last + 1].mean()), 4),
        )
        for first, last in runs
    ]
    out.sort(key=lambda s: -s.score)  # stable: equal scores stay in time order
    return out[:MAX_SEGMENTS]


def timeline(times: np.ndarray, evidence: np.ndarray) -> list[TimelineClip]:
    """Clip times (N, 2), evidence (N,) -> one TimelineClip per clip, in time order."""
    return [
        TimelineClip(round(float(t[0]), 2), round(float(t[1]), 2), round(float(e), 4))
        for t, e in zip(times, evidence, strict=True)
    ]


def clip_matches(
    times: np.ndarray, evidence: np.ndarray, weights: np.ndarray, scores: np.ndarray
) -> list[ClipMatch]:
    """Clip times (N, 2), evidence (N,), weights (N,), clip scores (N,) -> a ClipMatch each."""
    return [
        ClipMatch(
            round(float(t[0]), 2),
            round(float(t[1]), 2),
            round(float(e), 4),
            round(float(w), 4),
            round(float(c), 4),
        )
        for t, e, w, c in zip(times, evidence, weights, scores, strict=True)
    ]


def public_payload(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k not in HIDDEN_PAYLOAD}


class Searcher:
    """Search and similar-tracks over one store with one loaded model (thread-safe): the torch
    model, or the torch-free text side of a cold command (collap_model/light.py), which loads
    the torch model only for audio."""

    def __init__(
        self,
        store: Store,
        model: CoLLAP | LightModel,
        candidates: int = 100,
        max_query_chars: int = 20_000,
    ) -> None:
        from collap_model.light import LightModel
        from collap_model.scoring import ModelScorer

        self.store = store
        self.model = model
        self.scorer: TextScorer = model if isinstance(model, LightModel) else ModelScorer(model)
        self.candidates = candidates
        self.max_query_chars = max_query_chars
        # what an empty index answers (a running `indexer index` says it writes soon)
        self.empty = EMPTY
        # one request at a time touches the store (an Edge shard is one process's object);
        # text encoding and fusion run outside the lock
        self._lock = threading.Lock()

    # ---- the index ----------------------------------------------------------------------------
    def collection(self) -> str:
        """The alias target, checked against the loaded model's fingerprint."""
        with self._lock:
            target = self.store.alias_target()  # a small file read; no count on the hot path
        if target is None:
            raise IndexUnavailable(self.empty)
        built_by = target.removeprefix(self.store.alias + "-")
        if built_by != self.model.fingerprint:
            raise IndexUnavailable(
                f"the index was built with model {built_by} but the loaded model is "
                f"{self.model.fingerprint}: reindex with `indexer index`, or set INDEXER_MODEL to "
                "the model that built it"
            )
        return target

    def size(self) -> int:
        with self._lock:
            target = self.store.alias_target()
            return self.store.count(target) if target is not None else 0

    def track(self, track_id: str) -> dict[str, Any]:
        target = self.collection()
        with self._lock:
            found = self.store.retrieve(target, [_check_id(track_id)])
        if not found:
            raise TrackNotFound(f"no track with id {track_id}")
        return {"id": found[0].id, **shown_track(public_payload(found[0].payload))}

    def _check_text(self, text: str) -> str:
        text = text.strip()
        if not text:
            raise QueryError("the query is empty")
        if len(text) > self.max_query_chars:
            raise QueryError(
                f"the query has {len(text)} characters; the limit is {self.max_query_chars}"
            )
        return text

    # ---- text search --------------------------------------------------------------------------
    def search(
        self,
        text: str,
        limit: int = 10,
        where: TrackFilter | None = None,
        explain: bool = False,
    ) -> list[Hit]:
        """Free text -> the `limit` best tracks by fusion score, with segments (where the text
        happens, as `locate` finds it) and, with `explain`, every clip's evidence, fusion
        weight and similarity."""
        text = self._check_text(text)
        _check_limit(limit)
        target = self.collection()
        emb = self._encode(text)
        vector = self.scorer.query_vector(emb)
        with self._lock:
            found = self.store.search(
                target, vector.tolist(), limit, where, FIRST_STAGE, self.candidates
            )
        if not found:
            return _nothing_found(where, self.empty)
        clips, times = self._clips_of(target, found)
        fused = self.scorer.fuse(emb, clips, times)
        scores = fused.scores  # (hits,)
        evidence = self.scorer.evidence(emb, clips, times)  # (hits, N), -inf padded
        hits = []
        for i in np.argsort(-scores, kind="stable").tolist():
            n = clips[i].shape[0]
            e = evidence[i, :n]
            clip_parts = None
            if explain:
                w = fused.clip_weights[i, :n]
                c = fused.clip_scores[i, :n]
                clip_parts = clip_matches(times[i], e, w, c)
            hits.append(
                _hit(found[i], float(scores[i]), segments_from_evidence(times[i], e), clip_parts)
            )
        return hits

    # ---- where in a track ----------------------------------------------------------------------
    def locate(self, track_id: str, text: str) -> Located:
        """Where `text` happens in one indexed track: every clip's evidence (CoLLAP.locate) in
        time order and the best segments, the same segments a search hit carries."""
        text = self._check_text(text)
        pid = _check_id(track_id)
        target = self.collection()
        emb = self._encode(text)
        with self._lock:
            found = self.store.retrieve(target, [pid])
        if not found:
            raise TrackNotFound(f"no track with id {track_id}")
        clips, times = self._clips_of(target, found)
        evidence = self.scorer.evidence(emb, clips, times)[0]
        p = found[0].payload
        return Located(
            id=found[0].id,
            query=text,
            path=str(p.get("path", "")),
            title=p.get("title"),
            artist=shown_values(p.get("artist")),
            duration=p.get("duration"),
            segments=segments_from_evidence(times[0], evidence),
            clips=timeline(times[0], evidence),
        )

    def _encode(self, text: str) -> Any:
        try:
            return self.scorer.encode(text)
        except ValueError as err:  # the model refuses text longer than it can read whole
            raise QueryError(str(err)) from err

    # ---- similar tracks -------------------------------------------------------------------------
    def similar(
        self,
        track_id: str,
        limit: int = 10,
        where: TrackFilter | None = None,
        explain: bool = False,
        page: Page | None = None,
    ) -> list[Hit]:
        """Tracks most like an indexed one (itself excluded); `explain` as for search, with
        each clip's best match in the query track as its similarity. `page` (offset,
        per_artist, exclude) overrides `limit`."""
        return self.similar_many([track_id], limit, where, explain, page)[0]

    def similar_many(
        self,
        seed_ids: Sequence[str],
        limit: int = 10,
        where: TrackFilter | None = None,
        explain: bool = False,
        page: Page | None = None,
    ) -> list[list[Hit]]:
        """`similar` for several seed tracks at once, in their order: one read of the seeds,
        one planned first stage for all, one read of the candidates they share."""
        page = (page or Page(limit)).check()
        target = self.collection()
        seeds = self._seeds(target, seed_ids)
        return self._similar(target, seeds, page, where, explain)

    def similar_to_file(
        self,
        path: str | Path,
        limit: int = 10,
        where: TrackFilter | None = None,
        page: Page | None = None,
    ) -> list[Hit]:
        """Tracks most like an audio file: the indexed track if its content is indexed, else
        the file embedded on the fly (not stored)."""
        from indexer.scan import content_hash

        page = (page or Page(limit)).check()
        target = self.collection()
        path = Path(path)
        pid = point_id(content_hash(str(path)))
        with self._lock:
            known = self.store.retrieve(target, [pid])
        if known:
            return self.similar(pid, where=where, page=page)
        emb = self.embed_file(path)
        seed = Seed(None, emb.song.numpy(), emb.clips.numpy(), emb.clip_times.numpy())
        return self._similar(target, [seed], page, where, False)[0]

    def embed_file(self, path: Path) -> AudioEmbedding:
        from indexer.decode import AudioDecoder, DecodeError

        rate = self.model.sample_rate
        try:
            with AudioDecoder(str(path), rate) as dec:
                chunks = list(dec.chunks())
        except DecodeError as err:
            raise QueryError(f"{path}: {err.reason}") from err
        if not chunks:
            raise QueryError(f"{path}: no audio samples")
        return self.model.encode_audio(np.concatenate(chunks), rate)

    def _similar(
        self,
        target: str,
        seeds: Sequence[Seed],
        page: Page,
        where: TrackFilter | None,
        explain: bool,
    ) -> list[list[Hit]]:
        index = self._resident_index(target)
        if index is not None:
            return self._similar_resident(index, target, seeds, page, where, explain)
        # one more than needed: a seed is excluded from its own list after the search (in a
        # batch, seed A's list may hold seed B, so seeds are not excluded in the store)
        k = page.fetch(self.candidates) + 1
        with self._lock:
            found = self.store.neighbours(
                target, [seed.song.tolist() for seed in seeds], k, where, page.exclude
            )
        if not any(found) and all(seed.id is None for seed in seeds):
            _nothing_found(where, self.empty)
        read = self._read(target, {i for hits in found for i, _ in hits})
        decoded: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        out: list[list[Hit]] = []
        for seed, hits in zip(seeds, found, strict=True):
            cands = [
                Candidate(i, score, read[i]) for i, score in hits if i != seed.id and i in read
            ]
            if not cands:
                out.append([])
                continue
            cand_clips, cand_times = self._clips_of(target, cands, decoded)
            scores, best = chamfer([seed.clips], cand_clips)
            out.append(
                self._ranked(cands, scores[0], best[0], cand_clips, cand_times, page, explain)
            )
        return out

    # ---- the resident index (indexer/resident.py) -----------------------------------------------
    # bytes the in-memory copy may take (0: similar tracks and recommendations read the store)
    _resident_bytes = 0
    _resident: ResidentIndex | None = None
    _too_large: tuple[str, int] | None = None  # the collection and generation that did not fit
    _writing = False  # a background job writes: a stale copy waits for the jobs' end (writing)

    def keep_resident(self, max_bytes: int) -> ResidentIndex | None:
        """Rank similar tracks and recommendations from an in-memory copy of at most
        `max_bytes` (what a long-lived server wants: its answers then never wait on disk),
        built now; None when there is nothing to copy or it would not fit."""
        self._resident_bytes = max_bytes
        try:
            index = self._resident_index(self.collection())
        except IndexUnavailable:
            return None  # built by the first request once there is an index
        if index is not None and len(index):
            # the int8 kernels set themselves up on their first calls (~10 ms): not on the
            # first request's time
            seed = index.float_clips(0)
            _index_chamfer(index, [seed], index.nearest(centroid(seed)[None], [10])[0])
        return index

    def _resident_index(self, target: str) -> ResidentIndex | None:
        """The copy of `target` as it is now, rebuilt if the store changed since."""
        if self._resident_bytes <= 0:
            return None
        with self._lock:
            generation = self.store.generation(target)
            if generation is None or self._too_large == (target, generation):
                return None
            index = self._resident
            if index is not None and (index.collection, index.generation) == (target, generation):
                return index
            if self._writing:
                return None  # the store answers until the jobs end (see `writing`)
            self._resident = None  # the stale copy goes before its successor is built
            index = ResidentIndex.build(
                self.store, target, generation, self.model.config.embed_dim, self._resident_bytes
            )
            if index is None:
                self._too_large = (target, generation)
                log.warning(
                    "%s does not fit in INDEXER_RESIDENT_MB (%d MB): similar tracks and "
                    "recommendations read the store", target, self._resident_bytes >> 20,
                )  # fmt: skip
            self._resident = index
            return index

    def writing(self, running: bool) -> None:
        """Told by a server's background indexer (indexer/background.py) before its jobs and
        after the last queued one. Every batch a job writes makes the copy stale, and a request
        that rebuilt it would put a scan of the whole store (~35 s at 100k tracks) on its own
        time, once per batch: while jobs run, similar tracks and recommendations read the store,
        and when they end the copy is rebuilt here, on the indexer's thread, before requests use
        it again. The store must be one several threads share (owner.SharedStore), as a
        server's is: the scan runs outside this searcher's lock, taking the store's per track."""
        if running:
            self._writing = True
            return
        try:
            self.refresh_resident()
        finally:
            self._writing = False

    def refresh_resident(self) -> None:
        """Rebuild the copy if the store changed since it was built (outside the lock: see
        `writing`), and swap it in; the stale copy is dropped first (it is not used while the
        store changes), so the two are never held at once."""
        if self._resident_bytes <= 0:
            return
        try:
            target = self.collection()
        except IndexUnavailable:
            return
        with self._lock:
            generation = self.store.generation(target)
            index = self._resident
            if generation is None or (
                index is not None and (index.collection, index.generation) == (target, generation)
            ):
                return
            self._resident = None
        built = ResidentIndex.build(
            self.store, target, generation, self.model.config.embed_dim, self._resident_bytes
        )
        with self._lock:
            self._resident = built
            self._too_large = (target, generation) if built is None else None
        if built is None:
            log.warning(
                "%s no longer fits in INDEXER_RESIDENT_MB (%d MB): similar tracks and "
                "recommendations read the store",
                target,
                self._resident_bytes >> 20,
            )

    def _similar_resident(
        self,
        index: ResidentIndex,
        target: str,
        seeds: Sequence[Seed],
        page: Page,
        where: TrackFilter | None,
        explain: bool,
    ) -> list[list[Hit]]:
        """`_similar` over the resident copy: the first stage scans its clip centroids (with a
        filter: the store's, by song vector, as before), the re-rank its int8 clips."""
        k = page.fetch(self.candidates)
        own = [index.rows.get(seed.id, -1) if seed.id else -1 for seed in seeds]
        if where is not None and not where.is_empty():
            with self._lock:
                found = self.store.neighbours(
                    target, [seed.song.tolist() for seed in seeds], k + 1, where, page.exclude
                )
            lists = [index.rows_of(i for i, _ in hits) for hits in found]
        else:
            queries = np.stack([centroid(seed.clips) for seed in seeds])
            width = k * SIMILAR_WIDTH + 1  # one more: a seed is dropped from its own list
            lists = index.nearest(queries, [width] * len(seeds), index.mask(page.exclude))
        lists = [rows[rows != mine] for rows, mine in zip(lists, own, strict=True)]
        if not any(len(rows) for rows in lists) and all(seed.id is None for seed in seeds):
            _nothing_found(where, self.empty)
        ranked: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[int]]] = []
        for seed, rows in zip(seeds, lists, strict=True):
            if not len(rows):
                ranked.append((rows, np.zeros(0), np.zeros(0), np.zeros(0, np.int64), []))
                continue
            scores, best, sizes = _index_chamfer(index, [seed.clips], rows)
            ranked.append((rows, scores[0], best[0], sizes, _picked(index, rows, scores[0], page)))
        payloads = self._read(target, {index.ids[rows[i]] for rows, *_, p in ranked for i in p})
        out = []
        for seed, (rows, scores, best, sizes, picked) in zip(seeds, ranked, strict=True):
            songs = [seed.song]
            out.append(
                _index_hits(index, rows, scores, best, sizes, picked, payloads, songs, explain)
            )
        return out

    def _recommend_resident(
        self,
        index: ResidentIndex,
        target: str,
        pos: Sequence[Seed],
        neg: Sequence[Seed],
        banned: Sequence[str],
        steer: tuple[Any, list[float]] | None,
        need: int,
        where: TrackFilter | None,
        page: Page,
        explain: bool,
    ) -> list[Hit]:
        """`recommend` over the resident copy: the same union of first stages (over clip
        centroids; with a filter, the store's over song vectors, as before) for RECOMMEND_WIDTH
        times the candidates, re-ranked from the int8 clips."""
        average = np.mean([s.song for s in pos], axis=0)  # the first stages of the store
        if neg:
            average = 2 * average - np.mean([s.song for s in neg], axis=0)
        average /= max(float(np.linalg.norm(average)), 1e-12)
        each = max(page.offset + page.limit, -(-need // len(pos)))
        with self._lock:
            if where is not None and not where.is_empty():
                found = self.store.neighbours(
                    target, [average.tolist()], AVERAGE_SHARE * need, where, banned
                )
                if len(pos) > 1:
                    found += self.store.neighbours(
                        target, [s.song.tolist() for s in pos], each, where, banned
                    )
                lists = [index.rows_of(i for i, _ in hits) for hits in found]
            else:
                lists = []
            texts: list[Candidate] = []
            if steer is not None:
                texts = self.store.search(
                    target, steer[1], need, where, FIRST_STAGE, self.candidates, banned
                )
        if where is None or where.is_empty():
            # Qdrant's average-vector query and each liked track's own, over centroids
            mean = np.mean([centroid(s.clips) for s in pos], axis=0)
            if neg:
                mean = 2 * mean - np.mean([centroid(s.clips) for s in neg], axis=0)
            queries = [mean / max(float(np.linalg.norm(mean)), 1e-12)]
            ks = [AVERAGE_SHARE * need * RECOMMEND_WIDTH]
            if len(pos) > 1:
                queries += [centroid(s.clips) for s in pos]
                ks += [each * RECOMMEND_WIDTH] * len(pos)
            lists = index.nearest(np.stack(queries), ks, index.mask(banned))
        text_rows = index.rows_of(c.id for c in texts)
        rows = np.unique(np.concatenate([*lists, text_rows]).astype(np.int64))
        if not len(rows):
            return []
        every, best, sizes = _index_chamfer(index, [s.clips for s in [*pos, *neg]], rows)
        scores = every[: len(pos)].mean(axis=0)
        best = best[: len(pos)]
        if neg:
            scores = scores - NEGATIVE_WEIGHT * every[len(pos) :].max(axis=0)
        if steer is not None:
            # the fusion score for the best clip-level candidates and the text's own, as many
            # as the store's first stages gather (the others cannot reach the page)
            pool = np.argsort(-scores, kind="stable")[: (AVERAGE_SHARE + 1) * need]
            pool = np.union1d(pool, np.flatnonzero(np.isin(rows, text_rows)))
            fused = self._fusion(
                steer[0],
                [index.float_clips(int(r)) for r in rows[pool]],
                [index.track_times(int(r)) for r in rows[pool]],
            )
            steered = np.full_like(scores, -np.inf)
            steered[pool] = scores[pool] + STEER_WEIGHT * fused
            scores = steered
        picked = _picked(index, rows, scores, page)
        payloads = self._read(target, {index.ids[rows[i]] for i in picked})
        songs = [average, *(s.song for s in pos)]
        return _index_hits(
            index, rows, scores, best.max(axis=0), sizes, picked, payloads, songs, explain
        )

    def _fusion(self, emb: Any, clips: list[np.ndarray], times: list[np.ndarray]) -> np.ndarray:
        """The text's fusion score (C,) of each track's clips (N_i, D) at their times."""
        out: np.ndarray = self.scorer.scores(emb, clips, times)
        return out

    # ---- recommendations ------------------------------------------------------------------------
    def recommend(
        self,
        positive: Sequence[str],
        negative: Sequence[str] = (),
        query: str | None = None,
        where: TrackFilter | None = None,
        page: Page | None = None,
        explain: bool = False,
    ) -> list[Hit]:
        """Tracks like the liked ones (`positive`, 1..MAX_SEEDS ids), unlike the disliked ones
        (`negative`, up to MAX_SEEDS), steered by an optional text scored by the same fusion
        as search; never one of the named or excluded tracks (see the module docstring). A
        track named on both sides counts on both (a client may send a listener's history as it
        is)."""

        page = (page or Page()).check()
        liked, disliked = track_ids(positive), track_ids(negative)
        if not liked:
            raise QueryError("positive names no track: give at least one liked track id")
        for name, ids in (("positive", liked), ("negative", disliked)):
            if len(ids) > MAX_SEEDS:
                raise QueryError(f"{name} names {len(ids)} tracks; at most {MAX_SEEDS}")
        text = None if query is None else self._check_text(query)
        target = self.collection()
        seeds = self._seeds(target, [*liked, *disliked])
        pos, neg = seeds[: len(liked)], seeds[len(liked) :]
        banned = tuple(dict.fromkeys([*liked, *disliked, *page.exclude]))
        emb, vector = None, None
        if text is not None:
            emb = self._encode(text)
            vector = self.scorer.query_vector(emb).tolist()
        need = page.fetch(self.candidates)
        index = self._resident_index(target)
        if index is not None:
            steer = None if emb is None or vector is None else (emb, vector)
            return self._recommend_resident(
                index, target, pos, neg, banned, steer, need, where, page, explain
            )
        # Qdrant's average-vector query: mean(liked) + (mean(liked) − mean(disliked))
        average = np.mean([s.song for s in pos], axis=0)
        if neg:
            average = 2 * average - np.mean([s.song for s in neg], axis=0)
        average /= max(float(np.linalg.norm(average)), 1e-12)
        first: dict[str, float] = {}
        with self._lock:
            lists = self.store.neighbours(
                target, [average.tolist()], AVERAGE_SHARE * need, where, banned
            )
            if len(pos) > 1:  # each liked track's own neighbours, sharing the candidates budget
                each = max(page.offset + page.limit, -(-need // len(pos)))
                lists += self.store.neighbours(
                    target, [s.song.tolist() for s in pos], each, where, banned
                )
            texts: list[Candidate] = []
            if vector is not None:
                texts = self.store.search(
                    target, vector, need, where, FIRST_STAGE, self.candidates, banned
                )
        for hits in lists:
            for i, score in hits:
                first[i] = max(score, first.get(i, -np.inf))
        payloads = {c.id: c.payload for c in texts}
        for c in texts:
            first.setdefault(c.id, c.score)
        payloads.update(self._read(target, set(first) - set(payloads)))
        cands = [Candidate(i, score, payloads[i]) for i, score in first.items() if i in payloads]
        if not cands:
            return []
        cand_clips, cand_times = self._clips_of(target, cands)
        liked_sim, best = chamfer([s.clips for s in pos], cand_clips)
        scores = liked_sim.mean(axis=0)
        if neg:
            disliked_sim, _ = chamfer([s.clips for s in neg], cand_clips)
            scores = scores - NEGATIVE_WEIGHT * disliked_sim.max(axis=0)
        if emb is not None:
            scores = scores + STEER_WEIGHT * self.scorer.scores(emb, cand_clips, cand_times)
        return self._ranked(cands, scores, best.max(axis=0), cand_clips, cand_times, page, explain)

    def _ranked(
        self,
        cands: Sequence[Candidate],
        scores: np.ndarray,
        best: np.ndarray,
        cand_clips: Sequence[np.ndarray],
        cand_times: Sequence[np.ndarray],
        page: Page,
        explain: bool,
    ) -> list[Hit]:
        """Candidates, their scores (C,) and each of their clips' best match in the seeds
        (ΣN_c,) -> the page's hits, best first, with segments where they match the seeds."""
        order = np.argsort(-scores, kind="stable").tolist()
        starts = np.concatenate([[0], np.cumsum([c.shape[0] for c in cand_clips])])
        hits = []
        for pos in page.select([cands[i] for i in order]):
            i = order[pos]
            match = best[starts[i] : starts[i + 1]]
            hits.append(_similar_hit(cands[i], float(scores[i]), cand_times[i], match, explain))
        return hits

    def _seeds(self, target: str, named: Sequence[str]) -> list[Seed]:
        """The tracks' song vectors and clips, in the given order; TrackNotFound names the
        first unknown one."""
        ids = [_check_id(t) for t in named]
        index = self._resident_index(target)
        if index is not None:
            return index_seeds(index, named, ids)
        with self._lock:
            found = {t.id: t for t in self.store.retrieve(target, list(dict.fromkeys(ids)), True)}
        seeds = []
        for given, pid in zip(named, ids, strict=True):
            track = found.get(pid)
            if track is None:
                raise TrackNotFound(f"no track with id {given}")
            assert track.song is not None
            clips, times = self._own_clips(track)
            seeds.append(Seed(pid, np.asarray(track.song, dtype=np.float32), clips, times))
        return seeds

    def _read(self, target: str, ids: set[str]) -> dict[str, dict[str, Any]]:
        """Payloads of the given tracks (those still stored)."""
        if not ids:
            return {}
        with self._lock:
            return {t.id: t.payload for t in self.store.retrieve(target, sorted(ids))}

    # ---- clips ----------------------------------------------------------------------------------
    def _clips_of(
        self,
        target: str,
        found: Sequence[Candidate | StoredTrack],
        decoded: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Each candidate's clips (N_i, D) and clip times (N_i, 2); `decoded` keeps them across
        calls (the seeds of a batch share many candidates)."""
        dim = self.model.config.embed_dim
        done = {} if decoded is None else decoded
        clips: dict[str, np.ndarray] = {}
        missing = []
        for c in found:
            data = c.payload.get(CLIP_VECTORS)
            if c.id in done:
                continue
            if data is None:
                missing.append(c.id)  # indexed before the payload copy existed
            else:
                clips[c.id] = decode_clips(data, dim)
        if missing:
            with self._lock:
                for track in self.store.retrieve(target, missing, with_vectors=True):
                    clips[track.id] = np.asarray(track.clips, dtype=np.float32)
        for c in found:
            if c.id not in done:
                done[c.id] = clips[c.id], np.asarray(c.payload["clip_times"], dtype=np.float32)
        return [done[c.id][0] for c in found], [done[c.id][1] for c in found]

    def _own_clips(self, track: StoredTrack) -> tuple[np.ndarray, np.ndarray]:
        assert track.clips is not None
        return (
            np.asarray(track.clips, dtype=np.float32),
            np.asarray(track.payload["clip_times"], dtype=np.float32),
        )


def _hit(
    cand: Candidate, score: float, segments: list[Segment], clips: list[ClipMatch] | None = None
) -> Hit:
    p = cand.payload
    return Hit(
        id=cand.id,
        score=round(score, 6),
        first_stage=round(cand.score, 6),
        rerank=round(score, 6),
        path=str(p.get("path", "")),
        title=p.get("title"),
        artist=shown_values(p.get("artist")),
        album=p.get("album"),
        duration=p.get("duration"),
        segments=segments,
        files=[f["path"] for f in p.get("files", [])],
        clips=clips,
        tags=shown_tags(p),
    )


def _similar_hit(
    cand: Candidate, score: float, times: np.ndarray, match: np.ndarray, explain: bool
) -> Hit:
    """A similar-tracks or recommendation hit from its clips' best matches in the seeds
    (N,): where the seeds' music is, as evidence for segments (and, explained, clip weights)."""
    parts = None
    if explain:
        w = np.exp((match - match.max()) / SIMILAR_TEMPERATURE)
        w /= w.sum()
        parts = clip_matches(times, match, w, match)
    return _hit(cand, score, segments_from_evidence(times, match), parts)


# ---- ranking over the resident index ----------------------------------------------------------
def index_seeds(index: ResidentIndex, named: Sequence[str], ids: Sequence[str]) -> list[Seed]:
    """Seeds from the resident copy (their clips as the int8 copy holds them); TrackNotFound
    names the first unknown one."""
    seeds = []
    for given, pid in zip(named, ids, strict=True):
        row = index.rows.get(pid)
        if row is None:
            raise TrackNotFound(f"no track with id {given}")
        song = index.songs[row].astype(np.float32)
        seeds.append(Seed(pid, song, index.float_clips(row), index.track_times(row)))
    return seeds


def _index_chamfer(
    index: ResidentIndex, seeds: Sequence[np.ndarray], rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`chamfer` of the seeds' clips against the tracks at `rows` of the copy, from int8 clips
    on both sides; also each candidate's clip count (C,)."""
    seed_q, seed_scale = quantize(np.concatenate(seeds))
    cand_q, cand_scale, sizes = index.gather(rows)
    scores, best = chamfer_of(
        np.array([s.shape[0] for s in seeds]),
        sizes,
        lambda first, last: int8_dots(
            seed_q[first:last], seed_scale[first:last], cand_q, cand_scale
        ),
    )
    return scores, best, sizes


def _picked(index: ResidentIndex, rows: np.ndarray, scores: np.ndarray, page: Page) -> list[int]:
    """Positions in `rows` of the page's hits, best first (-inf scores never)."""
    order = [i for i in np.argsort(-scores, kind="stable").tolist() if scores[i] > -np.inf]
    if page.per_artist is None:
        return order[page.offset : page.offset + page.limit]
    ranked = [Candidate(index.ids[rows[i]], 0.0, {"artist": index.artists[rows[i]]}) for i in order]
    return [order[p] for p in page.select(ranked)]


def _index_hits(
    index: ResidentIndex,
    rows: np.ndarray,
    scores: np.ndarray,
    best: np.ndarray,
    sizes: np.ndarray,
    picked: Sequence[int],
    payloads: dict[str, dict[str, Any]],
    songs: Sequence[np.ndarray],
    explain: bool,
) -> list[Hit]:
    """The picked candidates as hits; `first_stage`: the highest cosine of their song vector
    with the `songs` the store's first stage would have searched."""
    starts = np.concatenate([[0], np.cumsum(sizes)])
    queries = np.stack(songs).astype(np.float32)  # (Q, D)
    hits = []
    for i in picked:
        row = int(rows[i])
        pid = index.ids[row]
        if pid not in payloads:
            continue  # gone from the store since: the next request rebuilds the copy
        first = float((queries @ index.songs[row].astype(np.float32)).max())
        match = best[starts[i] : starts[i + 1]]
        cand = Candidate(pid, first, payloads[pid])
        hits.append(_similar_hit(cand, float(scores[i]), index.track_times(row), match, explain))
    return hits


def shown_values(value: Any) -> str | None:
    """A tag that holds several values (a list; one string in indexes written before) as one
    line: "Ann; Bob"."""
    if isinstance(value, list):
        return "; ".join(str(v) for v in value) or None
    return None if value is None else str(value)


def _nothing_found(where: TrackFilter | None, empty: str) -> list[Hit]:
    """No candidate at all: fine under a filter, but unfiltered it means an empty collection."""
    if where is None or where.is_empty():
        raise IndexUnavailable(empty)
    return []


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise QueryError(f"limit must be at least 1 (got {limit})")


def track_ids(given: Sequence[str]) -> tuple[str, ...]:
    """Track ids in canonical form, first occurrences in order; QueryError for a bad one."""
    return tuple(dict.fromkeys(_check_id(t) for t in given))


def _check_id(track_id: str) -> str:
    import uuid

    try:
        return str(uuid.UUID(track_id))
    except ValueError:
        raise QueryError(f"{track_id!r} is not a track id (a UUID)") from None
