"""Distributed indexing throughput (Celery + Redis workers) beside the embedded `indexer index`
on the same catalog, and the per-task overhead of the queue.

Catalog: mp3, flac and m4a files at 44.1 kHz stereo (generated). Embedded: `indexer index` on a
fresh data directory with the model already loaded (as benchmarks/indexing.py). Distributed: a
private Redis, one store worker (`indexer worker --queues scan,store`) and 1 or 2 embed workers
(`celery -A workers.app worker -Q embed -c 1`) on a fresh data directory; each worker is
warmed up on other files first (model loaded), then the clock runs from `indexer queue` until
the last file is written. Per-task overhead: round trips of a no-op task through the broker
and the result backend.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from collap_model import load_model
from indexer import service
from indexer.distributed import redis_client
from indexer.pipeline import ModelHandle
from indexer.settings import Settings
from tests.indexer.fixtures import write_audio
from tests.workers.conftest import REPO, Cluster, RedisServer, free_port

FILES = 16
SECONDS = 60.0
PINGS = 200
TASK_FILES = 8  # the default embed_task_files
WARMUP = 2 * TASK_FILES


def make_catalog(root: Path) -> list[Path]:
    exts = ("mp3", "flac", "m4a")
    return [write_audio(root / f"{i:02d}.{exts[i % 3]}", SECONDS, seed=i) for i in range(FILES)]


def queue(cluster: Cluster, folder: Path) -> None:
    cmd = [sys.executable, "-m", "indexer.cli", "queue", str(folder)]
    subprocess.run(cmd, cwd=REPO, env=cluster.env, check=True, capture_output=True)


def ready(workers: int) -> bool:
    from workers.app import app

    return len(app.control.ping(timeout=0.5)) == workers


def distributed_runs(tmp: Path, catalog: Path, warmup: Path) -> dict[int, tuple[float, float]]:
    """embed workers -> (seconds for the catalog, ms per no-op task round trip, median)."""
    from workers import tasks

    root = tmp / "cluster"
    redis = RedisServer(free_port(), root / "redis")
    redis.start()
    cluster = Cluster(root, redis)
    cluster.env["INDEXER_EMBED_TASK_FILES"] = str(TASK_FILES)
    cluster.env["INDEXER_VISIBILITY_TIMEOUT"] = "3600"
    out = {}
    try:
        for workers in (1, 2):
            # a fresh store and fresh counters for each run
            cluster.env["INDEXER_DATA_DIR"] = str(root / f"data{workers}")
            redis_client(cluster.settings.broker_url).flushall()
            cluster.start_store_worker()
            for i in range(workers):
                cluster.start_embed_worker(f"embed{i + 1}")
            # every embed worker connected, then one warm-up task each (prefetch is 1)
            cluster.wait_for("the workers", lambda n=workers: ready(n + 1), 120)
            queue(cluster, warmup)
            cluster.wait_for("the warm-up", lambda: cluster.stat("done") == WARMUP, 180)
            cluster.wait_idle()
            began = time.perf_counter()
            queue(cluster, catalog)
            cluster.wait_for("the catalog", lambda: cluster.stat("done") == WARMUP + FILES, 600)
            seconds = time.perf_counter() - began
            assert len(cluster.paths(catalog)) == FILES
            rtts = []
            for _ in range(PINGS):
                t = time.perf_counter()
                assert tasks.ping.apply_async(queue="scan").get(timeout=30) == "pong"
                rtts.append(time.perf_counter() - t)
            out[workers] = (seconds, 1000 * statistics.median(rtts))
            cluster.stop_all()
    finally:
        cluster.stop_all()
        redis.stop()
    return out


def run() -> str:
    load_before = os.getloadavg()[0]
    model = load_model(device="cpu")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        catalog = tmp / "catalog"
        make_catalog(catalog)
        warmup = tmp / "warmup"
        for i in range(WARMUP):  # two embed tasks: the model loads in both workers
            write_audio(warmup / f"{i:02d}.flac", 2.0, seed=1000 + i)
        settings = Settings(data_dir=tmp / "embedded", _env_file=None)  # type: ignore[call-arg]
        embedded = service.index(settings, [catalog], model=ModelHandle(settings, model=model))
        assert embedded.indexed == FILES
        runs = distributed_runs(tmp, catalog, warmup)
    (one, ping1), (two, ping2) = runs[1], runs[2]
    audio = FILES * SECONDS
    e_rate, r1, r2 = audio / embedded.seconds, audio / one, audio / two
    ping = statistics.median([ping1, ping2])
    return REPORT.format(
        load=f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after",
        files=FILES,
        seconds=SECONDS,
        task_files=TASK_FILES,
        decoders=settings.decode_workers,
        e_s=embedded.seconds,
        e_rate=e_rate,
        one=one,
        r1=r1,
        q1=r1 / e_rate,
        two=two,
        r2=r2,
        q2=r2 / e_rate,
        ping=ping,
        pings=PINGS,
        per_file=ping / TASK_FILES,
    )


REPORT = """## Distributed indexing throughput (issue 5)

`python -m benchmarks.run workers`: {files} files x {seconds:.0f} s (mp3, flac, m4a; 44.1 kHz
stereo), default model on CPU, every process on this one machine. Distributed: a private Redis,
one store worker (scan + store queues, the embedded Qdrant Edge store) and N embed workers of
one process each, {task_files} files per embed task; every worker is warmed up (model loaded)
before the clock starts at `indexer queue` and stops when the last point is written.

| path | wall s | audio s / wall s | ratio to embedded |
|---|---|---|---|
| embedded `indexer index` ({decoders} decoders + model + store) | {e_s:.1f} | {e_rate:.0f} | 1.00 |
| Celery + Redis, 1 embed worker | {one:.1f} | {r1:.0f} | **{q1:.2f}** |
| Celery + Redis, 2 embed workers | {two:.1f} | {r2:.0f} | **{q2:.2f}** |

The three runs go back to back on the same files; the machine is shared (1-minute load average
{load}), so the absolute rates are lower than in the indexing section and vary from run to run;
compare the ratios.

Per-task overhead: a no-op task's round trip (publish, Redis, worker, result backend, reply)
takes **{ping:.1f} ms** (median of {pings} per run); an embed task carries {task_files} files,
so the queue itself costs ~{per_file:.1f} ms per file, small beside decoding and embedding.

What a GPU node should do (reasoned from these figures, not measured: no GPU here). An embed
worker process decodes its files (PyAV, one core) and runs the model; on this CPU the model
alone runs at ~1,600 audio s / wall s (encoder section) and one decoding process at ~400
(indexing section), which bounds one embed worker here ({r1:.0f}). On a GPU the compact encoder
(0.9 M parameters) stops counting, so each embed process is bound by its decode core: a node
with C cores running `-c C` embed processes (each with its own few-MB copy of the model on the
GPU) should approach C x ~400 audio s / wall s, e.g. ~6,400 for 16 cores, i.e. ~6,400 hours of
audio per hour. The queue's {ping:.0f} ms per task is then under 1% of an 8-file task (~1.2 s
of decoding). The next limit is the one store worker of an embedded store, which writes every
point; past a few GPU nodes use a Qdrant server (`INDEXER_QDRANT_URL`) and several store
workers.
"""
