"""An `indexer index` run answers searches while it writes (issue 17).

The embedded store has one owner process (a second process that opens a live shard breaks the
owner's next flush), so while a run owns it, `indexer query`, `similar`, `locate` and
`recommend` could only wait, for a day on a 100k-track catalog. Now the run serves the HTTP
API on a loopback port of its own and names it in owner.json; those commands find it there
and go through it (service.ask, indexer.client) as they do through `indexer serve`, searching
what is written so far. The searches share the run's open store, one call at a time
(`SharedStore`); the text side runs in NumPy where it can (collap_model/light.py), beside the
run's torch model, else with the run's own model. While it serves, the run's own threads and
the decoder processes it starts run SEARCH_NICE nice levels below the API's thread, so a
search gets a core on a machine the run keeps busy (benchmarks/owner.py).

It serves when the run writes the collection the alias names, or the first one (the run
points the alias at it when it starts); a run rebuilding the index with another model serves
nothing until it ends, since the index being searched was built by a model it has not loaded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from indexer.store.base import Store, collection_name

if TYPE_CHECKING:
    from indexer.pipeline import ModelHandle
    from indexer.search import Searcher
    from indexer.service import Session

log = logging.getLogger(__name__)
START_TIMEOUT_S = 30.0
# how much lower than the API's the priority of the run's own work is while it serves
SEARCH_NICE = 10
_END = object()  # what an exhausted iterator gives SharedStore._each


class SharedStore:
    """A store two threads use, the run writing and the API reading: one call at a time. An
    iterator a call returns (a scan of every track, which a server's resident copy is built
    from) takes the lock for each item it reads, so other calls go in between its pages
    rather than wait for the whole catalog.

    The run's thread works SEARCH_NICE levels below the API's, but a search waits for the
    lock while a store call of the run holds it; at that lower priority the decoders and the
    model, which compete with it at the same level, stretched a 40 ms write to 0.5 s (a
    priority inversion: the tail of searches during a run). So a thread holding the lock runs
    at the priority the store was shared at, where the system allows raising it back (root,
    or RLIMIT_NICE), and at its own otherwise."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._priority = _own_priority()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock, _at_least(self._priority):
                out = attr(*args, **kwargs)
            return self._each(out) if isinstance(out, Iterator) else out

        return call

    def _each(self, items: Iterator[Any]) -> Iterator[Any]:
        while True:
            with self._lock, _at_least(self._priority):
                item = next(items, _END)
            if item is _END:
                return
            yield item


def _own_priority() -> int:
    """The calling thread's nice value (Linux keeps one per thread; 0 where unknown)."""
    try:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    except OSError:
        return 0


@contextlib.contextmanager
def _at_least(priority: int) -> Iterator[None]:
    """The calling thread at nice `priority` or better for the block, where allowed."""
    tid = threading.get_native_id()
    own = _own_priority()
    raised = False
    if own > priority:
        with contextlib.suppress(OSError):  # unprivileged: a nice value is never lowered
            os.setpriority(os.PRIO_PROCESS, tid, priority)
            raised = True
    try:
        yield
    finally:
        if raised:
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, tid, own)


def serves(store: Store, model: ModelHandle) -> bool:
    """Whether a run with this model writes what the alias names (or there is no index yet)."""
    current = store.alias_target()
    return current is None or current == collection_name(store.alias, model.fingerprint)


@contextlib.contextmanager
def serving(session: Session, store: Store, model: ModelHandle) -> Iterator[str | None]:
    """The API over `store` on 127.0.0.1 while the block runs, announced in owner.json; yields
    its address, or None where this run serves nothing (see the module doc)."""
    settings = session.settings
    if not (settings.embedded and settings.index_serves and serves(store, model)):
        yield None
        return
    import uvicorn
    from threadpoolctl import threadpool_limits

    from indexer.api.app import create_app

    def open_searcher() -> Searcher:
        from collap_model.light import load_light
        from indexer.search import Searcher

        light = load_light(settings.model, device=settings.device)
        searching: Any = light if light and light.fingerprint == model.fingerprint else model.get()
        found = Searcher(store, searching, settings.candidates, settings.max_query_chars)
        found.empty = (
            "nothing is written yet: the `indexer index` run that owns the store writes tracks "
            f"every {settings.flush_seconds:g} s or {settings.upsert_batch} tracks (see "
            "`indexer status`)"
        )
        return found

    app = create_app(settings, open_searcher=open_searcher)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="indexer-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    if not server.started:
        # the run goes on without it: searches wait for its end, as they did before
        log.warning("could not serve searches during the run; they wait for its end")
        server.should_exit = True
        yield None
        return
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    lowered = yield_cpu_to(thread)
    # NumPy's BLAS (the text side's matrix products) on INDEXER_SEARCH_THREADS threads, as
    # torch's in a searching process: with one per core, its idle threads spin on the cores
    # the decoders need. 16 files here: the run took 37 s and searches p99 98 ms; with one
    # thread, 20 s and 22 ms (benchmarks/owner.py)
    blas = threadpool_limits(limits=settings.search_threads, user_api="blas")
    session.announce(api=url)
    try:
        yield url
    finally:
        session.announce(api=None)  # commands wait for the lock from here, not for this API
        server.should_exit = True
        thread.join(timeout=10)
        blas.restore_original_limits()
        restore_cpu(lowered)


def yield_cpu_to(api: threading.Thread) -> dict[int, int]:
    """Lower every other thread of this process to SEARCH_NICE below the API's, so a search
    gets a core when the run keeps both busy: its threads now (the run's, torch's and NumPy's
    pools) and what they start later (decoder processes, new pool threads) inherit the lower
    priority; threads the API starts inherit its own. Returns the old priorities. (Linux
    keeps a priority per thread; elsewhere, or where refused, nothing changes.)"""
    lowered: dict[int, int] = {}
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return lowered
    for tid in tids:
        if tid == api.native_id:
            continue
        try:
            old = os.getpriority(os.PRIO_PROCESS, tid)
            os.setpriority(os.PRIO_PROCESS, tid, min(19, old + SEARCH_NICE))
        except OSError:  # a thread that ended, or a system that refuses
            continue
        lowered[tid] = old
    return lowered


def restore_cpu(lowered: dict[int, int]) -> None:
    """Give the threads their priorities back (raising one again may be refused to an
    unprivileged process, which keeps it lowered; a thread that ended is passed over)."""
    for tid, old in lowered.items():
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, tid, old)
