"""The embedded store: one Qdrant Edge shard per collection under a data directory.

Layout: <root>/collections/<collection>/ (a shard each) and <root>/aliases.json. A shard is
owned by one process; the caller holds the data directory's lock (indexer.lock) before
opening this store.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from indexer.store.base import (
    CLIPS,
    FIRST_STAGE,
    FIRST_STAGE_QUANTILE,
    PAYLOAD_INDEXES,
    RECORD_FIELDS,
    SONG,
    Candidate,
    FieldType,
    StoredTrack,
    StoreError,
    TrackFilter,
    TrackPoint,
    TrackRecord,
    first_stage_oversampling,
    named_vectors,
    record_of,
)

_SCROLL_PAGE = 512
# float16 halves the originals (what the int8 scan's candidates are re-scored from) and keeps
# 0.999 of the float32 top 100
FIRST_STAGE_DATATYPE = qe.VectorStorageDatatype.Float16
# the int8 copy is built when a segment is optimised (Store.optimize at the end of a run)
_FIRST_STAGE_INT8 = qe.ScalarQuantizationConfig(
    qe.ScalarType.Int8, quantile=FIRST_STAGE_QUANTILE, memory=qe.Memory.Pinned
)
_SCHEMA = {
    FieldType.KEYWORD: qe.PayloadSchemaType.Keyword,
    FieldType.INTEGER: qe.PayloadSchemaType.Integer,
    FieldType.FLOAT: qe.PayloadSchemaType.Float,
}


def _config(dim: int, first_stage_dim: int) -> qe.EdgeConfig:
    no_graph = qe.HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10_000)
    return qe.EdgeConfig(
        vectors={
            SONG: qe.EdgeVectorParams(dim, qe.Distance.Cosine),
            FIRST_STAGE: qe.EdgeVectorParams(
                first_stage_dim,
                qe.Distance.Dot,
                hnsw_config=no_graph,
                datatype=FIRST_STAGE_DATATYPE,
                quantization_config=_FIRST_STAGE_INT8,
            ),
            CLIPS: qe.EdgeVectorParams(
                dim,
                qe.Distance.Cosine,
                multivector_config=qe.MultiVectorConfig(qe.MultiVectorComparator.MaxSim),
                hnsw_config=no_graph,
            ),
        }
    )


class EdgeStore:
    def __init__(self, root: Path, alias: str) -> None:
        self.root = root
        self.alias = alias
        (root / "collections").mkdir(parents=True, exist_ok=True)
        self._shards: dict[str, qe.EdgeShard] = {}
        # this process owns the shard (the data directory's lock): every change goes through
        # here, so a count of them says exactly when a copy of a collection went stale
        self._changes: dict[str, int] = {}

    # ---- aliases and collections ------------------------------------------------------------
    def _aliases(self) -> dict[str, str]:
        path = self.root / "aliases.json"
        if not path.exists():
            return {}
        data: dict[str, str] = json.loads(path.read_text())
        return data

    def alias_target(self) -> str | None:
        return self._aliases().get(self.alias)

    def collections(self) -> list[str]:
        prefix = f"{self.alias}-"
        return sorted(
            p.name for p in (self.root / "collections").iterdir() if p.name.startswith(prefix)
        )

    def _dir(self, name: str) -> Path:
        return self.root / "collections" / name

    def _shard(self, name: str) -> qe.EdgeShard:
        shard = self._shards.get(name)
        if shard is None:
            if not (self._dir(name) / "edge_config.json").exists():
                raise StoreError(f"collection {name} does not exist in {self.root}")
            try:
                shard = qe.EdgeShard.load(str(self._dir(name)))
            except Exception as err:  # the binding raises plain exceptions with the reason
                raise StoreError(f"cannot open collection {name} in {self.root}: {err}") from err
            self._shards[name] = shard
        return shard

    def ensure_collection(self, name: str, dim: int, first_stage_dim: int) -> None:
        directory = self._dir(name)
        if (directory / "edge_config.json").exists():
            return
        if directory.exists():
            shutil.rmtree(directory)  # an interrupted create left no usable shard
        shard = qe.EdgeShard.create(str(directory), _config(dim, first_stage_dim))
        for field_name, kind in PAYLOAD_INDEXES.items():
            shard.update(qe.UpdateOperation.create_field_index(field_name, _SCHEMA[kind]))
        shard.flush()
        self._shards[name] = shard

    def optimize(self, name: str) -> None:
        self._shard(name).optimize()

    def switch_alias(self, name: str) -> str | None:
        aliases = self._aliases()
        old = aliases.get(self.alias)
        aliases[self.alias] = name
        tmp = self.root / "aliases.json.tmp"
        tmp.write_text(json.dumps(aliases, indent=2))
        os.replace(tmp, self.root / "aliases.json")  # atomic: readers see old or new
        return old

    def drop_collection(self, name: str) -> None:
        self._changed(name)
        shard = self._shards.pop(name, None)
        if shard is not None:
            shard.close()
        shutil.rmtree(self._dir(name), ignore_errors=True)

    # ---- points -----------------------------------------------------------------------------
    def upsert(self, name: str, points: Sequence[TrackPoint]) -> None:
        if not points:
            return
        shard = self._shard(name)
        batch = [qe.Point(p.id, named_vectors(p), p.payload) for p in points]
        self._changed(name)
        shard.update(qe.UpdateOperation.upsert_points(batch))
        shard.flush()

    def delete(self, name: str, ids: Sequence[str]) -> None:
        if ids:
            shard = self._shard(name)
            self._changed(name)
            shard.update(qe.UpdateOperation.delete_points(list(ids)))
            shard.flush()

    def set_payload(self, name: str, pid: str, payload: dict[str, Any]) -> None:
        shard = self._shard(name)
        self._changed(name)
        shard.update(qe.UpdateOperation.set_payload([pid], payload))
        shard.flush()

    def records(self, name: str) -> Iterator[TrackRecord]:
        shard = self._shard(name)
        offset: Any = None
        while True:
            page, offset = shard.scroll(
                qe.ScrollRequest(offset=offset, limit=_SCROLL_PAGE, with_payload=RECORD_FIELDS)
            )
            for rec in page:
                yield record_of(str(rec.id), dict(rec.payload or {}))
            if offset is None:
                return

    def retrieve(
        self, name: str, ids: Sequence[str], with_vectors: bool = False
    ) -> list[StoredTrack]:
        if not ids:
            return []
        recs = self._shard(name).retrieve(list(ids), True, [SONG, CLIPS] if with_vectors else False)
        out = []
        for rec in recs:
            vec: dict[str, Any] = dict(rec.vector or {}) if with_vectors else {}  # type: ignore[arg-type]
            out.append(
                StoredTrack(str(rec.id), dict(rec.payload or {}), vec.get(SONG), vec.get(CLIPS))
            )
        return out

    def count(self, name: str) -> int:
        return int(self._shard(name).count(qe.CountRequest(exact=True)))

    def _changed(self, name: str) -> None:
        # counted before the write: a reader that copies the collection while a write fails
        # halfway sees a new number either way
        self._changes[name] = self._changes.get(name, 0) + 1

    def generation(self, name: str) -> int | None:
        return self._changes.get(name, 0)

    def scan(self, name: str, fields: Sequence[str]) -> Iterator[StoredTrack]:
        shard = self._shard(name)
        offset: Any = None
        while True:
            page, offset = shard.scroll(
                qe.ScrollRequest(
                    offset=offset, limit=_SCROLL_PAGE, with_payload=list(fields), with_vector=[SONG]
                )
            )
            for rec in page:
                vec: dict[str, Any] = dict(rec.vector or {})  # type: ignore[arg-type]
                yield StoredTrack(str(rec.id), dict(rec.payload or {}), vec.get(SONG))
            if offset is None:
                return

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
        params = None
        if using == FIRST_STAGE:
            over = first_stage_oversampling(limit, candidates)
            params = qe.SearchParams(
                quantization=qe.QuantizationSearchParams(rescore=True, oversampling=over)
            )
        request = qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(list(vector), using=using),
            filter=_filter(where, exclude),
            params=params,
            with_vector=False,
            with_payload=True,
        )
        hits = self._shard(name).query(request)
        return [Candidate(str(h.id), float(h.score), dict(h.payload or {})) for h in hits]

    def neighbours(
        self,
        name: str,
        vectors: Sequence[Sequence[float]],
        limit: int,
        where: TrackFilter | None = None,
        exclude: Sequence[str] = (),
    ) -> list[list[tuple[str, float]]]:
        if not vectors:
            return []
        condition = _filter(where, exclude)
        requests = [
            qe.QueryRequest(
                limit=limit,
                query=qe.Query.Nearest(list(v), using=SONG),
                filter=condition,
                with_vector=False,
                with_payload=False,
            )
            for v in vectors
        ]
        found = self._shard(name).query_batch(qe.QueryBatchRequest(requests))
        return [[(str(h.id), float(h.score)) for h in hits] for hits in found]

    def close(self) -> None:
        for shard in self._shards.values():
            shard.flush()
            shard.close()
        self._shards.clear()


def _filter(where: TrackFilter | None, exclude: Sequence[str] = ()) -> qe.Filter | None:
    if (where is None or where.is_empty()) and not exclude:
        return None
    must: list[Any] = []
    if where is not None:
        must = [qe.FieldCondition(k, match=qe.MatchValue(v)) for k, v in where.matches()]
        for key, low, high in where.ranges():
            must.append(qe.FieldCondition(key, range=qe.RangeFloat(gte=low, lte=high)))
    must_not: list[Any] = [qe.HasIdCondition(set(exclude))] if exclude else []
    return qe.Filter(must=must or None, must_not=must_not or None)
