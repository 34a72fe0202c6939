"""Search: text -> first stage (a scan with filters, exact re-scoring) -> fusion -> hits.

Fusion scores every (text, clip) pair, so over a whole catalog it costs O(tracks x clips). The
model's fusion is built so that its score is one dot product between a text vector and a
per-track vector (collap_model/fusion.py): each track stores its clips pooled by every fusion
attention pattern (`first_stage`). The store scans an int8 copy of those vectors for
`candidates` x oversampling tracks and re-ranks them by the exact fusion score (the dot product
with the stored float16 vectors); the best `limit` are the fusion top hits. Only those are read
whole: their clips give the fusion score again in float32 and say where in each track the text
matches (the per-clip weights become segments). Reading the clips of every candidate instead
cost ~100 random reads per query, the latency tail once the OS had dropped the payload pages.

Similar tracks use the song vector first, then a clip-level re-rank: the symmetric mean of
best clip matches (Chamfer similarity), so a track that shares whole passages with the query
track ranks above one that only sounds alike on average.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

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

if TYPE_CHECKING:
    from collap_model.model import CoLLAP
    from collap_model.outputs import AudioEmbedding

# a segment keeps clips whose weight is at least this share of the track's highest clip weight
SEGMENT_KEEP = 0.5
MAX_SEGMENTS = 3
# temperature turning clip match scores into weights for similar-track segments
SIMILAR_TEMPERATURE = 0.05
# payload keys callers never see (internal copies and bookkeeping)
HIDDEN_PAYLOAD = frozenset({CLIP_VECTORS, "dirs"})
FILTER_KEYS = ("artist", "album", "genre", "year", "duration", "path")


EMPTY = "the index is empty: run `indexer index PATH` first"


class QueryError(ValueError):
    """The request itself is wrong (empty text, bad filter, unknown track): a 4xx."""


class TrackNotFound(QueryError):
    """The track id names no indexed track: a 404."""


class IndexUnavailable(RuntimeError):
    """Nothing to search, or the index was built by another model: a 409."""


@dataclass(frozen=True)
class Segment:
    start: float  # seconds
    end: float
    score: float  # share of the track's match weight inside this segment (0..1)
    similarity: float  # how well the segment's clips match (cosine scale)


@dataclass(frozen=True)
class ClipMatch:
    """One clip's part in a hit: what the page shades along the track's timeline."""

    start: float  # seconds
    end: float
    weight: float  # its share of the track's match weight (0..1; the clips' weights sum to 1)
    similarity: float  # how well this clip matches (cosine scale)


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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_filters(items: Sequence[str]) -> TrackFilter:
    """CLI `key=value` filters -> TrackFilter.

    artist/album/genre: exact tag; year=1999 or 1990..1999; duration=SECONDS or MIN..MAX in
    seconds or m:ss (either side of `..` may be empty); path=FOLDER (tracks under it).
    """
    values: dict[str, Any] = {}
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
        else:
            values["folder"] = normalise_folder(value)
    return TrackFilter(**values)


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


def segments_from_weights(
    times: np.ndarray, weights: np.ndarray, scores: np.ndarray
) -> list[Segment]:
    """Clip times (N, 2), weights (N,) summing to 1, clip scores (N,) -> best segments first.

    Clips at or above SEGMENT_KEEP x the highest weight are kept; neighbouring kept clips (they
    overlap in time) merge into one segment.
    """
    if weights.size == 0:
        return []
    keep = weights >= SEGMENT_KEEP * float(weights.max())
    runs: list[tuple[int, int]] = []
    for i in np.flatnonzero(keep).tolist():
        if runs and runs[-1][1] == i - 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    out = []
    for first, last in runs:
        w = weights[first : last + 1]
        mass = float(w.sum())
        similarity = float((w * scores[first : last + 1]).sum() / max(mass, 1e-12))
        out.append(
            Segment(
                round(float(times[first, 0]), 2),
                round(float(times[last, 1]), 2),
                round(mass, 4),
                round(similarity, 4),
            )
        )
    out.sort(key=lambda s: -s.score)
    return out[:MAX_SEGMENTS]


def clip_matches(times: np.ndarray, weights: np.ndarray, scores: np.ndarray) -> list[ClipMatch]:
    """Clip times (N, 2), weights (N,), clip scores (N,) -> one ClipMatch per clip."""
    return [
        ClipMatch(
            round(float(t[0]), 2), round(float(t[1]), 2), round(float(w), 4), round(float(c), 4)
        )
        for t, w, c in zip(times, weights, scores, strict=True)
    ]


def public_payload(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k not in HIDDEN_PAYLOAD}


class Searcher:
    """Search and similar-tracks over one store with one loaded model (thread-safe)."""

    def __init__(
        self, store: Store, model: CoLLAP, candidates: int = 100, max_query_chars: int = 20_000
    ) -> None:
        self.store = store
        self.model = model
        self.candidates = candidates
        self.max_query_chars = max_query_chars
        # one request at a time touches the store (an Edge shard is one process's object);
        # text encoding and fusion run outside the lock
        self._lock = threading.Lock()

    # ---- the index ----------------------------------------------------------------------------
    def collection(self) -> str:
        """The alias target, checked against the loaded model's fingerprint."""
        with self._lock:
            target = self.store.alias_target()  # a small file read; no count on the hot path
        if target is None:
            raise IndexUnavailable(EMPTY)
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
        return {"id": found[0].id, **public_payload(found[0].payload)}

    # ---- text search --------------------------------------------------------------------------
    def search(
        self,
        text: str,
        limit: int = 10,
        where: TrackFilter | None = None,
        explain: bool = False,
    ) -> list[Hit]:
        """Free text -> the `limit` best tracks by fusion score, with segments (and, with
        `explain`, every clip's weight and similarity)."""
        from collap_model.outputs import ClipBatch

        text = text.strip()
        if not text:
            raise QueryError("the query is empty")
        if len(text) > self.max_query_chars:
            raise QueryError(
                f"the query has {len(text)} characters; the limit is {self.max_query_chars}"
            )
        _check_limit(limit)
        target = self.collection()
        try:
            emb = self.model.encode_text([text])
        except ValueError as err:  # the model refuses text longer than it can read whole
            raise QueryError(str(err)) from err
        vector = self.model.first_stage_query(emb)[0]
        with self._lock:
            found = self.store.search(
                target, vector.cpu().tolist(), limit, where, FIRST_STAGE, self.candidates
            )
        if not found:
            return _nothing_found(where)
        clips, times = self._clips_of(target, found)
        fused = self.model.score(emb, ClipBatch.of_arrays(clips, times))
        scores = fused.scores[0].float().cpu().numpy()  # (hits,)
        weights = fused.clip_weights[0].float().cpu().numpy()  # (hits, N)
        clip_scores = fused.clip_scores[0].float().cpu().numpy()  # (hits, N)
        hits = []
        for i in np.argsort(-scores, kind="stable").tolist():
            n = clips[i].shape[0]
            w, c = weights[i, :n], clip_scores[i, :n]
            clip_parts = clip_matches(times[i], w, c) if explain else None
            hits.append(
                _hit(found[i], float(scores[i]), segments_from_weights(times[i], w, c), clip_parts)
            )
        return hits

    # ---- similar tracks -------------------------------------------------------------------------
    def similar(
        self,
        track_id: str,
        limit: int = 10,
        where: TrackFilter | None = None,
        explain: bool = False,
    ) -> list[Hit]:
        """Tracks most like an indexed one (itself excluded); `explain` as for search, with
        each clip's best match in the query track as its similarity."""
        _check_limit(limit)
        target = self.collection()
        with self._lock:
            found = self.store.retrieve(target, [_check_id(track_id)], with_vectors=True)
        if not found:
            raise TrackNotFound(f"no track with id {track_id}")
        track = found[0]
        clips, times = self._own_clips(track)
        assert track.song is not None
        song = np.asarray(track.song)
        return self._similar(target, song, clips, times, limit, where, track.id, explain)

    def similar_to_file(
        self, path: str | Path, limit: int = 10, where: TrackFilter | None = None
    ) -> list[Hit]:
        """Tracks most like an audio file: the indexed track if its content is indexed, else
        the file embedded on the fly (not stored)."""
        from indexer.scan import content_hash

        _check_limit(limit)
        target = self.collection()
        path = Path(path)
        pid = point_id(content_hash(str(path)))
        with self._lock:
            known = self.store.retrieve(target, [pid])
        if known:
            return self.similar(pid, limit, where)
        emb = self.embed_file(path)
        return self._similar(
            target, emb.song.numpy(), emb.clips.numpy(), emb.clip_times.numpy(), limit, where
        )

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
        song: np.ndarray,
        clips: np.ndarray,
        times: np.ndarray,
        limit: int,
        where: TrackFilter | None,
        exclude: str | None = None,
        explain: bool = False,
    ) -> list[Hit]:
        k = max(self.candidates, limit) + (1 if exclude else 0)
        with self._lock:
            found = self.store.search(target, song.tolist(), k, where)
        if not found and exclude is None:
            return _nothing_found(where)
        found = [c for c in found if c.id != exclude]
        if not found:
            return []
        cand_clips, cand_times = self._clips_of(target, found)
        ranked = []
        for cand, other, other_times in zip(found, cand_clips, cand_times, strict=True):
            sim = clips @ other.T  # (Nq, Nc) cosine: clips are unit vectors
            best_for_query, best_in_other = sim.max(axis=1), sim.max(axis=0)
            score = 0.5 * (float(best_for_query.mean()) + float(best_in_other.mean()))
            w = np.exp((best_in_other - best_in_other.max()) / SIMILAR_TEMPERATURE)
            w /= w.sum()
            segs = segments_from_weights(other_times, w, best_in_other)
            clip_parts = clip_matches(other_times, w, best_in_other) if explain else None
            ranked.append((score, cand, segs, clip_parts))
        ranked.sort(key=lambda r: -r[0])
        return [_hit(cand, score, segs, parts) for score, cand, segs, parts in ranked[:limit]]

    # ---- clips ----------------------------------------------------------------------------------
    def _clips_of(
        self, target: str, found: Sequence[Candidate]
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Each candidate's clips (N_i, D) and clip times (N_i, 2)."""
        dim = self.model.config.embed_dim
        clips: dict[str, np.ndarray] = {}
        missing = []
        for c in found:
            data = c.payload.get(CLIP_VECTORS)
            if data is None:
                missing.append(c.id)  # indexed before the payload copy existed
            else:
                clips[c.id] = decode_clips(data, dim)
        if missing:
            with self._lock:
                for track in self.store.retrieve(target, missing, with_vectors=True):
                    clips[track.id] = np.asarray(track.clips, dtype=np.float32)
        times = [np.asarray(c.payload["clip_times"], dtype=np.float32) for c in found]
        return [clips[c.id] for c in found], times

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
        artist=p.get("artist"),
        album=p.get("album"),
        duration=p.get("duration"),
        segments=segments,
        files=[f["path"] for f in p.get("files", [])],
        clips=clips,
    )


def _nothing_found(where: TrackFilter | None) -> list[Hit]:
    """No candidate at all: fine under a filter, but unfiltered it means an empty collection."""
    if where is None or where.is_empty():
        raise IndexUnavailable(EMPTY)
    return []


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise QueryError(f"limit must be at least 1 (got {limit})")


def _check_id(track_id: str) -> str:
    import uuid

    try:
        return str(uuid.UUID(track_id))
    except ValueError:
        raise QueryError(f"{track_id!r} is not a track id (a UUID)") from None
