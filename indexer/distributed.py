"""The distributed stages behind workers/: scan -> plan (in the store owner) -> embed -> store.

Celery tasks (workers/tasks.py) are thin adapters over the functions and classes here; every
message is JSON (paths, hashes, lists of floats), so a stage can run on any machine that sees
the catalog's files at the same paths.

- scan (queue `scan`, any worker): walk the catalog roots, stat only; the listing goes to the
  store queue as a plan request. The scan stage never opens the store.
- plan (queue `store`): the change diff (indexer.plan.plan_changes) against the store's records
  and the failure log, its bookkeeping (moved, touched, removed paths), then one claim per new
  content and embed tasks for what it claimed. The diff reads the store, and an embedded Qdrant
  Edge shard may be read only by the process that owns it, so the diff runs in the `store`
  stage: in embedded mode that is the single store worker process, serialised with the writes.
- embed (queue `embed`, GPU workers): decode and embed the files of one task, clips of all its
  files sharing model batches; whole points (or the decode failures) go to the store queue.
- store (queue `store`): upsert the points, detach paths from their old content, record
  failures, release the claims; when no claim of a collection is left and the alias does not
  point at it yet (a new model), switch the alias and drop the old collections.

Idempotency: point ids are uuid5 of the content hash, so a message delivered twice writes the
same point twice. Claims (a Redis hash per collection: content hash -> plan task id and time)
make a file that two plans find at once go to one embed task; a redelivered plan (same task id)
takes its own claims again. Claims live in the same Redis as the queued messages, so they are
lost together or kept together. A message can still be lost alone (a Redis restart in the
instant a worker takes it): a worker of the store queue sweeps for claims no message carries
(OrphanSweep, every `claim_sweep_interval` s) and plans their files again; `claim_ttl` is the
last bound.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from indexer.decode import DecodeError
from indexer.decoders import DecodeParams, decode_job
from indexer.failures import FailureLog
from indexer.pipeline import (
    ModelHandle,
    apply_bookkeeping,
    assemble_point,
    detach_path,
    merge_roots,
    record_failure,
)
from indexer.plan import plan_changes
from indexer.scan import CatalogFile, content_hash, resolve_roots, scan
from indexer.settings import Settings
from indexer.store.base import Store, TrackPoint, collection_name, point_id

if TYPE_CHECKING:
    import redis

    from collap_model.model import CoLLAP

log = logging.getLogger(__name__)

SCAN, EMBED, STORE = "scan", "embed", "store"
QUEUES = (SCAN, EMBED, STORE)
# claims left under this many are checked against the store after each write (reconcile)
_RECONCILE_BELOW = 64
# kombu's Redis transport keeps priority levels 3, 6, 9 in lists named <queue><sep><level>
_PRIORITY_SEP = "\x06\x16"
# and the messages delivered to a worker and not acknowledged yet in this hash
_UNACKED = "unacked"

# claim(claims hash, files hash; content hash, token, now, ttl, files as JSON): 1 when taken
# (free, stale or already ours), else 0
_CLAIM = """
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v then
  local sep = string.find(v, '|', 1, true)
  local owner = string.sub(v, 1, sep - 1)
  local at = tonumber(string.sub(v, sep + 1))
  if owner ~= ARGV[2] and at + tonumber(ARGV[4]) > tonumber(ARGV[3]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '|' .. ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[5])
return 1
"""

# A header on deferred plan messages: they carry no claim, so they do not keep a claim alive
DEFERRED_HEADER = "collap_deferred"

# idle_claims(unacked, the queues' lists..., claim hashes...; number of lists, the deferred
# header): every claim as (hash, content hash, value) triples when no message is queued and every
# message taken and not acknowledged is a deferred plan; nil otherwise. Atomic, so no message
# moves between the checks.
_IDLE_CLAIMS = """
local lists = tonumber(ARGV[1])
for i = 2, lists + 1 do
  if redis.call('LLEN', KEYS[i]) > 0 then return nil end
