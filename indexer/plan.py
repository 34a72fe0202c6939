"""Change detection: what a run must do, from the scanned files, the stored points and failures.

Pure bookkeeping, no decoding: a file is unchanged when its size and mtime match what is
stored; otherwise its content hash decides (same content: only the mtime is updated; new
content: it is embedded, once per distinct content however many paths hold it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from indexer.failures import Failure
from indexer.scan import CatalogFile, unreadable_reason
from indexer.store.base import TrackFile, TrackRecord


@dataclass
class Plan:
    unchanged: int = 0  # files skipped without hashing or decoding
    skipped_failed: int = 0  # unchanged files that failed before (not retried)
    # content hash -> the files to embed with that content (embedded once)
    embed: dict[str, list[CatalogFile]] = field(default_factory=dict)
    # point id -> its new full file list (paths attached, touched or removed)
    files_of: dict[str, list[TrackFile]] = field(default_factory=dict)
    touched_failures: list[CatalogFile] = field(default_factory=list)
    cleared_failures: list[str] = field(default_factory=list)
    removed: int = 0  # paths gone from disk (or changed away) that left the index
    # path -> the point holding its old content; detached once the new content is written, so
    # an interrupted run never leaves the path unindexed
    replaces: dict[str, str] = field(default_factory=dict)
    # files that could not be read (and folders that could not be listed), with the reason:
    # logged as failures with no content hash, so they are tried again on every run
    unreadable: list[tuple[CatalogFile, str]] = field(default_factory=list)


def _under(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def track_file(f: CatalogFile) -> TrackFile:
    return TrackFile(f.path, f.root, f.size, f.mtime_ns)


def plan_changes(
    scanned: Iterable[CatalogFile],
    records: Iterable[TrackRecord],
    failures: dict[str, Failure],
    roots: list[Path],
    hasher: Callable[[str], str],
    unreadable: Iterable[tuple[CatalogFile, str]] = (),
) -> Plan:
    """`unreadable`: the folders the scan could not list (scan's `unreadable`); what was indexed
    under them stays, since it may well still be there."""
    plan = Plan(unreadable=list(unreadable))
    root_strs = [str(r) for r in roots]
    hidden = [f.path for f, _ in plan.unreadable]
    files_of: dict[str, list[TrackFile]] = {}
    owner: dict[str, str] = {}  # path -> point id
    changed: set[str] = set()
    by_hash: dict[str, str] = {}  # content hash -> point id
    for rec in records:
        files_of[rec.id] = list(rec.files)
        by_hash[rec.content_hash] = rec.id
        for tf in rec.files:
            if tf.path in owner:
                # an interrupted change left the path on two points: the scan below decides
                # which content the path holds now
                files_of[owner[tf.path]] = [
                    x for x in files_of[owner[tf.path]] if x.path != tf.path
                ]
                changed.add(owner[tf.path])
            owner[tf.path] = rec.id

    def detach(path: str) -> None:
        pid = owner.pop(path, None)
        if pid is not None:
            files_of[pid] = [x for x in files_of[pid] if x.path != path]
            changed.add(pid)

    seen: set[str] = set()
    for f in scanned:
        seen.add(f.path)
        pid = owner.get(f.path)
        stored = next((x for x in files_of[pid] if x.path == f.path), None) if pid else None
        failed = failures.get(f.path)
        if stored is not None and stored.size == f.size and stored.mtime_ns == f.mtime_ns:
            plan.unchanged += 1
            if failed is not None:  # the track is what the file holds now: the failure is old
                plan.cleared_failures.append(f.path)
            continue
        # a path never stays both failed and indexed: a failure that still describes the file
        # takes it off its old track (a run stopped between logging the one and detaching the
        # other, or an index written before failures detached). A file that could not be read
        # (no content hash) is tried again: permissions change without touching the mtime.
        if (
            failed is not None
            and failed.content_hash
            and failed.size == f.size
            and failed.mtime_ns == f.mtime_ns
        ):
            plan.skipped_failed += 1
            detach(f.path)
            continue
        try:
            digest = hasher(f.path)
        except FileNotFoundError:
            seen.discard(f.path)  # gone since the scan: as if it had not been found
            continue
        except OSError as err:
            plan.unreadable.append((f, unreadable_reason(err)))
            detach(f.path)
            continue
        if failed is not None:
            if failed.content_hash == digest:
                plan.touched_failures.append(f)
                plan.skipped_failed += 1
                detach(f.path)
                continue
            plan.cleared_failures.append(f.path)
        target = by_hash.get(digest)
        if target is not None:
            if pid != target:
                detach(f.path)
            files_of[target] = [x for x in files_of[target] if x.path != f.path] + [track_file(f)]
            owner[f.path] = target
            changed.add(target)
            plan.unchanged += 1
            continue
        plan.embed.setdefault(digest, []).append(f)
        if pid is not None:
            plan.replaces[f.path] = pid
    # paths under the scanned roots that are gone from disk, and failures of gone files
    for path in list(owner):
        if path not in seen and _under(path, root_strs) and not _under(path, hidden):
            detach(path)
            plan.removed += 1
    plan.cleared_failures += [
        p for p in failures if p not in seen and _under(p, root_strs) and not _under(p, hidden)
    ]
    plan.files_of = {pid: files_of[pid] for pid in changed}
    return plan
