"""A data directory that fills up: the run stops before a store write with one clear line,
what was written stays, and the next run goes on from it (issue 17). Without the check a run
on a full 3 MB tmpfs died with SIGBUS inside Qdrant Edge's memory-mapped writes, silently."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.indexer.fixtures import wait_for_status, write_audio

FILES = 12
SLOW_FILES = 30


def _catalog(root: Path) -> Path:
    for i in range(FILES):
        write_audio(root / f"{i:02d}.flac", 12.0, seed=300 + i, rate=16_000, channels=1)
    return root


def _index(music: Path, data: Path, **env: str) -> subprocess.CompletedProcess[str]:
    run_env = {**os.environ, "INDEXER_DATA_DIR": str(data), "INDEXER_MODEL": "collap-mini",
               "INDEXER_DECODE_WORKERS": "1", **env}  # fmt: skip
    cmd = [sys.executable, "-m", "indexer.cli", "index", str(music)]
    return subprocess.run(cmd, env=run_env, capture_output=True, text=True, timeout=300)


def _indexed(data: Path) -> int:
    from indexer import service
    from indexer.settings import Settings

    settings = Settings(data_dir=data, model="collap-mini", _env_file=None)  # type: ignore[call-arg]
    with service.session(settings) as s:
        target = s.store.alias_target()
        return 0 if target is None else s.store.count(target)


def _one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "INDEXER_MIN_FREE_MB" in lines[0] and "run `indexer index` again" in lines[0]
    return lines[0]


def test_too_little_room_stops_before_the_first_write(tmp_path: Path) -> None:
    music = _catalog(tmp_path / "music")
    data = tmp_path / "data"
    # more than any disk has: the check before the first write stops the run
    line = _one_line_error(_index(music, data, INDEXER_MIN_FREE_MB=str(1 << 40)))
    assert "0 files written" in line
    done = _index(music, data)
    assert done.returncode == 0, done.stderr
    assert _indexed(data) == FILES


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 150 MB ext4 file system in a loop device (root only). Not a tmpfs: Qdrant Edge cannot
    reopen a shard on one (SIGBUS on load, measured with an unfilled tmpfs)."""
    if os.geteuid() != 0 or shutil.which("mkfs.ext4") is None:
        pytest.skip("mounting a small file system needs root and mkfs.ext4")
    image, where = tmp_path / "disk.img", tmp_path / "disk"
    where.mkdir()
    with image.open("wb") as f:
        f.truncate(150 << 20)
    for cmd in (
        ["mkfs.ext4", "-q", "-F", str(image)],
        ["mount", "-o", "loop", str(image), str(where)],
    ):
        made = subprocess.run(cmd, capture_output=True)
        if made.returncode != 0:
            pytest.skip(f"cannot make a small file system here: {made.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)


def test_a_disk_that_fills_mid_run_stops_cleanly_and_the_next_run_goes_on(
    tmp_path: Path, small_disk: Path
) -> None:
    music = tmp_path / "music"
    for i in range(SLOW_FILES):
        write_audio(music / f"{i:02d}.flac", 40.0, seed=400 + i, rate=16_000, channels=1)
    data = small_disk / "data"
    # one point per write, small model batches: the run lasts long enough to fill the disk
    # under it once some tracks are written (as tests/indexer/test_crash.py)
    env = {**os.environ, "INDEXER_DATA_DIR": str(data), "INDEXER_MODEL": "collap-mini",
           "INDEXER_DECODE_WORKERS": "1", "INDEXER_UPSERT_BATCH": "1", "INDEXER_CLIP_BATCH": "8",
           "INDEXER_MIN_FREE_MB": "40"}  # fmt: skip
    cmd = [sys.executable, "-m", "indexer.cli", "index", str(music)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    wait_for_status(proc, data, lambda s: s.get("files_done", 0) >= 3)
    assert proc.poll() is None, "the run finished before the disk could fill"
    # another program fills the disk to 30 MB free, below the 40 the run needs
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (shutil.disk_usage(small_disk).free - (30 << 20)))
    out, err = proc.communicate(timeout=240)
    line = _one_line_error(subprocess.CompletedProcess(cmd, proc.returncode, out, err))
    written = int(line.split(" files written")[0].rsplit(" ", 1)[1])
    assert written >= 3
    filler.unlink()  # the user frees space
    again = subprocess.run([*cmd, "--json"], env=env, capture_output=True, text=True,
                           timeout=300)  # fmt: skip
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["unchanged"] == written  # what the stopped run wrote is kept
    assert summary["indexed"] + summary["unchanged"] == SLOW_FILES
    assert _indexed(data) == SLOW_FILES