end
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do
  local ok, entry = pcall(cjson.decode, v)
  if not ok or type(entry) ~= 'table' or type(entry[1]) ~= 'table' then return nil end
  local headers = entry[1]['headers']
  if type(headers) ~= 'table' or not headers[ARGV[2]] then return nil end
end
local out = {}
for i = lists + 2, #KEYS do
  local kv = redis.call('HGETALL', KEYS[i])
  for j = 1, #kv, 2 do
    table.insert(out, KEYS[i])
    table.insert(out, kv[j])
    table.insert(out, kv[j + 1])
  end
end
return out
"""

# drop(claims hash, files hash; content hash, value): the claim, only if it still holds `value`
_DROP_IF_SAME = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 1
end
return 0
"""


# ---- messages -----------------------------------------------------------------------------------
def file_msg(f: CatalogFile) -> dict[str, Any]:
    return asdict(f)


def file_of(msg: dict[str, Any]) -> CatalogFile:
    return CatalogFile(str(msg["path"]), str(msg["root"]), int(msg["size"]), int(msg["mtime_ns"]))


@dataclass
class EmbedJob:
    """One distinct content to embed: the files holding it, and the old points they leave."""

    digest: str
    files: list[CatalogFile]
    replaces: dict[str, str] = field(default_factory=dict)  # path -> point of its old content

    def as_msg(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "files": [file_msg(f) for f in self.files],
            "replaces": self.replaces,
        }

    @staticmethod
    def of(msg: dict[str, Any]) -> EmbedJob:
        return EmbedJob(
            str(msg["digest"]), [file_of(f) for f in msg["files"]], dict(msg["replaces"])
        )


def point_msg(point: TrackPoint) -> dict[str, Any]:
    return asdict(point)


def point_of(msg: dict[str, Any]) -> TrackPoint:
    return TrackPoint(
        str(msg["id"]), msg["song"], msg["clips"], msg["first_stage"], dict(msg["payload"])
    )


# ---- Redis bookkeeping --------------------------------------------------------------------------
class Keys:
    """Redis key names of one index (the collection alias), beside Celery's own keys."""

    def __init__(self, alias: str) -> None:
        self.prefix = f"collap-indexer:{alias}"
        self.stats = f"{self.prefix}:stats"  # hash: counters shown by `indexer status`
        self.catalogs = f"{self.prefix}:catalogs"  # set: folders beat rescans

    def claims(self, collection: str) -> str:
        return f"{self.prefix}:claims:{collection}"

    def claimed_files(self, collection: str) -> str:
        """Hash: content hash -> the files of its claim (JSON), to plan again if it is lost."""
        return f"{self.prefix}:claimed-files:{collection}"

    def collection_of(self, claims_key: str) -> str:
        return claims_key.removeprefix(self.claims(""))


def queue_lists(queue: str) -> list[str]:
    """The Redis lists that hold a queue's messages (one per priority level)."""
    return [queue] + [f"{queue}{_PRIORITY_SEP}{p}" for p in (3, 6, 9)]


def redis_client(url: str, timeout: float = 10.0) -> redis.Redis:
    import redis

    return redis.Redis.from_url(
        url,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        health_check_interval=30,
        decode_responses=True,
    )


class Claims:
    """Which contents of a collection are queued for embedding (see the module docstring)."""

    def __init__(self, client: redis.Redis, keys: Keys, collection: str, ttl: float) -> None:
        self.client, self.ttl = client, ttl
        self.key, self.files_key = keys.claims(collection), keys.claimed_files(collection)
        self._claim = client.register_script(_CLAIM)

    def take(self, digest: str, token: str, files: Sequence[CatalogFile]) -> bool:
        """Claim `digest` for the plan `token`, for `files` (planned again if the claim is lost)."""
        record = json.dumps([file_msg(f) for f in files])
        args: list[str | float] = [digest, token, time.time(), self.ttl, record]
        return bool(self._claim(keys=[self.key, self.files_key], args=args))

    def release(self, digests: Sequence[str]) -> None:
        if digests:
            pipe = self.client.pipeline()
            pipe.hdel(self.key, *digests)
            pipe.hdel(self.files_key, *digests)
            pipe.execute()

    def held(self) -> list[str]:
        """The contents claimed now (claims older than the ttl no longer count)."""
        now = time.time()
        items = self.client.hgetall(self.key).items()
        return [str(d) for d, v in items if float(str(v).split("|", 1)[1]) + self.ttl > now]

    def live(self) -> int:
        return len(self.held())


