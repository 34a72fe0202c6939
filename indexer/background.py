"""Indexing inside `indexer serve`: the serving process takes index jobs and runs them in the
background while it answers (issue 17).

The embedded store has one owner process, so while `indexer serve` owned it, `indexer index`
waited for the server to stop, and a recommendation backend on the embedded store could never
take new tracks. Now the server runs index jobs itself, one at a time, on a thread of its own:

- `indexer index PATH` and `indexer watch PATH` hand their folders to it through the data
  directory (`hand_off` below): a request file in `handoff/`, which the server claims by
  renaming it and answers with a state file the command follows until the job ends. Only a
  process that can write the data directory can do this, the same who could stop the server
  and index themselves; nothing reaches the server's file system from a request.
- `POST /index` starts a job for a folder the server is configured to index
  (INDEXER_SERVE_CATALOGS, `allowed_catalog`), never an arbitrary path from a request;
  `GET /index` lists the jobs, `/readyz` and `indexer status` show the running one.

A job is an `indexer index` run (indexer/pipeline.py) over the server's open store, with the
server's loaded model, and its writes take turns with the searches (SharedStore). Its thread,
and the decoder processes it starts, run SEARCH_NICE nice levels below the threads that answer
requests. A server that stops stops its job after the tracks it has embedded are written; the
next job (or run) over the same folder goes on from there, as after any interruption.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from indexer.lock import read_json, write_json
from indexer.owner import SEARCH_NICE

if TYPE_CHECKING:
    from indexer.failures import FailureLog
    from indexer.pipeline import ModelHandle
    from indexer.settings import Settings
    from indexer.store.base import Store

log = logging.getLogger(__name__)

HANDOFF = "handoff"  # the folder of the data directory that requests and states go through
POLL_S = 0.25  # how often the server looks for requests, and commands for their job's state
STALE_S = 86400.0  # a job's state file older than this is removed when a server starts
KEEP_FINISHED = 100  # finished jobs `GET /index` still lists
# what a job's state may be; the last three are final
QUEUED, INDEXING, OPTIMIZING, DONE, FAILED, STOPPED = (
    "queued", "indexing", "optimizing", "done", "failed", "stopped",
)  # fmt: skip
FINAL = frozenset({DONE, FAILED, STOPPED})


class NotAllowed(ValueError):
    """A folder the server is not configured to index (INDEXER_SERVE_CATALOGS)."""


@dataclass
class Job:
    id: str
    paths: list[str]
    source: str  # "api", or the command that handed it over ("indexer index", "indexer watch")
    submitted: float = field(default_factory=time.time)
    state: str = QUEUED
    started: float | None = None
    finished: float | None = None
    files_done: int = 0
    files_total: int = 0
    audio_seconds: float = 0.0
    summary: dict[str, Any] | None = None
    error: str | None = None
    handed_off: bool = False  # came through handoff/, whose state file follows it

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "paths": self.paths,
            "source": self.source,
            "state": self.state,
            "submitted": self.submitted,
            "started": self.started,
            "finished": self.finished,
            "files_done": self.files_done,
            "files_total": self.files_total,
            "audio_seconds": self.audio_seconds,
            "summary": self.summary,
            "error": self.error,
        }


class BackgroundIndexer:
    """Index jobs run one at a time on a thread of a serving process, over its store."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        model: ModelHandle,
        publish: Callable[[dict[str, Any]], None] = lambda status: None,
        inbox: Path | None = None,
        busy: Callable[[bool], None] = lambda running: None,
    ) -> None:
        self.settings, self.store, self.model = settings, store, model
        self.publish = publish
        # told True before a job starts on an idle indexer and False once none is queued (the
        # server's searcher rebuilds its resident copy then: Searcher.writing)
        self.busy = busy
        self.inbox = inbox  # handoff/ of the embedded store's data directory; None: none taken
        self._jobs: list[Job] = []
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="indexer-jobs", daemon=True)

    # ---- what the API and the handoff call ------------------------------------------------------
    def start(self) -> None:
        if self.inbox is not None:
            self.inbox.mkdir(parents=True, exist_ok=True)
            # requests a server that died had claimed: their commands saw it die and go on
            # themselves (hand_off), so nothing waits on these
            for stale in self.inbox.glob("*.claimed.json"):
                stale.unlink(missing_ok=True)
            # states nobody came back for (a watch hands jobs over without following them all)
            for old in self.inbox.glob("*.state.json"):
                with contextlib.suppress(OSError):
                    if time.time() - old.stat().st_mtime > STALE_S:
                        old.unlink()
        self._thread.start()

    def submit(self, paths: Sequence[str], source: str) -> Job:
        """A job for `paths`, or the queued one that already has them (a folder a watch hands
        over at every change, or a client that asks again, is indexed once per turn)."""
        wanted = [str(p) for p in paths]
        with self._changed:
            for job in self._jobs:
                if job.state == QUEUED and job.paths == wanted:
                    return job
            job = Job(uuid.uuid4().hex, wanted, source)
            self._jobs.append(job)
            self._trim()
            self._changed.notify_all()
            return job

    def jobs(self) -> list[dict[str, Any]]:
        """Every job this server still remembers, newest first."""
        with self._changed:
            return [j.as_dict() for j in reversed(self._jobs)]

    def current(self) -> dict[str, Any] | None:
        """The running job, else the first queued one, else None."""
        with self._changed:
            running = [j for j in self._jobs if j.state in (INDEXING, OPTIMIZING)]
            queued = [j for j in self._jobs if j.state == QUEUED]
            found = (running or queued)[:1]
            return {**found[0].as_dict(), "queued": len(queued)} if found else None

    def close(self, timeout: float = 60.0) -> None:
        """Stop: the running job writes what it has embedded and ends "stopped", as does every
        queued one (a command following one then indexes itself; see hand_off)."""
        self._stop.set()
        with self._changed:
            self._changed.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        with self._changed:
            for job in self._jobs:
                if job.state not in FINAL:
                    self._end(job, STOPPED, "the server stopped before the job ended")

    # ---- the thread -----------------------------------------------------------------------------
    def _work(self) -> None:
        from indexer.failures import FailureLog

        with contextlib.suppress(OSError):  # a system that refuses: the job competes as equal
            tid = threading.get_native_id()
            lower = min(19, os.getpriority(os.PRIO_PROCESS, tid) + SEARCH_NICE)
            os.setpriority(os.PRIO_PROCESS, tid, lower)
        # the failure log's own connection: an SQLite connection serves the thread that made it
        failures = FailureLog(self.settings.data_dir / "failures.sqlite3")
        try:
            self._serve_jobs(failures)
        finally:
            failures.close()

    def _serve_jobs(self, failures: FailureLog) -> None:
        busy = False
        while not self._stop.is_set():
            self._claim_requests()
            with self._changed:
                job = next((j for j in self._jobs if j.state == QUEUED), None)
                if job is None and not busy:
                    self._changed.wait(POLL_S)
                    continue
                if job is not None:
                    job.state, job.started = INDEXING, time.time()
            if job is None:
                busy = False
                self._idle()
                continue
            if not busy:
                busy = True
                self._tell_busy(True)
            self._note(job)
            self._run(job, failures)

    def _idle(self) -> None:
        if not self._stop.is_set():  # a server that stops has no use for a fresh copy
            self._tell_busy(False)

    def _tell_busy(self, running: bool) -> None:
        try:
            self.busy(running)
        except Exception:  # what the searcher does then is its own concern, never a job's
            log.exception("telling the server the indexer is %s failed", ("idle", "busy")[running])

    def _run(self, job: Job, failures: FailureLog) -> None:
        from indexer.pipeline import IndexRun, RunStopped

        def progress(status: dict[str, Any]) -> None:
            with self._changed:
                job.state = OPTIMIZING if status.get("state") == OPTIMIZING else INDEXING
                job.files_done = int(status.get("files_done", 0))
                job.files_total = int(status.get("files_total", 0))
                job.audio_seconds = float(status.get("audio_seconds", 0.0))
            self._note(job, status)

        run: IndexRun | None = None
        try:
            run = IndexRun(
                self.settings, self.store, failures, self.model, publish=progress, stop=self._stop
            )
            summary = run.run(job.paths)
        except RunStopped as err:
            self._finish(job, STOPPED, str(err), run.summary.as_dict() if run else {})
        except Exception as err:  # a job's failure is the job's, never the server's
            log.exception("index job %s failed", job.id)
            self._finish(job, FAILED, _reason(err), run.summary.as_dict() if run else {})
        else:
            self._finish(job, DONE, None, summary.as_dict())

    def _finish(self, job: Job, state: str, error: str | None, summary: dict[str, Any]) -> None:
        with self._changed:
            job.summary = summary
            self._end(job, state, error)
            self._trim()
        self.publish({})  # nothing runs now: `indexer status` shows no progress

    def _end(self, job: Job, state: str, error: str | None) -> None:
        job.state, job.error, job.finished = state, error, time.time()
        self._note(job)

    def _note(self, job: Job, status: dict[str, Any] | None = None) -> None:
        """Tell whoever follows the job: the handoff's state file, status.json."""
        if job.handed_off and self.inbox is not None:
            with contextlib.suppress(OSError):
                write_json(self.inbox / f"{job.id}.state.json", job.as_dict())
        if status is not None:
            self.publish({**status, "job": job.id, "paths": job.paths, "source": job.source})

    def _trim(self) -> None:
        finished = [j for j in self._jobs if j.state in FINAL]
        for job in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            self._jobs.remove(job)

    def _claim_requests(self) -> None:
        if self.inbox is None:
            return
        try:
            requests = sorted(self.inbox.glob("*.request.json"), key=lambda p: p.stat().st_mtime)
        except OSError:  # one vanished between the listing and its stat: the next poll
            return
        for path in requests:
            job_id = path.name.removesuffix(".request.json")
            claimed = path.with_name(f"{job_id}.claimed.json")
            try:
                os.rename(path, claimed)  # the command withdraws it the same way: one wins
            except OSError:
                continue
            request = read_json(claimed) or {}
            paths = [str(p) for p in request.get("paths", [])]
            job = Job(job_id, paths, str(request.get("by", "")))
            job.handed_off = True
            refused = self._refusal(request)
            with self._changed:
                self._jobs.append(job)
                if refused:
                    self._end(job, FAILED, refused)
                else:
                    self._note(job)
                self._trim()

    def _refusal(self, request: dict[str, Any]) -> str | None:
        """Why a handed-over request cannot run here (it asks for another index), or None."""
        paths = request.get("paths")
        if not isinstance(paths, list) or not paths:
            return "the request names no folders"
        if request.get("collection") != self.store.alias:
            return (
                f"this server indexes collection {self.store.alias!r}; the command asked for "
                f"{request.get('collection')!r} (INDEXER_COLLECTION)"
            )
        wanted = request.get("fingerprint")
        if wanted is not None and wanted != self.model.fingerprint:
            return (
                f"this server indexes with model {self.model.fingerprint}; the command's "
                f"settings name model {wanted} (INDEXER_MODEL): stop the server to index with it"
            )
        return None


