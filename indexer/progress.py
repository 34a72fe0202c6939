"""A one-line terminal progress display: files, audio hours, rate and ETA (stderr, TTY only)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class TerminalProgress:
    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.total = 0
        self.began = time.monotonic()
        self.last = 0.0

    def start(self, files: int) -> None:
        self.total = files
        self.began = time.monotonic()
        if files:
            self.stream.write(f"embedding {files} files\n")

    def update(self, files_done: int, audio_seconds: float) -> None:
        now = time.monotonic()
        if now - self.last < 0.2 and files_done < self.total:
            return
        self.last = now
        elapsed = max(now - self.began, 1e-6)
        rate = audio_seconds / elapsed
        eta = (self.total - files_done) * elapsed / files_done if files_done else 0.0
        width = 30
        filled = int(width * files_done / max(self.total, 1))
        bar = "#" * filled + "-" * (width - filled)
        self.stream.write(
            f"\r[{bar}] {files_done}/{self.total} files  {audio_seconds / 3600:.2f} h audio  "
            f"{rate:.0f}x realtime  ETA {_clock(eta)} "
        )
        self.stream.flush()

    def finish(self) -> None:
        if self.total:
            self.stream.write("\n")


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