@dataclass(frozen=True)
class Orphan:
    """A claim no message carries any more, as observed, and the files it was taken for."""

    collection: str
    digest: str
    value: str  # "token|time"
    files: list[CatalogFile]


class OrphanSweep:
    """Finds claims whose message was lost, so their files can be planned again.

    kombu's Redis transport takes a message (BRPOP) and records it as unacknowledged (HSET
    `unacked`) in two steps; a Redis restart between them loses the message, and its claim
    would hold the file back for `claim_ttl`. A claim is orphaned when two sweeps in a row find
    it unchanged while nothing is queued and every message taken and not acknowledged is a
    deferred plan (those carry no claim): then no message can carry it. Twice, because one
    sweep may fall in the instant a live message is in neither place. A claim wrongly called
    orphaned costs at most one repeated embedding: writes are idempotent.
    """

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.keys = Keys(settings.collection)
        self.client = client
        self._idle = client.register_script(_IDLE_CLAIMS)
        self._drop = client.register_script(_DROP_IF_SAME)
        self._seen: set[tuple[str, str, str]] = set()

    def orphans(self) -> list[Orphan]:
        lists = [n for q in QUEUES for n in queue_lists(q)]
        hashes = sorted(str(k) for k in self.client.scan_iter(self.keys.claims("*")))
        snap = self._idle(keys=[_UNACKED, *lists, *hashes], args=[len(lists), DEFERRED_HEADER])
        if snap is None:  # busy: whatever is claimed may be on its way
            self._seen = set()
            return []
        now = {(str(snap[i]), str(snap[i + 1]), str(snap[i + 2])) for i in range(0, len(snap), 3)}
        found = sorted(now & self._seen)
        self._seen = now
        out = []
        for key, digest, value in found:
            collection = self.keys.collection_of(key)
            record = self.client.hget(self.keys.claimed_files(collection), digest)
            files = [file_of(f) for f in json.loads(str(record))] if record else []
            out.append(Orphan(collection, digest, value, files))
        return out

    def drop(self, orphans: Sequence[Orphan]) -> int:
        """Release the claims still as observed (a plan may have taken one again since)."""
        dropped = 0
        for o in orphans:
            keys = [self.keys.claims(o.collection), self.keys.claimed_files(o.collection)]
            dropped += int(self._drop(keys=keys, args=[o.digest, o.value]))
        return dropped


def replan_orphans(sweep: OrphanSweep, send_plan: Callable[[dict[str, Any]], None]) -> int:
    """Send a plan of the orphaned claims' files, then release those claims; returns how many.

    The plan goes first: if it cannot be sent the claims stay for the next sweep, and a plan
    that runs before the release finds them claimed and defers, as for any other plan.
    """
    orphans = sweep.orphans()
    if not orphans:
        return 0
    files = [f for o in orphans for f in o.files]
    if files:
        send_plan(partial_request(files, []))
    dropped = sweep.drop(orphans)
    log.warning(
        "%d claim(s) had lost their message (Redis restarted?): %d file(s) planned again",
        dropped,
        len(files),
    )
    return dropped


def register_catalogs(settings: Settings, roots: Sequence[str]) -> None:
    if roots:
        redis_client(settings.broker_url).sadd(Keys(settings.collection).catalogs, *roots)


