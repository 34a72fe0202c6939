"""Clip boundaries, torch-free: used by the model's front-end and by decoder processes.

Clips of `clip` samples start every `hop` samples; when that grid leaves a tail uncovered, one
more clip is aligned to the end of the input, so every sample lies in some clip. An input
shorter than one clip gives a single clip covering all of it (padded when embedded).
"""

from __future__ import annotations

import numpy as np


def clip_spans_samples(num_samples: int, clip: int, hop: int) -> list[tuple[int, int]]:
    """[start, end) sample spans of the clips covering `num_samples` samples."""
    if num_samples <= 0:
        return []
    if num_samples <= clip:
        return [(0, num_samples)]
    starts = list(range(0, num_samples - clip + 1, hop))
    if starts[-1] + clip < num_samples:
        starts.append(num_samples - clip)
    return [(s, s + clip) for s in starts]


class StreamingClipper:
    """Cuts clips from audio pushed in chunks, with the same spans as `clip_spans_samples`.

    Holds at most about one clip plus one chunk of audio, so a two-hour file streams through
    in constant memory. `push` returns the clips completed so far; `finish` the rest.
    Each clip is (start, end, samples) with samples zero-padded to `clip` length.
    """

    def __init__(self, clip: int, hop: int) -> None:
        self.clip, self.hop = clip, hop
        self.buffer = np.zeros(0, dtype=np.float32)
        self.buffer_start = 0  # absolute index of buffer[0]
        self.parts: list[np.ndarray] = []  # pushed audio not yet joined to `buffer`
        self.next_start = 0  # start of the next regular clip
        self.total = 0
        self.peak = 0.0  # largest absolute sample seen (silence detection)

    def push(self, samples: np.ndarray) -> list[tuple[int, int, np.ndarray]]:
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if samples.size:
            self.peak = max(self.peak, float(np.abs(samples).max()))
            self.parts.append(samples)
        self.total += samples.size
        out = []
        if self.next_start + self.clip <= self.total:
            # join lazily: once per emitted clip, not once per (small) decoded frame
            self._join()
            while self.next_start + self.clip <= self.total:
                out.append(self._take(self.next_start, self.next_start + self.clip))
                self.next_start += self.hop
            self._trim(min(self.next_start, max(0, self.total - self.clip)))
        return out

    def finish(self) -> list[tuple[int, int, np.ndarray]]:
        if self.total == 0:
            return []
        self._join()
        if self.total < self.clip:
            return [self._take(0, self.total)]
        last_regular = self.next_start - self.hop
        if last_regular + self.clip < self.total:
            return [self._take(self.total - self.clip, self.total)]
        return []

    def _take(self, start: int, end: int) -> tuple[int, int, np.ndarray]:
        out = np.zeros(self.clip, dtype=np.float32)
        out[: end - start] = self.buffer[start - self.buffer_start : end - self.buffer_start]
        return start, end, out

    def _join(self) -> None:
        if self.parts:
            self.buffer = np.concatenate([self.buffer, *self.parts])
            self.parts = []

    @property
    def held(self) -> int:
        """Samples held in memory (for tests of the memory bound)."""
        return self.buffer.size + sum(p.size for p in self.parts)

    def _trim(self, keep_from: int) -> None:
        drop = keep_from - self.buffer_start
        if drop > 0:
            self.buffer = self.buffer[drop:]
            self.buffer_start = keep_from