def _reason(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    if isinstance(err, OSError | ValueError | RuntimeError):
        return text
    return f"{type(err).__name__}: {text}"


# ---- POST /index: folders the server may index ------------------------------------------------
def allowed_catalog(settings: Settings, asked: str) -> Path:
    """The folder of `asked` when it is one of INDEXER_SERVE_CATALOGS or inside one, links
    resolved (a link out of a catalog leads out of it); NotAllowed otherwise, FileNotFoundError
    for an allowed one that is not there. Nothing about a path outside is revealed."""
    if not settings.serve_catalogs:
        raise NotAllowed("this server indexes no folders: INDEXER_SERVE_CATALOGS names none")
    if not os.path.isabs(asked) or "\0" in asked:
        raise NotAllowed(f"not a folder this server may index: {asked!r} (INDEXER_SERVE_CATALOGS)")
    real = Path(os.path.realpath(asked))
    for root in settings.serve_catalogs:
        if real.is_relative_to(os.path.realpath(root)):
            if not real.is_dir():
                raise FileNotFoundError(f"no such folder: {asked}")
            return real
    raise NotAllowed(f"not a folder this server may index: {asked!r} (INDEXER_SERVE_CATALOGS)")


# ---- the commands' side of the handoff -----------------------------------------------------------
class OwnerGone(RuntimeError):
    """The serving process that took a request stopped before its job ended."""


class JobFailed(RuntimeError):
    """The serving process ran the job, and it failed (the reason is the message)."""


class StillRunning(Exception):
    """A command stopped following a job the serving process goes on with."""


def accepts_jobs(owner: dict[str, Any] | None) -> bool:
    """Whether the owner a command found in owner.json takes index jobs (`indexer serve`)."""
    return bool(owner and owner.get("jobs"))


def request(
    data_dir: Path, paths: Sequence[str | Path], by: str, collection: str, fingerprint: str | None
) -> str:
    """Hand `paths` to the serving owner; returns the request's id."""
    inbox = data_dir / HANDOFF
    inbox.mkdir(parents=True, exist_ok=True)
    job_id = uuid.uuid4().hex
    body = {
        "paths": [str(Path(p).resolve()) for p in paths],
        "by": by,
        "pid": os.getpid(),
        "collection": collection,
        "fingerprint": fingerprint,
    }
    write_json(inbox / f"{job_id}.request.json", body)
    return job_id


def withdraw(data_dir: Path, job_id: str) -> bool:
    """Take back a request the owner has not claimed; False when it already has."""
    inbox = data_dir / HANDOFF
    try:
        os.rename(inbox / f"{job_id}.request.json", inbox / f"{job_id}.withdrawn.json")
    except OSError:
        return False
    (inbox / f"{job_id}.withdrawn.json").unlink(missing_ok=True)
    return True


def state(data_dir: Path, job_id: str) -> dict[str, Any] | None:
    return read_json(data_dir / HANDOFF / f"{job_id}.state.json")


def forget(data_dir: Path, job_id: str) -> None:
    for suffix in ("state", "claimed"):
        (data_dir / HANDOFF / f"{job_id}.{suffix}.json").unlink(missing_ok=True)
