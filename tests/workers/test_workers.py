"""Distributed indexing with a real Redis and real Celery worker processes (see conftest.py):
two embed workers (`celery -A workers.app worker -Q embed`) and one store worker that owns the
embedded store and runs the scans (`indexer worker --queues scan,store`).

The tests share the workers and run in file order; each indexes its own folder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from indexer import distributed
from indexer.failures import FailureLog
from indexer.pipeline import ModelHandle
from indexer.scan import content_hash
from indexer.store.base import collection_name
from tests.indexer.fixtures import corrupt_files, write_audio
from tests.workers.conftest import REPO, Cluster


def make_catalog(folder: Path, n: int, seconds: float = 4.0, seed: int = 0) -> list[Path]:
    exts = ("wav", "flac")
    return [
        write_audio(
            folder / f"{i:02d}.{exts[i % 2]}", seconds, seed=seed + i, rate=16_000, channels=1
        )
        for i in range(n)
    ]


def cli(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "indexer.cli", *args],
        cwd=REPO,
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_exactly_once(cluster: Cluster, folder: Path, files: list[Path]) -> None:
    assert cluster.paths(folder) == sorted(str(f) for f in files)


def test_catalog_indexed_exactly_once_and_bad_files_go_to_the_failure_log(
    cluster: Cluster,
) -> None:
    folder = cluster.root / "music" / "catalog"
    files = make_catalog(folder, 6, seed=100)
    bad = corrupt_files(folder / "bad")
    queued = cli(cluster, "queue", str(folder))
    assert queued.returncode == 0, queued.stderr
    assert f"queued scan of {folder}" in queued.stdout
    cluster.wait_idle()
    assert_exactly_once(cluster, folder, files)
    log = FailureLog(cluster.settings.data_dir / "failures.sqlite3")
    try:
        failed = {f.path: f.reason for f in log.all()}
    finally:
        log.close()
    assert set(failed) == {str(p) for p in bad.values()}
    assert "silent" in failed[str(bad["silent"])]
    status = json.loads(cli(cluster, "status", "--json").stdout)
    broker = status["broker"]
    assert broker["reachable"] and broker["queues"] == {"scan": 0, "embed": 0, "store": 0}
    assert broker["done"] == len(files) and broker["failed"] == len(bad)
    assert status["live"] is True  # the store worker owns the embedded store
    # a rescan finds nothing to do: no new embedding
    embedded = cluster.stat("embedded")
    assert cli(cluster, "queue", str(folder)).returncode == 0
    cluster.wait_idle()
    assert cluster.stat("embedded") == embedded
    assert_exactly_once(cluster, folder, files)


def test_same_folder_queued_twice_at_once_is_embedded_once(cluster: Cluster) -> None:
    from workers import tasks

    folder = cluster.root / "music" / "twice"
    files = make_catalog(folder, 4, seed=200)
    embedded = cluster.stat("embedded")
    # two scans at once: both plans find the same new files before any is stored
    tasks.scan.apply_async(args=[str(folder)])
    tasks.scan.apply_async(args=[str(folder)])
    cluster.wait_idle()
    assert cluster.stat("embedded") - embedded == len(files)
    assert_exactly_once(cluster, folder, files)


def test_beat_rescans_the_registered_catalogs(cluster: Cluster) -> None:
    folder = cluster.root / "music" / "beat"
    first = make_catalog(folder, 1, seed=600)
    assert cli(cluster, "queue", str(folder)).returncode == 0  # registers the folder
    cluster.wait_idle()
    assert cluster.paths(folder) == [str(first[0])]
    # nothing queued from here on: only a rescan finds the new file and the deleted one
    added = make_catalog(folder / "later", 1, seed=610)
    first[0].unlink()
    cmd = [sys.executable, "-m", "indexer.cli", "beat"]
    beat = cluster.start("beat", cmd, env={"INDEXER_RESCAN_INTERVAL": "1"})
    try:
        expected = [str(added[0])]
        cluster.wait_for("a scheduled rescan", lambda: cluster.paths(folder) == expected, 60)
    finally:
        cluster.procs.pop("beat")
        os.killpg(beat.pid, signal.SIGTERM)
        beat.wait(timeout=20)
    cluster.wait_idle()


def test_watched_folder_streams_new_files_in_and_deleted_ones_out(cluster: Cluster) -> None:
    folder = cluster.root / "music" / "inbox"
    first = make_catalog(folder, 1, seed=300)
    watcher = cluster.start("watch", [sys.executable, "-m", "indexer.cli", "watch", str(folder)])
    try:
        scanned = [str(first[0])]
        cluster.wait_for("the watcher's first scan", lambda: cluster.paths(folder) == scanned)
        began = time.monotonic()
        dropped = make_catalog(folder / "new", 2, seed=310)
        expected = sorted(str(p) for p in [*first, *dropped])
        cluster.wait_for("dropped files", lambda: cluster.paths(folder) == expected, 60)
        assert time.monotonic() - began < 60
        dropped[0].unlink()
        expected.remove(str(dropped[0]))
        cluster.wait_for("the deletion", lambda: cluster.paths(folder) == expected, 60)
    finally:
        cluster.procs.pop("watch")
        os.killpg(watcher.pid, signal.SIGTERM)
        watcher.wait(timeout=20)
    cluster.wait_idle()


def test_a_second_store_worker_hands_its_messages_to_the_owner(cluster: Cluster) -> None:
    # started with Celery's command line, which cannot refuse it: it finds the embedded store
    # locked, so every store message it takes is retried (backoff) until the owner takes it
    cmd = [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-Q", "store"]
    cluster.start("intruder", [*cmd, "-c", "1", "-n", "intruder@%h", "-l", "INFO"])
    try:
        folder = cluster.root / "music" / "intruder"
        files = make_catalog(folder, 6, seed=700)
        intruder_log = cluster.root / "intruder.log"
        cluster.wait_for("the intruder to start", lambda: "ready" in intruder_log.read_text(), 60)
        assert cli(cluster, "queue", str(folder)).returncode == 0
        cluster.wait_idle()
        assert_exactly_once(cluster, folder, files)
    finally:
        cluster.kill("intruder", signal.SIGTERM)
    assert "is owned by process" in intruder_log.read_text()  # it was refused, and retried


def test_redis_restart_mid_run_loses_nothing(cluster: Cluster) -> None:
    folder = cluster.root / "music" / "restart"
    files = make_catalog(folder, 8, seconds=20.0, seed=400)
    done = cluster.stat("done")
    assert cli(cluster, "queue", str(folder)).returncode == 0
    cluster.wait_for("the run to start", lambda: cluster.stat("done") > done, 60)
    assert cluster.stat("done") < done + len(files), "the run ended before Redis restarted"
    cluster.redis.restart()
    cluster.wait_idle(timeout=90)
    assert_exactly_once(cluster, folder, files)


def test_a_claim_whose_message_was_lost_is_planned_again(cluster: Cluster) -> None:
    # what a Redis restart can leave (kombu takes a message and records it as taken in two
    # steps): a file claimed by a plan whose embed message is gone
    folder = cluster.root / "music" / "orphan"
    files = make_catalog(folder, 2, seed=800)
    lost, *_ = (
        distributed.file_of(f)
        for f in distributed.scan_request(cluster.settings, [folder])["files"]
        if f["path"] == str(files[0])
    )
    target = collection_name(cluster.settings.collection, ModelHandle(cluster.settings).fingerprint)
    client = distributed.redis_client(cluster.settings.broker_url)
    claims = distributed.Claims(client, distributed.Keys(cluster.settings.collection), target, 3600)
    assert claims.take(content_hash(lost.path), "a-plan-whose-message-was-lost", [lost])
    # queued again by hand: that plan defers the claimed file, every few seconds, and the
    # sweep must still find the claim carried by no message
    assert cli(cluster, "queue", str(folder)).returncode == 0
    cluster.wait_idle(timeout=90)
    assert_exactly_once(cluster, folder, files)
    assert "1 claim(s) had lost their message" in (cluster.root / "store.log").read_text()


def test_sigkill_of_an_embed_worker_mid_run_loses_nothing(cluster: Cluster) -> None:
    folder = cluster.root / "music" / "sigkill"
    files = make_catalog(folder, 10, seconds=20.0, seed=500)
    done = cluster.stat("done")
    assert cli(cluster, "queue", str(folder)).returncode == 0
    cluster.wait_for("the run to start", lambda: cluster.stat("done") >= done + 2, 60)
    assert cluster.stat("done") < done + len(files), "the run ended before the kill"
    cluster.kill("embed1")  # SIGKILL the worker and its pool process: no ack, no reject
    cluster.wait_idle(timeout=90)  # its message comes back after the visibility timeout
    assert_exactly_once(cluster, folder, files)
