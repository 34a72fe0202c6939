"""Arrangement: a song plan -> notes, drums, dynamics and tempo map -> a MIDI file.

Melodies, voicings and grooves are procedural. Randomness for the notes comes from
`random.Random` seeded by the song seed and the section kind, so a chorus that returns plays
the same melody (transposed if the key changed).
"""

from __future__ import annotations

import random

from collap_model.synth.midi import DRUM_CHANNEL, MidiTrack
from collap_model.synth.palette import CHANNELS, Groove, Role
from collap_model.synth.structure import LEVELS, Density, Key, Section, SectionKind, Shape, SongPlan

_MAJOR = (0, 2, 4, 5, 7, 9, 11)
_MINOR = (0, 2, 3, 5, 7, 8, 10)
_VELOCITY = (30, 44, 58, 74, 94, 114)  # note velocity at each of LEVELS
_ROLE_GAIN = {
    Role.LEAD: 6,
    Role.CHORDS: -4,
    Role.BASS: 2,
    Role.PAD: -14,
    Role.ARP: -10,
    Role.COUNTER: -6,
    Role.DRUMS: 0,
}
_VOLUME = {  # CC7 mix levels
    Role.LEAD: 110,
    Role.CHORDS: 96,
    Role.BASS: 108,
    Role.PAD: 84,
    Role.ARP: 84,
    Role.COUNTER: 92,
    Role.DRUMS: 112,
}
# expression (CC11) at the start and end of a section, by loudness shape
_EXPRESSION = {
    Shape.STEADY: (127, 127),
    Shape.DROP: (127, 127),
    Shape.CRESCENDO: (64, 127),
    Shape.DECRESCENDO: (127, 72),
    Shape.FADE: (127, 6),
}
# programs whose notes die away (piano, guitars, mallets, harp): they get broken chords and
# rhythmic comping; the others (organ, strings, pads, brass, choir) hold long chords
_PLUCKED = {0, 4, 6, 8, 9, 11, 12, 24, 25, 26, 27, 29, 30, 45, 46, 81, 90}
_BRASS = {56, 57, 60, 61, 62}

KICK, SIDESTICK, SNARE, CLAP = 36, 37, 38, 39
CLOSED_HAT, PEDAL_HAT, OPEN_HAT = 42, 44, 46
LOW_TOM, MID_TOM, HIGH_TOM, FLOOR_TOM = 45, 47, 50, 41
CRASH, RIDE, TAMBOURINE, SHAKER = 49, 51, 54, 70


def scale(key: Key) -> tuple[int, ...]:
    return _MAJOR if key.mode == "major" else _MINOR


def degree_pitch(key: Key, degree: int, tonic_pitch: int) -> int:
    """MIDI pitch of scale `degree` (any integer; 7 is the octave) above `tonic_pitch`."""
    octave, step = divmod(degree, 7)
    return tonic_pitch + 12 * octave + scale(key)[step]


def chord_classes(key: Key, degree: int) -> list[int]:
    """Pitch classes (root, third, fifth) of the diatonic triad on `degree`."""
    steps = scale(key)
    pcs = [(key.tonic + steps[(degree + i) % 7]) % 12 for i in (0, 2, 4)]
    if key.mode == "minor" and degree % 7 == 4:
        pcs[1] = (pcs[1] + 1) % 12  # the dominant of a minor key is major (harmonic minor)
    return pcs


def tonic_pitch(key: Key, low: int) -> int:
    """The tonic's pitch in the octave starting at `low`."""
    return low + (key.tonic - low) % 12


def arrange(plan: SongPlan) -> bytes:
    """The plan as a format-0 MIDI file: markers at section starts, tempo and meter changes,
    program changes, dynamics (velocity and CC11 expression ramps) and all notes."""
    track = MidiTrack()
    for role, channel in CHANNELS.items():
        track.control(0, channel, 7, _VOLUME[role])
        track.control(0, channel, 91, plan.reverb)
        track.control(0, channel, 93, 20)
    track.program(0, DRUM_CHANNEL, 0)
    tempo = meter = None
    for index, section in enumerate(plan.sections):
        track.marker(section.start_tick, f"{section.kind} {section.number}")
        if section.meter != meter:
            meter = section.meter
            track.time_signature(section.start_tick, meter.numerator, meter.denominator)
        for bar, bpm in enumerate(section.tempos):
            if bpm != tempo:
                tempo = bpm
                track.tempo(section.bar_tick(bar), section.meter.microseconds_per_quarter(bpm))
        following = plan.sections[index + 1] if index + 1 < len(plan.sections) else None
        _SectionWriter(track, plan, section, following).write()
    return track.to_bytes(end_tick=plan.end_tick)