def registered_catalogs(settings: Settings) -> list[str]:
    """Folders beat rescans: the settings' catalogs and those `indexer queue` registered."""
    members = redis_client(settings.broker_url).smembers(Keys(settings.collection).catalogs)
    found = {str(m) for m in members} | set(settings.catalogs)
    return sorted(found)


def count(settings: Settings, client: redis.Redis, **fields: int) -> None:
    pipe = client.pipeline()
    for name, n in fields.items():
        if n:
            pipe.hincrby(Keys(settings.collection).stats, name, n)
    pipe.execute()


def broker_status(settings: Settings, timeout: float = 1.0) -> dict[str, Any]:
    """Queue depths, messages in flight, files claimed, and the done/failed counters."""
    import redis

    client = redis_client(settings.broker_url, timeout=timeout)
    keys = Keys(settings.collection)
    try:
        depths = {q: sum(int(client.llen(n)) for n in queue_lists(q)) for q in QUEUES}
        claimed = sum(int(client.hlen(k)) for k in client.scan_iter(keys.claims("*")))
        stats = {k: int(v) for k, v in client.hgetall(keys.stats).items()}
        return {
            "broker": settings.broker_url,
            "reachable": True,
            "queues": depths,
            # delivered to a worker and not acknowledged yet (kombu's `unacked` hash)
            "in_flight": int(client.hlen(_UNACKED)),
            "files_queued": claimed,
            "done": stats.get("indexed", 0),
            "failed": stats.get("failed", 0),
            "removed": stats.get("removed", 0),
            "embedded": stats.get("embedded", 0),
        }
    except redis.RedisError as err:
        return {"broker": settings.broker_url, "reachable": False, "error": str(err)}
    finally:
        client.close()


# ---- scan ---------------------------------------------------------------------------------------
def scan_request(settings: Settings, paths: Sequence[str | Path]) -> dict[str, Any]:
    """Walk catalog roots (stat only): the plan request the store stage diffs."""
    roots = resolve_roots(paths)
    files = [file_msg(f) for f in scan(roots, settings.extensions)]
    return {"roots": [str(r) for r in roots], "files": files}


# ---- the store owner: plan and store ------------------------------------------------------------
@dataclass
class PlanResult:
    target: str
    fingerprint: str
    batches: list[list[EmbedJob]]  # one embed task each
    unchanged: int = 0
    removed: int = 0
    # files whose content another plan has queued: planned again later (`partial_request`),
    # when that content is written their paths join its point without a second embedding
    deferred: list[CatalogFile] = field(default_factory=list)
    alias_switched: bool = False


