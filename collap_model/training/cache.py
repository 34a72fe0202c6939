"""Feature caches for training and evaluation: each song decoded once, each text encoded once.

Audio: every song of a manifest is decoded (audio_io.read_audio), cut into clips and turned
into audio-encoder features (log-mel for the compact encoder; a tagged encoder's frozen tagger
outputs beside them), stored as float16 numpy arrays in the cache folder. Text: with a frozen
text backbone its outputs never change, so captions and queries are run through it once and
only the projections train.

A cache is keyed by the front-end and backbone it was made with; a stale one is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from collap_model.audio_io import read_audio
from collap_model.frontend import clip_spans, clip_times, cut_clips
from collap_model.model import CoLLAP
from collap_model.text_encoder import TextStates

log = logging.getLogger("collap.train")

# texts per backbone call when filling the text cache
_TEXT_BATCH = 32
# where a data set's audio features are cached by default: a folder beside its manifest
DATA_CACHE = ".collap-cache"


@dataclass
class AudioCache:
    features: np.ndarray  # (M, ...) float16 encoder features of every clip
    masks: np.ndarray  # (M, F) bool valid frames
    times: np.ndarray  # (M, 2) float32 seconds
    offsets: np.ndarray  # (S + 1,) int64: song s owns clips offsets[s]:offsets[s + 1]
    tagger: np.ndarray | None = None  # (M, W) float16 frozen tagger features (tagged encoder)

    def __len__(self) -> int:
        return int(self.offsets.shape[0] - 1)

    def song(self, s: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lo, hi = int(self.offsets[s]), int(self.offsets[s + 1])
        return self.features[lo:hi], self.masks[lo:hi], self.times[lo:hi]

    def song_tagger(self, s: int) -> np.ndarray | None:
        lo, hi = int(self.offsets[s]), int(self.offsets[s + 1])
        return None if self.tagger is None else self.tagger[lo:hi]

    def subset(self, songs: Sequence[int]) -> AudioCache:
        """The cache of `songs` only, in that order."""
        rows = np.concatenate(
            [np.arange(self.offsets[s], self.offsets[s + 1]) for s in songs]
        ).astype(np.int64)
        counts = [int(self.offsets[s + 1] - self.offsets[s]) for s in songs]
        offsets = np.cumsum([0, *counts]).astype(np.int64)
        tagger = None if self.tagger is None else np.asarray(self.tagger[rows])
        return AudioCache(np.asarray(self.features[rows]), np.asarray(self.masks[rows]),
                          np.asarray(self.times[rows]), offsets, tagger)  # fmt: skip


def concat_caches(caches: Sequence[AudioCache]) -> AudioCache:
    """Several caches as one, their songs one after another."""
    if len(caches) == 1:
        return caches[0]
    offsets = [np.asarray(caches[0].offsets)]
    for c in caches[1:]:
        offsets.append(np.asarray(c.offsets[1:]) + offsets[-1][-1])
    tagged = [c.tagger for c in caches if c.tagger is not None]
    tagger = np.concatenate([np.asarray(t) for t in tagged]) if len(tagged) == len(caches) else None
    return AudioCache(
        np.concatenate([np.asarray(c.features) for c in caches]),
        np.concatenate([np.asarray(c.masks) for c in caches]),
        np.concatenate([np.asarray(c.times) for c in caches]),
        np.concatenate(offsets).astype(np.int64),
        tagger,
    )


def _audio_key(model: CoLLAP, paths: Sequence[Path], cap_seconds: float | None) -> str:
    fe = model.config.frontend.model_dump(mode="json")
    tagger = getattr(model.audio_encoder, "tagger", None)
    identity = None if tagger is None else tagger.identity()
    raw = json.dumps(
        [fe, model.config.audio.kind.value, cap_seconds, [str(p) for p in paths], identity]
    )
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


_ARRAYS = ("features", "masks", "times", "offsets")


def audio_cache(
    model: CoLLAP, paths: Sequence[Path], folder: Path, cap_seconds: float | None
) -> AudioCache:
    """Features of every clip of every song (cached in `folder`, rebuilt when stale).

    cap_seconds: crop songs to this length (training's `max_seconds`); None keeps all audio.
    """
    key = _audio_key(model, paths, cap_seconds)
    target = folder / f"audio-{key}"
    if (target / "offsets.npy").exists():
        stored = {n: np.load(target / f"{n}.npy", mmap_mode="r") for n in _ARRAYS}
        tagged = target / "tagger.npy"
        if tagged.exists():
            stored["tagger"] = np.load(tagged, mmap_mode="r")
        return AudioCache(**stored)
    fe = model.config.frontend
    feats: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    times: list[np.ndarray] = []
    tagger: list[np.ndarray] = []
    offsets = [0]
    model.eval()
    for i, path in enumerate(paths):
        wave = torch.from_numpy(read_audio(path, fe.sample_rate))
        if cap_seconds is not None:
            wave = wave[: int(cap_seconds * fe.sample_rate)]
        spans = clip_spans(wave.shape[0], fe)
        clips, valid = cut_clips(wave, spans, fe.clip_samples)
        clips, valid = clips.to(model.device), valid.to(model.device)
        with torch.inference_mode():
            f, m = model.audio_encoder.features(clips, valid)
            starts = torch.tensor([s for s, _ in spans], device=model.device)
            t = model.audio_encoder.tagger_features(clips, valid, starts)
        feats.append(f.cpu().numpy().astype(np.float16))
        masks.append(m.cpu().numpy())
        if t is not None:
            tagger.append(t.float().cpu().numpy().astype(np.float16))
        times.append(clip_times(spans, fe.sample_rate).numpy())
        offsets.append(offsets[-1] + len(spans))
        if (i + 1) % 100 == 0:
            log.info("audio cache: %d/%d songs", i + 1, len(paths))
    target.mkdir(parents=True, exist_ok=True)
    arrays = {
        "features": np.concatenate(feats),
        "masks": np.concatenate(masks),
        "times": np.concatenate(times),
        "offsets": np.array(offsets, dtype=np.int64),
    }
    if tagger:
        arrays["tagger"] = np.concatenate(tagger)
    # the offsets last: their presence marks a complete cache
    for name in sorted(arrays, key=lambda n: n == "offsets"):
        np.save(target / f"{name}.npy", arrays[name])
    return AudioCache(**arrays)


@dataclass
class TextCache:
    tokens: np.ndarray  # (T, H) float16 backbone states of every token of every text
    offsets: np.ndarray  # (K + 1,) int64: text k owns tokens offsets[k]:offsets[k + 1]
    pooled: np.ndarray  # (K, H) float16 pooled backbone output

    def states(self, index: Sequence[int]) -> TextStates:
        toks = [
            torch.from_numpy(
                np.asarray(self.tokens[self.offsets[k] : self.offsets[k + 1]], dtype=np.float32)
            )
            for k in index
        ]
        pooled = [torch.from_numpy(np.asarray(self.pooled[k], dtype=np.float32)) for k in index]
        return TextStates(toks, pooled)

    def subset(self, index: Sequence[int]) -> TextCache:
        """The cache of the texts `index` only, in that order."""
        spans = [(int(self.offsets[k]), int(self.offsets[k + 1])) for k in index]
        rows = np.concatenate([np.arange(a, b) for a, b in spans]).astype(np.int64)
        offsets = np.cumsum([0, *(b - a for a, b in spans)]).astype(np.int64)
        pooled = np.asarray(self.pooled[np.asarray(index, dtype=np.int64)])
        return TextCache(np.asarray(self.tokens[rows]), offsets, pooled)


def text_cache(model: CoLLAP, texts: Sequence[str], folder: Path) -> TextCache:
    """Frozen-backbone states of `texts` (cached in `folder`, rebuilt when stale)."""
    enc = model.text_encoder
    raw = json.dumps([enc.backbone_identity(), enc.config.model_dump(mode="json"), list(texts)])
    target = folder / f"text-{hashlib.sha256(raw.encode()).hexdigest()[:16]}"
    if (target / "offsets.npy").exists():
        return TextCache(
            *(np.load(target / f"{n}.npy", mmap_mode="r") for n in ("tokens", "offsets", "pooled"))
        )
    # batches of texts of similar length: a manifest interleaves each long caption with its
    # short queries, and in manifest order every batch was padded to a caption's window
    order = sorted(range(len(texts)), key=lambda k: (len(texts[k]), k))
    states: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    with torch.inference_mode():
        for i in range(0, len(order), _TEXT_BATCH):
            chunk = order[i : i + _TEXT_BATCH]
            toks, pools = enc.hidden_states([texts[k] for k in chunk])
            for k, t, p in zip(chunk, toks, pools, strict=True):
                states[k] = (t.cpu().numpy().astype(np.float16), p.cpu().numpy().astype(np.float16))
    tokens: list[np.ndarray] = []
    pooled: list[np.ndarray] = []
    offsets = [0]
    for k in range(len(texts)):
        tok, pool = states[k]
        tokens.append(tok)
        pooled.append(pool)
        offsets.append(offsets[-1] + tok.shape[0])
    target.mkdir(parents=True, exist_ok=True)
    arrays = {
        "tokens": np.concatenate(tokens),
        "offsets": np.array(offsets, dtype=np.int64),
        "pooled": np.stack(pooled),
    }
    for name, arr in arrays.items():
        np.save(target / f"{name}.npy", arr)
    return TextCache(**arrays)