class _SectionWriter:
    def __init__(
        self, track: MidiTrack, plan: SongPlan, section: Section, following: Section | None
    ) -> None:
        self.track = track
        self.plan = plan
        self.s = section
        self.following = following
        self.rng = random.Random(f"{plan.seed}:{section.start_tick}:notes")
        self.length = section.end_tick - section.start_tick

    # -- dynamics -------------------------------------------------------------------------

    def velocity(self, tick: int, role: Role, accent: int = 0) -> int:
        frac = (tick - self.s.start_tick) / self.length
        lo, hi = (LEVELS.index(level) for level in self.s.levels)
        level = lo + (hi - lo) * frac
        i = min(int(level), len(LEVELS) - 2)
        base = _VELOCITY[i] + (_VELOCITY[i + 1] - _VELOCITY[i]) * (level - i)
        return round(base + _ROLE_GAIN[role] + accent + self.rng.randint(-4, 4))

    def expression(self) -> None:
        first, last = _EXPRESSION[self.s.shape]
        pulse = self.s.meter.pulse_ticks
        steps = max(1, self.length // pulse)
        for role in CHANNELS:
            channel = CHANNELS[role]
            self.track.control(self.s.start_tick, channel, 11, first)
            if first != last:
                for k in range(1, steps + 1):
                    value = round(first + (last - first) * k / steps)
                    self.track.control(self.s.start_tick + k * pulse, channel, 11, value)

    # -- harmony --------------------------------------------------------------------------

    def chord(self, bar: int) -> list[int]:
        if bar >= self.s.bars:  # the final held chord resolves to the tonic
            return chord_classes(self.s.key, 0)
        return chord_classes(self.s.key, self.s.progression[bar % len(self.s.progression)])

    def root(self, bar: int) -> int:
        return self.chord(bar)[0]

    # -- writing --------------------------------------------------------------------------

    def write(self) -> None:
        self.expression()
        for part in self.s.parts:
            if part.role is Role.DRUMS:
                self.drums()
                continue
            channel = CHANNELS[part.role]
            self.track.program(self.s.start_tick, channel, part.program)
            match part.role:
                case Role.LEAD:
                    self.lead(channel)
                case Role.CHORDS:
                    self.chords(channel, part.program)
                case Role.BASS:
                    self.bass(channel)
                case Role.PAD:
                    self.pad(channel)
                case Role.ARP:
                    self.arpeggio(channel)
                case Role.COUNTER:
                    self.counter(channel, part.program)
        if self.s.tail_ticks:
            self.final_chord()

    def note(
        self, tick: int, dur: int, channel: int, pitch: int, role: Role, accent: int = 0
    ) -> None:
        self.track.note(tick, dur, channel, pitch, self.velocity(tick, role, accent))

    def final_chord(self) -> None:
        start = self.s.bar_tick(self.s.bars)
        dur = self.s.tail_ticks
        tonic = chord_classes(self.s.key, 0)
        for part in self.s.parts:
            channel = CHANNELS[part.role]
            if part.role is Role.BASS:
                self.note(start, dur, channel, 36 + tonic[0], part.role)
            elif part.role in (Role.CHORDS, Role.PAD, Role.COUNTER):
                for pitch in _voicing(tonic, 60):
                    self.note(start, dur, channel, pitch, part.role)
            elif part.role is Role.LEAD:
                self.note(start, dur, channel, tonic_pitch(self.s.key, 60) + 12, part.role)

    def chords(self, channel: int, program: int) -> None:
        m = self.s.meter
        step = m.pulse_ticks // m.subdivision
        previous = 62
        for bar in range(self.s.bars):
            t = self.s.bar_tick(bar)
            voicing = _voicing(self.chord(bar), previous)
            previous = sum(voicing) // len(voicing)
            plucked = program in _PLUCKED
            if self.s.density is Density.SPARSE and plucked:
                # broken chord: the root below, then the voicing rising, all left to ring
                self.note(t, m.bar_ticks, channel, voicing[0] - 12, Role.CHORDS, 6)
                notes = [*voicing, voicing[0] + 12]
                for k in range(1, m.pulses * m.subdivision):
                    pitch = notes[(k - 1) % len(notes)]
                    self.note(t + k * step, m.bar_ticks - k * step, channel, pitch, Role.CHORDS)
            elif self.s.density is Density.SPARSE or not plucked:
                halves = 2 if m.pulses % 2 == 0 and self.s.density is not Density.SPARSE else 1
                span = m.bar_ticks // halves
                for h in range(halves):
                    for pitch in voicing:
                        self.note(t + h * span, span - 10, channel, pitch, Role.CHORDS, 4 - 4 * h)
            elif self.s.density is Density.MODERATE:
                for p in range(m.pulses):
                    for pitch in voicing:
                        accent = 8 if p == 0 else 0
                        self.note(
                            t + p * m.pulse_ticks,
                            m.pulse_ticks - 30,
                            channel,
                            pitch,
                            Role.CHORDS,
                            accent,
                        )
            else:
                for k in range(m.pulses * m.subdivision):
                    accent = 10 if k % m.subdivision == 0 else -6
                    for pitch in voicing:
                        self.note(t + k * step, step - 20, channel, pitch, Role.CHORDS, accent)

    def pad(self, channel: int) -> None:
        previous = 67
        for bar in range(self.s.bars):
            voicing = _voicing(self.chord(bar), previous)
            previous = sum(voicing) // len(voicing)
            for pitch in voicing:
                self.note(self.s.bar_tick(bar), self.s.meter.bar_ticks, channel, pitch, Role.PAD)

    def bass(self, channel: int) -> None:
        m = self.s.meter
        walking = self.plan.style == "jazz" and self.s.density is not Density.SPARSE
        for bar in range(self.s.bars):
            t = self.s.bar_tick(bar)
            root = 36 + self.root(bar)
            fifth = root + 7
            if self.s.kind is SectionKind.BUILDUP:
                eighth = m.pulse_ticks // m.subdivision
                for k in range(m.pulses * m.subdivision):
                    self.note(t + k * eighth, eighth - 30, channel, root, Role.BASS)
            elif walking and not m.compound:
                target = 36 + self.root(bar + 1 if bar + 1 < self.s.bars else 0)
                line = [root, root + 4 if self.s.key.mode == "major" else root + 3, fifth]
                line = ([*line, target + (1 if target < fifth else -1)])[: m.pulses]
                for p, pitch in enumerate(line):
                    self.note(t + p * m.pulse_ticks, m.pulse_ticks - 20, channel, pitch, Role.BASS)
            elif self.s.density is Density.SPARSE:
                self.note(t, m.bar_ticks - 20, channel, root, Role.BASS)
            elif self.s.density is Density.MODERATE:
                if m.pulses % 2 == 0:
                    half = m.bar_ticks // 2
                    self.note(t, half - 20, channel, root, Role.BASS, 6)
                    self.note(t + half, half - 20, channel, fifth, Role.BASS)
                else:
                    self.note(t, m.bar_ticks - 20, channel, root, Role.BASS)
            else:
                eighth = m.pulse_ticks // m.subdivision
                for k in range(m.pulses * m.subdivision):
                    pitch = root + 12 if k % 4 == 3 else root
                    accent = 8 if k % m.subdivision == 0 else 0
                    self.note(t + k * eighth, eighth - 30, channel, pitch, Role.BASS, accent)

    def arpeggio(self, channel: int) -> None:
        m = self.s.meter
        fast = self.s.density is Density.DENSE or self.s.kind is SectionKind.BUILDUP
        per_pulse = m.subdivision * (2 if fast else 1)
        step = m.pulse_ticks // per_pulse
        for bar in range(self.s.bars):
            t = self.s.bar_tick(bar)
            pcs = self.chord(bar)
            notes = sorted(60 + (pc - 60) % 12 for pc in pcs)
            notes += [n + 12 for n in notes]
            for k in range(m.pulses * per_pulse):
                accent = 6 if k % per_pulse == 0 else 0
                self.note(t + k * step, step - 10, channel, notes[k % len(notes)], Role.ARP, accent)

    def counter(self, channel: int, program: int) -> None:
        m = self.s.meter
        previous = 74
        for bar in range(self.s.bars):
            t = self.s.bar_tick(bar)
            voicing = _voicing(self.chord(bar), previous)
            previous = sum(voicing) // len(voicing)
            if program in _BRASS:
                # stabs on the downbeat and just before the middle of the bar
                hits = [0, m.bar_ticks // 2 - m.pulse_ticks // m.subdivision]
                for h in hits:
                    for pitch in voicing:
                        self.note(t + h, m.pulse_ticks // 2, channel, pitch, Role.COUNTER, 8)
            else:
                self.note(t, m.bar_ticks - 10, channel, voicing[-1], Role.COUNTER)
                self.note(t, m.bar_ticks - 10, channel, voicing[-2], Role.COUNTER, -8)

    def lead(self, channel: int) -> None:
        """A melody: two motif rhythms in an A A B A pattern, chord tones on the beats and
        steps between them. Seeded by song and section kind, so a returning chorus repeats."""
        m = self.s.meter
        rng = random.Random(f"{self.plan.seed}:{self.s.kind}:melody")
        per_bar = m.pulses * m.subdivision
        step = m.pulse_ticks // m.subdivision
        lengths = {
            Density.SPARSE: (2, 3, 4, 6),
            Density.MODERATE: (1, 2, 2, 3, 4),
            Density.DENSE: (1, 1, 2, 2, 3),
        }[self.s.density]
        motifs = [_rhythm(rng, per_bar, lengths) for _ in range(2)]
        moves = [rng.choice((-2, -1, -1, 0, 1, 1, 2)) for _ in range(64)]
        tonic = tonic_pitch(self.s.key, 55)
        degree = 7
        for bar in range(self.s.bars):
            t = self.s.bar_tick(bar)
            # A A B A per four bars; every eighth bar is one long note that ends the phrase
            rhythm = [(0, per_bar)] if bar % 8 == 7 else motifs[1 if bar % 4 == 2 else 0]
            chord = self.chord(bar)
            for n, (onset, length) in enumerate(rhythm):
                if length == 0:
                    continue
                if onset % m.subdivision == 0:
                    degree = _nearest_chord_degree(self.s.key, chord, degree, tonic)
                else:
                    degree = min(14, max(2, degree + moves[(bar * 7 + n) % len(moves)]))
                pitch = degree_pitch(self.s.key, degree, tonic)
                accent = 8 if onset == 0 else 0
                self.note(t + onset * step, length * step - 15, channel, pitch, Role.LEAD, accent)

    def drums(self) -> None:
        s = self.s
        m = s.meter
        grid = 3 if m.compound else 4  # steps per pulse: eighths in 6/8, sixteenths otherwise
        step = m.pulse_ticks // grid
        fill = self.following is not None and self.following.kind is SectionKind.CHORUS
        crash = s.kind is SectionKind.CHORUS or (
            s.kind is not SectionKind.INTRO
            and s.groove in (Groove.BACKBEAT, Groove.FOUR_ON_THE_FLOOR)
        )
        for bar in range(s.bars):
            t = s.bar_tick(bar)
            last_bar = bar == s.bars - 1
            for p in range(m.pulses):
                for k in range(grid):
                    hits = _groove_hits(s.groove, p, k, m.pulses, grid, bar / max(1, s.bars))
                    if (
                        fill
                        and last_bar
                        and p == m.pulses - 1
                        and s.groove is not Groove.SNARE_ROLL
                    ):
                        # a fill into the chorus: snare and toms on every step of the last beat
                        hits = (
                            [(SNARE, 6), (KICK, 0)]
                            if k == 0
                            else [(MID_TOM if k % 2 else LOW_TOM, 4)]
                        )
                    if bar == 0 and p == 0 and k == 0 and crash:
                        hits = [*hits, (CRASH, 10)]
                    for note, accent in hits:
                        tick = t + (p * grid + k) * step
                        self.track.note(
                            tick, step, DRUM_CHANNEL, note, self.velocity(tick, Role.DRUMS, accent)
                        )


def _voicing(pcs: list[int], center: int) -> list[int]:
    """A close triad voicing whose mean lies nearest to `center` (smooth voice leading)."""
    best: list[int] = []
    for inversion in range(3):
        order = pcs[inversion:] + pcs[:inversion]
        for low in range(center - 12, center + 1):
            if low % 12 != order[0]:
                continue
            notes = [low]
            for pc in order[1:]:
                notes.append(notes[-1] + (pc - notes[-1]) % 12)
            if not best or abs(sum(notes) / 3 - center) < abs(sum(best) / 3 - center):
                best = notes
    return best


def _rhythm(rng: random.Random, steps: int, lengths: tuple[int, ...]) -> list[tuple[int, int]]:
    """(onset, length) in grid steps filling one bar; some notes become rests (length 0)."""
    out: list[tuple[int, int]] = []
    pos = 0
    while pos < steps:
        length = min(rng.choice(lengths), steps - pos)
        rest = pos > 0 and rng.random() < 0.12
        out.append((pos, 0 if rest else length))
        pos += length
    return out


def _nearest_chord_degree(key: Key, chord: list[int], degree: int, tonic: int) -> int:
    options = [d for d in range(2, 15) if degree_pitch(key, d, tonic) % 12 in chord]
    return min(options, key=lambda d: (abs(d - degree), d)) if options else degree


def _groove_hits(
    groove: Groove, p: int, k: int, pulses: int, grid: int, progress: float
) -> list[tuple[int, int]]:
    """(drum note, accent) struck at step `k` of pulse `p`; `progress` is 0..1 through the
    section (the snare roll speeds up with it)."""
    on = k == 0
    eighth = k % 2 == 0 if grid == 4 else True
    backbeat = p % 2 == 1
    match groove:
        case Groove.NONE:
            return []
        case Groove.BACKBEAT:
            hits = [(CLOSED_HAT, 0 if on else -12)] if eighth else []
            if on and (p == 0 or (pulses >= 4 and p == pulses // 2)):
                hits.append((KICK, 8))
            if grid == 4 and p == pulses // 2 and k == 2:
                hits.append((KICK, -6))
            if on and backbeat:
                hits.append((SNARE, 8))
            return hits
        case Groove.FOUR_ON_THE_FLOOR:
            hits = [(KICK, 10)] if on else []
            if k == grid // 2:
                hits.append((OPEN_HAT, -4))
            elif not on:
                hits.append((CLOSED_HAT, -16))
            if on and backbeat:
                hits += [(CLAP, 4), (SNARE, -10)]
            return hits
        case Groove.HALF_TIME:
            hits = [(CLOSED_HAT, -4 if on else -14)] if eighth else []
            if p == 0 and on:
                hits.append((KICK, 8))
            if p == pulses // 2 and on:
                hits.append((SNARE, 10))
            return hits
        case Groove.SWING:
            hits = [(RIDE, 0)] if on else []
            if grid == 4 and k == 3 and p % 2 == 1:
                hits.append((RIDE, -10))  # the skip note of the ride pattern
            if on and backbeat:
                hits.append((PEDAL_HAT, -8))
            if on and p == 0:
                hits.append((KICK, -16))
            return hits
        case Groove.BREAKBEAT:
            step = p * grid + k
            hits = [(CLOSED_HAT, -4 if eighth else -18)]
            if step in (0, 10):
                hits.append((KICK, 10))
            if on and backbeat:
                hits.append((SNARE, 10))
            if step in (7, 14):
                hits.append((SNARE, -24))  # ghost notes
            return hits
        case Groove.LIGHT:
            hits = [(CLOSED_HAT, -10)] if on else []
            if on and backbeat:
                hits.append((SIDESTICK, 0))
            if on and p == 0:
                hits.append((KICK, -6))
            return hits
        case Groove.SHAKER:
            hits = [(SHAKER, -6 if on else -16)] if eighth else []
            if on and p == 0:
                hits.append((KICK, -10))
            if on and backbeat:
                hits.append((TAMBOURINE, -14))
            return hits
        case Groove.WALTZ:
            if grid == 3:  # 6/8: kick on 1, snare on 4, eighth hats
                hits = [(CLOSED_HAT, 0 if on else -12)]
                if on:
                    hits.append((KICK, 6) if p == 0 else (SNARE, 4))
                return hits
            if not on:
                return [(CLOSED_HAT, -18)] if k == 2 else []
            return [(KICK, 6)] if p == 0 else [(CLOSED_HAT, 0), (SIDESTICK, -6)]
        case Groove.TOMS:
            if not eighth:
                return []
            if p == 0 and on:
                return [(KICK, 10), (FLOOR_TOM, 8)]
            if on:
                return [(LOW_TOM if p % 2 else MID_TOM, 4)]
            return [(FLOOR_TOM, -10)] if p == pulses - 1 else []
        case Groove.SNARE_ROLL:
            # quarters, then eighths, then sixteenths as the build-up nears its end
            every = grid if progress < 0.5 else (grid // 2 if grid == 4 and progress < 0.75 else 1)
            hits = [(SNARE, 0)] if k % every == 0 else []
            if on:
                hits.append((KICK, 4))
            return hits
    return []
