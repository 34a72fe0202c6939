"""The server store: the same Protocol over qdrant-client (a Qdrant server, or its local mode)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from qdrant_client import QdrantClient
from qdrant_client import models as qm
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

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
_SCHEMA = {
    FieldType.KEYWORD: qm.PayloadSchemaType.KEYWORD,
    FieldType.INTEGER: qm.PayloadSchemaType.INTEGER,
    FieldType.FLOAT: qm.PayloadSchemaType.FLOAT,
}


class ServerStore:
    def __init__(self, client: QdrantClient, alias: str) -> None:
        self.client = client
        self.alias = alias

    @staticmethod
    def connect(url: str, api_key: str | None, alias: str) -> ServerStore:
        client = QdrantClient(url=url, api_key=api_key, timeout=30)
        try:
            client.get_collections()
        except (ResponseHandlingException, UnexpectedResponse, OSError) as err:
            raise StoreError(f"cannot reach the Qdrant server at {url}: {err}") from err
        return ServerStore(client, alias)

    def alias_target(self) -> str | None:
        for a in self.client.get_aliases().aliases:
            if a.alias_name == self.alias:
                return a.collection_name
        return None

    def collections(self) -> list[str]:
        prefix = f"{self.alias}-"
        return sorted(
            c.name for c in self.client.get_collections().collections if c.name.startswith(prefix)
        )

    def ensure_collection(self, name: str, dim: int, first_stage_dim: int) -> None:
        if self.client.collection_exists(name):
            return
        self.client.create_collection(
            name,
            vectors_config={
                SONG: qm.VectorParams(size=dim, distance=qm.Distance.COSINE),
                FIRST_STAGE: qm.VectorParams(
                    size=first_stage_dim,
                    distance=qm.Distance.DOT,
                    datatype=qm.Datatype.FLOAT16,  # as the embedded store (edge.py says why)
                    hnsw_config=qm.HnswConfigDiff(m=0),  # exact scan (store/base.py says why)
                    quantization_config=qm.ScalarQuantization(
                        scalar=qm.ScalarQuantizationConfig(
                            type=qm.ScalarType.INT8, quantile=FIRST_STAGE_QUANTILE, always_ram=True
                        )
                    ),
                ),
                CLIPS: qm.VectorParams(
                    size=dim,
                    distance=qm.Distance.COSINE,
                    multivector_config=qm.MultiVectorConfig(
                        comparator=qm.MultiVectorComparator.MAX_SIM
                    ),
                    hnsw_config=qm.HnswConfigDiff(m=0),
                ),
            },
        )
        for field_name, kind in PAYLOAD_INDEXES.items():
            self.client.create_payload_index(name, field_name, _SCHEMA[kind], wait=True)

    def switch_alias(self, name: str) -> str | None:
        old = self.alias_target()
        ops: list[qm.CreateAliasOperation | qm.DeleteAliasOperation] = []
        if old is not None:
            ops.append(qm.DeleteAliasOperation(delete_alias=qm.DeleteAlias(alias_name=self.alias)))
        ops.append(
            qm.CreateAliasOperation(
                create_alias=qm.CreateAlias(collection_name=name, alias_name=self.alias)
            )
        )
        self.client.update_collection_aliases(ops)  # one request: the switch is atomic
        return old

    def optimize(self, name: str) -> None:
        """A Qdrant server builds its indexes in the background."""

    def drop_collection(self, name: str) -> None:
        self.client.delete_collection(name)

    def upsert(self, name: str, points: Sequence[TrackPoint]) -> None:
        if points:
            structs = [
                qm.PointStruct(
                    id=p.id,
                    vector=named_vectors(p),
                    payload=p.payload,
                )
                for p in points
            ]
            self.client.upsert(name, structs, wait=True)

    def delete(self, name: str, ids: Sequence[str]) -> None:
        if ids:
            self.client.delete(name, qm.PointIdsList(points=list(ids)), wait=True)

    def set_payload(self, name: str, pid: str, payload: dict[str, Any]) -> None:
        self.client.set_payload(name, payload, points=[pid], wait=True)

    def records(self, name: str) -> Iterator[TrackRecord]:
        offset: Any = None
        while True:
            page, offset = self.client.scroll(
                name, limit=_SCROLL_PAGE, offset=offset, with_payload=RECORD_FIELDS
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
        recs = self.client.retrieve(
            name,
            list(ids),
            with_payload=True,
            with_vectors=[SONG, CLIPS] if with_vectors else False,
        )
        out = []
        for rec in recs:
            vec: dict[str, Any] = dict(rec.vector or {}) if with_vectors else {}  # type: ignore[arg-type]
            out.append(
                StoredTrack(str(rec.id), dict(rec.payload or {}), vec.get(SONG), vec.get(CLIPS))
            )
        return out

    def count(self, name: str) -> int:
        return int(self.client.count(name, exact=True).count)

    def generation(self, name: str) -> int | None:
        """None: store workers and other replicas write to a server, unseen from here."""
        return None

    def scan(self, name: str, fields: Sequence[str]) -> Iterator[StoredTrack]:
        offset: Any = None
        while True:
            page, offset = self.client.scroll(
                name, limit=_SCROLL_PAGE, offset=offset, with_payload=list(fields),
                with_vectors=[SONG],
            )  # fmt: skip
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
            params = qm.SearchParams(
                quantization=qm.QuantizationSearchParams(rescore=True, oversampling=over)
            )
        result = self.client.query_points(
            name,
            query=list(vector),
            using=using,
            limit=limit,
            query_filter=_filter(where, exclude),
            search_params=params,
            with_payload=True,
            with_vectors=False,
        )
        return [Candidate(str(h.id), float(h.score), dict(h.payload or {})) for h in result.points]

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
            qm.QueryRequest(
                query=list(v),
                using=SONG,
                limit=limit,
                filter=condition,
                with_payload=False,
                with_vector=False,
            )
            for v in vectors
        ]
        found = self.client.query_batch_points(name, requests)
        return [[(str(h.id), float(h.score)) for h in r.points] for r in found]

    def close(self) -> None:
        self.client.close()


def _filter(where: TrackFilter | None, exclude: Sequence[str] = ()) -> qm.Filter | None:
    if (where is None or where.is_empty()) and not exclude:
        return None
    must: list[qm.Condition] = []
    if where is not None:
        must = [qm.FieldCondition(key=k, match=qm.MatchValue(value=v)) for k, v in where.matches()]
        for key, low, high in where.ranges():
            must.append(qm.FieldCondition(key=key, range=qm.Range(gte=low, lte=high)))
    must_not: list[qm.Condition] = [qm.HasIdCondition(has_id=list(exclude))] if exclude else []
    return qm.Filter(must=must or None, must_not=must_not or None)
