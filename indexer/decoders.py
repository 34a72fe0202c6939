"""A pool of decoder processes feeding clips to the model, so decoding overlaps embedding.

Workers import PyAV and numpy only (never torch) and are started with `spawn`, which is safe
beside a parent that already runs torch threads. Each worker streams one file at a time
through `AudioDecoder` and `StreamingClipper` and sends messages on a bounded queue (memory
stays bounded however long the file or slow the model):

    ("start", worker, job)                      the worker took the job
    ("clips", job, starts, ends, clips)         int64 (k,), int64 (k,), float32 (k, clip)
    ("done", job, info, total_samples)          info: AudioInfo.as_payload()
    ("failed", job, reason)

A worker that dies (a crash inside a codec) is noticed, its job is failed with a reason and
the worker is replaced.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np

from collap_model.clipping import StreamingClipper
from indexer.decode import AudioDecoder, DecodeError

# seconds between checks that the parent process is still there
_POLL = 1.0
# workers that may die without holding a job before the pool gives up (each is restarted)
_MAX_IDLE_DEATHS = 3


@dataclass(frozen=True)
class DecodeParams:
    rate: int  # model sample rate
    clip: int  # samples per clip
    hop: int  # samples between clip starts
    clips_per_message: int
    silence_peak: float


def _worker(index: int, parent: int, tasks: Any, results: Any, params: DecodeParams) -> None:
    def alive() -> bool:
        return os.getppid() == parent  # a SIGKILLed parent leaves us to init: stop then

    def watch() -> None:
        # also while a decode holds the main thread, however long one chunk takes
        while alive():
            time.sleep(_POLL)
        _orphaned()

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()

    def send(msg: tuple[Any, ...]) -> None:
        while True:
            try:
                results.put(msg, timeout=_POLL)
                return
            except queue.Full:
                if not alive():
                    _orphaned()

    while True:
        try:
            task = tasks.get(timeout=_POLL)
        except queue.Empty:
            if not alive():
                _orphaned()
            continue
        if task is None:
            return
        job, path = task
        send(("start", index, job))
        try:
            decode_job(job, path, params, send)
        except DecodeError as err:
            send(("failed", job, err.reason))
        except Exception as err:  # a decoder bug must not lose the run; record it per file
            send(("failed", job, f"decoder error: {type(err).__name__}: {err}"))


def _orphaned() -> NoReturn:
    """Leave at once: the parent is gone. A normal exit would wait for the results queue's
    feeder thread, blocked on a pipe nobody reads any more, and keep this process (and the
    multiprocessing resource tracker, which waits for every holder of its pipe) alive."""
    os._exit(0)


def decode_job(job: int, path: str, params: DecodeParams, send: Any) -> None:
    """Decode one file and send its clips, then "done" (or raise DecodeError)."""
    clipper = StreamingClipper(params.clip, params.hop)
    pending: list[tuple[int, int, np.ndarray]] = []

    def flush(force: bool) -> None:
        while pending and (force or len(pending) >= params.clips_per_message):
            part = pending[: params.clips_per_message]
            del pending[: params.clips_per_message]
            starts = np.array([s for s, _, _ in part], dtype=np.int64)
            ends = np.array([e for _, e, _ in part], dtype=np.int64)
            send(("clips", job, starts, ends, np.stack([c for _, _, c in part])))

    with AudioDecoder(path, params.rate) as dec:
        for chunk in dec.chunks():
            pending.extend(clipper.push(chunk))
            flush(False)
        pending.extend(clipper.finish())
        if clipper.peak < params.silence_peak:
            raise DecodeError(
                f"silent: peak level {clipper.peak:.1e} over {dec.info.duration:.1f} s"
            )
        flush(True)
        send(("done", job, dec.info.as_payload(), clipper.total))


class DecoderPool:
    def __init__(self, workers: int, params: DecodeParams, queue_messages: int = 8) -> None:
        self.ctx = mp.get_context("spawn")
        self.params = params
        self.tasks: Any = self.ctx.Queue()
        self.results: Any = self.ctx.Queue(maxsize=queue_messages)
        self.procs: list[Any] = []
        self.current: dict[int, int] = {}  # worker index -> job in hand
        self.idle_deaths = 0  # workers that died holding no job (a broken start-up)
        for i in range(workers):
            self.procs.append(self._start(i))

    def _start(self, index: int) -> Any:
        proc = self.ctx.Process(
            target=_worker,
            args=(index, os.getpid(), self.tasks, self.results, self.params),
            daemon=True,
        )
        proc.start()
        return proc

    def submit(self, job: int, path: str) -> None:
        self.tasks.put((job, path))

    def get(self, timeout: float) -> tuple[Any, ...] | None:
        """The next message, or None after `timeout` seconds without one."""
        try:
            msg: tuple[Any, ...] = self.results.get(timeout=timeout)
        except queue.Empty:
            return self._reap()
        if msg[0] == "start":
            self.current[msg[1]] = msg[2]
        elif msg[0] in ("done", "failed"):
            self.current = {w: j for w, j in self.current.items() if j != msg[1]}
        return msg

    def _reap(self) -> tuple[Any, ...] | None:
        for i, proc in enumerate(self.procs):
            if not proc.is_alive():
                job = self.current.pop(i, None)
                if job is None:
                    self.idle_deaths += 1
                    if self.idle_deaths > _MAX_IDLE_DEATHS:
                        raise RuntimeError(
                            "decoder processes keep exiting before taking work "
                            f"(exit code {proc.exitcode})"
                        )
                self.procs[i] = self._start(i)
                if job is not None:
                    return ("failed", job, f"decoder process died (exit code {proc.exitcode})")
        return None

    def close(self) -> None:
        for _ in self.procs:
            self.tasks.put(None)
        for proc in self.procs:
            proc.join(timeout=2)
            if proc.is_alive():
                proc.terminate()
        self.tasks.close()
        self.results.close()
