"""What the CLI shows a person, through rich: the hits table of `query`/`similar`, the
timeline of `locate` and the progress of `indexer index`.

On a terminal: styled, sized to the window. Anywhere else (a pipe, a file): plain text with no
escape codes, one line per row however long, without trailing blanks, so scripts can read it.
Text from the catalog (tags, paths) is shown with its control characters escaped, so a title
cannot move the cursor or retitle the terminal, and is never read as rich markup.

rich is imported by the commands that print, not by `indexer --help`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from indexer.printable import printable

# plain output is never wrapped: a row is one line, however long its path
_PLAIN_WIDTH = 1_000_000


def console(file: TextIO | None = None) -> Console:
    """A console on `file` (stdout): styled on a terminal, plain text elsewhere."""
    file = file or sys.stdout
    probe = Console(file=file)
    if probe.is_terminal:
        return Console(file=file, highlight=False, markup=False, emoji=False)
    return Console(
        file=file,
        width=_PLAIN_WIDTH,
        no_color=True,
        highlight=False,
        markup=False,
        emoji=False,
    )


def show(out: Console, renderable: Any) -> None:
    """Print, trimming the blanks rich pads plain rows with."""
    if out.is_terminal:
        out.print(renderable)
        return
    with out.capture() as captured:
        out.print(renderable)
    lines = captured.get().splitlines()
    out.file.write("".join(line.rstrip() + "\n" for line in lines))
    out.file.flush()


def clock(seconds: float) -> str:
    whole = round(seconds)
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def hits_table(hits: Sequence[dict[str, Any]], styled: bool) -> Table:
    """Search, similar or recommended tracks: rank, score, name, length, best part, path."""
    table = Table(
        box=None,
        pad_edge=False,
        show_edge=False,
        header_style="bold" if styled else "",
    )
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("score", justify="right", no_wrap=True, style="cyan" if styled else "")
    table.add_column("track", max_width=48, no_wrap=True, overflow="ellipsis")
    table.add_column("length", justify="right", no_wrap=True)
    table.add_column("best part", no_wrap=True)
    table.add_column("path", overflow="fold", style="dim" if styled else "")
    for rank, h in enumerate(hits, 1):
        title = h.get("title") or Path(h["path"]).stem
        name = f"{h['artist']} - {title}" if h.get("artist") else title
        seg = h["segments"][0] if h.get("segments") else None
        best = f"{clock(seg['start'])}-{clock(seg['end'])}" if seg else ""
        length = clock(h["duration"]) if h.get("duration") is not None else ""
        table.add_row(
            str(rank),
            f"{h['score']:.3f}",
            Text(printable(name)),
            length,
            best,
            Text(printable(str(h["path"]))),
        )
    return table


def print_hits(hits: Sequence[dict[str, Any]], file: TextIO | None = None) -> None:
    out = console(file)
    if not hits:
        out.file.write("no matching tracks\n")
        return
    show(out, hits_table(hits, styled=out.is_terminal))


# a clip's evidence as a bar of up to this many blocks, from the track's lowest to its highest
_BAR = 20


def located_table(located: dict[str, Any], styled: bool) -> Table:
    """`indexer locate`: every clip (start, end, score, a bar scaled from the track's lowest
    to its highest evidence) with the best segments' ranks beside the clips they cover."""
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold" if styled else "")
    table.add_column("start", justify="right", no_wrap=True)
    table.add_column("end", justify="right", no_wrap=True)
    table.add_column("score", justify="right", no_wrap=True, style="cyan" if styled else "")
    table.add_column("match", no_wrap=True)
    table.add_column("best", no_wrap=True)
    clips, segments = located["clips"], located["segments"]
    scores = [c["score"] for c in clips]
    low, high = (min(scores), max(scores)) if scores else (0.0, 0.0)
    for c in clips:
        share = (c["score"] - low) / (high - low) if high > low else 1.0
        ranks = [
            str(rank)
            for rank, seg in enumerate(segments, 1)
            if seg["start"] <= c["start"] and c["end"] <= seg["end"]
        ]
        table.add_row(
            clock(c["start"]),
            clock(c["end"]),
            f"{c['score']:.3f}",
            "#" * max(1, round(share * _BAR)),
            ",".join(ranks),
        )
    return table


def print_located(located: dict[str, Any], file: TextIO | None = None) -> None:
    """The track, its best segments (best first), then the per-clip timeline."""
    out = console(file)
    title = located.get("title") or Path(located["path"]).stem
    name = f"{located['artist']} - {title}" if located.get("artist") else title
    length = f" ({clock(located['duration'])})" if located.get("duration") is not None else ""
    out.file.write(f"{printable(name)}{length}  {printable(located['path'])}\n")
    best = ", ".join(
        f"{rank}. {clock(s['start'])}-{clock(s['end'])} ({s['score']:.3f})"
        for rank, s in enumerate(located["segments"], 1)
    )
    out.file.write(f"best parts: {best or 'none'}\n")
    show(out, located_table(located, styled=out.is_terminal))


class TerminalProgress:
    """`indexer index` progress on a terminal (stderr): a bar with files, hours of audio,
    speed against real time and the time left."""

    def __init__(self, file: TextIO | None = None) -> None:
        self.console = Console(file=file or sys.stderr, highlight=False, markup=False)
        self.progress = Progress(
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("files"),
            TextColumn("{task.fields[audio]}"),
            TextColumn("{task.fields[rate]}"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            refresh_per_second=4,
        )
        self.task: TaskID | None = None
        self.began = time.monotonic()

    def start(self, files: int) -> None:
        self.began = time.monotonic()
        if not files:
            return
        self.console.print(f"embedding {files} files")
        self.progress.start()
        self.task = self.progress.add_task("embed", total=files, audio="", rate="")

    def update(self, files_done: int, audio_seconds: float) -> None:
        if self.task is None:
            return
        rate = audio_seconds / max(time.monotonic() - self.began, 1e-6)
        self.progress.update(
            self.task,
            completed=files_done,
            audio=f"{audio_seconds / 3600:.2f} h audio",
            rate=f"{rate:.0f}x realtime",
        )

    def finish(self) -> None:
        if self.task is not None:
            self.progress.stop()
            self.task = None
