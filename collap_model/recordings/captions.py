"""Captions the machine writes for a real recording: what the tagger hears, section by section,
with the measured loudness, density, tempo and the times the music changes.

CoLLAP's captions were written by music language models and augmented with the songs'
temporal structure; here the tagger stands in for the language model. Per track:
    the tags that stand out: a tag counts where its probability is at least FLOOR and its
    z-score (against all clips of the corpus) at least 0.5; the track's and each section's
    strongest tags, grouped as genres, instruments, voice and moods
    the measured curves (analysis.py): level and density per section, tempo, boundaries
and the caption narrates them with timestamps ("At 1:05 drums come in and it gets louder.").
Short queries (5-15 words) pair what the track is with one thing that happens in it.
Wording is drawn from several phrasings with a generator seeded by the track, so it varies
across tracks and repeats exactly for one.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

import numpy as np

from collap_model.recordings.analysis import TrackAnalysis
from collap_model.tagger.labels import phrase

FLOOR = 0.15  # least tag probability worth saying
STANDOUT = 0.5  # least z-score (against the corpus) worth saying
QUERY_WORDS = (5, 15)

_GENRE = {
    "classical", "techno", "electronic", "rock", "ambient", "indian", "pop", "new age", "dance",
    "country", "metal", "alternative", "indie", "jazz", "alternative rock", "classic rock",
    "soul", "indie rock", "electronica", "folk", "punk", "blues", "hard rock", "experimental",
    "Hip-Hop", "funk", "electro", "heavy metal", "Progressive rock", "rnb", "indie pop",
    "House", "chillout", "easy listening", "opera", "choral",
}  # fmt: skip
_INSTRUMENT = {
    "guitar": "guitar", "strings": "strings", "drums": "drums", "piano": "piano",
    "violin": "violin", "synth": "synthesizer", "harpsichord": "harpsichord", "flute": "flute",
    "sitar": "sitar", "harp": "harp", "cello": "cello", "beat": "a beat", "beats": "beats",
    "choir": "a choir",
}  # fmt: skip
_VOICE = {
    "vocal": "vocals", "vocals": "vocals", "singing": "singing", "voice": "a voice",
    "female": "a female voice", "male": "a male voice", "woman": "a woman singing",
    "man": "a man singing", "male vocal": "male vocals", "female vocal": "female vocals",
    "male voice": "a male voice", "female voice": "a female voice",
    "female vocalists": "female vocals", "male vocalists": "male vocals",
    "female vocalist": "a female singer",
}  # fmt: skip
_MOOD = {
    "slow": "slow", "fast": "fast", "loud": "loud", "quiet": "quiet", "soft": "soft",
    "beautiful": "beautiful", "Mellow": "mellow", "chill": "relaxed", "sad": "sad",
    "happy": "happy", "sexy": "sensual", "catchy": "catchy", "party": "upbeat", "weird": "strange",
    "acoustic": "acoustic", "instrumental": "instrumental", "solo": "solo",
}  # fmt: skip
_SKIP = {
    "no vocals",
    "no vocal",
    "no voice",
    "classic",
    "00s",
    "60s",
    "70s",
    "80s",
    "90s",
    "oldies",
}

_PIECE = ("piece", "track", "tune", "recording", "song")
_OPEN = (
    "It opens {how}.",
    "The track begins {how}.",
    "At the start it is {how_adj}.",
)
_CHANGE = (
    "At {t} {what}.",
    "Around {t} {what}.",
    "From {t} {what}.",
    "By {t} {what}.",
)


@dataclass(frozen=True)
class Standout:
    """The tags worth saying of a stretch of a track, strongest first, by group."""

    genres: list[str]
    instruments: list[str]
    voice: list[str]
    moods: list[str]

    def words(self) -> set[str]:
        return {*self.genres, *self.instruments, *self.voice, *self.moods}


def standout(probs: np.ndarray, z: np.ndarray, labels: tuple[str, ...], limit: int = 3) -> Standout:
    """Tags of one stretch: mean probabilities (K,) and z-scores (K,) over its clips."""
    seen: dict[str, float] = {}
    for k in np.argsort(-z):
        label = labels[k]
        if probs[k] < FLOOR or z[k] < STANDOUT or label in _SKIP:
            continue
        seen.setdefault(label, float(z[k]))
    groups: dict[str, list[str]] = {"g": [], "i": [], "v": [], "m": []}
    for label in seen:
        for key, table in (("i", _INSTRUMENT), ("v", _VOICE), ("m", _MOOD)):
            if label in table and table[label] not in groups[key]:
                groups[key].append(table[label])
                break
        else:
            if label in _GENRE and phrase(label).lower() not in groups["g"]:
                groups["g"].append(phrase(label).lower())
    return Standout(*(groups[k][:limit] for k in "givm"))


@dataclass(frozen=True)
class Part:
    """One measured section of a track."""

    start: float
    end: float
    tags: Standout
    level: str  # quiet | moderately loud | loud
    density: str  # sparse | steady | busy
    db: float  # mean level, dBFS


def clock(seconds: float) -> str:
    total = int(seconds + 0.5)
    return f"{total // 60}:{total % 60:02d}"


_PLURAL = {"drums", "strings", "vocals", "beats", "male vocals", "female vocals"}


def _verb(items: list[str], singular: str, plural: str) -> str:
    """The verb form that agrees with a list of instruments ("flute enters", "drums enter")."""
    return plural if len(items) > 1 or items[0] in _PLURAL else singular


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _level(db: float, lo: float, hi: float) -> str:
    """A section's level in words, against the track's quietest and loudest seconds."""
    span = max(hi - lo, 1e-6)
    share = (db - lo) / span
    return "quiet" if share < 0.45 else "loud" if share > 0.8 else "moderately loud"


def _density(rate: float) -> str:
    return "sparse" if rate < 1.5 else "busy" if rate > 4.0 else "steady"


def _tempo_words(bpm: float | None, rng: random.Random) -> str:
    if bpm is None:
        return rng.choice(("with no steady beat", "in free time", "without a clear pulse"))
    feel = "slow" if bpm < 85 else "fast" if bpm > 135 else "moderate"
    return f"at a {feel} tempo (about {round(bpm)} BPM)"


@dataclass(frozen=True)
class RecordingText:
    caption: str
    queries: list[str]
    sections: list[dict[str, object]]


def describe_recording(
    analysis: TrackAnalysis,
    clip_times: np.ndarray,
    clip_probs: np.ndarray,
    clip_z: np.ndarray,
    labels: tuple[str, ...],
    seed: str,
    queries: int = 8,
) -> RecordingText:
    """Caption, queries and measured sections of one recording.

    clip_times (N, 2) seconds; clip_probs, clip_z (N, K): each clip's tag probabilities and
    their z-scores against the corpus."""
    rng = random.Random(f"{seed}:recording")
    centre = clip_times.mean(axis=1)
    whole = standout(clip_probs.mean(axis=0), clip_z.mean(axis=0), labels)
    lo, hi = float(np.percentile(analysis.loudness, 5)), float(np.percentile(analysis.loudness, 95))
    parts = []
    for start, end in analysis.sections():
        distance = np.abs(centre - (start + end) / 2)
        inside = (centre >= start) & (centre < end)
        if not inside.any():
            inside = distance == distance.min()
        db = analysis.mean_over(analysis.loudness, start, end)
        parts.append(Part(
            start, end, standout(clip_probs[inside].mean(0), clip_z[inside].mean(0), labels),
            _level(db, lo, hi), _density(analysis.mean_over(analysis.onsets, start, end)), db,
        ))  # fmt: skip
    sentences = [_overview(whole, analysis.tempo, rng)]
    how_adj = f"{parts[0].level} and {parts[0].density}"
    with_ = _join(parts[0].tags.instruments[:2])
    how = how_adj + (f", with {with_}" if with_ else "")
    sentences.append(rng.choice(_OPEN).format(how=how, how_adj=how_adj))
    events: list[tuple[float, str]] = []
    for prev, cur in itertools.pairwise(parts):
        what = _change(prev, cur, rng)
        sentences.append(rng.choice(_CHANGE).format(t=clock(cur.start), what=what))
        events.append((cur.start, what))
    sentences.append(_ending(analysis, rng))
    caption = " ".join(s[:1].upper() + s[1:] for s in sentences)
    sections: list[dict[str, object]] = [
        {"name": f"part {i + 1}", "start": round(p.start, 3), "end": round(p.end, 3),
         "level": p.level, "density": p.density, "tags": sorted(p.tags.words())}
        for i, p in enumerate(parts)
    ]  # fmt: skip
    return RecordingText(caption, _queries(whole, events, analysis, rng, queries), sections)


def _genre(whole: Standout) -> str:
    return whole.genres[0] if whole.genres else "instrumental"


def _overview(whole: Standout, tempo: float | None, rng: random.Random) -> str:
    genre = _genre(whole)
    adjectives = [m for m in whole.moods[:2] if m != genre]
    head = " ".join([*adjectives, genre, rng.choice(_PIECE)])
    words = [("An " if head[0] in "aeiou" else "A ") + head]
    if len(whole.genres) > 1:
        words.append(f"that also draws on {_join(whole.genres[1:3])}")
    if whole.instruments:
        words.append(f"with {_join(whole.instruments)}")
    if whole.voice:
        words.append(f"and {whole.voice[0]}" if whole.instruments else f"with {whole.voice[0]}")
    return f"{' '.join(words)}, played {_tempo_words(tempo, rng)}."


def _change(prev: Part, cur: Part, rng: random.Random) -> str:
    said = []
    before, after = prev.tags, cur.tags
    came = [x for x in after.instruments + after.voice if x not in before.words()]
    left = [x for x in before.instruments + before.voice if x not in after.words()]
    if came:
        came = came[:2]
        verbs = rng.choice((("comes in", "come in"), ("enters", "enter"), ("joins in", "join in")))
        said.append(f"{_join(came)} {_verb(came, *verbs)}")
    if left:
        left = left[:2]
        verbs = rng.choice(
            (("drops out", "drop out"), ("falls away", "fall away"), ("stops", "stop"))
        )
        said.append(f"{_join(left)} {_verb(left, *verbs)}")
    db = cur.db - prev.db
    if db > 3:
        said.append(rng.choice(("it gets louder", "the music swells", "the volume rises")))
    elif db < -3:
        said.append(rng.choice(("it gets quieter", "the music softens", "the volume drops")))
    if cur.density != prev.density:
        said.append(f"the texture turns {cur.density}")
    if not said:
        said.append(rng.choice(("a new section begins", "the music moves to a new part",
                                "the piece changes course")))  # fmt: skip
    return _join(said)


def _ending(analysis: TrackAnalysis, rng: random.Random) -> str:
    tail = analysis.loudness[-10:]
    if tail.size >= 4 and tail[-1] < tail[0] - 10:
        return rng.choice(
            ("It fades out at the end.", "The track fades away.", "It ends by fading out.")
        )
    if analysis.loudness[-3:].mean() > np.percentile(analysis.loudness, 60):
        return rng.choice(("It ends abruptly.", "It stops suddenly at full strength."))
    return rng.choice(("It ends quietly.", "The last part winds down.", "It closes softly."))


def _queries(
    whole: Standout,
    events: list[tuple[float, str]],
    analysis: TrackAnalysis,
    rng: random.Random,
    count: int,
) -> list[str]:
    heads = []
    genre = _genre(whole)
    if whole.instruments:
        heads.append(f"{genre} music with {_join(whole.instruments[:2])}")
        heads.append(f"{genre} track featuring {whole.instruments[0]}")
    moods = [m for m in whole.moods[:2] if m != genre]
    if moods:
        heads.append(f"{' '.join(moods)} {genre} music")
    if whole.voice:
        heads.append(f"{genre} song with {whole.voice[0]}")
    heads.append(f"{genre} music {_tempo_words(analysis.tempo, rng).split(' (')[0]}")
    facts = [f"where at {clock(t)} {what}" for t, what in events]
    facts.append("that " + _ending(analysis, rng).lower().removeprefix("it ").rstrip("."))
    out: list[str] = []
    for i in range(count * 3):
        if len(out) == count:
            break
        head = heads[i % len(heads)]
        text = head if i < len(heads) and rng.random() < 0.4 else f"{head} {rng.choice(facts)}"
        n = len(text.split())
        if QUERY_WORDS[0] <= n <= QUERY_WORDS[1] and text not in out:
            out.append(text)
    return out or [heads[0]]
