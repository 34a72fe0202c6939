"""SIGKILL in the middle of a run, then run again: every file indexed exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from indexer import service
from indexer.settings import Settings
from indexer.store.edge import EdgeStore
from tests.indexer.fixtures import wait_for_status, write_audio

# the run embeds about 15 files a second here: 30 leave ~2 s between the third file showing in
# status.json (written every 0.25 s) and the end of the run
FILES = 30


def test_sigkill_mid_run_then_rerun_indexes_everything_once(tmp_path: Path) -> None:
    music = tmp_path / "music"
    for i in range(FILES):
        write_audio(music / f"{i:02d}.flac", 40.0, seed=i, rate=16_000, channels=1)
    data = tmp_path / "data"
    env = {
        **os.environ,
        "INDEXER_DATA_DIR": str(data),
        "INDEXER_UPSERT_BATCH": "1",
        "INDEXER_DECODE_WORKERS": "1",
        # small model batches and writes: the run lasts long enough to be killed mid-way
        "INDEXER_CLIP_BATCH": "8",
    }
    cmd = [sys.executable, "-m", "indexer.cli", "index", str(music), "--json"]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    done = wait_for_status(proc, data, lambda s: s.get("files_done", 0) >= 3).get("files_done", 0)
    assert proc.poll() is None, "the run finished before it could be killed"
    assert done >= 3
    os.killpg(proc.pid, signal.SIGKILL)  # the indexer and its decoder processes
    proc.wait()
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["failed"] == 0
    assert summary["unchanged"] >= 3  # what the killed run wrote is kept
    assert summary["indexed"] + summary["unchanged"] == FILES
    store = EdgeStore(data / "qdrant", "tracks")
    try:
        target = store.alias_target()
        assert target is not None
        records = list(store.records(target))
        tracks = store.retrieve(target, [r.id for r in records], with_vectors=True)
    finally:
        store.close()
    paths = [f.path for r in records for f in r.files]
    assert sorted(paths) == sorted(str(p) for p in music.iterdir())  # each file exactly once
    assert len(records) == FILES
    for t in tracks:  # whole points only
        assert t.song is not None and t.clips is not None
        assert len(t.clips) == t.payload["n_clips"] == len(t.payload["clip_times"])
    settings = Settings(data_dir=data, _env_file=None)  # type: ignore[call-arg]
    assert service.status(settings)["tracks"] == FILES


def _session_processes(sid: int) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid=,sid=,args="], capture_output=True, text=True).stdout
    return [line.strip() for line in out.splitlines() if line.split()[1] == str(sid)]


def test_decoders_exit_soon_after_their_parent_is_killed(tmp_path: Path) -> None:
    """SIGKILL of the indexer alone (not its process group): its decoder processes, and with
    them multiprocessing's resource tracker, must not outlive it (they ran on for minutes)."""
    music = tmp_path / "music"
    for i in range(12):
        write_audio(music / f"{i:02d}.flac", 40.0, seed=i, rate=16_000, channels=1)
    data = tmp_path / "data"
    env = {
        **os.environ,
        "INDEXER_DATA_DIR": str(data),
        "INDEXER_DECODE_WORKERS": "2",
        "INDEXER_CLIP_BATCH": "8",
        "INDEXER_UPSERT_BATCH": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "indexer.cli", "index", str(music), "--json"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_status(proc, data, lambda s: s.get("files_done", 0) >= 1)
        assert proc.poll() is None, "the run finished before it could be killed"
        assert len(_session_processes(proc.pid)) >= 3  # the indexer, decoders, tracker
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        killed = time.monotonic()
        left = _session_processes(proc.pid)
        while left and time.monotonic() - killed < 8:
            time.sleep(0.2)
            left = _session_processes(proc.pid)
        assert left == [], left
    finally:
        for line in _session_processes(proc.pid):
            os.kill(int(line.split()[0]), signal.SIGKILL)


def test_sigkill_during_the_end_of_run_optimisation_leaves_a_searchable_index(
    tmp_path: Path,
) -> None:
    music = tmp_path / "music"
    for i in range(FILES):
        write_audio(music / f"{i:02d}.flac", 20.0, seed=700 + i, rate=16_000, channels=1)
    data = tmp_path / "data"
    env = {**os.environ, "INDEXER_DATA_DIR": str(data), "INDEXER_MODEL": "collap-mini",
           "INDEXER_DECODE_WORKERS": "1"}  # fmt: skip
    cmd = [sys.executable, "-m", "indexer.cli", "index", str(music), "--json"]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    optimizing = wait_for_status(proc, data, lambda s: s.get("state") == "optimizing", every=0.002)
    state = optimizing.get("state")
    assert state == "optimizing" and proc.poll() is None, "the run ended before its optimisation"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # the first run pointed the alias at its collection when it started: searchable as it is
    asked = subprocess.run([sys.executable, "-m", "indexer.cli", "query", "a tone", "--limit",
                            str(FILES), "--json"], env=env, capture_output=True, text=True,
                           timeout=120)  # fmt: skip
    assert asked.returncode == 0, asked.stderr
    assert len(json.loads(asked.stdout)) == FILES
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["unchanged"] == FILES
