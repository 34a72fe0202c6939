"""The indexing run: scan -> plan -> decode (process pool) -> embed (batched) -> store.

Clips from all files in flight share model batches; decoder processes keep decoding while the
model runs. A track's point (song vector, clip multivector, payload) is written in one upsert,
so it is there whole or not at all, and ids are derived from content, so a run interrupted at
any moment and run again ends with every file indexed exactly once.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from indexer.decoders import DecodeParams, DecoderPool
from indexer.failures import FailureLog
from indexer.plan import Plan, plan_changes, track_file
from indexer.scan import CatalogFile, content_hash, resolve_roots, scan, unreadable_reason
from indexer.settings import Settings
from indexer.store.base import (
    CLIP_VECTORS,
    Store,
    StoreError,
    TrackFile,
    TrackPoint,
    as_text,
    collection_name,
    encode_clips,
    folders_of,
    point_id,
    stored_path,
)
from indexer.tags import Facets

if TYPE_CHECKING:
    from collap_model.config import ModelConfig
    from collap_model.model import CoLLAP

log = logging.getLogger(__name__)

# seconds to wait for a decoder message before embedding a partial batch
_IDLE = 0.05
_PUBLISH_EVERY = 0.25  # seconds between status.json writes while embedding


@dataclass
class IndexSummary:
    indexed: int = 0  # files embedded and written in this run
    unchanged: int = 0  # files already indexed (including new paths of known content)
    failed: int = 0  # files that failed in this run (see `indexer failures`)
    skipped_failed: int = 0  # files that failed before and have not changed
    removed: int = 0  # paths gone from disk, removed from the index
    audio_seconds: float = 0.0  # audio embedded in this run
    seconds: float = 0.0  # wall time of the run
    collection: str = ""
    fingerprint: str = ""
    alias_switched: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Progress(Protocol):
    def start(self, files: int) -> None: ...

    def update(self, files_done: int, audio_seconds: float) -> None: ...

    def finish(self) -> None: ...


@dataclass
class _Job:
    digest: str
    files: list[CatalogFile]
    starts: list[np.ndarray] = field(default_factory=list)
    ends: list[np.ndarray] = field(default_factory=list)
    embeddings: list[Any] = field(default_factory=list)  # torch (k, D) chunks
    tags: list[Any] = field(default_factory=list)  # torch (k, K) chunks (a tagged model)
    queued: int = 0  # clips waiting for the model
    info: dict[str, Any] | None = None
    total_samples: int = 0


class ModelHandle:
    """The model, loaded on first use (a run with nothing to embed never loads it)."""

    def __init__(self, settings: Settings, model: CoLLAP | None = None) -> None:
        from collap_model.registry import peek_model

        self.settings = settings
        self.config: ModelConfig
        # a model handed in (tests, benchmarks, a worker's loaded model) is authoritative
        self._model: CoLLAP | None = model
        recorded: str | None
        if model is not None:
            self.config, recorded = model.config, model.fingerprint
        else:
            self.config, recorded = peek_model(settings.model)
        self.fingerprint = recorded if recorded is not None else self.get().fingerprint

    def get(self) -> CoLLAP:
        if self._model is None:
            from collap_model.checkpoint import load_model

            model = load_model(self.settings.model, device=self.settings.device)
            fp = getattr(self, "fingerprint", None)
            if fp is not None and model.fingerprint != fp:
                raise StoreError(
                    f"model {self.settings.model or 'default'} records fingerprint {fp} but its "
                    f"weights give {model.fingerprint}; re-save the checkpoint"
                )
            self._model = model
        return self._model


class DataDirFull(OSError):
    """The data directory's file system has too little room for the next store write."""


class RunStopped(RuntimeError):
    """The run was asked to stop (its `stop` event); what it embedded is written."""


