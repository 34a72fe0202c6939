"""The failure log: files that gave no usable audio, with the reason, kept until they change.

SQLite in the data directory (WAL mode), so `indexer failures` can read it while an indexing
process owns the store. Paths are kept as the store keeps them (stored_path: a name that is not
UTF-8 is text SQLite can hold) and read back as the local paths they are.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from indexer.scan import CatalogFile
from indexer.store.base import as_text, local_path, stored_path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS failures (
    path TEXT PRIMARY KEY,
    root TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    content_hash TEXT NOT NULL,
    reason TEXT NOT NULL,
    failed_at TEXT NOT NULL
)
"""


@dataclass(frozen=True)
class Failure:
    path: str
    root: str
    size: int
    mtime_ns: int
    content_hash: str
    reason: str
    failed_at: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class FailureLog:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, timeout=30, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(_SCHEMA)

    def record(self, file: CatalogFile, content_hash: str, reason: str) -> None:
        now = datetime.now(UTC).isoformat(timespec="seconds")
        self.db.execute(
            "INSERT OR REPLACE INTO failures VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                stored_path(file.path),
                stored_path(file.root),
                file.size,
                file.mtime_ns,
                content_hash,
                as_text(reason),
                now,
            ),
        )

    def touch(self, file: CatalogFile) -> None:
        """The file's mtime changed but not its content: remember the new mtime."""
        self.db.execute(
            "UPDATE failures SET size = ?, mtime_ns = ? WHERE path = ?",
            (file.size, file.mtime_ns, stored_path(file.path)),
        )

    def remove(self, paths: Iterable[str]) -> None:
        rows = [(stored_path(p),) for p in paths]
        self.db.executemany("DELETE FROM failures WHERE path = ?", rows)

    def all(self) -> list[Failure]:
        rows = self.db.execute("SELECT * FROM failures ORDER BY path").fetchall()
        return [Failure(local_path(p), local_path(r), *rest) for p, r, *rest in rows]

    def by_path(self) -> dict[str, Failure]:
        return {f.path: f for f in self.all()}

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM failures").fetchone()[0])

    def close(self) -> None:
        self.db.close()
