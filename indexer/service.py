"""Entry-point logic shared by the CLI, the workers and the API: open the store safely, run.

The embedded store is opened only under the data directory's lock; commands that merely read
(status) use the owner's published status when another process holds the lock.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from indexer.failures import Failure, FailureLog
from indexer.lock import DataDirLock, StoreBusyError, busy_message, read_json, write_json
from indexer.pipeline import IndexRun, IndexSummary, ModelHandle, Progress
from indexer.settings import Settings
from indexer.store.base import Store

if TYPE_CHECKING:
    from indexer.client import Client
    from indexer.search import Hit, Searcher

Answer = TypeVar("Answer")


def store_location(settings: Settings) -> str:
    return settings.qdrant_url or str(settings.data_dir / "qdrant")


def open_store(settings: Settings) -> Store:
    """The configured store; for the embedded one the caller must hold the data-dir lock."""
    if settings.embedded:
        from indexer.store.edge import EdgeStore

        return EdgeStore(settings.data_dir / "qdrant", settings.collection)
    from indexer.store.server import ServerStore

    assert settings.qdrant_url is not None
    key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
    return ServerStore.connect(settings.qdrant_url, key, settings.collection)


def failure_log(settings: Settings) -> FailureLog:
    return FailureLog(settings.data_dir / "failures.sqlite3")


@dataclass
class Session:
    """An open store (and the lock that guards it) plus the failure log."""

    settings: Settings
    store: Store
    failures: FailureLog

    def announce(self, **facts: Any) -> None:
        """Add facts to owner.json (e.g. the API address other commands can go through)."""
        if self.settings.embedded:
            path = self.settings.data_dir / "owner.json"
            write_json(path, {**(read_json(path) or {}), **facts})

    def publish(self, status: dict[str, Any]) -> None:
        if self.settings.embedded:
            write_json(self.settings.data_dir / "status.json", {**status, "updated": time.time()})


@contextlib.contextmanager
def session(
    settings: Settings,
    wait: bool = True,
    on_wait: Callable[[dict[str, Any] | None], None] | None = None,
) -> Iterator[Session]:
    lock = DataDirLock(settings.data_dir)
    if settings.embedded:
        lock.acquire(wait=wait, on_wait=on_wait)
    try:
        store = open_store(settings)
        failures = failure_log(settings)
        try:
            yield Session(settings, store, failures)
        finally:
            store.close()
            failures.close()
    finally:
        lock.release()


def index(
    settings: Settings,
    paths: Sequence[str | Path],
    progress: Progress | None = None,
    on_wait: Callable[[dict[str, Any] | None], None] | None = None,
    model: ModelHandle | None = None,
    on_handoff: Callable[[dict[str, Any]], None] | None = None,
) -> IndexSummary:
    """Index `paths` here, or, while `indexer serve` owns the embedded store, through it (it
    runs the job in the background and keeps answering; indexer/background.py); while
    another `indexer index` run owns it, wait for the store."""
    from indexer.background import OwnerGone, accepts_jobs

    model = model or ModelHandle(settings)
    while True:
        try:
            return _index_here(settings, paths, progress, model, wait=False)
        except StoreBusyError:
            pass
        owner = read_json(settings.data_dir / "owner.json")
        if not accepts_jobs(owner):
            return _index_here(settings, paths, progress, model, on_wait=on_wait)
        assert owner is not None
        try:
            return follow_job(settings, paths, owner, model.fingerprint, progress, on_handoff)
        except OwnerGone:
            continue  # it stopped: the store is free, or has a new owner, by the next turn


def _index_here(
    settings: Settings,
    paths: Sequence[str | Path],
    progress: Progress | None,
    model: ModelHandle,
    wait: bool = True,
    on_wait: Callable[[dict[str, Any] | None], None] | None = None,
) -> IndexSummary:
    from indexer.owner import SharedStore, serving

    with session(settings, wait=wait, on_wait=on_wait) as s:
        store: Any = SharedStore(s.store)
        with serving(s, store, model):
            run = IndexRun(settings, store, s.failures, model, progress=progress, publish=s.publish)
            return run.run(paths)


def follow_job(
    settings: Settings,
    paths: Sequence[str | Path],
    owner: dict[str, Any],
    fingerprint: str,
    progress: Progress | None = None,
    on_handoff: Callable[[dict[str, Any]], None] | None = None,
    by: str = "indexer index",
) -> IndexSummary:
    """Hand `paths` to the serving owner and follow its job to the end: its summary; JobFailed
    with the job's reason; OwnerGone when the owner stopped first (what it wrote stays; the
    caller goes on itself); StillRunning when interrupted after the owner took the job."""
    from indexer import background as bg

    data_dir = settings.data_dir
    job_id = bg.request(data_dir, paths, by, settings.collection, fingerprint)
    if on_handoff is not None:
        on_handoff(owner)
    last: dict[str, Any] | None = None
    total = -1
    try:
        while True:
            last = bg.state(data_dir, job_id) or last
            if last is not None and progress is not None:
                if total != last["files_total"] and last["files_total"]:
                    total = last["files_total"]
                    progress.start(total)
                if total > 0:
                    progress.update(last["files_done"], last["audio_seconds"])
            if last is not None and last["state"] in bg.FINAL:
                break
            if not _still_owner(settings, owner) and (
                bg.withdraw(data_dir, job_id) or not _settled(data_dir, job_id)
            ):
                raise bg.OwnerGone(busy_message(data_dir, owner) + " stopped")
            time.sleep(bg.POLL_S)
    except KeyboardInterrupt:
        if bg.withdraw(data_dir, job_id):
            raise
        raise bg.StillRunning(
            f"stopped following job {job_id}; {busy_message(data_dir, owner)} goes on with it "
            "(`indexer status`, GET /index)"
        ) from None
    finally:
        if progress is not None and total > 0:
            progress.finish()
    bg.forget(data_dir, job_id)
    if last["state"] == bg.DONE:
        return IndexSummary(**last["summary"])
    if last["state"] == bg.STOPPED:
        raise bg.OwnerGone(str(last["error"]))
    raise bg.JobFailed(f"{busy_message(data_dir, owner)} could not index: {last['error']}")


def _still_owner(settings: Settings, owner: dict[str, Any]) -> bool:
    """Whether the process that took a request still owns the store."""
    now = read_json(settings.data_dir / "owner.json")
    return (
        bool(now and now.get("pid") == owner.get("pid"))
        and DataDirLock(settings.data_dir).is_held_elsewhere()
    )


def _settled(data_dir: Path, job_id: str) -> bool:
    """Whether a job whose owner is gone reached a final state (read once more: it may have
    written it just before it went)."""
    from indexer import background as bg

    found = bg.state(data_dir, job_id)
    return bool(found and found["state"] in bg.FINAL)


def watch_through_owner(
    settings: Settings,
    paths: Sequence[str | Path],
    say: Callable[[str], None],
    stop: Callable[[], bool] = lambda: False,
) -> bool:
    """`indexer watch` on the embedded store while `indexer serve` owns it: hand its folders
    to the server at first and whenever something in them changes. False (nothing done)
    when no serving owner takes jobs."""
    from indexer import background as bg
    from indexer.distributed import FolderWatcher
    from indexer.scan import resolve_roots

    owner = read_json(settings.data_dir / "owner.json")
    if not (
        settings.embedded
        and bg.accepts_jobs(owner)
        and DataDirLock(settings.data_dir).is_held_elsewhere()
    ):
        return False
    assert owner is not None
    roots = resolve_roots(paths)
    watcher = FolderWatcher(roots, settings.extensions, settings.watch_settle)
    watcher.baseline()
    fingerprint = ModelHandle(settings).fingerprint
    sent: list[str] = []

    def hand_over() -> None:
        by, collection = "indexer watch", settings.collection
        sent.append(bg.request(settings.data_dir, roots, by, collection, fingerprint))

    hand_over()
    who = busy_message(settings.data_dir, owner)
    say(f"watching {', '.join(map(str, roots))}: {who} indexes them (a full scan first)")
    while not stop():
        time.sleep(settings.watch_interval)
        if not _still_owner(settings, owner):
            raise bg.OwnerGone(
                f"{who} stopped: run `indexer watch` again to go on (through the next owner, "
                "or through the workers)"
            )
        for job_id in [j for j in sent if _settled(settings.data_dir, j)]:
            found = bg.state(settings.data_dir, job_id) or {}
            if found.get("state") == bg.FAILED:
                say(f"the job failed: {found.get('error')}")
            bg.forget(settings.data_dir, job_id)
            sent.remove(job_id)
        ready, deleted = watcher.poll()
        if ready or deleted:
            hand_over()
            say(f"handed over {len(ready)} new or changed file(s), {len(deleted)} deletion(s)")
    return True


def status(settings: Settings) -> dict[str, Any]:
    """Tracks, clips, failures, fingerprint and store location; never touches a live shard."""
    base: dict[str, Any] = {"store": store_location(settings), "collection": settings.collection}
    try:
        with session(settings, wait=False) as s:
            target = s.store.alias_target()
            tracks = clips = 0
            if target is not None:
                for rec in s.store.records(target):
                    tracks += 1
                    clips += rec.n_clips
            return {
                **base,
                "live": False,
                "tracks": tracks,
                "clips": clips,
                "failures": s.failures.count(),
                "fingerprint": target.removeprefix(settings.collection + "-") if target else None,
                "collections": s.store.collections(),
            }
    except StoreBusyError:
        owner = read_json(settings.data_dir / "owner.json")
        live = read_json(settings.data_dir / "status.json") or {}
        failures = failure_log(settings)
        try:
            count = failures.count()
        finally:
            failures.close()
        return {
            **base,
            "live": True,
            "owner": busy_message(settings.data_dir, owner),
            "failures": count,
            "progress": live,
        }


@contextlib.contextmanager
def searcher(
    settings: Settings,
    wait: bool = True,
    on_wait: Callable[[dict[str, Any] | None], None] | None = None,
    announce: dict[str, Any] | None = None,
    light: bool = False,
) -> Iterator[Searcher]:
    """The loaded model over the open store (embedded: under the data directory's lock).
    `light`: a one-shot command's, the torch-free text side where it runs the model
    (collap_model/light.py: importing torch was most of a cold `indexer query`)."""
    from indexer.search import Searcher

    with session(settings, wait=wait, on_wait=on_wait) as s:
        if announce:
            s.announce(**announce)
        model = _search_model(settings, light)
        yield Searcher(s.store, model, settings.candidates, settings.max_query_chars)


@contextlib.contextmanager
def serving(settings: Settings, url: str) -> Iterator[tuple[Session, Searcher]]:
    """What `indexer serve` holds while it runs: the open store, which its searches and its
    index jobs (indexer/background.py) take turns on, and the searcher with the torch model
    (the jobs embed audio with it too)."""
    from indexer.owner import SharedStore
    from indexer.search import Searcher

    with session(settings) as s:
        s.announce(api=url)
        s.store = SharedStore(s.store)
        model = _search_model(settings, light=False)
        yield s, Searcher(s.store, model, settings.candidates, settings.max_query_chars)


def _search_model(settings: Settings, light: bool) -> Any:
    if light:
        from collap_model.light import load_light

        found = load_light(settings.model, device=settings.device)
        if found is not None:
            return found
    import torch

    from collap_model.checkpoint import load_model
    from collap_model.text_encoder import TextBackend

    torch.set_num_threads(settings.search_threads)
    # searching only encodes text: no transformers import where plain torch runs the backbone
    # (importing transformers was the largest part of a cold `indexer query`)
    return load_model(settings.model, device=settings.device, text_backend=TextBackend.AUTO)


def find(
    settings: Settings,
    run: Callable[[Searcher], list[Hit]],
    remote: Callable[[Client], list[Hit]],
    on_wait: Callable[[dict[str, Any] | None], None] | None = None,
) -> list[dict[str, Any]]:
    """Run a search here, or through `indexer serve` (indexer.client) when that process owns
    the store."""
    return [h.as_dict() for h in ask(settings, run, remote, on_wait)]


def ask(
    settings: Settings,
    run: Callable[[Searcher], Answer],
    remote: Callable[[Client], Answer],
    on_wait: Callable[[dict[str, Any] | None], None] | None = None,
) -> Answer:
    """Answer a read-only request (search, similar, locate, ...) here, or through `indexer
    serve` when that process owns the store; while `indexer index` owns it, wait."""
    try:
        with searcher(settings, wait=False, light=True) as s:
            return run(s)
    except StoreBusyError:
        owner = read_json(settings.data_dir / "owner.json") or {}
        if owner.get("api"):
            return through_owner(settings, str(owner["api"]), remote)
    with searcher(settings, on_wait=on_wait, light=True) as s:
        return run(s)


def through_owner(settings: Settings, url: str, remote: Callable[[Client], Answer]) -> Answer:
    """`remote` with a client of the serving owner; its refusals say they came through it."""
    from indexer.client import Client, RequestRefused, Unavailable, Unreachable

    key = settings.api_key.get_secret_value() if settings.api_key else None
    with Client(url, key) as client:
        try:
            return remote(client)
        except RequestRefused as err:
            raise type(err)(f"{err} (through {url})", err.status) from None
        except Unavailable as err:
            raise type(err)(str(err), err.status) from None
        except Unreachable as err:
            raise StoreBusyError(
                f"the store is owned by the process serving {url} (`indexer serve`, or an "
                f"`indexer index` run), which does not answer: {err}"
            ) from None


def list_failures(settings: Settings) -> list[Failure]:
    log = failure_log(settings)
    try:
        return log.all()
    finally:
        log.close()
