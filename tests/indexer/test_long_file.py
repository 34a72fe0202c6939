"""A two-hour file indexes in bounded memory (decoding streams; nothing holds the file)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.indexer.fixtures import write_long_wav

PROBE = """
import json, resource, sys
from indexer.cli import main
code = main(["index", sys.argv[1], "--json"])
me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"code": code, "self_kb": me, "children_kb": kids}))
"""


def peak(path: Path, data: Path) -> dict[str, int]:
    env = {**os.environ, "INDEXER_DATA_DIR": str(data), "INDEXER_DECODE_WORKERS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    summary, probe = json.loads(lines[0]), json.loads(lines[-1])
    assert summary["failed"] == 0 and summary["indexed"] == 1
    return {
        "self": probe["self_kb"],
        "children": probe["children_kb"],
        "audio": summary["audio_seconds"],
    }


def test_two_hour_file_peak_memory_grows_less_than_500_mb(tmp_path: Path) -> None:
    short = write_long_wav(tmp_path / "short" / "one-minute.wav", 60.0)
    long = write_long_wav(tmp_path / "long" / "two-hours.wav", 2 * 3600.0)
    base = peak(short.parent, tmp_path / "d1")
    big = peak(long.parent, tmp_path / "d2")
    assert big["audio"] == 7200.0
    growth_mb = (big["self"] - base["self"] + max(0, big["children"] - base["children"])) / 1024
    assert growth_mb < 500, f"peak memory grew by {growth_mb:.0f} MB"