class StoreStage:
    """What runs in the process that owns the store: the diff, the writes, the alias switch.

    The store (and, when embedded, the data directory's lock) is opened on first use and held
    until `close`; a second process finds the lock taken and raises StoreBusyError, which the
    tasks treat as transient (the message goes back to the queue for the owner).
    """

    def __init__(
        self, settings: Settings, client: redis.Redis, model: ModelHandle | None = None
    ) -> None:
        from indexer import service

        self.settings = settings
        self.client = client
        self.keys = Keys(settings.collection)
        # config and fingerprint only: the store stage never loads the weights
        self.model = model or ModelHandle(settings)
        self._stack = contextlib.ExitStack()
        self._session: service.Session | None = None

    def open(self) -> tuple[Store, FailureLog]:
        """The store and failure log, opened (under the lock when embedded) on first use."""
        from indexer import service

        if self._session is None:
            self._session = self._stack.enter_context(service.session(self.settings, wait=False))
        return self._session.store, self._session.failures

    def claims(self, target: str) -> Claims:
        return Claims(self.client, self.keys, target, self.settings.claim_ttl)

    def plan(self, request: dict[str, Any], token: str) -> PlanResult:
        store, failures = self.open()
        fp = self.model.fingerprint
        target = collection_name(store.alias, fp)
        roots = [Path(r) for r in request["roots"]]
        files = [file_of(f) for f in request["files"]]
        current = store.alias_target()
        cfg = self.model.config
        store.ensure_collection(target, cfg.embed_dim, cfg.first_stage_dim)
        if current is not None and current != target:
            # a new model: rebuild every catalog the old collection holds, beside it
            old_roots = {f.root for rec in store.records(current) for f in rec.files}
            merged = merge_roots(roots, [Path(r) for r in sorted(old_roots) if Path(r).exists()])
            extra = [r for r in merged if r not in roots]
            files += list(scan(extra, self.settings.extensions))
            roots = merged
        plan = plan_changes(files, store.records(target), failures.by_path(), roots, content_hash)
        apply_bookkeeping(store, target, failures, plan)
        claims = self.claims(target)
        jobs, deferred = [], []
        for digest, group in plan.embed.items():
            if claims.take(digest, token, group):
                replaces = {f.path: plan.replaces[f.path] for f in group if f.path in plan.replaces}
                jobs.append(EmbedJob(digest, group, replaces))
            else:
                deferred += group
        n = self.settings.embed_task_files
        result = PlanResult(
            target,
            fp,
            [jobs[i : i + n] for i in range(0, len(jobs), n)],
            unchanged=plan.unchanged,
            removed=plan.removed,
            deferred=deferred,
        )
        count(self.settings, self.client, removed=plan.removed, planned=len(jobs))
        if not jobs:
            result.alias_switched = self.finalize(target)
        return result

    def store(self, target: str, points: list[dict[str, Any]], failed: list[dict[str, Any]]) -> int:
        """Write embed results; returns the files indexed."""
        store, failures = self.open()
        written = [point_of(p["point"]) for p in points]
        for i in range(0, len(written), self.settings.upsert_batch):
            store.upsert(target, written[i : i + self.settings.upsert_batch])
        files = 0
        # the new content is written: now the paths may leave the points of their old content
        for p in points:
            pid = str(p["point"]["id"])
            for path, old in dict(p["replaces"]).items():
                if old != pid:
                    detach_path(store, target, old, path)
            files += len(p["point"]["payload"]["files"])
        n_failed = 0
        for f in failed:
            files_failed = [file_of(cf) for cf in f["files"]]
            # a message queued by a version without "replaces": the next plan detaches them
            replaces = dict(f.get("replaces") or {})
            digest, reason = str(f["digest"]), str(f["reason"])
            record_failure(store, target, failures, files_failed, digest, reason, replaces)
            n_failed += len(files_failed)
            log.info("failed: %s: %s", f["files"][0]["path"], f["reason"])
        digests = [str(p["digest"]) for p in points] + [str(f["digest"]) for f in failed]
        self.claims(target).release(digests)
        count(self.settings, self.client, indexed=files, failed=n_failed)
        self.finalize(target)
        return files

    def reconcile(self, target: str) -> None:
        """Release the claims of contents already written.

        A plan that claimed and then could not publish (the broker went away) runs again; when
        its contents were written meanwhile (by a redelivered message), it claims nothing and
        the old claims would stay. A written point is whole, so its claim only guards a repeat.
        Checked near the end of a run (few claims left), where a stale claim would hold back
        the alias switch.
        """
        claims = self.claims(target)
        held = claims.held()
        if not held or len(held) > _RECONCILE_BELOW:
            return
        store, _ = self.open()
        written = {t.id for t in store.retrieve(target, [point_id(d) for d in held])}
        claims.release([d for d in held if point_id(d) in written])

    def finalize(self, target: str) -> bool:
        """Switch the alias to `target` once nothing of it is queued; True when switched."""
        store, _ = self.open()
        self.reconcile(target)
        if self.claims(target).live():
            return False
        store.optimize(target)  # index what the run wrote; quick when nothing is due
        if store.alias_target() == target:
            return False
        store.switch_alias(target)
        for old in store.collections():
            if old != target:
                store.drop_collection(old)
        log.info("alias %s now points at %s", store.alias, target)
        return True

    def records(self) -> list[dict[str, Any]]:
        """Every point of the alias's collection: id, content hash, paths, clips."""
        store, _ = self.open()
        target = store.alias_target()
        if target is None:
            return []
        return [
            {
                "id": r.id,
                "content_hash": r.content_hash,
                "paths": [f.path for f in r.files],
                "n_clips": r.n_clips,
            }
            for r in store.records(target)
        ]

    def close(self) -> None:
        self._stack.close()
        self._session = None


