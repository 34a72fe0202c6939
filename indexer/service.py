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
) -> IndexSummary:
    from indexer.owner import SharedStore, serving

    model = model or ModelHandle(settings)
    with session(settings, on_wait=on_wait) as s:
        store: Any = SharedStore(s.store)
        with serving(s, store, model):
            run = IndexRun(settings, store, s.failures, model, progress=progress, publish=s.publish)
            return run.run(paths)


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
        model: Any = None
        if light:
            from collap_model.light import load_light

            model = load_light(settings.model, device=settings.device)
        if model is None:
            import torch

            from collap_model.checkpoint import load_model
            from collap_model.text_encoder import TextBackend

            torch.set_num_threads(settings.search_threads)
            # searching only encodes text: no transformers import where plain torch runs the
            # backbone (importing transformers was the largest part of a cold `indexer query`)
            model = load_model(
                settings.model, device=settings.device, text_backend=TextBackend.AUTO
            )
        yield Searcher(s.store, model, settings.candidates, settings.max_query_chars)


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
