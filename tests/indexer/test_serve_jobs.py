"""While `indexer serve` owns the embedded store, it indexes: `indexer index PATH` and `indexer
watch PATH` hand their folders to it, `POST /index` starts a configured catalog folder, and it
keeps answering meanwhile (indexer/background.py, issue 17). Real processes: the server, the
commands, a real Qdrant Edge store and the collap-mini model."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from indexer.lock import read_json
from tests.indexer.api.test_api import KEY, Server, free_port
from tests.indexer.fixtures import write_audio

QUERY = {"query": "a steady tone", "limit": 50}


def _env(data: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "INDEXER_DATA_DIR": str(data), "INDEXER_MODEL": "collap-mini",
            "INDEXER_API_KEY": KEY, "INDEXER_DECODE_WORKERS": "1", **extra}  # fmt: skip


def _album(root: Path, n: int, seed: int, seconds: float = 20.0) -> Path:
    for i in range(n):
        write_audio(root / f"{seed + i}.flac", seconds, seed=seed + i, rate=16_000, channels=1)
    return root


def _cli(data: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "indexer.cli", *args], env=_env(data, **env),
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def _until(check: Callable[[], Any], within: float = 120, what: str = "") -> Any:
    deadline = time.monotonic() + within
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@contextlib.contextmanager
def _serve(data: Path, **extra: str) -> Iterator[Server]:
    """`indexer serve` over `data` (which may hold no index yet), once it answers."""
    port = free_port()
    env = _env(data, **extra)
    cmd = [sys.executable, "-m", "indexer.cli", "serve", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # fmt: skip
    srv = Server(f"http://127.0.0.1:{port}", proc, env)

    def up() -> bool:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            # the lifespan (store, model, job thread) is done before the port takes requests
            return srv.call("GET", "/healthz", key=None)[0] == 200
        except OSError:
            return False

    try:
        _until(up, 120, "serve")
        assert (read_json(data / "owner.json") or {}).get("jobs") is True
        yield srv
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=60)


def _found(srv: Server) -> int:
    status, body = srv.call("POST", "/search", QUERY)
    assert status in (200, 409), body  # 409: nothing indexed yet
    return len(body["hits"]) if status == 200 else 0


def _jobs(srv: Server) -> list[dict[str, Any]]:
    status, body = srv.call("GET", "/index")
    assert status == 200, body
    return list(body["jobs"])


def test_index_hands_its_folder_to_the_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first, second = _album(tmp_path / "a", 3, 100), _album(tmp_path / "b", 4, 200)
    assert _cli(data, "index", str(first)).returncode == 0
    with _serve(data) as srv:
        assert _found(srv) == 3
        ran = _cli(data, "index", str(second), "--json")
        assert ran.returncode == 0, ran.stderr
        assert "handed over" in ran.stderr and "waiting" not in ran.stderr
        summary = json.loads(ran.stdout)
        assert (summary["indexed"], summary["failed"]) == (4, 0)
        assert _found(srv) == 7  # searchable through the server, which never stopped
        (job,) = _jobs(srv)
        assert (job["state"], job["source"], job["paths"]) == (
            "done",
            "indexer index",
            [str(second)],
        )
        assert job["summary"]["indexed"] == 4
        again = _cli(data, "index", str(second), "--json")  # resumes like any run: nothing new
        assert json.loads(again.stdout)["unchanged"] == 4
        # the handoff leaves nothing behind in the data directory
        assert not list((data / "handoff").iterdir())
        # a command whose settings name another model is refused with one line, not indexed
        other = _cli(data, "index", str(second), INDEXER_MODEL="collap-tagger")
        assert other.returncode == 2
        (line,) = other.stderr.strip().splitlines()[-1:]
        assert line.startswith("indexer: error:") and "INDEXER_MODEL" in line
    # once the server has stopped, the store is the commands' again
    assert json.loads(_cli(data, "index", str(second), "--json").stdout)["unchanged"] == 4


def test_post_index_takes_configured_catalogs_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    catalog = _album(tmp_path / "catalog", 3, 300)
    _album(catalog / "new", 2, 400)
    outside = _album(tmp_path / "private", 1, 500)
    (catalog / "escape").symlink_to(outside)
    with _serve(data, INDEXER_SERVE_CATALOGS=str(catalog)) as srv:
        # an empty index, and the server is up: it can still take its first job
        assert srv.call("GET", "/readyz", key=None)[0] == 503
        for asked in (str(outside), "/etc", str(catalog / "escape"), str(catalog) + "/../private"):
            status, body = srv.call("POST", "/index", {"catalog": asked})
            assert status == 403, (asked, body)
            assert "INDEXER_SERVE_CATALOGS" in body["detail"]
        assert srv.call("POST", "/index", {"catalog": str(catalog / "nowhere")})[0] == 404
        assert srv.call("POST", "/index", {"catalog": "relative/path"})[0] == 422
        assert srv.call("POST", "/index", {"catalog": str(catalog)}, key=None)[0] == 401
        assert srv.call("POST", "/index", {"catalog": str(catalog / "new")})[0] == 202
        status, body = srv.call("POST", "/index", {"catalog": str(catalog)})
        assert status == 202 and body["job"]["paths"] == [str(catalog)]
        _until(lambda: all(j["state"] == "done" for j in _jobs(srv)), what="the jobs")
        # the catalog, its subfolder, and what its own link leads to (a link the catalog's owner
        # made is part of the catalog, as for `indexer index`; a request naming it is not)
        assert _found(srv) == 6
        ready = srv.call("GET", "/readyz", key=None)
        assert ready[0] == 200 and ready[1]["tracks"] == 6 and ready[1]["indexing"] is None
        _, listing = srv.call("GET", "/index")
        assert listing["catalogs"] == [str(catalog)]


def test_searches_answer_while_the_server_indexes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    catalog = _album(tmp_path / "catalog", 2, 600)
    big = _album(catalog / "big", 12, 700, seconds=40.0)
    with _serve(data, INDEXER_SERVE_CATALOGS=str(catalog), INDEXER_UPSERT_BATCH="1",
                INDEXER_CLIP_BATCH="8") as srv:  # fmt: skip
        srv.call("POST", "/index", {"catalog": str(catalog)})
        _until(lambda: _found(srv) >= 1, what="a first track")
        job = _jobs(srv)[0]
        assert job["state"] in ("indexing", "optimizing"), job
        # progress in /readyz and in `indexer status`, and searches answered meanwhile
        ready = srv.call("GET", "/readyz", key=None)[1]
        assert ready["indexing"]["id"] == job["id"]
        status = _cli(data, "status")
        assert status.returncode == 0, status.stderr
        assert "progress:" in status.stdout and str(catalog) in status.stdout
        began = time.monotonic()
        assert _found(srv) >= 1
        assert time.monotonic() - began < 5
        _until(lambda: _jobs(srv)[0]["state"] == "done", within=300, what="the job")
        assert _found(srv) == 2 + len(list(big.iterdir()))


def test_a_server_that_stops_leaves_the_command_to_finish(tmp_path: Path) -> None:
    data = tmp_path / "data"
    seed = _album(tmp_path / "seed", 1, 800)
    album = _album(tmp_path / "album", 10, 900, seconds=40.0)
    assert _cli(data, "index", str(seed)).returncode == 0
    with _serve(data, INDEXER_UPSERT_BATCH="1", INDEXER_CLIP_BATCH="8") as srv:
        cmd = [sys.executable, "-m", "indexer.cli", "index", str(album), "--json"]
        follower = subprocess.Popen(cmd, env=_env(data), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            _until(lambda: _found(srv) >= 2, what="the server's first write of the job")
            srv.proc.send_signal(signal.SIGTERM)
            srv.proc.wait(timeout=120)
            out, err = follower.communicate(timeout=300)
        finally:
            follower.kill()
    assert follower.returncode == 0, err
    summary = json.loads(out)
    # what the server wrote stays; the command indexed the rest itself
    assert summary["unchanged"] >= 1 and summary["indexed"] + summary["unchanged"] == 10
    listed = _cli(data, "query", "a steady tone", "--limit", "50", "--json")
    assert len(json.loads(listed.stdout)) == 11


def test_watch_hands_changes_to_the_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    folder = _album(tmp_path / "watched", 2, 1000)
    with _serve(data) as srv:
        env = _env(data, INDEXER_WATCH_INTERVAL="0.2", INDEXER_WATCH_SETTLE="0.2",
                   INDEXER_BROKER_URL="redis://127.0.0.1:1/0")  # fmt: skip  # never needed
        cmd = [sys.executable, "-m", "indexer.cli", "watch", str(folder)]
        watcher = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)  # fmt: skip
        try:
            _until(lambda: _found(srv) == 2, what="the first scan")
            write_audio(folder / "late.flac", 20.0, seed=1100, rate=16_000, channels=1)
            _until(lambda: _found(srv) == 3, what="the new file")
            (folder / f"{1000}.flac").unlink()
            _until(lambda: _found(srv) == 2, what="the deletion")
            assert watcher.poll() is None
        finally:
            watcher.send_signal(signal.SIGINT)
            out, err = watcher.communicate(timeout=30)
    assert "watching" in out and "handed over 1 new or changed file(s)" in out, (out, err)


def test_jobs_for_the_same_folders_wait_once() -> None:
    from indexer.background import BackgroundIndexer
    from indexer.settings import Settings

    jobs = BackgroundIndexer(Settings(_env_file=None), None, None)  # type: ignore[arg-type,call-arg]
    first = jobs.submit(["/music/a"], "api")
    assert jobs.submit(["/music/a"], "indexer watch") is first
    other = jobs.submit(["/music/b"], "api")
    assert other is not first and [j["id"] for j in jobs.jobs()] == [other.id, first.id]
    assert jobs.current() == {**first.as_dict(), "queued": 2}
    jobs.close()  # never started: every queued job ends "stopped", with the reason
    assert {j["state"] for j in jobs.jobs()} == {"stopped"}
    assert all("stopped" in j["error"] for j in jobs.jobs())


def test_the_server_is_told_when_jobs_begin_and_when_none_is_left() -> None:
    """Searcher.writing hears True before a job on an idle indexer and False once the queue is
    empty (its resident copy is rebuilt then), also after a job that failed."""
    from indexer.background import BackgroundIndexer
    from indexer.settings import Settings

    told: list[bool] = []
    # no store: the job fails at once, as a job's failure does, without failing the thread
    jobs = BackgroundIndexer(Settings(_env_file=None), None, None, busy=told.append)  # type: ignore[arg-type,call-arg]
    jobs.start()
    try:
        jobs.submit(["/music/a"], "api")
        _until(lambda: told == [True, False], within=30, what="the indexer going idle")
        assert [j["state"] for j in jobs.jobs()] == ["failed"]
    finally:
        jobs.close()
    assert told == [True, False]
