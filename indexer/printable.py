"""Text from outside (file names, tags, decoder messages, settings) made safe to print.

Everything the CLI shows a person goes through `printable`: a file named
`evil\\x1b]0;PWNED\\x07\\x1b[2J.mp3` must not retitle the terminal or clear it. No imports
beyond the standard library, so error paths and `--help` stay light.
"""

from __future__ import annotations

import unicodedata

# bidirectional overrides and isolates: they reorder what the terminal shows ("Trojan Source")
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def printable(text: str) -> str:
    """`text` with control characters (C0, DEL, C1), bidi overrides and lone surrogates written
    as escapes; the bytes of a file name that are not UTF-8 (U+DC80..U+DCFF, as Python reads
    them) as the byte, `\\xff`, as the store shows them (indexer.store.base.stored_path)."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        kind = unicodedata.category(ch)
        if kind in ("Cc", "Cs") or ch in _BIDI:
            code = ord(ch)
            if 0xDC80 <= code <= 0xDCFF:
                code -= 0xDC00
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)
