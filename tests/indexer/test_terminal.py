"""What the CLI shows a person: the hits table and `indexer index` progress through rich, styled
on a terminal (a real pseudo-terminal here) and plain text anywhere else."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import sys
from pathlib import Path

from indexer.terminal import print_hits, printable
from tests.indexer.fixtures import write_audio

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
EVIL_TITLE = "Evil\x1b]0;pwned\x07 [bold]x[/bold]"


def hit(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "id": "1",
        "score": 0.5234,
        "path": "/music/ann/blue.flac",
        "title": "Blue",
        "artist": "Ann",
        "duration": 222.0,
        "segments": [{"start": 80.0, "end": 100.0, "score": 0.4}],
    }
    return {**base, **fields}


def test_printable_escapes_control_characters() -> None:
    assert printable("Blue") == "Blue"
    assert printable("caf\u00e9 \u266b") == "caf\u00e9 \u266b"
    assert printable("a\x1b[2Jb\x07\r\n\x7f") == "a\\x1b[2Jb\\x07\\x0d\\x0a\\x7f"
    assert printable("x\x9by") == "x\\x9by"  # C1: the 8-bit escape
    assert printable("Ann\u202eoN") == "Ann\\u202eoN"  # a bidi override


def test_plain_table_when_not_a_terminal() -> None:
    out = io.StringIO()
    long_path = "/music/" + "x" * 300 + ".flac"
    print_hits(
        [hit(), hit(title=EVIL_TITLE, artist=None, duration=None, segments=[], path=long_path)],
        out,
    )
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and not ANSI.search(out.getvalue())
    assert lines[0].split() == ["#", "score", "track", "length", "best", "part", "path"]
    row = ["1", "0.523", "Ann", "-", "Blue", "3:42", "1:20-1:40", "/music/ann/blue.flac"]
    assert lines[1].split() == row
    # catalog text is escaped and never read as markup; a long path stays on one line
    assert "Evil\\x1b]0;pwned\\x07 [bold]x[/bold]" in lines[2]
    assert lines[2].endswith(long_path)
    assert all(line == line.rstrip() for line in lines)
    empty = io.StringIO()
    print_hits([], empty)
    assert empty.getvalue() == "no matching tracks\n"


def env_for(data_dir: Path) -> dict[str, str]:
    return {
        "INDEXER_DATA_DIR": str(data_dir),
        "INDEXER_DECODE_WORKERS": "1",
        "HF_HUB_OFFLINE": "1",
        "PATH": "/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/tmp"),
        "TERM": "xterm-256color",
        "COLUMNS": "120",
    }


def on_a_terminal(args: list[str], env: dict[str, str], stream: str) -> tuple[int, str, str]:
    """Run the CLI with `stream` (stdout or stderr) on a pseudo-terminal; the other is a pipe.
    Returns the exit code, what the terminal showed, and the piped stream."""
    leader, follower = pty.openpty()
    other = subprocess.PIPE
    proc = subprocess.Popen(
        [sys.executable, "-m", "indexer.cli", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=follower if stream == "stdout" else other,
        stderr=follower if stream == "stderr" else other,
    )
    os.close(follower)
    shown = bytearray()
    while True:
        ready, _, _ = select.select([leader], [], [], 120)
        if not ready:
            proc.kill()
            raise AssertionError("the command went quiet for 120 s")
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the command is done
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    piped = (proc.stdout if stream == "stderr" else proc.stderr).read()  # type: ignore[union-attr]
    return proc.wait(timeout=60), shown.decode(errors="replace"), piped.decode()


def test_index_progress_and_tables_on_a_terminal_and_off(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    write_audio(catalog / "evil.flac", 12.0, seed=1, tags={"title": EVIL_TITLE})
    write_audio(catalog / "plain.mp3", 12.0, seed=2, tags={"title": "Plain", "artist": "Bob"})
    env = env_for(tmp_path / "data")
    code, shown, summary = on_a_terminal(["index", str(catalog)], env, "stderr")
    assert code == 0, shown
    assert "embedding 2 files" in shown
    assert re.search(r"2/2 files .*h audio .*x realtime", ANSI.sub("", shown)), shown
    assert summary.startswith("indexed 2, unchanged 0, failed 0")
    # the table on a terminal: styled, and the title's escape sequence shown, not obeyed
    code, shown, _ = on_a_terminal(["query", "music", "--limit", "2"], env, "stdout")
    assert code == 0, shown
    assert ANSI.search(shown) and "\x1b]0;" not in shown and "\x07" not in shown
    assert "Evil\\x1b]0;pwned\\x07 [bold]x[/bold]" in ANSI.sub("", shown)
    # off a terminal: no progress at all, and a plain table
    again = subprocess.run(
        [sys.executable, "-m", "indexer.cli", "index", str(catalog)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert again.returncode == 0 and again.stderr == ""
    plain = subprocess.run(
        [sys.executable, "-m", "indexer.cli", "query", "music", "--limit", "2"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert plain.returncode == 0 and not ANSI.search(plain.stdout)
    assert "Evil\\x1b]0;pwned\\x07" in plain.stdout and "\x1b" not in plain.stdout


def test_help_imports_nothing_heavy() -> None:
    code = (
        "import sys\nfrom indexer.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'rich', 'fastapi', 'qdrant_edge') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"
