"""The stages' logic in this process, with a real Redis and the real store: claims, the
model switch, the watcher. (test_workers.py runs the same code in worker processes.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from kombu import Connection, Producer, Queue

from collap_model import load_model
from indexer import distributed, service
from indexer.pipeline import ModelHandle
from indexer.scan import CatalogFile
from indexer.settings import Settings
from indexer.store.base import collection_name
from tests.indexer.fixtures import write_audio
from tests.workers.conftest import RedisServer


def settings_for(tmp_path: Path, redis: RedisServer) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        broker_url=f"redis://127.0.0.1:{redis.port}/0",
        embed_task_files=1,
        decode_workers=1,
        _env_file=None,  # type: ignore[call-arg]
    )


def test_claims_dedupe_and_expire(private_redis: RedisServer, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, private_redis)
    client = distributed.redis_client(settings.broker_url)
    keys = distributed.Keys("claims-test")
    claims = distributed.Claims(client, keys, "c", ttl=0.5)
    song = CatalogFile("/music/a.flac", "/music", 10, 1)
    assert claims.take("abc", "plan-1", [song])
    assert claims.take("abc", "plan-1", [song])  # a redelivered plan takes its own claim again
    assert not claims.take("abc", "plan-2", [song])  # another plan finds it queued
    assert claims.live() == 1
    time.sleep(0.6)
    assert claims.live() == 0  # its message was lost: the claim no longer blocks
    assert claims.take("abc", "plan-2", [song])
    record = client.hget(keys.claimed_files("c"), "abc")
    assert [distributed.file_of(f) for f in json.loads(str(record))] == [song]
    claims.release(["abc"])
    assert claims.live() == 0 and client.hlen(keys.claims("c")) == 0
    assert client.hlen(keys.claimed_files("c")) == 0


def test_sweep_finds_claims_no_message_carries(private_redis: RedisServer, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, private_redis).model_copy(update={"collection": "sweep"})
    client = distributed.redis_client(settings.broker_url)
    keys = distributed.Keys(settings.collection)
    claims = distributed.Claims(client, keys, "sweep-c1", ttl=3600)
    song = CatalogFile("/music/lost.flac", "/music", 10, 1)
    assert claims.take("lost", "plan-1", [song])
    sweep = distributed.OrphanSweep(settings, client)
    assert sweep.orphans() == []  # seen once: it may be a message between two places
    (orphan,) = sweep.orphans()
    assert (orphan.collection, orphan.digest, orphan.files) == ("sweep-c1", "lost", [song])

    with Connection(settings.broker_url) as conn:
        channel = conn.channel()
        queue = Queue(distributed.STORE, routing_key=distributed.STORE)
        producer = Producer(channel)
        # a queued message: it may carry the claim, so nothing is orphaned, and the count of
        # sightings starts again
        producer.publish({"plan": 1}, routing_key=distributed.STORE, declare=[queue])
        assert sweep.orphans() == []
        taken = channel.basic_get(distributed.STORE, no_ack=False)  # now in `unacked`
        assert taken is not None and sweep.orphans() == []
        taken.ack()
        # a deferred plan waiting for its countdown carries no claim: it keeps none alive
        headers = {distributed.DEFERRED_HEADER: True}
        producer.publish({"plan": 2}, routing_key=distributed.STORE, headers=headers)
        deferred = channel.basic_get(distributed.STORE, no_ack=False)
        assert deferred is not None
        assert sweep.orphans() == []  # first sighting since the queue emptied
        assert [o.digest for o in sweep.orphans()] == ["lost"]
        deferred.ack()

    assert claims.take(
        "lost", "plan-1", [song]
    )  # taken again meanwhile (a newer time): not as seen
    assert sweep.drop([orphan]) == 0 and claims.live() == 1
    sent: list[dict] = []  # type: ignore[type-arg]
    assert distributed.replan_orphans(sweep, sent.append) == 0  # seen once since
    assert distributed.replan_orphans(sweep, sent.append) == 1
    assert sent == [distributed.partial_request([song], [])]
    assert claims.live() == 0 and client.hlen(keys.claimed_files("sweep-c1")) == 0


def test_new_model_builds_beside_the_old_and_switches_when_complete(
    private_redis: RedisServer, tmp_path: Path, model
) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(tmp_path, private_redis)
    music = tmp_path / "music"
    files = [write_audio(music / f"{i}.flac", 4.0, seed=i, rate=16_000, channels=1) for i in (1, 2)]
    service.index(settings, [music], model=ModelHandle(settings, model=model))
    old = collection_name(settings.collection, model.fingerprint)
    changed = load_model(device="cpu")
    with torch.no_grad():
        changed.song_pool.w_s.bias.add_(0.01)
    new = collection_name(settings.collection, changed.fingerprint)
    client = distributed.redis_client(settings.broker_url)
    stage = distributed.StoreStage(settings, client, ModelHandle(settings, model=changed))
    try:
        plan = stage.plan(distributed.scan_request(settings, [music]), token="plan-1")
        assert plan.target == new and len(plan.batches) == len(files)
        store, _ = stage.open()
        assert store.alias_target() == old  # queries keep using the complete collection
        results = [
            distributed.embed_jobs(changed, plan.fingerprint, b, settings) for b in plan.batches
        ]
        stage.store(new, results[0].points, results[0].failed)
        assert store.alias_target() == old  # one file of the new collection still queued
        assert stage.store(new, results[1].points, results[1].failed) == 1
        assert store.alias_target() == new and store.collections() == [new]
        assert sorted(p for r in stage.records() for p in r["paths"]) == sorted(map(str, files))
        # redelivery of a store message writes the same point again: still once
        stage.store(new, results[1].points, results[1].failed)
        assert store.count(new) == len(files)
    finally:
        stage.close()


def test_content_queued_by_another_plan_is_deferred_then_joins_without_embedding(
    private_redis: RedisServer, tmp_path: Path, model
) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(tmp_path, private_redis)
    a = write_audio(tmp_path / "a" / "song.flac", 3.0, seed=7, rate=16_000, channels=1)
    (tmp_path / "b").mkdir()
    b = tmp_path / "b" / "copy.flac"
    b.write_bytes(a.read_bytes())  # the same content in another catalog
    client = distributed.redis_client(settings.broker_url)
    stage = distributed.StoreStage(settings, client, ModelHandle(settings, model=model))
    try:
        first = stage.plan(distributed.scan_request(settings, [a.parent]), token="plan-a")
        second = stage.plan(distributed.scan_request(settings, [b.parent]), token="plan-b")
        assert len(first.batches) == 1 and second.batches == []  # embedded once
        assert [f.path for f in second.deferred] == [str(b)]
        (job,) = first.batches[0]
        done = distributed.embed_jobs(model, first.fingerprint, [job], settings)
        stage.store(first.target, done.points, done.failed)
        again = stage.plan(distributed.partial_request(second.deferred, []), token="plan-b2")
        assert again.batches == [] and again.deferred == [] and again.unchanged == 1
        (record,) = stage.records()
        assert sorted(record["paths"]) == sorted([str(a), str(b)])
        # a claim left by a plan that had to run again is released once its content is written
        claims = stage.claims(first.target)
        assert claims.take(job.digest, "plan-that-ran-again", job.files) and claims.live() == 1
        stage.finalize(first.target)
        assert claims.live() == 0
    finally:
        stage.close()


def test_a_file_that_breaks_leaves_the_index_through_the_stages(
    private_redis: RedisServer, tmp_path: Path, model
) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(tmp_path, private_redis).model_copy(update={"collection": "breaks"})
    music = tmp_path / "music"
    song = write_audio(music / "song.flac", 4.0, seed=1, rate=16_000, channels=1)
    client = distributed.redis_client(settings.broker_url)
    stage = distributed.StoreStage(settings, client, ModelHandle(settings, model=model))

    def run(token: str) -> None:
        plan = stage.plan(distributed.scan_request(settings, [music]), token=token)
        for batch in plan.batches:
            done = distributed.embed_jobs(model, plan.fingerprint, batch, settings)
            stage.store(plan.target, done.points, done.failed)

    try:
        run("plan-1")
        assert [r["paths"] for r in stage.records()] == [[str(song)]]
        song.write_text("not audio any more\n")
        run("plan-2")
        assert stage.records() == []
        _, failures = stage.open()
        assert [f.path for f in failures.all()] == [str(song)]
    finally:
        stage.close()


def test_watcher_reports_files_once_settled_and_deletions(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    kept = write_audio(inbox / "kept.wav", 1.0, rate=16_000, channels=1)
    watcher = distributed.FolderWatcher([inbox], Settings(_env_file=None).extensions, settle=5.0)  # type: ignore[call-arg]
    watcher.baseline()
    assert watcher.poll(now=0.0) == ([], [])  # what was there is left to the full scan
    new = write_audio(inbox / "sub" / "new.flac", 1.0, rate=16_000, channels=1)
    (inbox / "notes.txt").write_text("not audio")
    t = time.monotonic()
    assert watcher.poll(now=t) == ([], [])  # still being copied, perhaps
    ready, gone = watcher.poll(now=t + 5.0)
    assert [f.path for f in ready] == [str(new)] and ready[0].root == str(inbox) and gone == []
    assert watcher.poll(now=t + 10.0) == ([], [])  # reported once
    kept.unlink()
    assert watcher.poll(now=t + 11.0) == ([], [str(kept)])
    request = distributed.partial_request(ready, [str(kept)])
    assert request["roots"] == sorted([str(new), str(kept)])


def test_rescan_schedule_from_settings() -> None:
    from celery.schedules import crontab, schedule

    from workers.app import rescan_schedule

    base = Settings(_env_file=None, rescan_interval=90)  # type: ignore[call-arg]
    every = rescan_schedule(base)
    assert isinstance(every, schedule) and every.run_every.total_seconds() == 90
    nightly = rescan_schedule(base.model_copy(update={"rescan_crontab": "30 3 * * *"}))
    assert isinstance(nightly, crontab) and nightly.hour == {3} and nightly.minute == {30}
    with pytest.raises(ValueError, match="5 fields"):
        rescan_schedule(base.model_copy(update={"rescan_crontab": "30 3 *"}))


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "indexer.cli", *args]
    return subprocess.run(
        cmd, env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )


def test_cli_help_stays_light_and_worker_commands_refuse_bad_setups(tmp_path: Path) -> None:
    probe = (
        "import sys\nfrom indexer.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print([m for m in ('torch', 'celery', 'redis') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().splitlines()[-1] == "[]"
    env = {"INDEXER_DATA_DIR": str(tmp_path / "data")}
    # one process owns an embedded store: the store queue cannot run in two
    refused = _cli("worker", "--queues", "store", "--concurrency", "2", env=env)
    assert refused.returncode == 2 and "--concurrency 1" in refused.stderr
    assert _cli("worker", "--queues", "gpu", env=env).returncode == 2
    # no broker: a clear error, at once
    down = {**env, "INDEXER_BROKER_URL": "redis://127.0.0.1:1/0"}
    began = time.monotonic()
    queued = _cli("queue", str(tmp_path), env=down)
    assert queued.returncode == 2 and "cannot reach the broker" in queued.stderr
    assert time.monotonic() - began < 30
    status = json.loads(_cli("status", "--json", env=down).stdout)
    assert status["broker"]["reachable"] is False and status["tracks"] == 0
