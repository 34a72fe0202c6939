"""The resident index: what similar tracks and recommendations rank by, held in process memory.

With the OS page cache cold (a server idle a while, a VM whose kernel drops cold pages), a
similar-tracks query through the store reads HNSW pages of the `song` vectors and ~100
candidates' payloads (their clips) from disk: p99 ~470 ms at 100k tracks on such a VM
(deploy/README.md), 1.5 s when the page cache is dropped before each request of a fresh
process (benchmarks/cold.py). Anonymous memory survives what drops file pages, so `indexer
serve` copies once, compactly, what ranking needs:

- each track's clips, int8 with one scale per clip (a quarter of float32; products of int8
  vectors summed in int32 are exact, so the only error is the rounding to int8, ~1e-3 on a
  Chamfer similarity), and their times (the steering text's fusion reads them);
- each track's clip centroid (the normalised mean of its clips), int8: the first stage. An exact
  scan of the centroids finds the tracks whose clips resemble the seed's better than the song
  vector does (at 10k tracks, re-ranking the 1000 nearest centroids found 0.97 of the
  exhaustive Chamfer top 10 of a seed, the 1000 nearest song vectors 0.95, 2000: 0.99 and
  0.98), and cheaply: int8 (n, D) by (D, queries) is one pass over n x D bytes;
- each track's song vector in float16 (the hits' `first_stage` cosine; a filtered first stage
  still runs in the store, by song vector) and its artist (paging with `per_artist`).

Only the page's hits are read from the store, for their payload. The copy is built from one
scan of the store and belongs to one collection at one generation (Store.generation): a write
through the same store object, or the alias moving to another collection, makes it stale, and
the next request rebuilds it. A Qdrant server has no such number (others write to it), so
there the store answers as before. A catalog whose copy would exceed the configured bytes is
not copied either (it is refused while the scan counts them).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from indexer.store.base import CLIP_VECTORS, Store, decode_clips

# payload keys the copy reads (the clips, their times, what paging needs)
FIELDS = (CLIP_VECTORS, "clip_times", "artist")
# tracks quantized at a time while building (their float32 clips are all that is held twice)
PAGE = 1024
PARTS = ("songs", "centroids", "centroid_scale", "clips", "clip_scale", "times", "sizes")
# bytes of Python bookkeeping per track (its id string, its row in the id map, its artist)
TRACK_OVERHEAD = 200


def quantize(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float rows (n, D) -> int8 rows (n, D) and each row's scale (n,): rows ≈ q x scale."""
    peak = np.abs(rows).max(axis=1) if rows.size else np.zeros(rows.shape[0], np.float32)
    scale = np.where(peak > 0, peak / 127, 1.0).astype(np.float32)
    q = np.rint(rows / scale[:, None]).clip(-127, 127).astype(np.int8)
    return q, scale


def int8_dots(a: np.ndarray, a_scale: np.ndarray, b: np.ndarray, b_scale: np.ndarray) -> np.ndarray:
    """int8 rows a (M, D) and b (K, D) with their scales -> (M, K) float32 dot products of the
    rows they stand for: one int8 GEMM with int32 sums. torch._int_mm is the kernel torch's
    own quantization runs (torch is pinned, pyproject.toml); NumPy has no int8 GEMM, and float32
    moves four times the bytes: over 100k x 256 centroids with one thread 5 against 17-38 ms."""
    import torch

    sums = torch._int_mm(torch.from_numpy(a), torch.from_numpy(b).T)  # (M, K) int32, exact
    out: np.ndarray = sums.numpy().astype(np.float32)
    out *= a_scale[:, None]
    out *= b_scale[None, :]
    return out


