"""Catalog scanning: the audio files under some roots, with size and mtime (no decoding)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class CatalogFile:
    path: str  # absolute path as found under its root (symlinks inside the root kept)
    root: str  # the catalog root it was found under (resolved)
    size: int  # bytes
    mtime_ns: int  # modification time, nanoseconds


class ScanError(ValueError):
    """A catalog root that cannot be scanned."""


def resolve_roots(paths: Iterable[str | Path]) -> list[Path]:
    roots = []
    for p in paths:
        if isinstance(p, str) and not p.strip():
            # Path("") is ".": an empty argument (an unset shell variable) would index the
            # current directory
            raise ScanError("an empty path names no folder: give the catalog's path")
        root = Path(p).expanduser()
        if not root.exists():
            raise ScanError(f"no such file or directory: {p}")
        roots.append(root.resolve())
    return roots


def scan(
    roots: Iterable[Path],
    extensions: Iterable[str],
    unreadable: list[tuple[CatalogFile, str]] | None = None,
) -> Iterator[CatalogFile]:
    """Audio files under `roots` (a root may also be a single file).

    Hidden files and folders (name starting with ".") are skipped. Symlinked folders are
    followed once: a folder already visited (by device and inode) is not entered again, so
    symlink loops end. A folder that cannot be listed (permissions) is skipped, and added to
    `unreadable` with the reason (as a CatalogFile of size 0), for the failure log.
    """
    exts = {e.lower() for e in extensions}
    seen_files: set[str] = set()
    for root in roots:
        if root.is_file():
            entry = _entry(str(root), str(root.parent), exts)
            if entry and entry.path not in seen_files:
                seen_files.add(entry.path)
                yield entry
            continue
        visited: set[tuple[int, int]] = set()

        def refused(err: OSError, root: Path = root) -> None:
            if unreadable is not None and err.filename is not None:
                folder = CatalogFile(os.fsdecode(err.filename), str(root), 0, 0)
                unreadable.append((folder, f"cannot list the folder: {_strerror(err)}"))

        for folder, dirs, files in os.walk(root, onerror=refused, followlinks=True):
            try:
                st = os.stat(folder)
            except OSError:
                dirs[:] = []
                continue
            key = (st.st_dev, st.st_ino)
            if key in visited:
                dirs[:] = []
                continue
            visited.add(key)
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if name.startswith("."):
                    continue
                entry = _entry(os.path.join(folder, name), str(root), exts)
                if entry and entry.path not in seen_files:
                    seen_files.add(entry.path)
                    yield entry


def _entry(path: str, root: str, exts: set[str]) -> CatalogFile | None:
    if os.path.splitext(path)[1].lower() not in exts:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None  # a dangling symlink or a file removed while scanning
    if not os.path.isfile(path):
        return None
    return CatalogFile(path=path, root=root, size=st.st_size, mtime_ns=st.st_mtime_ns)


def _strerror(err: OSError) -> str:
    return err.strerror or str(err)


def unreadable_reason(err: OSError) -> str:
    """The failure log's reason for a file the indexer could not open or read."""
    return f"cannot read the file: {_strerror(err)}"


def content_hash(path: str) -> str:
    """sha256 of the file's bytes, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()
