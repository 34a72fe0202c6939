"""The data directory's owner lock: one process owns the embedded store at a time.

Taken before any shard is opened (a second process merely opening a live Qdrant Edge shard
breaks the owner's next flush). fcntl.flock is released by the kernel when the owner dies, so a
SIGKILLed run leaves no stale lock. The owner publishes who it is in owner.json and its live
progress in status.json; other commands read those instead of touching the shards.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


class StoreBusyError(RuntimeError):
    """Another process owns the store and the caller chose not to wait."""


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.fd: int | None = None

    def acquire(
        self, wait: bool = True, on_wait: Callable[[dict[str, Any] | None], None] | None = None
    ) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.data_dir / "owner.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = read_json(self.data_dir / "owner.json")
            if not wait:
                os.close(fd)
                raise StoreBusyError(busy_message(self.data_dir, owner)) from None
            if on_wait is not None:
                on_wait(owner)
            fcntl.flock(fd, fcntl.LOCK_EX)
        self.fd = fd
        write_json(
            self.data_dir / "owner.json",
            {"pid": os.getpid(), "command": " ".join(sys.argv), "since": time.time()},
        )

    def release(self) -> None:
        if self.fd is not None:
            (self.data_dir / "status.json").unlink(missing_ok=True)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def is_held_elsewhere(self) -> bool:
        path = self.data_dir / "owner.lock"
        if not path.exists():
            return False
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def busy_message(data_dir: Path, owner: dict[str, Any] | None) -> str:
    who = f"process {owner['pid']} ({owner['command']})" if owner else "another process"
    return f"the store in {data_dir} is owned by {who}"


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)
