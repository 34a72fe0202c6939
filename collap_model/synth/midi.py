"""A small Standard MIDI File writer (format 0), and a reader for its tempo map and markers.

Pure Python so that the generator needs no MIDI package and its output bytes depend only on
the events added (the determinism tests compare files byte for byte).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

PPQ = 480  # ticks per quarter note: divisible by 2, 3, 4, 8 and 16 so every grid we use is exact
DRUM_CHANNEL = 9  # General MIDI percussion: channel 10, counted from 1

# Events at the same tick are ordered so that a note that ends and restarts on the same pitch
# is released before it is struck again, and a program change lands before the notes it voices.
_META, _NOTE_OFF, _PROGRAM, _CONTROL, _NOTE_ON = range(5)


@dataclass
class MidiTrack:
    """Events for one format-0 file, added in any order; `to_bytes` sorts them stably."""

    ppq: int = PPQ
    _events: list[tuple[int, int, int, bytes]] = field(default_factory=list)

    def _add(self, tick: int, kind: int, data: bytes) -> None:
        if tick < 0:
            raise ValueError(f"MIDI event at negative tick {tick}")
        self._events.append((tick, kind, len(self._events), data))

    def tempo(self, tick: int, microseconds_per_quarter: int) -> None:
        self._add(tick, _META, b"\xff\x51\x03" + microseconds_per_quarter.to_bytes(3, "big"))

    def time_signature(self, tick: int, numerator: int, denominator: int) -> None:
        power = denominator.bit_length() - 1
        if 1 << power != denominator:
            raise ValueError(f"time signature denominator must be a power of two: {denominator}")
        # 24 MIDI clocks per metronome click, 8 thirty-seconds per quarter (the usual values)
        self._add(tick, _META, bytes([0xFF, 0x58, 0x04, numerator, power, 24, 8]))

    def marker(self, tick: int, text: str) -> None:
        raw = text.encode("ascii", "replace")
        self._add(tick, _META, b"\xff\x06" + _varlen(len(raw)) + raw)

    def program(self, tick: int, channel: int, program: int) -> None:
        self._add(tick, _PROGRAM, bytes([0xC0 | channel, program & 0x7F]))

    def control(self, tick: int, channel: int, controller: int, value: int) -> None:
        self._add(tick, _CONTROL, bytes([0xB0 | channel, controller & 0x7F, _clip7(value)]))

    def note(self, tick: int, duration: int, channel: int, pitch: int, velocity: int) -> None:
        """A note from `tick` lasting `duration` ticks; pitch and velocity are clipped to MIDI."""
        if duration <= 0:
            return
        key = _clip7(pitch)
        self._add(tick, _NOTE_ON, bytes([0x90 | channel, key, max(1, _clip7(velocity))]))
        self._add(tick + duration, _NOTE_OFF, bytes([0x80 | channel, key, 0]))

    def to_bytes(self, end_tick: int | None = None) -> bytes:
        """The complete .mid file; the end-of-track event sits at `end_tick` (or the last event)."""
        events = sorted(self._events)
        last = events[-1][0] if events else 0
        end = last if end_tick is None else max(end_tick, last)
        body = bytearray()
        now = 0
        for tick, _kind, _seq, data in events:
            body += _varlen(tick - now) + data
            now = tick
        body += _varlen(end - now) + b"\xff\x2f\x00"
        header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, self.ppq)
        return header + b"MTrk" + struct.pack(">I", len(body)) + bytes(body)


def _clip7(value: int) -> int:
    return min(127, max(0, value))


def _varlen(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def read_markers(data: bytes) -> list[tuple[float, str]]:
    """(seconds, text) of every marker in a format-0 file, timed through its tempo map.

    Used to check that the section times written to a manifest are where the MIDI (and so the
    rendered audio) really changes section.
    """
    if data[:4] != b"MThd":
        raise ValueError("not a Standard MIDI File")
    _fmt, _ntracks, ppq = struct.unpack(">HHH", data[8:14])
    pos = 14
    if data[pos : pos + 4] != b"MTrk":
        raise ValueError("missing MTrk chunk")
    (length,) = struct.unpack(">I", data[pos + 4 : pos + 8])
    pos += 8
    end = pos + length
    tick = 0
    seconds = 0.0
    uspq = 500_000  # the MIDI default tempo (120 BPM) until a tempo event says otherwise
    status = 0
    markers: list[tuple[float, str]] = []
    while pos < end:
        delta, pos = _read_varlen(data, pos)
        tick += delta
        seconds += delta * uspq / (ppq * 1_000_000)
        byte = data[pos]
        if byte == 0xFF:
            kind = data[pos + 1]
            size, pos = _read_varlen(data, pos + 2)
            payload = data[pos : pos + size]
            pos += size
            if kind == 0x51:
                uspq = int.from_bytes(payload, "big")
            elif kind == 0x06:
                markers.append((seconds, payload.decode("ascii")))
            continue
        if byte & 0x80:
            status = byte
            pos += 1
        # channel messages: program change and channel pressure take one data byte, others two
        pos += 1 if status & 0xF0 in (0xC0, 0xD0) else 2
    return markers


def _read_varlen(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    while True:
        byte = data[pos]
        pos += 1
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            return value, pos
