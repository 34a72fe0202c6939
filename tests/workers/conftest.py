"""A private Redis (AOF on, so a restart keeps the queues) and real Celery worker processes.

The Redis listens on a free port with its files in tmp, so these tests never touch the
machine's shared Redis nor collide with another run; workers are subprocesses started with
the same INDEXER_* environment the test process uses to talk to them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from indexer import distributed
from indexer.settings import Settings

REPO = Path(__file__).resolve().parents[2]
# short, so that messages of a killed worker come back within the test's time
VISIBILITY_TIMEOUT = 15


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    def __init__(self, port: int, directory: Path) -> None:
        self.port, self.dir = port, directory
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is needed (apt-get install redis-server; .ci/run does)"
        self.dir.mkdir(parents=True, exist_ok=True)
        cmd = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)]
        cmd += ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
        log = open(self.dir / "redis.log", "ab")  # noqa: SIM115 (kept open for the process)
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()  # SIGTERM: Redis fsyncs the AOF and exits
            self.proc.wait(timeout=20)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


class Cluster:
    """Workers, the settings they share, and the client side (queue, wait, read back)."""

    def __init__(self, root: Path, redis: RedisServer) -> None:
        self.root, self.redis = root, redis
        port = redis.port
        self.env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "INDEXER_DATA_DIR": str(root / "data"),
            "INDEXER_BROKER_URL": f"redis://127.0.0.1:{port}/0",
            "INDEXER_RESULT_BACKEND": f"redis://127.0.0.1:{port}/1",
            "INDEXER_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT),
            "INDEXER_EMBED_TASK_FILES": "1",
            "INDEXER_RETRY_BACKOFF_MAX": "2",
            "INDEXER_WATCH_INTERVAL": "0.5",
            "INDEXER_WATCH_SETTLE": "1",
            "INDEXER_CLAIM_SWEEP_INTERVAL": "1",
        }
        self.settings = Settings(
            data_dir=root / "data",
            broker_url=self.env["INDEXER_BROKER_URL"],
            result_backend=self.env["INDEXER_RESULT_BACKEND"],
            _env_file=None,  # type: ignore[call-arg]
        )
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        from workers.app import configure

        configure(self.settings)

    def start(
        self, name: str, cmd: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 (kept open for the process)
        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env={**self.env, **(env or {})},
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        self.procs[name] = proc
        return proc

    def start_embed_worker(self, name: str) -> None:
        # the plain Celery command line, as README documents it
        cmd = [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-Q", "embed"]
        self.start(name, [*cmd, "-c", "1", "--pool", "prefork", "-n", f"{name}@%h", "-l", "INFO"])

    def start_store_worker(self) -> None:
        # `indexer worker`: the embedded store's owner also runs the scans
        cmd = [sys.executable, "-m", "indexer.cli", "worker", "--queues", "scan,store"]
        self.start("store", cmd)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name)
        os.killpg(proc.pid, sig)  # the worker and its pool process
        proc.wait(timeout=30)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()

    def status(self) -> dict[str, Any]:
        return distributed.broker_status(self.settings, timeout=2.0)

    def stat(self, name: str) -> int:
        info = self.status()
        return int(info.get(name, 0)) if info["reachable"] else -1

    def wait_idle(self, timeout: float = 90.0) -> None:
        """Until nothing is queued, in flight or claimed, twice in a row a second apart."""
        deadline = time.monotonic() + timeout
        calm = 0
        while time.monotonic() < deadline:
            s = self.status()
            idle = (
                s["reachable"]
                and not any(s["queues"].values())
                and s["in_flight"] == 0
                and s["files_queued"] == 0
            )
            calm = calm + 1 if idle else 0
            if calm >= 2:
                return
            time.sleep(1.0)
        busy = f"workers still busy after {timeout} s: {self.status()}"
        raise AssertionError(f"{busy}\n{self.logs()}")

    def wait_for(self, what: str, check: Any, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}\n{self.logs()}")

    def records(self) -> list[dict[str, Any]]:
        from workers import tasks

        # polled with plain GETs rather than awaited on the result backend's pub/sub: this
        # process's subscription does not survive a Redis restart, and a reply published while
        # redis-py reconnects it is lost (the CI run of 2026-12-01 waited 60 s for one).
        # Asked again every 10 s: a store worker that does not own the store publishes its retry
        # and then records RETRY by a read and a write (celery's KeyValueStoreBackend
        # _store_result), so an owner that answers the retry at once (a countdown of 0 s) can
        # land SUCCESS between the two, and the first ask never reads ready (the CI run of
        # 2026-12-04, with a second store worker running)
        deadline = time.monotonic() + 60
        result = tasks.records.apply_async()
        asked = time.monotonic()
        while not result.ready():
            if time.monotonic() > deadline:
                raise AssertionError(f"no reply to `records` in 60 s\n{self.logs()}")
            if time.monotonic() - asked > 10:
                result = tasks.records.apply_async()
                asked = time.monotonic()
            time.sleep(0.1)
        records: list[dict[str, Any]] = result.get(timeout=10)
        return records

    def paths(self, folder: Path) -> list[str]:
        """Every indexed path under `folder`, once per point that lists it."""
        return sorted(
            p for r in self.records() for p in r["paths"] if p.startswith(str(folder) + "/")
        )

    def logs(self) -> str:
        out = []
        for log in sorted(self.root.glob("*.log")):
            out.append(f"--- {log.name}\n" + log.read_text(errors="replace")[-3000:])
        return "\n".join(out)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("workers")
    redis = RedisServer(free_port(), root / "redis")
    redis.start()
    c = Cluster(root, redis)
    try:
        c.start_store_worker()
        c.start_embed_worker("embed1")
        c.start_embed_worker("embed2")
        yield c
    finally:
        c.stop_all()
        redis.stop()


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis of this module's own, no workers."""
    redis = RedisServer(free_port(), tmp_path_factory.mktemp("redis"))
    redis.start()
    try:
        yield redis
    finally:
        redis.stop()
