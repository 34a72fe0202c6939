from __future__ import annotations

import os
import subprocess
import sys

from indexer.printable import printable


def test_printable_escapes_what_a_terminal_would_obey() -> None:
    assert printable("Ann - Blue (caf\u00e9) \u266b") == "Ann - Blue (caf\u00e9) \u266b"
    assert printable("evil\x1b]0;PWNED\x07\x1b[2J.mp3") == "evil\\x1b]0;PWNED\\x07\\x1b[2J.mp3"
    assert printable("x\x9by\u202ez") == "x\\x9by\\u202ez"  # C1 escape, bidi override
    # a name that is not UTF-8, as os.fsdecode gives it: its bytes escaped, as the store shows it
    name = os.fsdecode(b"bad\xffname.mp3")
    assert printable(name) == "bad\\xffname.mp3"
    printable(name).encode("utf-8")


def test_a_non_utf8_name_in_an_error_is_one_printable_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    missing = os.path.join(os.fsencode(tmp_path), b"gone\xff\x1b[2J.mp3")
    out = subprocess.run(
        [sys.executable.encode(), b"-m", b"indexer.cli", b"index", missing],
        capture_output=True,
        env={**os.environ, "INDEXER_DATA_DIR": str(tmp_path / "data"), "PYTHONIOENCODING": "utf-8"},
        timeout=120,
    )
    assert out.returncode == 2 and b"Traceback" not in out.stderr
    assert out.stderr.endswith(b"gone\\xff\\x1b[2J.mp3\n") and out.stderr.count(b"\n") == 1