class IndexRun:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        failures: FailureLog,
        model: ModelHandle,
        progress: Progress | None = None,
        publish: Callable[[dict[str, Any]], None] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        # set by a serving process that shuts down (indexer/background.py)
        self.stop = stop
        self.store = store
        self.failures = failures
        self.model = model
        self.progress = progress
        self.publish = publish
        self.summary = IndexSummary(fingerprint=model.fingerprint)
        self.target = collection_name(store.alias, model.fingerprint)
        self._pending_points: list[tuple[TrackPoint, _Job]] = []
        self._replaces: dict[str, str] = {}
        self._files_total = 0
        self._last_publish = 0.0
        self._last_flush = time.monotonic()

    # ---- the run ----------------------------------------------------------------------------
    def run(self, paths: Sequence[str | Path]) -> IndexSummary:
        began = time.monotonic()
        roots = resolve_roots(paths)
        self._check_space()
        current = self.store.alias_target()
        self.store.ensure_collection(
            self.target,
            self.model.config.embed_dim,
            self.model.config.first_stage_dim,
        )
        if current is not None and current != self.target:
            # a new model: rebuild every catalog the old collection holds, beside it
            roots = merge_roots(roots, self._roots_of(current))
        if current is None:
            # the first index: searchable while it is written (indexer/owner.py), and after
            # an interrupted run, what that run wrote
            self.store.switch_alias(self.target)
        unlisted: list[tuple[CatalogFile, str]] = []
        files = list(scan(roots, self.settings.extensions, unlisted))
        records, failures = self.store.records(self.target), self.failures.by_path()
        plan = plan_changes(files, records, failures, roots, content_hash, unlisted)
        self.summary.collection = self.target
        self.summary.unchanged = plan.unchanged
        self.summary.skipped_failed = plan.skipped_failed
        self.summary.removed = plan.removed
        self._apply_bookkeeping(plan)
        self._embed_all(plan)
        self._publish("optimizing", self.summary.indexed + self.summary.failed)
        self.summary.failed += len(plan.unreadable)  # files and folders that could not be read
        self._check_space()
        self.store.optimize(self.target)
        if current != self.target:
            if current is not None:  # (a first run pointed the alias here when it started)
                self.store.switch_alias(self.target)
            for old in self.store.collections():
                if old != self.target:
                    self.store.drop_collection(old)
            self.summary.alias_switched = True
        self.summary.seconds = time.monotonic() - began
        return self.summary

    def _roots_of(self, collection: str) -> list[Path]:
        roots = {f.root for rec in self.store.records(collection) for f in rec.files}
        return [Path(r) for r in sorted(roots) if Path(r).exists()]

    def _apply_bookkeeping(self, plan: Plan) -> None:
        apply_bookkeeping(self.store, self.target, self.failures, plan)
        self._replaces = plan.replaces

    # ---- embedding --------------------------------------------------------------------------
    def _embed_all(self, plan: Plan) -> None:
        jobs = {i: _Job(digest, group) for i, (digest, group) in enumerate(plan.embed.items())}
        self._files_total = sum(len(j.files) for j in jobs.values())
        if self.progress is not None:
            self.progress.start(self._files_total)
        if not jobs:
            return
        fe = self.model.config.frontend
        params = DecodeParams(
            rate=fe.sample_rate,
            clip=fe.clip_samples,
            hop=fe.hop_samples,
            clips_per_message=8,
            silence_peak=self.settings.silence_peak,
        )
        # decoders start first: they decode while the model loads
        pool = DecoderPool(self.settings.decode_workers, params)
        try:
            for i, job in jobs.items():
                pool.submit(i, job.files[0].path)
            self._drive(pool, jobs, self.model.get())
        finally:
            pool.close()
            if self.progress is not None:
                self.progress.finish()

    def _drive(self, pool: DecoderPool, jobs: dict[int, _Job], model: CoLLAP) -> None:
        open_jobs = set(jobs)
        queue: list[tuple[int, int, int, np.ndarray]] = []  # job, start, end, samples
        batch = self.settings.clip_batch
        while open_jobs:
            if self.stop is not None and self.stop.is_set():
                # whole tracks only: the pending ones are written, the rest the next run embeds
                self._flush_points()
                raise RunStopped(
                    f"stopped with {self.summary.indexed} files written in this run; run the "
                    "job again to go on"
                )
            msg = pool.get(timeout=_IDLE)
            if msg is None:
                if queue:
                    self._embed(queue, jobs, model, open_jobs, batch)
                continue
            kind, job_id = msg[0], msg[1]
            if kind == "start":
                continue
            job = jobs[job_id]
            if kind == "clips":
                _, _, starts, ends, clips = msg
                queue.extend(
                    (job_id, int(s), int(e), c) for s, e, c in zip(starts, ends, clips, strict=True)
                )
                job.queued += len(starts)
                while len(queue) >= batch:
                    self._embed(queue, jobs, model, open_jobs, batch)
            elif kind == "done" and (moved := changed_since_scan(job.files[0])) is not None:
                # what was decoded may not be the content that was hashed: not stored, and
                # logged with no content hash, so the next run reads the file again
                queue[:] = [q for q in queue if q[0] != job_id]
                self._fail(job, moved, digest="")
                open_jobs.discard(job_id)
                self._tick()
            elif kind == "done":
                job.info, job.total_samples = msg[2], msg[3]
                if job.queued == 0:
                    self._finish(job_id, jobs, model, open_jobs)
            elif kind == "failed":
                queue[:] = [q for q in queue if q[0] != job_id]
                self._fail(job, msg[2])
                open_jobs.discard(job_id)
                self._tick()
        self._flush_points()

    def _embed(
        self,
        queue: list[tuple[int, int, int, np.ndarray]],
        jobs: dict[int, _Job],
        model: CoLLAP,
        open_jobs: set[int],
        batch: int,
    ) -> None:
        import torch

        take = queue[:batch]
        del queue[:batch]
        clips = torch.from_numpy(np.stack([c for _, _, _, c in take]))
        valid = torch.tensor([e - s for _, s, e, _ in take])
        starts = torch.tensor([s for _, s, _, _ in take])  # where each clip lies in its song
        encoded = model.encode_clips(clips, valid, starts)
        emb = encoded.embeddings.cpu()  # (k, D)
        tags = None if encoded.tags is None else encoded.tags.cpu()  # (k, K)
        rows: dict[int, list[int]] = {}
        for i, (job_id, _, _, _) in enumerate(take):
            rows.setdefault(job_id, []).append(i)
        for job_id, idx in rows.items():
            job = jobs[job_id]
            job.starts.append(np.array([take[i][1] for i in idx]))
            job.ends.append(np.array([take[i][2] for i in idx]))
            job.embeddings.append(emb[idx])
            if tags is not None:
                job.tags.append(tags[idx])
            job.queued -= len(idx)
            if job.queued == 0 and job.info is not None:
                self._finish(job_id, jobs, model, open_jobs)

    def _finish(
        self, job_id: int, jobs: dict[int, _Job], model: CoLLAP, open_jobs: set[int]
    ) -> None:
        import torch

        job = jobs[job_id]
        assert job.info is not None
        point = assemble_point(
            model,
            self.model.fingerprint,
            job.digest,
            job.files,
            np.concatenate(job.starts),
            np.concatenate(job.ends),
            torch.cat(job.embeddings),
            job.info,
            torch.cat(job.tags) if job.tags else None,
        )
        self._pending_points.append((point, job))
        self.summary.indexed += len(job.files)
        self.summary.audio_seconds += job.total_samples / model.sample_rate
        job.embeddings.clear()
        job.tags.clear()
        open_jobs.discard(job_id)
        due = time.monotonic() - self._last_flush >= self.settings.flush_seconds
        if len(self._pending_points) >= self.settings.upsert_batch or due:
            self._flush_points()
        self._tick()

    def _flush_points(self) -> None:
        if not self._pending_points:
            return
        self._check_space()
        self._last_flush = time.monotonic()
        self.store.upsert(self.target, [p for p, _ in self._pending_points])
        # the new content is written: now the paths may leave the points of their old content
        for _, job in self._pending_points:
            for f in job.files:
                old = self._replaces.pop(f.path, None)
                if old is not None and old != point_id(job.digest):
                    self._detach(old, f.path)
        self._pending_points.clear()

    def _check_space(self) -> None:
        """DataDirFull before a write when the data directory's file system is nearly full."""
        data = self.settings.data_dir
        free = shutil.disk_usage(data).free
        need = self.settings.min_free_mb << 20
        if free < need:
            pending = sum(len(job.files) for _, job in self._pending_points)
            raise DataDirFull(
                f"the data directory {data} has {free >> 20} MB free, less than the "
                f"{self.settings.min_free_mb} MB (INDEXER_MIN_FREE_MB) a store write needs: "
                f"stopped with {self.summary.indexed - pending} files written in this run, "
                "kept; free space and run `indexer index` again to go on"
            )

    def _detach(self, pid: str, path: str) -> None:
        detach_path(self.store, self.target, pid, path)

    def _fail(self, job: _Job, reason: str, digest: str | None = None) -> None:
        """Log the job's files; `digest` "" logs them with no content hash (tried again)."""
        replaces = {
            f.path: self._replaces.pop(f.path) for f in job.files if f.path in self._replaces
        }
        digest = job.digest if digest is None else digest
        record_failure(self.store, self.target, self.failures, job.files, digest, reason, replaces)
        self.summary.failed += len(job.files)
        log.info("failed: %s: %s", job.files[0].path, reason)

    def _tick(self) -> None:
        # files leave the embedding phase either written (indexed) or failed
        done = self.summary.indexed + self.summary.failed
        if self.progress is not None:
            self.progress.update(done, self.summary.audio_seconds)
        now = time.monotonic()
        # throttled, but the last file always shows: status must not read 2/20 while the run
        # is already optimising the collection
        last = done >= self._files_total
        if now - self._last_publish > _PUBLISH_EVERY or last:
            self._last_publish = now
            self._publish("indexing", done)

    def _publish(self, state: str, done: int) -> None:
        if self.publish is not None:
            status = {"state": state, "files_done": done, "files_total": self._files_total}
            self.publish({**status, **self.summary.as_dict()})


