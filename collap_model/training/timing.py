"""Times that texts state, for localisation: evaluation here, and the training loss.

Captions narrate a song with m:ss timestamps ("At 1:05 the chorus brings in drums.", "The
verse arrives at 0:16, ...", "1:14: the hook section, ..."); a timed sentence is one that
states exactly one. Its text without the time is what a model must place: with the digits
left in, a model could read the time instead of listening. Timed short queries ("flute comes
in") carry their second in the manifest (`timed_queries`, collap_model/synth/dataset.py).

A time's clip is the last clip that starts at or before it: clips overlap (10 s every 5 s),
and that one holds the moment in its first half, where a change is heard in full.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

# sentences end at . ; ! or ? followed by space (the captions' punctuation)
_SENTENCE_END = re.compile(r"(?<=[.;!?])\s+")
_TIME = re.compile(r"\b(\d{1,2}):([0-5]\d)\b")
# a time with the words that introduce it in the phrasebooks ("at roughly 1:05", "by 1:05",
# "next, from 1:05,"), and a colon right after it ("1:14: the hook")
_TIME_PHRASE = re.compile(
    r"(?:\b(?:at\s+roughly|at|around|close\s+to|by|from|where\s+at)\s+)?"
    r"\b\d{1,2}:[0-5]\d\b(?:\s*:(?!\d))?",
    re.IGNORECASE,
)


def strip_time(sentence: str) -> tuple[str, float | None]:
    """A sentence -> (the sentence without its time phrase, the time in seconds), or
    (the sentence unchanged, None) when it states no time or more than one."""
    found = _TIME.findall(sentence)
    if len(found) != 1:
        return sentence, None
    minutes, seconds = found[0]
    text = _TIME_PHRASE.sub(" ", sentence, count=1)
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s+([,.;:!?])", r"\1", text)  # "arrives , featuring" -> "arrives, ..."
    text = re.sub(r"([,;:])(?:\s*[,;:])+", r"\1", text)  # "Next, , the stanza" -> "Next, the"
    text = text.strip().lstrip(",;: ").strip()
    first = sentence.lstrip()[:1]
    if text and (first.isupper() or first.isdigit()):  # it began the sentence, so does this
        text = text[0].upper() + text[1:]
    return text, float(int(minutes) * 60 + int(seconds))


def caption_times(caption: str) -> list[tuple[str, float]]:
    """(sentence without its time, seconds) for each sentence of a caption stating one time."""
    out = []
    for sentence in _SENTENCE_END.split(caption):
        text, seconds = strip_time(sentence)
        if seconds is not None and text:
            out.append((text, seconds))
    return out


def query_times(entry: Any) -> list[tuple[str, float]]:
    """(query, seconds) for a manifest entry's `timed_queries` (none: [])."""
    raw = _field(entry, "timed_queries") or []
    return [(str(q["text"]), float(q["time"])) for q in raw]


def timed_texts(entry: Any) -> list[tuple[str, float]]:
    """Every (text, seconds) an entry states: its caption's timed sentences (without the
    time), then its timed short queries. `entry` is a ManifestEntry or a manifest object."""
    return caption_times(str(_field(entry, "caption") or "")) + query_times(entry)


def target_clip(seconds: float, clip_times: Any) -> int:
    """The clip a time falls in: the last whose start is at or before it (0 before the first).
    `clip_times` (N, 2) start and end seconds, as an array, a tensor or nested lists."""
    starts = np.asarray(clip_times, dtype=np.float64).reshape(-1, 2)[:, 0]
    before = np.flatnonzero(starts <= seconds + 1e-6)
    return int(before[-1]) if before.size else 0


def _field(entry: Any, name: str) -> Any:
    if isinstance(entry, Mapping):
        return entry.get(name)
    value = getattr(entry, name, None)
    if value is None:  # a pydantic model keeps unknown manifest keys as extras
        extra = getattr(entry, "model_extra", None) or {}
        value = extra.get(name)
    return value
