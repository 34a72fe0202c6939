"""While `indexer index` owns the embedded store, `indexer query`, `similar` and `locate` answer
through it at once, searching what is written so far (indexer/owner.py, issue 17)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from indexer.lock import read_json
from tests.indexer.fixtures import wait_for_status, write_audio

FILES = 30


def _start(music: Path, data: Path, **env: str) -> subprocess.Popen[str]:
    # one point per write and small model batches: a run long enough to ask it things
    run_env = {**os.environ, "INDEXER_DATA_DIR": str(data), "INDEXER_MODEL": "collap-mini",
               "INDEXER_DECODE_WORKERS": "1", "INDEXER_UPSERT_BATCH": "1",
               "INDEXER_CLIP_BATCH": "8", **env}  # fmt: skip
    cmd = [sys.executable, "-m", "indexer.cli", "index", str(music), "--json"]
    return subprocess.Popen(cmd, env=run_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip


def _wait_for_files(proc: subprocess.Popen[str], data: Path, files: int) -> None:
    if (
        wait_for_status(proc, data, lambda s: s.get("files_done", 0) >= files).get("files_done", 0)
        < files
    ):
        pytest.fail("the run ended before it could be asked")


def _cli(data: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    run_env = {**os.environ, "INDEXER_DATA_DIR": str(data), "INDEXER_MODEL": "collap-mini", **env}
    return subprocess.run([sys.executable, "-m", "indexer.cli", *args], env=run_env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


@pytest.fixture
def music(tmp_path: Path) -> Path:
    root = tmp_path / "music"
    for i in range(FILES):
        write_audio(root / f"{i:02d}.flac", 40.0, seed=500 + i, rate=16_000, channels=1)
    return root


def test_searches_answer_through_a_running_index(music: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = _start(music, data)
    try:
        _wait_for_files(proc, data, 3)
        assert str(read_json(data / "owner.json").get("api", "")).startswith("http://127.0.0.1:")
        began = time.monotonic()
        asked = _cli(data, "query", "a steady tone", "--limit", "3", "--json")
        took = time.monotonic() - began
        assert asked.returncode == 0, asked.stderr
        assert "waiting" not in asked.stderr
        hits = json.loads(asked.stdout)
        assert 1 <= len(hits) <= 3
        assert proc.poll() is None, "the run ended before the query came back"
        similar = _cli(data, "similar", hits[0]["id"], "--json")
        assert similar.returncode == 0, similar.stderr
        assert hits[0]["id"] not in [h["id"] for h in json.loads(similar.stdout)]
        located = _cli(data, "locate", hits[0]["id"], "a steady tone", "--json")
        assert located.returncode == 0, located.stderr
        assert json.loads(located.stdout)["clips"]
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert json.loads(out)["indexed"] == FILES
    assert took < 30  # an answer during the run, not after it
    assert "api" not in (read_json(data / "owner.json") or {}) or not read_json(
        data / "owner.json"
    ).get("api")
    # after the run, the same search opens the store itself and finds every track
    after = _cli(data, "query", "a steady tone", "--limit", "50", "--json")
    assert after.returncode == 0, after.stderr
    assert len(json.loads(after.stdout)) == FILES


def test_a_run_told_not_to_serve_makes_searches_wait(music: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = _start(music, data, INDEXER_INDEX_SERVES="false")
    try:
        _wait_for_files(proc, data, 3)
        assert not (read_json(data / "owner.json") or {}).get("api")
        asked = _cli(data, "query", "a steady tone", "--limit", "50", "--json")
        # it waited for the run to let go of the store, then searched all of it
        assert "waiting" in asked.stderr
        assert asked.returncode == 0, asked.stderr
        assert len(json.loads(asked.stdout)) == FILES
    finally:
        proc.kill()
        proc.communicate()


def test_the_run_yields_the_cpu_to_the_api_thread() -> None:
    import threading

    from indexer.owner import SEARCH_NICE, restore_cpu, yield_cpu_to

    started, stop = threading.Event(), threading.Event()

    def api() -> None:
        started.set()
        stop.wait(10)

    def niceness(tid: int) -> int:
        return os.getpriority(os.PRIO_PROCESS, tid)

    serving = threading.Thread(target=api)
    serving.start()
    started.wait(10)
    me = threading.get_native_id()
    before = niceness(me)
    assert serving.native_id is not None
    lowered = yield_cpu_to(serving)
    try:
        assert niceness(me) == min(19, before + SEARCH_NICE)
        assert niceness(serving.native_id) == before
        assert lowered[me] == before
    finally:
        stop.set()
        serving.join()
        restore_cpu(lowered)
    if os.geteuid() == 0:  # raising a priority back needs the privilege
        assert niceness(me) == before


def test_a_store_call_runs_at_the_priority_the_store_was_shared_at() -> None:
    """The run's thread, lowered, holds the shared store's lock at the API's priority (else
    the decoders beside it stretch the write that searches wait for), and goes back after."""
    import threading

    from indexer.owner import SEARCH_NICE, SharedStore

    if os.geteuid() != 0:
        pytest.skip("raising a thread's priority back needs the privilege")
    seen: list[int] = []

    class Store:
        def write(self) -> None:
            seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    shared = SharedStore(Store())  # type: ignore[arg-type]
    after: list[int] = []

    def run() -> None:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, base + SEARCH_NICE))
        shared.write()
        after.append(os.getpriority(os.PRIO_PROCESS, tid))

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    assert seen == [base]
    assert after == [min(19, base + SEARCH_NICE)]