# ---- building blocks shared with the distributed stages (indexer.distributed) -------------------
def apply_bookkeeping(store: Store, target: str, failures: FailureLog, plan: Plan) -> None:
    """Write what a plan decides without embedding: moved, touched and removed paths, failures."""
    deletions = [pid for pid, files in plan.files_of.items() if not files]
    for pid, files in plan.files_of.items():
        if files:
            store.set_payload(target, pid, _files_payload(files))
    store.delete(target, deletions)
    for f in plan.touched_failures:
        failures.touch(f)
    failures.remove(plan.cleared_failures)
    for f, reason in plan.unreadable:
        failures.record(f, "", reason)


def changed_since_scan(f: CatalogFile) -> str | None:
    """Why `f` is not the file the scan found (gone, or another size or mtime: written while it
    was read), or None."""
    try:
        st = os.stat(f.path)
    except FileNotFoundError:
        return "vanished while being read"
    except OSError as err:
        return unreadable_reason(err)
    if st.st_size != f.size or st.st_mtime_ns != f.mtime_ns:
        return f"changed while being read ({f.size} -> {st.st_size} bytes); read again next run"
    return None


def record_failure(
    store: Store,
    target: str,
    failures: FailureLog,
    files: Sequence[CatalogFile],
    digest: str,
    reason: str,
    replaces: dict[str, str],
) -> None:
    """Log files whose new content gave no usable audio, and take them off the points of their
    old content (`replaces`: path -> point id): a file that no longer decodes must not keep
    answering queries with its old track. Logged first: a run stopped in between leaves a
    failure beside the old track, which the next plan detaches (plan_changes)."""
    for f in files:
        failures.record(f, digest, reason)
    for f in files:
        old = replaces.get(f.path)
        if old is not None:
            detach_path(store, target, old, f.path)


