"""Tags as facets: what a tagged model's tagger hears in a track, stored in its payload.

A model with a tagger (collap-tagger: musicnn's MTT and MSD networks, 100 tags) gives every
clip K tag probabilities (`ClipEncoding.tags`, columns named by `CoLLAP.tag_names`). A facet
is a tag's name as people type it: the label's phrase (labels.phrase: "Hip-Hop" -> "hip hop",
"00s" -> "2000s"), case-folded. Both vocabularies name some tags ("guitar", "rock", "pop",
...); such a facet takes the larger probability of its columns in each clip.

The payload of a track embedded by a tagged model holds:
- `tags`: its facets, best first: the song-level score (the mean over its clips) of each,
  the best MAX_TAGS of those at least TAG_THRESHOLD (keyword index: the tag filter);
- `tag_scores`: those scores, in the same order;
- `tag_timeline`: per clip (in time order, as `clip_times`) its best TIMELINE_TAGS facets at
  least TAG_THRESHOLD, compactly: {"names": the facets it uses, "clips": [[[i, score], ...]]}
  with i an index into its own `names`, so the payload needs no vocabulary to be read.
A model without a tagger (collap-mini) writes none of these: such tracks have no tags, and a
tag filter matches none of them.

Torch-free: the API's schema and the CLI's filter parsing import this module.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import Any

import numpy as np

# musicnn's probabilities run low on whole songs: for four synthetic songs (ambient, rock,
# electronic, jazz) the best song-level score was 0.25..0.45 and the tenth best 0.10..0.12
TAG_THRESHOLD = 0.1
MAX_TAGS = 10  # facets kept per track
TIMELINE_TAGS = 3  # facets kept per clip in the timeline
SCORE_DIGITS = 3
# a facet is at most this long (the longest musicnn label has 16 characters)
MAX_TAG_CHARS = 64
TAG_FIELDS = ("tags", "tag_scores", "tag_timeline")


def facet(label: str) -> str:
    """A tagger label -> its facet name: the phrase it stands for, case-folded, single-spaced."""
    from collap_model.tagger.labels import phrase

    return " ".join(phrase(label).casefold().split())


def tag_value(text: str) -> str:
    """A tag a filter names -> the facet it matches (case and blanks as `facet` makes them);
    ValueError for an empty one, one over MAX_TAG_CHARS, or one with control characters."""
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") for ch in text):
        raise ValueError("a tag must not hold control or unassigned characters")
    value = " ".join(text.casefold().split())
    if not value:
        raise ValueError("a tag must not be empty")
    if len(value) > MAX_TAG_CHARS:
        raise ValueError(f"a tag is at most {MAX_TAG_CHARS} characters")
    return value


class Facets:
    """The facets of one model's tag columns: clip probabilities (N, K) -> payload fields."""

    def __init__(self, tag_names: Sequence[str]) -> None:
        names = [facet(label) for label in tag_names]
        self.names: list[str] = list(dict.fromkeys(names))  # first appearance order
        position = {name: i for i, name in enumerate(self.names)}
        self.column_facet = np.array([position[n] for n in names], dtype=np.int64)  # (K,)

    def of_clips(self, probabilities: np.ndarray) -> np.ndarray:
        """Clip tag probabilities (N, K) -> facet scores (N, F): each facet's best column."""
        out = np.zeros((probabilities.shape[0], len(self.names)), dtype=np.float32)
        np.maximum.at(out.T, self.column_facet, probabilities.T.astype(np.float32))
        return out

    def payload(self, probabilities: np.ndarray) -> dict[str, Any]:
        """Clip tag probabilities (N, K), clips in time order -> `tags`, `tag_scores` and
        `tag_timeline` (module doc)."""
        clips = self.of_clips(probabilities)  # (N, F)
        song = clips.mean(axis=0) if clips.shape[0] else np.zeros(len(self.names))  # (F,)
        best = [int(i) for i in np.argsort(-song, kind="stable")[:MAX_TAGS]]
        kept = [i for i in best if song[i] >= TAG_THRESHOLD]
        used: dict[int, int] = {}  # facet -> its index in the timeline's names
        rows = []
        for row in clips:
            top = [int(i) for i in np.argsort(-row, kind="stable")[:TIMELINE_TAGS]]
            top = [i for i in top if row[i] >= TAG_THRESHOLD]
            rows.append([[used.setdefault(i, len(used)), _score(row[i])] for i in top])
        return {
            "tags": [self.names[i] for i in kept],
            "tag_scores": [_score(song[i]) for i in kept],
            "tag_timeline": {"names": [self.names[i] for i in used], "clips": rows},
        }


def _score(value: float) -> float:
    return round(float(value), SCORE_DIGITS)


def shown_tags(payload: dict[str, Any]) -> dict[str, float]:
    """A stored track's tags as {facet: score}, best first ({} when its model had no tagger)."""
    tags, scores = payload.get("tags") or [], payload.get("tag_scores") or []
    return {str(t): float(s) for t, s in zip(tags, scores, strict=False)}


def shown_timeline(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """A stored track's tag timeline as one {"start", "end", "tags": {facet: score}} per clip,
    in time order ([] when its model had no tagger)."""
    timeline = payload.get("tag_timeline")
    if not isinstance(timeline, dict):
        return []
    names = timeline.get("names", [])
    times = payload.get("clip_times", [])
    return [
        {"start": t[0], "end": t[1], "tags": {names[i]: s for i, s in row}}
        for t, row in zip(times, timeline.get("clips", []), strict=False)
    ]


def shown_track(payload: dict[str, Any]) -> dict[str, Any]:
    """A track's public payload with its tags and timeline in their shown form."""
    out = {k: v for k, v in payload.items() if k not in TAG_FIELDS}
    out["tags"] = shown_tags(payload)
    out["tag_timeline"] = shown_timeline(payload)
    return out
