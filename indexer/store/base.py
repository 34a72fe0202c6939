"""The store seam: one Protocol, implemented by Qdrant Edge (embedded) and qdrant-client.

Schema (one point per track, see ARCHITECTURE.md):
- id: uuid5 of the file's content hash, so identical content at several paths is one point and
  the id is the same on every machine and run;
- named vectors `song` (dense, cosine, HNSW: similar tracks), `first_stage` (dense, dot,
  m x D: the clips pooled by each of the model's m fusion attention patterns, concatenated; the
  text search's first stage, whose dot product with the text's vector is the fusion score) and
  `clips` (multivector, cosine MaxSim, no graph);
- payload: the fields of PAYLOAD_INDEXES below and the file's facts, plus `files` (every path
  holding this content), `dirs` (every folder above those paths, for path-prefix filters) and
  `clip_vectors` (the clips again, float16, base64: a text search reads its hits' clips, a
  similar-tracks query its candidates', from the payload because turning a multivector into
  Python lists costs ~1 ms per track);
- collections are named `<alias>-<fingerprint>`; the alias points at the complete one.
"""

from __future__ import annotations

import base64
import math
import re
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import PurePath
from typing import Any, Protocol

import numpy as np

from indexer.tags import tag_value

# a fixed namespace so that ids are deterministic across machines
ID_NAMESPACE = uuid.UUID("6f0c1d1e-4c3b-5a8e-9d52-8a3f0e6c2b71")
SONG = "song"
CLIPS = "clips"
# the first-stage vector: the clips pooled by each of the model's fusion attention patterns,
# unnormalised, searched by dot product (collap_model/fusion.py); the model computes them.
# No HNSW graph on it: an exact scan returns the exact fusion top-K, where HNSW on such
# unnormalised vectors kept only 0.79-0.91 of the exact top 100 (hnsw_ef 100-1600, measured on
# the benchmarks/query.py store), which the re-rank cannot win back
FIRST_STAGE = "first_stage"
# The scan reads an int8 copy of it (a quarter of float32) for the top K·oversampling, which the
# float16 originals then re-score exactly: at 50k tracks 6.6 vs 11.1 ms per query, with the
# float32 top 100 kept whole (20 ms per 100k tracks before; without the re-scoring, 0.98)
FIRST_STAGE_OVERSAMPLING = 2.0
FIRST_STAGE_QUANTILE = 0.99  # int8 range: the 1% most extreme values are clipped


def first_stage_oversampling(limit: int, candidates: int | None) -> float:
    """The store's oversampling factor for a first-stage search returning `limit` tracks out of
    `candidates` re-scored ones: the int8 scan keeps candidates x FIRST_STAGE_OVERSAMPLING."""
    return max(candidates or limit, limit) * FIRST_STAGE_OVERSAMPLING / limit


class FieldType(StrEnum):
    KEYWORD = "keyword"
    INTEGER = "integer"
    FLOAT = "float"


# payload fields that filters use, and their index type
PAYLOAD_INDEXES: dict[str, FieldType] = {
    "path": FieldType.KEYWORD,
    "root": FieldType.KEYWORD,
    "dirs": FieldType.KEYWORD,
    "artist": FieldType.KEYWORD,
    "album": FieldType.KEYWORD,
    "genre": FieldType.KEYWORD,
    "content_hash": FieldType.KEYWORD,
    "fingerprint": FieldType.KEYWORD,
    "tags": FieldType.KEYWORD,  # a tagged model's facets (indexer/tags.py)
    "year": FieldType.INTEGER,
    "duration": FieldType.FLOAT,
}


# the payload key holding the float16 copy of the clips, never shown to users
CLIP_VECTORS = "clip_vectors"


class StoreError(RuntimeError):
    """The store is unreachable, locked or inconsistent; the message says which."""


def point_id(content_hash: str) -> str:
    return str(uuid.uuid5(ID_NAMESPACE, content_hash))


def collection_name(alias: str, fingerprint: str) -> str:
    return f"{alias}-{fingerprint}"


def named_vectors(point: TrackPoint) -> dict[str, Any]:
    """Every named vector of a point, as both stores write it."""
    return {SONG: point.song, CLIPS: point.clips, FIRST_STAGE: point.first_stage}


def encode_clips(clips: np.ndarray) -> str:
    """Clips (N, D) -> base64 of little-endian float16, row-major (the `clip_vectors` field)."""
    return base64.b64encode(np.ascontiguousarray(clips, dtype="<f2").tobytes()).decode("ascii")


