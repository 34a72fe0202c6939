"""What the generator can play: General MIDI instruments by role, drum patterns, and styles.

Instrument names here are the canonical ones written to manifests; captions may use other
words for them (see captions.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    """A part's job in the arrangement; each role has its own MIDI channel."""

    LEAD = "lead"  # the melody
    CHORDS = "chords"  # block, broken or strummed chords
    BASS = "bass"  # chord roots
    PAD = "pad"  # sustained chords underneath
    ARP = "arpeggio"  # chord tones in running eighths or sixteenths
    COUNTER = "counter"  # long countermelody notes or brass stabs in big sections
    DRUMS = "drums"  # the GM percussion channel


CHANNELS: dict[Role, int] = {
    Role.LEAD: 0,
    Role.CHORDS: 1,
    Role.BASS: 2,
    Role.PAD: 3,
    Role.ARP: 4,
    Role.COUNTER: 5,
    Role.DRUMS: 9,
}

# GM program (0-based) -> the instrument's name in manifests and captions
INSTRUMENTS: dict[int, str] = {
    0: "piano",
    4: "electric piano",
    6: "harpsichord",
    8: "celesta",
    9: "glockenspiel",
    11: "vibraphone",
    12: "marimba",
    16: "organ",
    19: "church organ",
    21: "accordion",
    22: "harmonica",
    24: "nylon guitar",
    25: "acoustic guitar",
    26: "jazz guitar",
    27: "clean electric guitar",
    29: "overdriven guitar",
    30: "distorted guitar",
    32: "upright bass",
    33: "electric bass",
    34: "picked bass",
    35: "fretless bass",
    38: "synth bass",
    40: "violin",
    42: "cello",
    43: "contrabass",
    45: "pizzicato strings",
    46: "harp",
    48: "strings",
    49: "slow strings",
    50: "synth strings",
    52: "choir",
    56: "trumpet",
    57: "trombone",
    60: "french horn",
    61: "brass section",
    62: "synth brass",
    65: "alto sax",
    66: "tenor sax",
    68: "oboe",
    71: "clarinet",
    73: "flute",
    75: "pan flute",
    80: "square lead",
    81: "saw lead",
    88: "synth pad",
    89: "warm pad",
    90: "polysynth",
    95: "sweep pad",
}
DRUM_KIT = "drums"


class Groove(StrEnum):
    """Drum patterns on the GM percussion channel."""

    NONE = "none"
    BACKBEAT = "backbeat"  # kick 1 and 3, snare 2 and 4, eighth-note hi-hats
    FOUR_ON_THE_FLOOR = "four-on-the-floor"  # kick every beat, off-beat open hats, claps
    HALF_TIME = "half-time"  # snare on 3 only: the same tempo feels half as fast
    SWING = "swing"  # ride cymbal swing, hi-hat foot on 2 and 4
    BREAKBEAT = "breakbeat"  # syncopated kick and snare, sixteenth hats
    LIGHT = "light"  # side stick and closed hats, for quiet verses
    SHAKER = "shaker"  # shaker and a soft kick
    WALTZ = "waltz"  # kick on 1, hats or snare on the other beats (triple meters)
    TOMS = "toms"  # pounding toms and bass drum (cinematic)
    SNARE_ROLL = "snare roll"  # a build-up roll that gets faster through the section


@dataclass(frozen=True)
class Style:
    """A palette: tempo range, meters, instruments per role and grooves."""

    name: str
    tempo: tuple[int, int]  # felt beats per minute, lowest and highest home tempo
    meters: tuple[tuple[int, int], ...]  # time signatures; repeats weight the choice
    minor: float  # probability of a minor home key
    programs: dict[Role, tuple[int, ...]]  # GM programs each role may use
    grooves: tuple[Groove, ...]  # full-band patterns (choruses)
    soft_grooves: tuple[Groove, ...]  # lighter patterns (verses, intros)
    drums: float  # probability that a verse or chorus has drums at all
    reverb: int  # CC91 reverb send: dry rock to washed-out ambient