def detach_path(store: Store, target: str, pid: str, path: str) -> None:
    """Take `path` off point `pid` (its content changed); a point left with no path goes."""
    found = store.retrieve(target, [pid])
    if not found:
        return
    stored = [TrackFile.of(f) for f in found[0].payload.get("files", [])]
    files = [f for f in stored if f.path != path]
    if files:
        store.set_payload(target, pid, _files_payload(files))
    else:
        store.delete(target, [pid])


def assemble_point(
    model: CoLLAP,
    fingerprint: str,
    digest: str,
    files: Sequence[CatalogFile],
    starts: np.ndarray,
    ends: np.ndarray,
    embeddings: Any,
    info: dict[str, Any],
    tags: Any = None,
) -> TrackPoint:
    """A whole point from one track's clip embeddings, in any order.

    starts, ends: int (N,) clip bounds in samples at the model's rate; embeddings: (N, D);
    tags: the clips' tag probabilities (N, K) from a tagged model, in the same order, or None.
    """
    import torch

    order = np.argsort(starts, kind="stable")
    clips = embeddings[torch.from_numpy(order)]  # (N, D) in time order
    times = torch.from_numpy(
        np.stack([starts[order], ends[order]], axis=1) / model.sample_rate
    ).float()  # (N, 2) seconds
    song = model.pool_song(clips, times).cpu()  # (D,)
    first = model.first_stage_vectors(clips, times)  # (m·D,)
    payload = track_payload(files, digest, info, times.tolist(), fingerprint)
    payload[CLIP_VECTORS] = encode_clips(clips.cpu().numpy())
    if tags is not None:
        payload.update(Facets(model.tag_names).payload(tags[torch.from_numpy(order)].numpy()))
    return TrackPoint(
        point_id(digest), song.tolist(), clips.cpu().tolist(), first.tolist(), payload
    )


def track_payload(
    files: Sequence[CatalogFile],
    digest: str,
    info: dict[str, Any],
    times: list[list[float]],
    fingerprint: str,
) -> dict[str, Any]:
    first = files[0]
    payload: dict[str, Any] = {
        **info,
        "title": info.get("title") or as_text(Path(first.path).stem),
        **_files_payload([track_file(f) for f in files]),
        "size": first.size,
        "mtime": first.mtime_ns / 1e9,
        "content_hash": digest,
        "clip_times": [[round(float(s), 3), round(float(e), 3)] for s, e in times],
        "n_clips": len(times),
        "fingerprint": fingerprint,
        "indexed_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return payload


def _files_payload(files: list[TrackFile]) -> dict[str, Any]:
    return {
        "path": stored_path(files[0].path),
        "root": stored_path(files[0].root),
        "files": [f.as_payload() for f in files],
        "dirs": folders_of([f.path for f in files]),
    }


def merge_roots(a: list[Path], b: list[Path]) -> list[Path]:
    merged = list(a)
    for root in b:
        if not any(root == r or r in root.parents for r in merged):
            merged.append(root)
    return merged