def decode_clips(data: str, dim: int) -> np.ndarray:
    """The `clip_vectors` field -> float32 (N, D)."""
    return np.frombuffer(base64.b64decode(data), dtype="<f2").reshape(-1, dim).astype(np.float32)


# A file name that is not UTF-8 reaches Python with each undecodable byte as a lone surrogate
# (U+DC80..U+DCFF, os.fsdecode), which no JSON store can hold. Such a path is stored as this
# prefix and the path with those bytes as \xNN and backslashes doubled: lossless, JSON-safe,
# shown escaped, and never equal to a UTF-8 path, which is absolute and starts with "/".
NOT_UTF8 = "not-utf8:"
_STORED_ESCAPE = re.compile(r"\\(\\|x[0-9a-f]{2}|u[0-9a-f]{4})")


def stored_path(path: str) -> str:
    """A local path (str from the file system) as the store's payload holds it."""
    if path.isascii():
        return path
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        pass
    out = []
    for ch in path:
        code = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:  # any other lone surrogate (not from a file name)
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return NOT_UTF8 + "".join(out)


def local_path(stored: str) -> str:
    """The inverse of stored_path: the path to open."""
    if not stored.startswith(NOT_UTF8):
        return stored

    def one(m: re.Match[str]) -> str:
        code = m.group(1)
        if code == "\\":
            return code
        return chr((0xDC00 if code[0] == "x" else 0) + int(code[1:], 16))

    return _STORED_ESCAPE.sub(one, stored[len(NOT_UTF8) :])