# ---- embed --------------------------------------------------------------------------------------
@dataclass
class EmbedResult:
    points: list[dict[str, Any]]  # {"digest", "point": TrackPoint as a dict, "replaces"}
    failed: list[dict[str, Any]]  # {"digest", "files", "reason", "replaces"}


@dataclass
class _Track:
    starts: list[np.ndarray] = field(default_factory=list)
    ends: list[np.ndarray] = field(default_factory=list)
    embeddings: list[Any] = field(default_factory=list)  # torch (k, D) chunks
    tags: list[Any] = field(default_factory=list)  # torch (k, K) chunks (a tagged model)


def embed_jobs(
    model: CoLLAP, fingerprint: str, jobs: Sequence[EmbedJob], settings: Settings
) -> EmbedResult:
    """Decode each job's first file in this process and embed; clips of all jobs share batches.

    A file that gives no usable audio (DecodeError, or any decoder error, as the decoder pool
    treats it) becomes a failure of its job; the other jobs go on.
    """
    import torch

    fe = model.config.frontend
    params = DecodeParams(
        rate=fe.sample_rate,
        clip=fe.clip_samples,
        hop=fe.hop_samples,
        clips_per_message=8,
        silence_peak=settings.silence_peak,
    )
    tracks: dict[int, _Track] = {}
    queue: list[tuple[int, int, int, np.ndarray]] = []  # job, start, end, samples (clip,)

    def run_batch() -> None:
        take = queue[: settings.clip_batch]
        del queue[: settings.clip_batch]
        clips = torch.from_numpy(np.stack([c for _, _, _, c in take]))  # (k, clip)
        valid = torch.tensor([e - s for _, s, e, _ in take])  # (k,)
        starts = torch.tensor([s for _, s, _, _ in take])  # where each clip lies in its song
        encoded = model.encode_clips(clips, valid, starts)
        emb = encoded.embeddings.cpu()  # (k, D)
        tags = None if encoded.tags is None else encoded.tags.cpu()  # (k, K)
        rows: dict[int, list[int]] = {}
        for i, (job, _, _, _) in enumerate(take):
            rows.setdefault(job, []).append(i)
        for job, idx in rows.items():
            t = tracks[job]
            t.starts.append(np.array([take[i][1] for i in idx]))
            t.ends.append(np.array([take[i][2] for i in idx]))
            t.embeddings.append(emb[idx])
            if tags is not None:
                t.tags.append(tags[idx])

    result = EmbedResult([], [])
    infos: dict[int, dict[str, Any]] = {}
    for i, job in enumerate(jobs):

        def send(msg: tuple[Any, ...], i: int = i) -> None:
            match msg[0]:
                case "clips":
                    _, _, starts, ends, clips = msg
                    triples = zip(starts, ends, clips, strict=True)
                    queue.extend((i, int(s), int(e), c) for s, e, c in triples)
                    while len(queue) >= settings.clip_batch:
                        run_batch()
                case "done":
                    infos[i] = msg[2]

        tracks[i] = _Track()
        try:
            decode_job(i, job.files[0].path, params, send)
        except DecodeError as err:
            _drop(queue, tracks, i)
            result.failed.append(_failure(job, err.reason))
        except Exception as err:  # a decoder bug or a vanished file: recorded for this file
            _drop(queue, tracks, i)
            result.failed.append(_failure(job, f"decoder error: {type(err).__name__}: {err}"))
    while queue:
        run_batch()
    for i, t in tracks.items():
        job = jobs[i]
        point = assemble_point(
            model,
            fingerprint,
            job.digest,
            job.files,
            np.concatenate(t.starts),
            np.concatenate(t.ends),
            torch.cat(t.embeddings),
            infos[i],
            torch.cat(t.tags) if t.tags else None,
        )
        result.points.append(
            {"digest": job.digest, "point": point_msg(point), "replaces": job.replaces}
        )
    return result


