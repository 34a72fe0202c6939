"""Song plans: the form, and per section its instruments, tempo, key, meter, dynamics and groove.

A plan is pure data decided by one seeded `random.Random`; arrange.py turns it into notes and
captions.py into text. Section times are computed here from the same tempo map the MIDI file
carries, so the timestamps in captions are where the rendered audio really changes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

from collap_model.synth.midi import PPQ
from collap_model.synth.palette import (
    DRUM_KIT,
    INSTRUMENTS,
    STYLES,
    Groove,
    Role,
    Style,
)

MIN_SECONDS = 20.0  # shorter songs cannot hold three sections of a bar or more
MAX_SECONDS = 600.0
_MAX_BARS = 64  # per section: enough for 12 sections of fast 3/4 to fill MAX_SECONDS


class SynthError(ValueError):
    """Options or an environment the generator cannot work with (one-line message)."""


class SectionKind(StrEnum):
    INTRO = "intro"
    VERSE = "verse"
    CHORUS = "chorus"
    BRIDGE = "bridge"
    BREAKDOWN = "breakdown"
    BUILDUP = "build-up"
    OUTRO = "outro"


class Shape(StrEnum):
    """How loudness moves through a section."""

    STEADY = "steady"
    CRESCENDO = "crescendo"
    DECRESCENDO = "decrescendo"
    DROP = "sudden drop"  # starts far quieter than the section before ended
    FADE = "fade out"  # decrescendo to near silence (outros)


class Density(StrEnum):
    SPARSE = "sparse"  # long notes, few parts
    MODERATE = "moderate"
    DENSE = "dense"  # running eighths and sixteenths, full band


LEVELS = ("pp", "p", "mp", "mf", "f", "ff")  # dynamic markings, softest first

_NAMES_SHARP = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
_NAMES_FLAT = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")
# the spelling musicians use for each tonic (fewest accidentals in the key signature)
_FLAT_MAJOR = {1, 3, 5, 8, 10}
_FLAT_MINOR = {0, 2, 3, 5, 7, 10}


@dataclass(frozen=True)
class Meter:
    numerator: int
    denominator: int

    @property
    def compound(self) -> bool:
        """6/8: the felt beat is a dotted quarter divided in three."""
        return self.denominator == 8 and self.numerator % 3 == 0

    @property
    def pulses(self) -> int:
        """Felt beats per bar (6/8 has two)."""
        return self.numerator // 3 if self.compound else self.numerator

    @property
    def pulse_ticks(self) -> int:
        return PPQ * 3 // 2 if self.compound else PPQ * 4 // self.denominator

    @property
    def subdivision(self) -> int:
        """Notes per pulse in the basic running rhythm: 3 in compound meters, else 2."""
        return 3 if self.compound else 2

    @property
    def bar_ticks(self) -> int:
        return self.pulses * self.pulse_ticks

    def __str__(self) -> str:
        return f"{self.numerator}/{self.denominator}"

    def microseconds_per_quarter(self, bpm: int) -> int:
        """The MIDI tempo for `bpm` felt beats per minute."""
        return round(60_000_000 * PPQ / (bpm * self.pulse_ticks))

    def bar_seconds(self, bpm: int) -> float:
        return self.bar_ticks * self.microseconds_per_quarter(bpm) / (PPQ * 1_000_000)


@dataclass(frozen=True)
class Key:
    tonic: int  # pitch class, C = 0
    mode: str  # "major" or "minor"

    @property
    def name(self) -> str:
        flats = _FLAT_MAJOR if self.mode == "major" else _FLAT_MINOR
        names = _NAMES_FLAT if self.tonic in flats else _NAMES_SHARP
        return f"{names[self.tonic]} {self.mode}"

    def transpose(self, semitones: int) -> Key:
        return Key((self.tonic + semitones) % 12, self.mode)

    def relative(self) -> Key:
        if self.mode == "major":
            return Key((self.tonic + 9) % 12, "minor")
        return Key((self.tonic + 3) % 12, "major")


@dataclass(frozen=True)
class Part:
    role: Role
    program: int  # GM program, 0-based; the drum kit is program 0 on the percussion channel

    @property
    def name(self) -> str:
        return DRUM_KIT if self.role is Role.DRUMS else INSTRUMENTS[self.program]


@dataclass(frozen=True)
class Section:
    kind: SectionKind
    number: int  # 1 for the first chorus, 2 for the second, ...
    start_tick: int
    bars: int
    meter: Meter
    tempos: tuple[int, ...]  # felt BPM of each bar (a ramp is an accelerando or ritardando)
    key: Key
    parts: tuple[Part, ...]
    groove: Groove
    shape: Shape
    levels: tuple[str, str]  # dynamic marking at the start and at the end
    density: Density
    progression: tuple[int, ...]  # scale degrees (0 = tonic) of the chords, one per bar
    start: float  # seconds
    end: float  # seconds
    tail_ticks: int = 0  # the final chord held after the last bar (last section only)

    @property
    def tempo(self) -> int:
        return self.tempos[0]

    @property
    def tempo_end(self) -> int:
        return self.tempos[-1]

    @property
    def end_tick(self) -> int:
        return self.start_tick + self.bars * self.meter.bar_ticks + self.tail_ticks

    @property
    def instruments(self) -> list[str]:
        return [p.name for p in self.parts]

    @property
    def has_drums(self) -> bool:
        return self.groove is not Groove.NONE

    def bar_tick(self, bar: int) -> int:
        return self.start_tick + bar * self.meter.bar_ticks


@dataclass(frozen=True)
class SongPlan:
    seed: int
    style: str
    key: Key  # home key
    tempo: int  # home tempo, felt BPM
    meter: Meter  # home meter
    sections: tuple[Section, ...]
    reverb: int  # CC91 send for every channel

    @property
    def duration(self) -> float:
        return self.sections[-1].end

    @property
    def end_tick(self) -> int:
        return self.sections[-1].end_tick


# Song forms by number of sections; several per length so that forms vary at any duration.
_FORMS: dict[int, tuple[str, ...]] = {
    3: ("intro chorus outro", "intro verse chorus", "intro build-up chorus", "verse chorus outro"),
    4: (
        "intro verse chorus outro",
        "intro build-up chorus outro",
        "intro chorus breakdown chorus",
        "intro verse build-up chorus",
    ),
    5: (
        "intro verse chorus bridge chorus",
        "intro verse chorus verse chorus",
        "intro breakdown build-up chorus outro",
        "intro verse build-up chorus outro",
    ),
    6: (
        "intro verse chorus verse chorus outro",
        "intro verse chorus bridge chorus outro",
        "intro chorus breakdown build-up chorus outro",
        "intro verse chorus breakdown build-up chorus",
    ),
    7: (
        "intro verse chorus verse chorus bridge chorus",
        "intro verse chorus breakdown build-up chorus outro",
        "intro verse verse chorus bridge chorus outro",
    ),
    8: (
        "intro verse chorus verse chorus bridge chorus outro",
        "intro verse chorus verse chorus breakdown build-up chorus",
        "intro verse build-up chorus verse build-up chorus outro",
    ),
    9: (
        "intro verse chorus verse chorus bridge chorus chorus outro",
        "intro verse chorus verse chorus breakdown build-up chorus outro",
        "intro verse chorus bridge verse chorus breakdown chorus outro",
    ),
    10: (
        "intro verse chorus verse chorus bridge breakdown build-up chorus outro",
        "intro verse build-up chorus verse build-up chorus bridge chorus outro",
    ),
    11: (
        "intro verse chorus verse chorus bridge chorus breakdown build-up chorus outro",
        "intro verse verse chorus verse chorus bridge breakdown build-up chorus outro",
    ),
    12: (
        "intro verse chorus verse chorus bridge chorus breakdown build-up chorus chorus outro",
        "intro verse build-up chorus verse build-up chorus bridge breakdown build-up chorus outro",
    ),
}

# relative share of the song's length each kind of section takes
_WEIGHT = {
    SectionKind.INTRO: 0.6,
    SectionKind.VERSE: 1.0,
    SectionKind.CHORUS: 1.0,
    SectionKind.BRIDGE: 0.8,
    SectionKind.BREAKDOWN: 0.6,
    SectionKind.BUILDUP: 0.55,
    SectionKind.OUTRO: 0.6,
}

# chord progressions as scale degrees; repeated sections of a kind reuse theirs
_PROGRESSIONS = {
    "major": (
        (0, 4, 5, 3),
        (5, 3, 0, 4),
        (0, 3, 4, 3),
        (0, 5, 3, 4),
        (1, 4, 0, 0),
        (0, 3, 0, 4),
        (3, 0, 4, 5),
    ),
    "minor": (
        (0, 5, 2, 6),
        (0, 3, 4, 0),
        (0, 6, 5, 6),
        (0, 3, 6, 2),
        (5, 6, 0, 0),
        (0, 5, 3, 4),
    ),
}


@dataclass
class _Draft:
    """A section before its length and time are fixed."""

    kind: SectionKind
    number: int
    meter: Meter
    tempo: int
    tempo_end: int
    key: Key
    parts: tuple[Part, ...]
    groove: Groove
    shape: Shape
    levels: tuple[str, str]
    density: Density
    progression: tuple[int, ...]
    bars: int = 0

    def tempos(self, bars: int) -> tuple[int, ...]:
        if bars == 1 or self.tempo == self.tempo_end:
            return (self.tempo,) * bars
        step = (self.tempo_end - self.tempo) / (bars - 1)
        return tuple(round(self.tempo + step * i) for i in range(bars))

    def seconds(self, bars: int) -> float:
        return sum(self.meter.bar_seconds(t) for t in self.tempos(bars))


def check_length(min_seconds: float, max_seconds: float) -> None:
    """Raise SynthError unless MIN_SECONDS <= min_seconds <= max_seconds <= MAX_SECONDS."""
    if not MIN_SECONDS <= min_seconds <= max_seconds <= MAX_SECONDS:
        raise SynthError(
            f"song length must satisfy {MIN_SECONDS:g} <= min-seconds <= max-seconds <= "
            f"{MAX_SECONDS:g}, got {min_seconds:g} and {max_seconds:g}"
        )


def plan_song(seed: int, min_seconds: float = 30.0, max_seconds: float = 300.0) -> SongPlan:
    """The plan of song `seed`: everything is drawn from `random.Random(seed)`, nothing else."""
    check_length(min_seconds, max_seconds)
    rng = random.Random(seed)
    style = rng.choice(STYLES)
    target = round(rng.uniform(min_seconds, max_seconds), 2)
    meter = Meter(*rng.choice(style.meters))
    tempo = rng.randint(*style.tempo)
    if meter.compound:
        tempo = round(tempo * 0.6)  # a dotted-quarter pulse: 6/8 ballads sit around 50-75
    key = Key(rng.randrange(12), "minor" if rng.random() < style.minor else "major")
    n = min(12, max(3, round(target / rng.uniform(16.0, 30.0))))
    form = [SectionKind(k) for k in rng.choice(_FORMS[n]).split()]
    drafts = _draft_sections(rng, style, form, key, tempo, meter, seed)
    sections = _fit(drafts, target, rng)
    return SongPlan(seed, style.name, key, tempo, meter, sections, style.reverb)


def _draft_sections(
    rng: random.Random,
    style: Style,
    form: list[SectionKind],
    home_key: Key,
    home_tempo: int,
    home_meter: Meter,
    seed: int,
) -> list[_Draft]:
    # one program per role, distinct across roles where the palette allows, so that a
    # section never lists the same instrument twice; `alt` gives intros and bridges new colours
    used: set[int] = set()
    main: dict[Role, int] = {}
    alt: dict[Role, int] = {}
    for table in (main, alt):
        for role, progs in style.programs.items():
            free = [p for p in progs if p not in used] or [p for p in progs if p != main.get(role)]
            table[role] = rng.choice(free or list(progs))
            used.add(table[role])
    with_drums = rng.random() < style.drums
    # a band keeps its grooves: every verse (and every chorus) of a song plays the same one
    verse_groove = rng.choice(style.soft_grooves)
    chorus_groove = rng.choice(style.grooves)
    choruses = form.count(SectionKind.CHORUS)
    # song-wide events, each drawn once so every song has a few, not all
    lift = rng.choice((1, 2)) if choruses >= 2 and rng.random() < 0.3 else 0
    bridge_key = (
        rng.choice((home_key.relative(), home_key.transpose(5))) if rng.random() < 0.35 else None
    )
    bridge_tempo = rng.choice((0.75, 0.85, 1.15, 1.25)) if rng.random() < 0.25 else 1.0
    bridge_meter = rng.random() < 0.15
    accelerate = rng.randint(6, 16) if rng.random() < 0.4 else 0
    slow_intro = rng.random() < 0.15
    ritardando = rng.random() < 0.25

    drafts: list[_Draft] = []
    counts: dict[SectionKind, int] = {}
    tempo = home_tempo
    key = home_key
    chorus_seen = 0
    for i, kind in enumerate(form):
        counts[kind] = counts.get(kind, 0) + 1
        last = i == len(form) - 1
        prev = drafts[-1] if drafts else None
        prev_level = prev.levels[1] if prev else "mp"
        meter = home_meter
        t0 = t1 = tempo
        section_key = key
        parts: list[Part]
        groove = Groove.NONE
        shape = Shape.STEADY
        density = Density.MODERATE
        if kind is SectionKind.INTRO:
            option = rng.randrange(5 if with_drums and style.name in ("rock", "electronic") else 4)
            if option == 0:
                parts = [Part(Role.CHORDS, rng.choice((0, alt[Role.CHORDS], main[Role.CHORDS])))]
            elif option == 1:
                parts = [Part(Role.PAD, main[Role.PAD]), Part(Role.ARP, main[Role.ARP])]
            elif option == 2:
                parts = [Part(Role.PAD, main[Role.PAD])]
            elif option == 3:
                parts = [Part(Role.CHORDS, alt[Role.CHORDS]), Part(Role.LEAD, alt[Role.LEAD])]
            else:
                parts = [Part(Role.BASS, main[Role.BASS])]
                groove = rng.choice(style.soft_grooves)
            density = Density.SPARSE
            shape = Shape.CRESCENDO if rng.random() < 0.35 else Shape.STEADY
            levels = ("p", "mf") if shape is Shape.CRESCENDO else (rng.choice(("p", "mp")),) * 2
            if slow_intro:
                t0 = t1 = round(home_tempo * 0.8)
        elif kind is SectionKind.VERSE:
            parts = [
                Part(Role.CHORDS, main[Role.CHORDS]),
                Part(Role.BASS, main[Role.BASS]),
                Part(Role.LEAD, main[Role.LEAD]),
            ]
            if counts[kind] > 1 or rng.random() < 0.3:
                parts.append(Part(Role.ARP, main[Role.ARP]))
            if with_drums and rng.random() < 0.8:
                groove = verse_groove
            level = rng.choice(("mp", "mf"))
            levels = (level, level)
        elif kind is SectionKind.CHORUS:
            chorus_seen += 1
            parts = [
                Part(Role.CHORDS, main[Role.CHORDS]),
                Part(Role.BASS, main[Role.BASS]),
                Part(Role.LEAD, main[Role.LEAD]),
                Part(Role.COUNTER, main[Role.COUNTER]),
            ]
            if rng.random() < 0.5:
                parts.append(Part(Role.PAD, main[Role.PAD]))
            if with_drums:
                groove = chorus_groove
            density = Density.DENSE
            final = chorus_seen == choruses
            if lift and final and chorus_seen > 1:
                key = home_key.transpose(lift)
                section_key = key
            levels = ("ff", "ff") if final and choruses > 1 else ("f", "f")
        elif kind is SectionKind.BRIDGE:
            parts = [
                Part(Role.CHORDS, alt[Role.CHORDS]),
                Part(Role.BASS, main[Role.BASS]),
                Part(Role.PAD, alt[Role.PAD]),
            ]
            if rng.random() < 0.5:
                parts.append(Part(Role.LEAD, alt[Role.LEAD]))
            if with_drums and rng.random() < 0.6:
                groove = Groove.HALF_TIME if rng.random() < 0.5 else rng.choice(style.soft_grooves)
            if bridge_key is not None:
                section_key = bridge_key
            if bridge_tempo != 1.0:
                t0 = t1 = round(tempo * bridge_tempo)
            if bridge_meter:
                meter = Meter(4, 4) if home_meter.numerator != 4 else Meter(3, 4)
            shape = Shape.DECRESCENDO if rng.random() < 0.2 else Shape.STEADY
            levels = ("mf", "mp") if shape is Shape.DECRESCENDO else ("mf", "mf")
        elif kind is SectionKind.BREAKDOWN:
            parts = rng.choice(
                (
                    [Part(Role.PAD, main[Role.PAD])],
                    [Part(Role.CHORDS, 0 if rng.random() < 0.5 else alt[Role.CHORDS])],
                    [Part(Role.ARP, main[Role.ARP])],
                    [Part(Role.PAD, alt[Role.PAD]), Part(Role.LEAD, alt[Role.LEAD])],
                )
            )
            density = Density.SPARSE
            levels = ("pp", "pp")
            shape = Shape.DROP if LEVELS.index(prev_level) >= LEVELS.index("f") else Shape.STEADY
        elif kind is SectionKind.BUILDUP:
            parts = [
                Part(Role.ARP, main[Role.ARP]),
                Part(Role.PAD, main[Role.PAD]),
                Part(Role.BASS, main[Role.BASS]),
            ]
            if with_drums or style.name in ("electronic", "rock", "pop"):
                groove = Groove.SNARE_ROLL
            shape = Shape.CRESCENDO
            levels = ("p", "ff")
            if accelerate:
                t1 = tempo + accelerate
                tempo = t1  # the sections that follow keep the faster tempo
                accelerate = 0  # once per song: later build-ups hold the tempo
        else:  # outro
            keep = [p for p in (prev.parts if prev else ()) if p.role is not Role.DRUMS]
            parts = [p for p in keep if p.role in (Role.CHORDS, Role.PAD, Role.LEAD)] or [
                Part(Role.CHORDS, main[Role.CHORDS])
            ]
            if len(parts) > 2:
                parts = parts[:2]
            density = Density.SPARSE
            shape = Shape.FADE if rng.random() < 0.5 else Shape.DECRESCENDO
            levels = ("mf", "pp") if shape is Shape.FADE else ("mf", "p")
            if ritardando:
                t1 = round(tempo * rng.uniform(0.75, 0.85))
        if last and kind is not SectionKind.OUTRO and ritardando and t0 == t1:
            t1 = round(t0 * 0.85)
        unique: dict[int, Part] = {}
        for part in parts:
            unique.setdefault(part.program, part)  # a palette too small for distinct programs
        parts = list(unique.values())
        if groove is not Groove.NONE:
            if meter.pulses == 3 or meter.compound:
                # duple grooves do not fit triple meters; a waltz pattern does
                groove = groove if groove in (Groove.SNARE_ROLL, Groove.TOMS) else Groove.WALTZ
            parts.append(Part(Role.DRUMS, 0))
        harmony = random.Random(f"{seed}:{kind}:harmony")
        drafts.append(
            _Draft(
                kind=kind,
                number=counts[kind],
                meter=meter,
                tempo=t0,
                tempo_end=t1,
                key=section_key,
                parts=tuple(parts),
                groove=groove,
                shape=shape,
                levels=levels,
                density=density,
                progression=harmony.choice(_PROGRESSIONS[section_key.mode]),
            )
        )
    return drafts


def _fit(drafts: list[_Draft], target: float, rng: random.Random) -> tuple[Section, ...]:
    """Bars per section so the song ends at `target` seconds; the last chord fills the rest."""
    weights = [_WEIGHT[d.kind] * rng.uniform(0.8, 1.25) for d in drafts]
    share = [target * w / sum(weights) for w in weights]
    for d, goal in zip(drafts, share, strict=True):
        bars = goal / d.meter.bar_seconds(round((d.tempo + d.tempo_end) / 2))
        d.bars = min(_MAX_BARS, max(2, 2 * round(bars / 2)))

    def total() -> float:
        return sum(d.seconds(d.bars) for d in drafts)

    while total() > target:
        longest = max(range(len(drafts)), key=lambda i: (drafts[i].bars, i))
        if drafts[longest].bars == 1:
            raise SynthError(f"cannot fit {len(drafts)} sections into {target:g} s")
        drafts[longest].bars -= 1
    while True:
        now = total()
        fits = [
            i
            for i, d in enumerate(drafts)
            if d.bars < _MAX_BARS and now - d.seconds(d.bars) + d.seconds(d.bars + 1) <= target
        ]
        if not fits:
            break
        best = max(fits, key=lambda i: (share[i] - drafts[i].seconds(drafts[i].bars), -i))
        drafts[best].bars += 1

    sections: list[Section] = []
    tick = 0
    seconds = 0.0
    for i, d in enumerate(drafts):
        tempos = d.tempos(d.bars)
        length = d.seconds(d.bars)
        tail = 0
        if i == len(drafts) - 1:
            uspq = d.meter.microseconds_per_quarter(tempos[-1])
            tail = int((target - seconds - length) * PPQ * 1_000_000 / uspq)
            length += tail * uspq / (PPQ * 1_000_000)
        section = Section(
            kind=d.kind,
            number=d.number,
            start_tick=tick,
            bars=d.bars,
            meter=d.meter,
            tempos=tempos,
            key=d.key,
            parts=d.parts,
            groove=d.groove,
            shape=d.shape,
            levels=d.levels,
            density=d.density,
            progression=d.progression,
            start=seconds,
            end=seconds + length,
            tail_ticks=tail,
        )
        sections.append(section)
        tick = section.end_tick
        seconds += length
    return tuple(sections)


def section_dict(section: Section) -> dict[str, object]:
    """The manifest's description of a section (times rounded to milliseconds)."""
    out: dict[str, object] = {
        "name": str(section.kind),
        "start": round(section.start, 3),
        "end": round(section.end, 3),
        "instruments": section.instruments,
        "programs": [p.program for p in section.parts if p.role is not Role.DRUMS],
        "tempo": section.tempo,
        "key": section.key.name,
        "time_signature": str(section.meter),
        "dynamics": str(section.shape),
        "level": list(section.levels),
        "density": str(section.density),
        "drums": str(section.groove),
    }
    if section.tempo_end != section.tempo:
        out["tempo_end"] = section.tempo_end
    return out