@dataclass
class ResidentIndex:
    """One collection's tracks at one generation; row r is track ids[r]."""

    collection: str
    generation: int
    ids: list[str]
    rows: dict[str, int]  # track id -> row
    songs: np.ndarray  # (n, D) float16, unit
    centroids: np.ndarray  # (n, D) int8: the normalised mean of each track's clips
    centroid_scale: np.ndarray  # (n,) float32
    clips: np.ndarray  # (ΣN, D) int8: every track's clips, in row order
    clip_scale: np.ndarray  # (ΣN,) float32
    offsets: np.ndarray  # (n + 1,) int64: track r's clips are clips[offsets[r]:offsets[r+1]]
    times: np.ndarray  # (ΣN, 2) float32 seconds
    artists: list[Any]  # each track's `artist` payload (None when untagged)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def nbytes(self) -> int:
        arrays = (
            self.songs, self.centroids, self.centroid_scale, self.clips, self.clip_scale,
            self.offsets, self.times,
        )  # fmt: skip
        return sum(a.nbytes for a in arrays) + TRACK_OVERHEAD * len(self.ids)

    @staticmethod
    def build(
        store: Store, collection: str, generation: int, dim: int, max_bytes: int
    ) -> ResidentIndex | None:
        """The collection's copy, or None if it would hold more than `max_bytes`. Quantized a
        page of tracks at a time, so that building takes little more than the copy."""
        ids: list[str] = []
        artists: list[Any] = []
        parts: dict[str, list[np.ndarray]] = {k: [] for k in PARTS}
        page: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (song, clips, times)
        per_clip = dim + 4 + 8  # int8 clip, its scale, its times
        per_track = 2 * dim + dim + 4 + 8 + TRACK_OVERHEAD  # song, centroid, scale, offset
        used = 8  # the offsets' last entry
        for track in store.scan(collection, FIELDS):
            data = track.payload.get(CLIP_VECTORS)
            if data is not None:
                c = decode_clips(data, dim)
            else:  # indexed before the payload copy of the clips existed
                (whole,) = store.retrieve(collection, [track.id], with_vectors=True)
                c = np.asarray(whole.clips, dtype=np.float32).reshape(-1, dim)
            t = np.asarray(track.payload.get("clip_times", []), dtype=np.float32).reshape(-1, 2)
            ids.append(track.id)
            artists.append(track.payload.get("artist"))
            page.append((np.asarray(track.song, dtype=np.float16), c, t))
            used += per_track + per_clip * c.shape[0]
            if used > max_bytes:
                return None
            if len(page) == PAGE:
                _add_page(parts, page, dim)
                page = []
        _add_page(parts, page, dim)
        sizes = np.concatenate(parts["sizes"])
        return ResidentIndex(
            collection=collection,
            generation=generation,
            ids=ids,
            rows={pid: r for r, pid in enumerate(ids)},
            songs=np.concatenate(parts["songs"]),
            centroids=np.concatenate(parts["centroids"]),
            centroid_scale=np.concatenate(parts["centroid_scale"]),
            clips=np.concatenate(parts["clips"]),
            clip_scale=np.concatenate(parts["clip_scale"]),
            offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
            times=np.concatenate(parts["times"]),
            artists=artists,
        )

    # ---- reading --------------------------------------------------------------------------------
    def track_clips(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """Track `row`'s int8 clips (N, D) and their scales (N,)."""
        a, b = self.offsets[row], self.offsets[row + 1]
        return self.clips[a:b], self.clip_scale[a:b]

    def float_clips(self, row: int) -> np.ndarray:
        """Track `row`'s clips as the float32 vectors the int8 ones stand for (N, D)."""
        q, scale = self.track_clips(row)
        out: np.ndarray = q.astype(np.float32) * scale[:, None]
        return out

    def track_times(self, row: int) -> np.ndarray:
        return self.times[self.offsets[row] : self.offsets[row + 1]]

    def gather(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The tracks at `rows` (C,): their clips concatenated (ΣN, D) int8, their scales (ΣN,)
        and each track's clip count (C,)."""
        first, sizes = self.offsets[rows], self.offsets[rows + 1] - self.offsets[rows]
        # clip i of the gathered ones is clip (i - its track's start there) of its track
        starts = np.cumsum(sizes) - sizes
        index = np.arange(int(sizes.sum())) + np.repeat(first - starts, sizes)
        return self.clips[index], self.clip_scale[index], sizes

    def rows_of(self, ids: Iterable[str]) -> np.ndarray:
        """The rows of the given track ids that the copy holds."""
        return np.array([r for r in map(self.rows.get, ids) if r is not None], dtype=np.int64)

    def mask(self, ids: Iterable[str]) -> np.ndarray:
        """(n,) bool: True at the rows of the given track ids."""
        out = np.zeros(len(self), dtype=bool)
        out[self.rows_of(ids)] = True
        return out

    def nearest(
        self, queries: np.ndarray, ks: Sequence[int], banned: np.ndarray | None = None
    ) -> list[np.ndarray]:
        """Unit query vectors (Q, D) -> for each, the rows of its ks[j] nearest centroids (not
        in order), never a `banned` row ((n,) bool): one scan of every centroid for all."""
        if not len(self):
            return [np.zeros(0, np.int64) for _ in ks]
        q, scale = quantize(np.asarray(queries, dtype=np.float32))
        scores = int8_dots(self.centroids, self.centroid_scale, q, scale)  # (n, Q)
        if banned is not None:
            scores[banned] = -np.inf
        allowed = len(self) - (0 if banned is None else int(banned.sum()))
        out = []
        for j, k in enumerate(ks):
            k = min(k, allowed)
            if k <= 0:
                out.append(np.zeros(0, np.int64))
            elif k == allowed:
                out.append(np.flatnonzero(np.isfinite(scores[:, j])))
            else:
                out.append(np.argpartition(-scores[:, j], k - 1)[:k])
        return out


def _add_page(
    parts: dict[str, list[np.ndarray]],
    page: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    dim: int,
) -> None:
    """Quantize a page of tracks (song, clips (N, D), times (N, 2)) onto the parts."""
    clips = [c for _, c, _ in page]
    q, scale = quantize(np.concatenate(clips) if page else np.zeros((0, dim), np.float32))
    means = np.zeros((len(page), dim), np.float32)
    for r, c in enumerate(clips):
        if len(c):
            means[r] = centroid(c)
    cq, cscale = quantize(means)
    parts["songs"].append(
        np.stack([s for s, _, _ in page]) if page else np.zeros((0, dim), np.float16)
    )
    parts["centroids"].append(cq)
    parts["centroid_scale"].append(cscale)
    parts["clips"].append(q)
    parts["clip_scale"].append(scale)
    parts["times"].append(
        np.concatenate([t for _, _, t in page]) if page else np.zeros((0, 2), np.float32)
    )
    parts["sizes"].append(np.array([c.shape[0] for c in clips], dtype=np.int64))


def centroid(clips: np.ndarray) -> np.ndarray:
    """A track's clips (N, D) -> the unit mean of its clips (D,): its first-stage vector."""
    mean = clips.mean(axis=0)
    out: np.ndarray = mean / max(float(np.linalg.norm(mean)), 1e-12)
    return out
