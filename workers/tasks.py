"""Thin, idempotent task adapters over indexer.distributed; they take paths and ids only.

Each worker process keeps its settings, Redis client, model (loaded on the first embed task)
and store owner (opened on the first store task) in `_Context`, built on first use.
Transient failures (Redis, Qdrant or the store lock unreachable, timeouts) are retried with
exponential backoff and full jitter, capped at `retry_backoff_max` seconds and `retry_max`
retries; a file that cannot be decoded is a permanent failure, recorded in the failure log.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery import Task
from celery.exceptions import Reject
from celery.signals import worker_process_shutdown
from celery.utils.time import get_exponential_backoff_interval
from kombu.exceptions import OperationalError

from indexer import distributed
from indexer.lock import StoreBusyError
from indexer.scan import ScanError
from indexer.settings import Settings
from indexer.store.base import StoreError
from workers.app import app

log = logging.getLogger(__name__)

TRANSIENT: tuple[type[BaseException], ...] = (
    StoreError,
    StoreBusyError,
    redis.ConnectionError,
    redis.TimeoutError,
    OperationalError,
    ConnectionError,
    TimeoutError,
)


# seconds before files whose content another plan has queued are planned again
DEFER_SECONDS = 5.0


class BrokerUnavailableError(ConnectionError):
    """A message for the next stage could not be published."""


class ModelMismatchError(StoreError):
    """This worker's model is not the one the plan targets (workers mid-upgrade)."""


class _Context:
    def __init__(self) -> None:
        self.settings = Settings()
        self.client = distributed.redis_client(self.settings.broker_url)
        self.model = distributed.LazyModel(self.settings)
        self._stage: distributed.StoreStage | None = None

    @property
    def stage(self) -> distributed.StoreStage:
        if self._stage is None:
            self._stage = distributed.StoreStage(self.settings, self.client)
        return self._stage

    def close(self) -> None:
        if self._stage is not None:
            self._stage.close()
            self._stage = None


_context: _Context | None = None


def ctx() -> _Context:
    global _context
    if _context is None:
        _context = _Context()
    return _context


@worker_process_shutdown.connect
def _release_store(**_: Any) -> None:
    if _context is not None:
        _context.close()  # flush the shard and release the data directory's lock


def _publish(task: Task, args: list[Any], **options: Any) -> None:
    """Enqueue the next stage. Any failure to publish (after kombu's own retries, and errors of
    a connection that broke under it) is the broker's, so transient."""
    try:
        task.apply_async(args=args, retry=True, **options)
    except Exception as err:
        raise BrokerUnavailableError(f"cannot publish {task.name}: {err}") from err


def _retry(task: Task, exc: BaseException) -> Exception:
    s = ctx().settings
    countdown = get_exponential_backoff_interval(
        factor=1, retries=task.request.retries, maximum=int(s.retry_backoff_max), full_jitter=True
    )
    log.warning("%s: %s; retry %d in %d s", task.name, exc, task.request.retries + 1, countdown)
    # a store message that reached a process which does not own the embedded store goes back
    # until the owner takes it, however often: giving up would lose it (the tasks' own
    # max_retries is None, so every other retry passes its cap explicitly)
    cap = None if isinstance(exc, StoreBusyError) else s.retry_max
    try:
        return task.retry(exc=exc, countdown=countdown, max_retries=cap)
    except Reject as rejected:
        # Celery could not publish the retry (the broker is away) and would drop the message
        # (requeue=False); hand it back instead. If Redis cannot take even that, the message
        # stays unacknowledged there and comes back after the visibility timeout.
        log.warning("%s: cannot publish a retry (%s); message handed back", task.name, rejected)
        return Reject(rejected.reason, requeue=True)


@app.task(bind=True, max_retries=None, name="workers.tasks.scan")
def scan(self: Task, root: str) -> dict[str, int]:
    """Walk one catalog root and send the listing to the store stage's diff."""
    try:
        request = distributed.scan_request(ctx().settings, [root])
        _publish(plan, [request])
    except ScanError as err:  # the folder is gone: nothing to retry
        log.warning("scan: %s", err)
        return {"files": 0}
    except TRANSIENT as exc:
        raise _retry(self, exc) from exc
    return {"files": len(request["files"])}


@app.task(bind=True, max_retries=None, name="workers.tasks.rescan")
def rescan(self: Task) -> list[str]:
    """Beat's job: queue a scan of every registered catalog."""
    try:
        roots = distributed.registered_catalogs(ctx().settings)
        for root in roots:
            _publish(scan, [root])
    except TRANSIENT as exc:
        raise _retry(self, exc) from exc
    return roots


@app.task(bind=True, max_retries=None, name="workers.tasks.plan")
def plan(self: Task, request: dict[str, Any]) -> dict[str, Any]:
    """Diff a listing against the store, write the bookkeeping, queue embed tasks."""
    try:
        result = ctx().stage.plan(request, token=self.request.id)
        for batch in result.batches:
            jobs = [j.as_msg() for j in batch]
            _publish(embed, [result.target, result.fingerprint, jobs])
        if result.deferred:
            later = distributed.partial_request(result.deferred, [])
            # marked: a deferred plan carries no claim, so it keeps none alive (OrphanSweep)
            headers = {distributed.DEFERRED_HEADER: True}
            _publish(plan, [later], countdown=DEFER_SECONDS, headers=headers)
    except TRANSIENT as exc:
        raise _retry(self, exc) from exc
    queued = sum(len(b) for b in result.batches)
    return {"target": result.target, "queued": queued, "deferred": len(result.deferred)}


@app.task(bind=True, max_retries=None, name="workers.tasks.embed")
def embed(self: Task, target: str, fingerprint: str, jobs: list[dict[str, Any]]) -> int:
    """Decode and embed; the points (or failures) go to the store queue as JSON."""
    c = ctx()
    try:
        model, fp = c.model.get()
        if fp != fingerprint:
            raise ModelMismatchError(f"this worker's model is {fp}, the task's is {fingerprint}")
        result = distributed.embed_jobs(
            model, fp, [distributed.EmbedJob.of(j) for j in jobs], c.settings
        )
        distributed.count(c.settings, c.client, embedded=len(result.points))
        _publish(store, [target, result.points, result.failed])
    except TRANSIENT as exc:
        raise _retry(self, exc) from exc
    return len(result.points)


@app.task(bind=True, max_retries=None, name="workers.tasks.store")
def store(
    self: Task, target: str, points: list[dict[str, Any]], failed: list[dict[str, Any]]
) -> int:
    """Write embed results (upserts, detaches, failures) and release their claims."""
    try:
        return ctx().stage.store(target, points, failed)
    except TRANSIENT as exc:
        raise _retry(self, exc) from exc


@app.task(bind=True, max_retries=None, name="workers.tasks.records", ignore_result=False)
def records(self: Task) -> list[dict[str, Any]]:
    """Every point of the index (id, content hash, paths, clips), read by the store owner."""
    try:
        return ctx().stage.records()
    except TRANSIENT as exc:
        raise _retry(self, exc) from exc


@app.task(name="workers.tasks.ping", ignore_result=False)
def ping() -> str:
    """A no-op round trip (benchmarks: per-task overhead)."""
    return "pong"