STYLES: tuple[Style, ...] = (
    Style(
        name="pop",
        tempo=(84, 124),
        meters=((4, 4),) * 5 + ((6, 8),),
        minor=0.35,
        programs={
            Role.LEAD: (73, 80, 11, 22, 65, 56, 71, 81, 68, 40),
            Role.CHORDS: (0, 4, 25, 27, 6, 21, 16, 24),
            Role.BASS: (33, 35, 38, 34),
            Role.PAD: (88, 89, 49, 50, 52, 95),
            Role.ARP: (4, 46, 12, 81, 9, 8, 24),
            Role.COUNTER: (48, 61, 50, 57, 60, 66),
        },
        grooves=(Groove.BACKBEAT, Groove.BREAKBEAT),
        soft_grooves=(Groove.LIGHT, Groove.SHAKER),
        drums=0.9,
        reverb=60,
    ),
    Style(
        name="rock",
        tempo=(96, 150),
        meters=((4, 4),),
        minor=0.45,
        programs={
            Role.LEAD: (30, 29, 16, 81, 22, 65, 56),
            Role.CHORDS: (29, 30, 27, 16, 25, 4, 0),
            Role.BASS: (34, 33, 35),
            Role.PAD: (16, 49, 19, 88, 52),
            Role.ARP: (27, 26, 25, 0, 81),
            Role.COUNTER: (61, 48, 16, 57, 66, 62),
        },
        grooves=(Groove.BACKBEAT,),
        soft_grooves=(Groove.LIGHT, Groove.HALF_TIME),
        drums=1.0,
        reverb=35,
    ),
    Style(
        name="electronic",
        tempo=(116, 132),
        meters=((4, 4),),
        minor=0.6,
        programs={
            Role.LEAD: (81, 80, 62, 73, 75, 11, 9),
            Role.CHORDS: (90, 4, 81, 88, 0, 50),
            Role.BASS: (38, 33, 35),
            Role.PAD: (88, 89, 95, 50, 52, 49),
            Role.ARP: (81, 80, 90, 9, 12, 8, 46),
            Role.COUNTER: (62, 50, 61, 48, 52),
        },
        grooves=(Groove.FOUR_ON_THE_FLOOR, Groove.BREAKBEAT),
        soft_grooves=(Groove.HALF_TIME, Groove.SHAKER),
        drums=1.0,
        reverb=55,
    ),
    Style(
        name="orchestral",
        tempo=(60, 110),
        meters=((4, 4),) * 3 + ((3, 4),) * 2 + ((6, 8),),
        minor=0.55,
        programs={
            Role.LEAD: (60, 73, 68, 40, 71, 56, 42, 57),
            Role.CHORDS: (48, 49, 0, 46, 19, 6),
            Role.BASS: (43, 42, 32),
            Role.PAD: (49, 52, 48, 19, 50),
            Role.ARP: (46, 45, 8, 9, 12, 0),
            Role.COUNTER: (61, 60, 57, 52, 40, 68),
        },
        grooves=(Groove.TOMS,),
        soft_grooves=(Groove.TOMS,),
        drums=0.5,
        reverb=90,
    ),
    Style(
        name="jazz",
        tempo=(88, 160),
        meters=((4, 4),) * 4 + ((3, 4),),
        minor=0.4,
        programs={
            Role.LEAD: (66, 65, 56, 11, 71, 57, 73, 22, 26),
            Role.CHORDS: (0, 4, 26, 11, 16, 24),
            Role.BASS: (32, 33, 35),
            Role.PAD: (16, 49, 48, 89),
            Role.ARP: (11, 26, 0, 12, 4),
            Role.COUNTER: (57, 61, 56, 66, 65, 60),
        },
        grooves=(Groove.SWING,),
        soft_grooves=(Groove.SWING, Groove.LIGHT),
        drums=0.95,
        reverb=45,
    ),
    Style(
        name="folk",
        tempo=(76, 126),
        meters=((4, 4),) * 2 + ((3, 4),) + ((6, 8),),
        minor=0.4,
        programs={
            Role.LEAD: (73, 40, 22, 21, 75, 71, 68, 42),
            Role.CHORDS: (25, 24, 46, 21, 0, 6),
            Role.BASS: (32, 33, 43),
            Role.PAD: (49, 52, 21, 19, 48),
            Role.ARP: (24, 46, 12, 25, 9, 8),
            Role.COUNTER: (40, 42, 48, 73, 60),
        },
        grooves=(Groove.BACKBEAT, Groove.SHAKER),
        soft_grooves=(Groove.SHAKER, Groove.LIGHT),
        drums=0.7,
        reverb=55,
    ),
    Style(
        name="ambient",
        tempo=(60, 96),
        meters=((4, 4),) * 3 + ((3, 4),),
        minor=0.5,
        programs={
            Role.LEAD: (9, 8, 75, 52, 11, 73, 68, 40),
            Role.CHORDS: (0, 4, 88, 46, 90, 19),
            Role.BASS: (38, 35, 43, 32),
            Role.PAD: (88, 89, 95, 52, 50, 49),
            Role.ARP: (9, 8, 46, 12, 11, 0),
            Role.COUNTER: (52, 50, 49, 42, 60),
        },
        grooves=(Groove.SHAKER, Groove.HALF_TIME),
        soft_grooves=(Groove.SHAKER,),
        drums=0.4,
        reverb=100,
    ),
)

STYLE_BY_NAME: dict[str, Style] = {s.name: s for s in STYLES}