def as_text(text: str) -> str:
    """Text for a payload or log that is never opened (a title from a file name, a reason
    quoting one): bytes that are not UTF-8 as \\xNN, other lone surrogates as \\uNNNN."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def folders_of(paths: Sequence[str]) -> list[str]:
    """Every folder above the given absolute local paths, deduplicated, shortest first, as the
    payload stores them (stored_path)."""
    out: set[str] = set()
    for path in paths:
        out.update(stored_path(str(parent)) for parent in PurePath(path).parents)
    return sorted(out, key=lambda d: (len(d), d))


# the values a filter may hold (the CLI and the API refuse others at parse time, with these)
YEAR_MAX = 9999
DURATION_MAX = 1e6  # seconds


@dataclass(frozen=True)
class TrackFilter:
    """Conditions on the payload for the first stage; None means no condition.

    Bounds must be finite: a NaN range panics inside Qdrant Edge, so one is refused here
    (ValueError) whatever built the filter; the CLI and the API refuse it earlier with a
    message (indexer.search.parse_filters, indexer.api.schemas.Filters).
    """

    artist: str | None = None  # exact match, as tagged
    album: str | None = None
    genre: str | None = None
    year_min: int | None = None  # inclusive
    year_max: int | None = None
    duration_min: float | None = None  # seconds, inclusive
    duration_max: float | None = None
    folder: str | None = None  # absolute folder: tracks with a file under it
    # facets (indexer/tags.py) a track must have, every one; tracks of a model without a
    # tagger have none, so any tag excludes them
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # normalised as facets are stored (lower case, single blanks); a bad one is refused
        object.__setattr__(self, "tags", tuple(dict.fromkeys(map(tag_value, self.tags))))
        for name in ("year_min", "year_max", "duration_min", "duration_max"):
            value = getattr(self, name)
            if value is not None and not _finite(value):
                raise ValueError(f"filter {name} must be a finite number, not {value}")

    def is_empty(self) -> bool:
        return all(v is None or v == () for v in vars(self).values())

    def matches(self) -> list[tuple[str, str]]:
        """Exact keyword conditions as (payload key, value), all to hold; a folder matches
        `dirs`, each tag one of the `tags` list."""
        pairs = [(k, getattr(self, k)) for k in ("artist", "album", "genre")]
        pairs.append(("dirs", None if self.folder is None else stored_path(self.folder)))
        pairs.extend(("tags", t) for t in self.tags)
        return [(k, v) for k, v in pairs if v is not None]

    def ranges(self) -> list[tuple[str, float | None, float | None]]:
        """Inclusive range conditions as (payload key, low, high); None is an open end."""
        bounds = [
            ("year", self.year_min, self.year_max),
            ("duration", self.duration_min, self.duration_max),
        ]
        return [
            (k, None if lo is None else float(lo), None if hi is None else float(hi))
            for k, lo, hi in bounds
            if lo is not None or hi is not None
        ]


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond float range: the store's conditions are floats
        return False


@dataclass(frozen=True)
class Candidate:
    """A first-stage hit: id, similarity of the song vector, payload."""

    id: str
    score: float
    payload: dict[str, Any]


@dataclass(frozen=True)
class TrackFile:
    path: str
    root: str
    size: int
    mtime_ns: int

    def as_payload(self) -> dict[str, Any]:
        return {
            "path": stored_path(self.path),
            "root": stored_path(self.root),
            "size": self.size,
            "mtime_ns": self.mtime_ns,
        }

    @staticmethod
    def of(data: dict[str, Any]) -> TrackFile:
        return TrackFile(
            local_path(str(data["path"])),
            local_path(str(data["root"])),
            int(data["size"]),
            int(data["mtime_ns"]),
        )


@dataclass(frozen=True)
class TrackPoint:
    """A whole point as written: both vectors and the payload, in one upsert."""

    id: str
    song: list[float]  # (D,)
    clips: list[list[float]]  # (N, D)
    first_stage: list[float]  # (m·D,): the clips pooled by each fusion attention pattern
    payload: dict[str, Any]


@dataclass(frozen=True)
class TrackRecord:
    """What change detection needs from a stored point."""

    id: str
    content_hash: str
    files: list[TrackFile]
    n_clips: int


@dataclass
class StoredTrack:
    id: str
    payload: dict[str, Any]
    song: list[float] | None = None
    clips: list[list[float]] | None = None


def record_of(pid: str, payload: dict[str, Any]) -> TrackRecord:
    return TrackRecord(
        id=pid,
        content_hash=str(payload.get("content_hash", "")),
        files=[TrackFile.of(f) for f in payload.get("files", [])],
        n_clips=int(payload.get("n_clips", 0)),
    )


# payload keys that change detection reads (a small scroll even for large catalogs)
RECORD_FIELDS = ["content_hash", "files", "n_clips"]


class Store(Protocol):
    """Collections of track points behind an alias. Every write waits until applied."""

    alias: str

    def alias_target(self) -> str | None:
        """The collection the alias points to, if any."""

    def collections(self) -> list[str]:
        """Every collection of this alias (`<alias>-<fingerprint>`)."""

    def ensure_collection(self, name: str, dim: int, first_stage_dim: int) -> None:
        """Create the collection with the schema if it does not exist; `dim` is the song and
        clip vectors' length, `first_stage_dim` the first-stage vector's (m·D)."""

    def switch_alias(self, name: str) -> str | None:
        """Point the alias at `name`; returns the previous target."""

    def drop_collection(self, name: str) -> None: ...

    def optimize(self, name: str) -> None:
        """Build the search indexes (HNSW graphs, payload indexes) over what was written: the
        embedded engine does this only when asked, a Qdrant server on its own."""

    def upsert(self, name: str, points: Sequence[TrackPoint]) -> None: ...

    def delete(self, name: str, ids: Sequence[str]) -> None: ...

    def set_payload(self, name: str, pid: str, payload: dict[str, Any]) -> None:
        """Overwrite the given payload keys of one point (others are kept)."""

    def records(self, name: str) -> Iterator[TrackRecord]: ...

    def retrieve(
        self, name: str, ids: Sequence[str], with_vectors: bool = False
    ) -> list[StoredTrack]: ...

    def count(self, name: str) -> int: ...

    def generation(self, name: str) -> int | None:
        """A number that changes whenever the collection's points change through this object
        (upsert, delete, set_payload, drop), or None where other processes write to it too (a
        Qdrant server): what a copy of the collection held in memory checks it is current by."""

    def scan(self, name: str, fields: Sequence[str]) -> Iterator[StoredTrack]:
        """Every point of the collection with the given payload keys and its `song` vector,
        in pages (what the resident index is built from; indexer/resident.py)."""

    def search(
        self,
        name: str,
        vector: Sequence[float],
        limit: int,
        where: TrackFilter | None = None,
        using: str = SONG,
        candidates: int | None = None,
        exclude: Sequence[str] = (),
    ) -> list[Candidate]:
        """Nearest `using` vectors passing `where` and not in `exclude`, best first, with full
        payloads.

        For FIRST_STAGE, the best `limit` of the `candidates` (default `limit`) tracks that the
        stored vectors re-score after the quantized scan (first_stage_oversampling)."""

    def neighbours(
        self,
        name: str,
        vectors: Sequence[Sequence[float]],
        limit: int,
        where: TrackFilter | None = None,
        exclude: Sequence[str] = (),
    ) -> list[list[tuple[str, float]]]:
        """For each `song` vector, the (id, cosine) of its `limit` nearest tracks passing
        `where` and not in `exclude`, best first; one planned batch, no payloads (a caller
        reads the union of the hits once: several seeds share many neighbours)."""

    def close(self) -> None: ...
