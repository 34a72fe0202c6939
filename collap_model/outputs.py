"""The typed structures the model contract returns (one structure per call, never tuples)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class AudioEmbedding:
    """One song: what `encode_audio` returns and what the index stores."""

    clips: Tensor  # (N, D) L2-normalised clip embeddings, in time order
    song: Tensor  # (D,) L2-normalised, text-independent song embedding (first-stage ANN)
    clip_times: Tensor  # (N, 2) start and end of each clip in seconds
    # (N, K) each clip's tag probabilities in [0, 1] (`CoLLAP.tag_names`); None: no tagger
    tags: Tensor | None = None


@dataclass(frozen=True)
class ClipEncoding:
    """What `encode_clips` returns for M clips (of any songs, in input order)."""

    embeddings: Tensor  # (M, D) L2-normalised clip embeddings
    tags: Tensor | None  # (M, K) tag probabilities in [0, 1]; None when the model has no tagger


@dataclass(frozen=True)
class ClipBatch:
    """Several songs' clips padded to a common length N (what fusion consumes)."""

    clips: Tensor  # (B, N, D) normalised clip embeddings, zeros where padded
    clip_times: Tensor  # (B, N, 2) seconds, zeros where padded
    mask: Tensor  # (B, N) bool, True for real clips

    @staticmethod
    def of(songs: Sequence[AudioEmbedding]) -> ClipBatch:
        if not songs:
            raise ValueError("ClipBatch.of needs at least one song")
        n = max(s.clips.shape[0] for s in songs)
        d = songs[0].clips.shape[1]
        dev = songs[0].clips.device
        clips = torch.zeros(len(songs), n, d, device=dev)
        times = torch.zeros(len(songs), n, 2, device=dev)
        mask = torch.zeros(len(songs), n, dtype=torch.bool, device=dev)
        for i, s in enumerate(songs):
            k = s.clips.shape[0]
            clips[i, :k] = s.clips.to(dev, torch.float32)
            times[i, :k] = s.clip_times.to(dev, torch.float32)
            mask[i, :k] = True
        return ClipBatch(clips, times, mask)

    @staticmethod
    def of_arrays(clips: Sequence[np.ndarray], times: Sequence[np.ndarray]) -> ClipBatch:
        """Per-song clips (N_i, D) and times (N_i, 2) as float32 arrays -> a padded batch."""
        if not clips:
            raise ValueError("ClipBatch.of_arrays needs at least one song")
        n = max(c.shape[0] for c in clips)
        padded = np.zeros((len(clips), n, clips[0].shape[1]), dtype=np.float32)
        padded_times = np.zeros((len(clips), n, 2), dtype=np.float32)
        mask = np.zeros((len(clips), n), dtype=bool)
        for i, (c, t) in enumerate(zip(clips, times, strict=True)):
            padded[i, : c.shape[0]], padded_times[i, : c.shape[0]] = c, t
            mask[i, : c.shape[0]] = True
        return ClipBatch(
            torch.from_numpy(padded), torch.from_numpy(padded_times), torch.from_numpy(mask)
        )

    def to(self, device: torch.device | str) -> ClipBatch:
        return ClipBatch(self.clips.to(device), self.clip_times.to(device), self.mask.to(device))


@dataclass(frozen=True)
class TextEmbedding:
    """What `encode_text` returns for a list of texts (padded to the longest)."""

    tokens: Tensor  # (B, L, D) token embeddings projected to the joint space, zeros where padded
    mask: Tensor  # (B, L) bool, True for real tokens
    sentence: Tensor  # (B, D) L2-normalised pooled sentence embeddings
    # (B, K) the text's affinity to each tag of the model's tagger, z-scored over the tags and
    # L2-normalised (the tag bridge, text_encoder.py); None when the model has no tagger
    tags: Tensor | None = None

    def __len__(self) -> int:
        return int(self.sentence.shape[0])

    def to(self, device: torch.device | str) -> TextEmbedding:
        tags = None if self.tags is None else self.tags.to(device)
        return TextEmbedding(
            self.tokens.to(device), self.mask.to(device), self.sentence.to(device), tags
        )

    def select(self, index: int) -> TextEmbedding:
        """The text at `index` alone, trimmed to its own length."""
        n = int(self.mask[index].sum())
        return TextEmbedding(
            self.tokens[index : index + 1, :n],
            self.mask[index : index + 1, :n],
            self.sentence[index : index + 1],
            None if self.tags is None else self.tags[index : index + 1],
        )


@dataclass(frozen=True)
class FusionScores:
    """What `score` returns for B_t texts against B_a songs."""

    scores: Tensor  # (B_t, B_a) fusion score f(text, song)
    clip_weights: Tensor  # (B_t, B_a, N) where the text attends in each song; rows sum to 1
    clip_scores: Tensor  # (B_t, B_a, N) how well each clip matches the text (cosine scale)
    mask: Tensor  # (B_a, N) real clips


@dataclass(frozen=True)
class ModelOutput:
    """What `forward` returns for a training batch of aligned (text, song) pairs."""

    loss: Tensor  # () total: fusion InfoNCE + global_loss_weight * global InfoNCE
    fusion_loss: Tensor  # () symmetric InfoNCE over fusion scores
    global_loss: Tensor  # () symmetric InfoNCE over song . sentence
    fusion_logits: Tensor  # (B, B) fusion scores times the learned scale
    global_logits: Tensor  # (B, B) song . sentence times the learned scale
    clips: Tensor  # (M, D) the batch's clip embeddings, in input order (for auxiliary losses)
