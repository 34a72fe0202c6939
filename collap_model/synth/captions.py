"""Text for a song plan: a long caption narrating its sections with timestamps, and short queries.

Everything said is read off the plan, so it is true of the rendered audio; every timestamp
(m:ss) is a section start. The wording comes from a phrasebook (phrases.py): TRAIN for
training data, HELDOUT (disjoint templates and synonyms) for evaluation only.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from collap_model.synth.palette import DRUM_KIT, Groove, Role
from collap_model.synth.phrases import PHRASEBOOKS, Phrasebook
from collap_model.synth.structure import (
    LEVELS,
    Key,
    Section,
    SectionKind,
    Shape,
    SongPlan,
    SynthError,
)

CAPTION_WORDS = (150, 400)  # inclusive bounds on the long caption's length
QUERY_WORDS = (5, 15)  # inclusive bounds on each query's length
QUERIES = 5

_NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_ROMAN = ("i", "ii", "iii", "iv", "v", "vi", "vii")
# chord qualities on each scale degree (True: major); the minor dominant is raised to major
_MAJOR_QUALITY = (True, False, False, True, True, False, False)
_MINOR_QUALITY = (False, False, True, False, True, True, True)


@dataclass(frozen=True)
class SongText:
    caption: str
    queries: list[str]
    # short queries for one moment each, with the second it starts (localisation)
    timed: list[tuple[str, float]] = field(default_factory=list)


def clock(seconds: float) -> str:
    """m:ss, rounded to the nearest second (how captions write a section start)."""
    total = int(seconds + 0.5)
    return f"{total // 60}:{total % 60:02d}"


def words(text: str) -> int:
    return len(text.split())


def describe(plan: SongPlan, phrasing: str = "train", queries: int = QUERIES) -> SongText:
    """The caption and `queries` short queries of `plan`, worded from the named phrasebook.

    Deterministic: the wording is drawn from `random.Random` seeded by the song seed and the
    phrasebook's name.
    """
    book = PHRASEBOOKS.get(phrasing)
    if book is None:
        raise SynthError(f"unknown phrasing {phrasing!r}; use one of {', '.join(PHRASEBOOKS)}")
    rng = random.Random(f"{plan.seed}:{book.name}:text")
    text = _Writer(plan, book, rng)
    caption, short = text.caption(), text.queries(queries)
    # their own generator, so captions and queries read as they did before timed queries
    timed = _Writer(plan, book, random.Random(f"{plan.seed}:{book.name}:timed")).timed_queries()
    return SongText(caption, short, timed)


def _article(phrase: str) -> str:
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _roman(key: Key, progression: Sequence[int]) -> str:
    quality = _MAJOR_QUALITY if key.mode == "major" else _MINOR_QUALITY
    return "-".join(_ROMAN[d % 7].upper() if quality[d % 7] else _ROMAN[d % 7] for d in progression)


def _length_words(seconds: float) -> str:
    halves = max(1, round(seconds / 30))
    whole, half = divmod(halves, 2)
    if whole == 0:
        return "half a minute"
    if whole == 1:
        return "a minute and a half" if half else "a minute"
    name = _NUMBERS[whole] if whole < len(_NUMBERS) else str(whole)
    return f"{name} and a half minutes" if half else f"{name} minutes"


class _Writer:
    def __init__(self, plan: SongPlan, book: Phrasebook, rng: random.Random) -> None:
        self.plan = plan
        self.book = book
        self.rng = rng
        names = sorted({p.name for s in plan.sections for p in s.parts})
        # one name per instrument for the whole text, so a caption never renames one midway
        self.alias = {n: rng.choice(book.aliases.get(n, (n,))) for n in names}
        self.section_word = {k: rng.choice(v) for k, v in book.sections.items()}
        self.style = rng.choice(book.styles[plan.style])
        self.mood = rng.choice(book.moods[plan.key.mode])
        bins = (75, 100, 125)
        self.pace = rng.choice(book.paces[sum(plan.tempo >= b for b in bins)])
        ranked = sorted(names, key=lambda n: (-sum(n in s.instruments for s in plan.sections), n))
        self.ranked = ranked
        self.palette = [self.alias[n] for n in ranked]  # most present first
        # pitched instruments: "a jazz tune featuring drums" says little about its sound
        self.main = [self.alias[n] for n in ranked if n != DRUM_KIT]

    # -- helpers --------------------------------------------------------------------------

    def pick(self, options: Sequence[str], **fields: object) -> str:
        return self.rng.choice(options).format(**fields)

    def join(self, names: Sequence[str]) -> str:
        return self._plain_join([self.alias.get(n, n) for n in names])

    def level(self, marking: str) -> str:
        return self.rng.choice(self.book.levels[marking])

    def section_name(self, section: Section) -> str:
        word = self.section_word[section.kind]
        if section.number > 1 and section.kind in (SectionKind.VERSE, SectionKind.CHORUS):
            ordinal = self.book.ordinals[min(section.number, len(self.book.ordinals) + 1) - 2]
            return f"{ordinal} {word}"
        return word

    def common(self) -> dict[str, object]:
        mood = self.mood
        return {
            "a_mood": _article(mood),
            "mood": mood,
            "pace": self.pace,
            "style": self.style,
            "key": self.plan.key.name,
            "tempo": self.plan.tempo,
            "meter": str(self.plan.meter),
            "length": self.pick(self.book.lengths, words=_length_words(self.plan.duration)),
        }

    # -- caption --------------------------------------------------------------------------

    def caption(self) -> str:
        """Core sentences (overview, one narration per section, ending) always; optional
        detail sentences are added in a random order up to a random target length."""
        book = self.book
        sections = self.plan.sections
        core: list[list[str]] = [[_sentence(self.pick(book.overview, **self.common()))]]
        extras: list[tuple[int, str]] = []
        form = [self.section_word[s.kind] for s in sections]
        extras.append((0, self.pick(book.structure, form=self._plain_join(form))))
        extras.append((0, self.pick(book.palette, all_parts=self._plain_join(self.palette))))
        # many sections: shorter narrations so the core leaves room for a few details
        terse = len(sections) > 8
        for i, section in enumerate(sections):
            prev = sections[i - 1] if i else None
            core.append(self.narrate(section, prev, terse))
            extras += [(i + 1, text) for text in self.details(section, prev)]
        last = sections[-1]
        if last.shape is Shape.FADE:
            core.append([self.pick(book.ending_fade)])
        else:
            core.append([self.pick(book.ending_chord, tonic=last.key.name)])

        low, high = CAPTION_WORDS
        total = sum(words(s) for group in core for s in group)
        if total > high:
            raise SynthError(f"song {self.plan.seed}: caption core has {total} words (> {high})")
        target = self.rng.randint(low + 20, min(high - 30, max(low + 40, total + 120)))
        self.rng.shuffle(extras)
        chosen: list[tuple[int, str]] = []
        for slot, text in extras:
            n = words(text)
            if total >= target or total + n > high:
                continue
            chosen.append((slot, text))
            total += n
        if total < low:
            raise SynthError(f"song {self.plan.seed}: caption has only {total} words (< {low})")
        for slot, text in chosen:
            # each detail goes after its section's core sentences (first detail first)
            core[slot].append(text)
        return " ".join(s for group in core for s in group)

    def _plain_join(self, items: Sequence[str]) -> str:
        if len(items) <= 2:
            return " and ".join(items)
        return ", ".join(items[:-1]) + self.book.and_ + items[-1]

    def narrate(self, s: Section, prev: Section | None, terse: bool = False) -> list[str]:
        book = self.book
        level_phrase = self.pick(book.level_phrase, level=self.level(s.levels[0]))
        names = [n for n in s.instruments if n != DRUM_KIT]
        out: list[str] = []
        if prev is None:
            parts = self.join(s.instruments)
            out.append(
                _sentence(
                    self.pick(
                        book.opening,
                        section=self.section_name(s),
                        parts=parts,
                        level_phrase=level_phrase,
                    )
                )
            )
        else:
            before = [n for n in prev.instruments if n != DRUM_KIT]
            entering = [n for n in names if n not in before]
            leaving = [n for n in before if n not in names]
            if len(entering) + len(leaving) > max(2, len(names)) or not before:
                texture = self.pick(book.texture_all, parts=self.join(names))
            elif entering or leaving:
                bits = []
                if entering:
                    bits.append(self.pick(book.texture_enter, entering=self.join(entering)))
                if leaving:
                    bits.append(self.pick(book.texture_leave, leaving=self.join(leaving)))
                texture = " and ".join(bits)
            else:
                texture = self.pick(book.texture_same)
            out.append(
                _sentence(
                    self.pick(
                        book.head_short if terse else book.head,
                        t=clock(s.start),
                        section=self.section_name(s),
                        texture=texture,
                        level_phrase=level_phrase,
                    )
                )
            )
        if prev is None and s.tempo != self.plan.tempo:
            out.append(self.pick(book.opening_slow, tempo=s.tempo))
        was_drums = prev is not None and prev.has_drums
        if s.has_drums and not was_drums:
            out.append(self.pick(book.drums_in, groove=self.groove(s.groove)))
        elif was_drums and not s.has_drums:
            out.append(self.pick(book.drums_out))
        elif prev is not None and s.has_drums and s.groove is not prev.groove and not terse:
            out.append(self.pick(book.groove_change, groove=self.groove(s.groove)))
        if prev is not None and s.tempo != prev.tempo_end:
            options = book.tempo_up if s.tempo > prev.tempo_end else book.tempo_down
            out.append(self.pick(options, tempo=s.tempo))
        if s.tempo_end != s.tempo:
            options = book.accelerando if s.tempo_end > s.tempo else book.ritardando
            out.append(self.pick(options, tempo=s.tempo, tempo_end=s.tempo_end))
        if prev is not None and s.key != prev.key:
            out.append(self.pick(book.key_change, key=s.key.name))
        if prev is not None and s.meter != prev.meter:
            out.append(self.pick(book.meter_change, meter=str(s.meter)))
        l0, l1 = (self.level(x) for x in s.levels)
        match s.shape:
            case Shape.CRESCENDO:
                out.append(self.pick(book.crescendo, level0=l0, level1=l1))
            case Shape.DECRESCENDO:
                out.append(self.pick(book.decrescendo, level0=l0, level1=l1))
            case Shape.DROP:
                out.append(self.pick(book.drop))
            case Shape.FADE:
                out.append(self.pick(book.fade))
            case Shape.STEADY:
                pass
        return [_sentence(x) for x in out]

    def details(self, s: Section, prev: Section | None) -> list[str]:
        book = self.book
        roles = {
            Role.LEAD: book.role_lead,
            Role.BASS: book.role_bass,
            Role.ARP: book.role_arp,
            Role.PAD: book.role_pad,
            Role.COUNTER: book.role_counter,
            Role.CHORDS: book.role_chords,
        }
        out = [
            self.pick(roles[p.role], inst=self.alias[p.name]) for p in s.parts if p.role in roles
        ]
        out.append(self.pick(book.harmony, roman=_roman(s.key, s.progression)))
        out.append(self.pick(book.density[s.density]))
        if s.has_drums and prev is not None and prev.groove is s.groove:
            out.append(self.pick(book.groove_keep, groove=self.groove(s.groove)))
        if s.number > 1 and s.kind in (SectionKind.VERSE, SectionKind.CHORUS):
            out.append(self.pick(book.reprise, section=self.section_word[s.kind]))
        return [_sentence(x) for x in out]

    def groove(self, groove: Groove) -> str:
        return self.rng.choice(self.book.grooves[groove])

    # -- queries --------------------------------------------------------------------------

    def at(self, seconds: float) -> str:
        if self.rng.random() < 0.6:
            return self.pick(self.book.clock, t=clock(seconds))
        third = min(2, int(3 * seconds / self.plan.duration))
        return self.rng.choice(self.book.when[third])

    def facts(self) -> list[tuple[str, tuple[str, ...], dict[str, object]]]:
        """(kind, templates, fields) for every statement a query could make about the song."""
        book = self.book
        plan = self.plan
        sections = plan.sections
        common = self.common()
        inst = [*self.main, *self.main][:2] if self.main else ["", ""]
        out: list[tuple[str, tuple[str, ...], dict[str, object]]] = [
            ("overall", book.q_overall, {**common, "inst1": inst[0], "inst2": inst[1]})
        ]
        first = sections[0]
        out.append(
            (
                "opening",
                book.q_opening,
                {
                    "parts": self.join(first.instruments[:2]),
                    "section": self.section_word[first.kind],
                    "level": self.level(first.levels[0]),
                },
            )
        )
        events: list[tuple[str, tuple[str, ...], dict[str, object]]] = []
        entries: list[tuple[str, tuple[str, ...], dict[str, object]]] = []
        moments: list[tuple[str, tuple[str, ...], dict[str, object]]] = []
        for prev, s in itertools.pairwise(sections):
            new = [n for n in s.instruments if n not in prev.instruments]
            for name in new:
                entries.append(
                    (
                        "entry",
                        book.q_entry,
                        {"inst": self.alias[name], "at": self.at(s.start), "_t": s.start},
                    )
                )
            moments.append(
                (
                    "section",
                    book.q_section,
                    {
                        "section": self.section_word[s.kind],
                        "parts": self.join(s.instruments[:2]),
                        "level": self.level(s.levels[0]),
                        "at": self.at(s.start),
                        "_t": s.start,
                    },
                )
            )
            if s.tempo != prev.tempo_end:
                options = book.q_tempo_up if s.tempo > prev.tempo_end else book.q_tempo_down
                events.append(
                    ("tempo", options, {"tempo": s.tempo, "at": self.at(s.start), "_t": s.start})
                )
            if s.key != prev.key:
                events.append(
                    ("key", book.q_key, {"key": s.key.name, "at": self.at(s.start), "_t": s.start})
                )
            if s.meter != prev.meter:
                events.append(
                    (
                        "meter",
                        book.q_meter,
                        {"meter": str(s.meter), "at": self.at(s.start), "_t": s.start},
                    )
                )
            if s.shape is Shape.DROP:
                events.append(("drop", book.q_drop, {"at": self.at(s.start), "_t": s.start}))
        for s in sections:
            if s.shape is Shape.CRESCENDO:
                l0, l1 = (self.level(x) for x in s.levels)
                events.append(
                    (
                        "build",
                        book.q_build,
                        {"at": self.at(s.start), "level0": l0, "level1": l1, "_t": s.start},
                    )
                )
        last = sections[-1]
        if last.shape is Shape.FADE:
            events.append(("ending", book.q_fade, {}))
        else:
            moments.append(("ending", book.q_chord_end, {"tonic": last.key.name}))
        if not any(s.has_drums for s in sections):
            events.append(
                ("drums", book.q_no_drums, {**common, "inst1": inst[0], "inst2": inst[1]})
            )
        self.rng.shuffle(events)
        self.rng.shuffle(entries)
        self.rng.shuffle(moments)
        # an instrument entry and a change first (what the model must learn to place), then a
        # section moment, then everything left
        ordered = entries[:1] + events[:1] + moments[:1] + events[1:] + entries[1:] + moments[1:]
        return out + ordered

    def featured(self) -> list[str]:
        """The song's most telling instruments, in text form: its melody and its harmony
        (the verse's lead and chords, heard most of the time), then the others by presence."""
        by_role: dict[Role, str] = {}
        for s in self.plan.sections:
            for p in s.parts:
                by_role.setdefault(p.role, p.name)
        first = [by_role[r] for r in (Role.LEAD, Role.CHORDS) if r in by_role]
        rest = [n for n in self.ranked if n not in first and n != DRUM_KIT]
        return [self.alias[n] for n in [*first, *rest]]

    def identity(self) -> list[str]:
        """Ways to say which song a query means (its style and two or three of its featured
        instruments), richest first: a fact such as "the tempo gets slower at 1:20" is true
        of many songs, and a style with one instrument still of several."""
        featured = self.featured()
        if not featured:
            return []
        extra = featured[2:]
        picked = [*featured[:2], *([self.rng.choice(extra)] if extra else [])]
        fields = {**self.common(), **{f"inst{i + 1}": n for i, n in enumerate(picked)}}
        out: list[str] = []
        for needed in (3, 2, 1):
            options = [
                t
                for t in self.book.q_identity
                if max((i for i in (1, 2, 3) if f"{{inst{i}}}" in t), default=0) == needed
                and needed <= len(picked)
            ]
            self.rng.shuffle(options)
            out.extend(" ".join(t.format(**fields).split()) for t in options)
        return out

    def timed_queries(self) -> list[tuple[str, float]]:
        """Short queries for a moment of the song, each with the time it starts: every fact
        that happens at a section start, worded without its time ("flute comes in")."""
        out: list[tuple[str, float]] = []
        for _kind, templates, fields in self.facts():
            if "_t" not in fields:
                continue
            template = self.rng.choice(templates)
            text = " ".join(template.format(**{**fields, "at": ""}).split()).strip(" ,")
            if 2 <= words(text) <= QUERY_WORDS[1] and text not in [t for t, _ in out]:
                out.append((text, round(float(fields["_t"]), 3)))  # type: ignore[arg-type]
        if self.book.q_transition:  # drawn after every other query, which read as before
            out.extend(self.transitions({t for t, _ in out}))
        return sorted(out, key=lambda q: q[1])

    def transitions(self, taken: set[str]) -> list[tuple[str, float]]:
        """A timed query for each section turning into the next, at the next one's start."""
        out: list[tuple[str, float]] = []
        for prev, s in itertools.pairwise(self.plan.sections):
            louder = LEVELS.index(s.levels[0]) > LEVELS.index(prev.levels[-1])
            templates = (louder and self.book.q_transition_up) or self.book.q_transition
            fields = {
                "section0": self.section_name(prev),
                "section1": self.section_name(s),
                "level0": self.level(prev.levels[-1]),
                "level1": self.level(s.levels[0]),
            }
            text = " ".join(self.rng.choice(templates).format(**fields).split())
            if words(text) <= QUERY_WORDS[1] and text not in taken:
                taken.add(text)
                out.append((text, round(s.start, 3)))
        return out

    def queries(self, count: int) -> list[str]:
        """The overall description, then facts each led by the song's identity; facts too
        long to share QUERY_WORDS with an identity are used alone only if too few fit."""
        low, high = QUERY_WORDS
        out: list[str] = []
        alone: list[list[str]] = []

        def fits(text: str) -> bool:
            return low <= words(text) <= high and text not in out

        for n, (_kind, templates, fields) in enumerate(self.facts()):
            if len(out) == count:
                break
            facts = [" ".join(t.format(**fields).split()) for t in templates]
            self.rng.shuffle(facts)
            if n == 0:
                out.extend(next(([f] for f in facts if fits(f)), []))
                continue
            joints = list(self.book.q_joint)
            self.rng.shuffle(joints)
            joined = (
                j.format(identity=i, fact=f) for i in self.identity() for f in facts for j in joints
            )
            text = next((t for t in joined if fits(t)), None)
            if text is None:
                alone.append(facts)
            else:
                out.append(text)
        for facts in alone:
            if len(out) == count:
                break
            out.extend(next(([f] for f in facts if fits(f)), []))
        if len(out) < count:
            out.extend(t for t in self.identity() if fits(t))
        return out[:count]