def _drop(queue: list[tuple[int, int, int, np.ndarray]], tracks: dict[int, _Track], i: int) -> None:
    queue[:] = [q for q in queue if q[0] != i]
    tracks.pop(i, None)


def _failure(job: EmbedJob, reason: str) -> dict[str, Any]:
    files = [file_msg(f) for f in job.files]
    return {"digest": job.digest, "files": files, "reason": reason, "replaces": job.replaces}


class LazyModel:
    """The model of one worker process, loaded on its first embed task and kept."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._handle: ModelHandle | None = None

    def get(self) -> tuple[CoLLAP, str]:
        if self._handle is None:
            self._handle = ModelHandle(self.settings)
        return self._handle.get(), self._handle.fingerprint


# ---- watch --------------------------------------------------------------------------------------
@dataclass
class _Seen:
    size: int
    mtime_ns: int
    since: float  # when this size and mtime were first seen


class FolderWatcher:
    """Polls catalog roots; reports files whose size and mtime held still for `settle` seconds
    since they appeared or changed, and files that disappeared. No inotify: works on network
    mounts and needs no extra dependency."""

    def __init__(self, roots: Sequence[Path], extensions: Sequence[str], settle: float) -> None:
        self.roots, self.extensions, self.settle = list(roots), list(extensions), settle
        self._seen: dict[str, _Seen] = {}
        self._pending: set[str] = set()  # new or changed, not yet reported

    def baseline(self) -> None:
        """Remember what is there now without reporting it (a full scan covers it)."""
        now = time.monotonic()
        self._seen = {
            f.path: _Seen(f.size, f.mtime_ns, now) for f in scan(self.roots, self.extensions)
        }

    def poll(self, now: float | None = None) -> tuple[list[CatalogFile], list[str]]:
        """(files ready to index, paths deleted) since the last poll."""
        now = time.monotonic() if now is None else now
        current = {f.path: f for f in scan(self.roots, self.extensions)}
        deleted = [p for p in self._seen if p not in current]
        for p in deleted:
            del self._seen[p]
            self._pending.discard(p)
        for path, f in current.items():
            seen = self._seen.get(path)
            if seen is None or (seen.size, seen.mtime_ns) != (f.size, f.mtime_ns):
                self._seen[path] = _Seen(f.size, f.mtime_ns, now)
                self._pending.add(path)
        ready = [
            current[p] for p in sorted(self._pending) if now - self._seen[p].since >= self.settle
        ]
        self._pending -= {f.path for f in ready}
        return ready, sorted(deleted)


def partial_request(ready: Sequence[CatalogFile], deleted: Sequence[str]) -> dict[str, Any]:
    """A plan request for some files only (watch events, deferred files): its roots are those
    paths, so nothing else is considered removed."""
    return {
        "roots": sorted({f.path for f in ready} | set(deleted)),
        "files": [file_msg(f) for f in ready],
    }


def watch(
    settings: Settings,
    paths: Sequence[str | Path],
    send_plan: Callable[[dict[str, Any]], None],
    send_scan: Callable[[list[str]], None],
    stop: Callable[[], bool] = lambda: False,
) -> None:
    """Queue a full scan of each root once, then stream what changes until `stop()`."""
    roots = resolve_roots(paths)
    watcher = FolderWatcher(roots, settings.extensions, settings.watch_settle)
    watcher.baseline()
    send_scan([str(r) for r in roots])
    while not stop():
        time.sleep(settings.watch_interval)
        ready, deleted = watcher.poll()
        if ready or deleted:
            log.info("watch: %d ready, %d deleted", len(ready), len(deleted))
            send_plan(partial_request(ready, deleted))
