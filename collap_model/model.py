"""The CoLLAP model: one stable contract (encode_audio, encode_text, score, forward)."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence

from collap_model.audio_encoder import TaggedAudioEncoder, build_audio_encoder
from collap_model.config import ModelConfig
from collap_model.frontend import clip_spans, clip_times, cut_clips, prepare_waveform
from collap_model.fusion import SongPooling, TemporalFusion
from collap_model.loss import LogitScale, info_nce
from collap_model.outputs import (
    AudioEmbedding,
    ClipBatch,
    ClipEncoding,
    FusionScores,
    ModelOutput,
    TextEmbedding,
)
from collap_model.text_encoder import TextBackend, TextEncoder, TextStates


class AudioInputError(ValueError):
    """Audio the model cannot embed (no samples)."""


@dataclass(frozen=True)
class TrainingBatch:
    """B aligned (text, song) pairs; the songs' clips are flattened to M clips in total."""

    texts: list[str] | TextStates  # (B,) captions or queries, or their cached backbone states
    features: Tensor  # (M, ...) audio-encoder features of every clip (e.g. log-mel (M, n_mels, F))
    feature_mask: Tensor  # (M, F) valid feature frames
    clip_times: Tensor  # (M, 2) seconds, within each song
    clip_counts: list[int]  # (B,) clips per song, summing to M, songs in text order
    tagger: Tensor | None = None  # (M, W) a frozen tagger's features of every clip, if any
    # (M, 2 C) the compact stages' pools of every clip, when training keeps those stages fixed
    # (a tagged encoder's `embed_pooled`); `features` are then not read
    pooled: Tensor | None = None


class CoLLAP(nn.Module):
    def __init__(
        self,
        config: ModelConfig,
        trained: bool = False,
        text_backend: TextBackend = TextBackend.TRANSFORMERS,
    ) -> None:
        super().__init__()
        self.config = config
        self.trained = trained  # whether the weights came from training (shown by `collap info`)
        self.audio_encoder = build_audio_encoder(config)
        self.text_encoder = TextEncoder(config, text_backend)
        self.song_pool = SongPooling(config)
        self.fusion = TemporalFusion(config)
        self.fusion_scale = LogitScale(config.fusion.init_temperature)
        self.global_scale = LogitScale(config.fusion.init_temperature)
        self._fingerprint: tuple[int, str] | None = None

    # ---- properties -------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.config.frontend.sample_rate

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def frozen_prefixes(self) -> tuple[str, ...]:
        """State-dict prefixes of pretrained backbones kept fixed (not stored in checkpoints)."""
        prefixes = []
        if self.config.text.freeze_backbone:
            prefixes.append("text_encoder.backbone.")
        if self.config.audio.tagger is not None:
            prefixes.append("audio_encoder.tagger.")
        elif getattr(self.audio_encoder, "frozen", False):
            prefixes.append("audio_encoder.backbone.")
        return tuple(prefixes)

    @property
    def tag_names(self) -> tuple[str, ...]:
        """The tagger's tags, in the order of `AudioEmbedding.tags` columns (empty: no tagger).
        MTT's and MSD's vocabularies overlap ("guitar", "rock", ...): a name may repeat."""
        tagger = getattr(self.audio_encoder, "tagger", None)
        return tagger.labels if tagger is not None else ()

    def prepare_new(self) -> None:
        """What a newly initialised model computes from its pretrained parts instead of
        loading it (a checkpoint stores it): the text side's tag prompts."""
        self.text_encoder.embed_tag_prompts()

    def owned_state(self) -> dict[str, Tensor]:
        """The weights this project trains: everything but frozen pretrained backbones."""
        frozen = self.frozen_prefixes()
        return {k: v for k, v in self.state_dict().items() if not k.startswith(frozen)}

    @property
    def fingerprint(self) -> str:
        """`<preset>-<12 hex>`: changes when owned weights, architecture or front-end change.

        Cached against the parameters' in-place version counters, so an optimiser step or a
        load invalidates it without hashing on every access.
        """
        version = sum(p._version for p in self.parameters())
        if self._fingerprint is not None and self._fingerprint[0] == version:
            return self._fingerprint[1]
        h = hashlib.sha256(json.dumps(self.config.architecture(), sort_keys=True).encode())
        h.update(self.text_encoder.backbone_identity().encode())
        tagger = getattr(self.audio_encoder, "tagger", None)
        if tagger is not None:
            h.update(tagger.identity().encode())
        for name, tensor in sorted(self.owned_state().items()):
            h.update(name.encode())
            h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        value = f"{self.config.name}-{h.hexdigest()[:12]}"
        self._fingerprint = (version, value)
        return value

    def parameter_counts(self) -> dict[str, int]:
        def count(m: nn.Module) -> int:
            return sum(p.numel() for p in m.parameters())

        return {
            "audio_encoder": count(self.audio_encoder),
            "text_backbone": count(self.text_encoder.backbone),
            "text_heads": count(self.text_encoder) - count(self.text_encoder.backbone),
            "fusion_and_pooling": count(self.fusion) + count(self.song_pool) + 2,
            "total": count(self),
            "trainable": sum(p.numel() for p in self.parameters() if p.requires_grad),
        }

    @contextlib.contextmanager
    def _autocast(self) -> Iterator[None]:
        if self.device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                yield
        else:
            yield

    # ---- audio ------------------------------------------------------------------------------
    def embed_clips(self, clips: Tensor, valid: Tensor, starts: Tensor | None = None) -> Tensor:
        """Clip waveforms (M, clip_samples) at the model's rate, valid lengths (M,) -> (M, D)
        (`encode_clips` without the tags)."""
        return self.encode_clips(clips, valid, starts).embeddings

    def encode_clips(
        self, clips: Tensor, valid: Tensor, starts: Tensor | None = None
    ) -> ClipEncoding:
        """Clip waveforms (M, clip_samples) at the model's rate, valid lengths (M,) ->
        embeddings (M, D) and, with a tagger, tag probabilities (M, K) (`tag_names`).
        `starts` (M,): each clip's first sample in its song; a model whose tagger places its
        patches on the song's clip grid requires them, others ignore them.

        Inference only (no autograd graph is kept). Runs in chunks of `clip_batch`; this is the
        streaming entry point (clips from many songs may share one call).
        """
        emb, tags = [], []
        step = self.config.clip_batch
        with torch.inference_mode(), self._autocast():
            for i in range(0, clips.shape[0], step):
                chunk = clips[i : i + step].to(self.device)
                part = None if starts is None else starts[i : i + step]
                out = self.audio_encoder.encode(chunk, valid[i : i + step].to(self.device), part)
                emb.append(out.embeddings.float())
                if out.tags is not None:
                    tags.append(out.tags.float())
        k = len(self.tag_names)
        if not emb:
            empty = torch.zeros(0, self.config.embed_dim, device=self.device)
            return ClipEncoding(empty, torch.zeros(0, k, device=self.device) if k else None)
        return ClipEncoding(torch.cat(emb), torch.cat(tags) if tags else None)

    def pool_song(self, clips: Tensor, times: Tensor) -> Tensor:
        """Clip embeddings (N, D) and their times (N, 2) -> song embedding (D,)."""
        batch = ClipBatch(
            clips[None].to(self.device),
            times[None].to(self.device),
            torch.ones(1, clips.shape[0], dtype=torch.bool, device=self.device),
        )
        with torch.inference_mode(), self._autocast():
            return self.song_pool(batch)[0].float()

    def encode_audio(self, waveform: Tensor | np.ndarray, sample_rate: int) -> AudioEmbedding:
        """Waveform (T,) or (C, T) at `sample_rate` -> clips (N, D), song (D,), clip_times (N, 2).

        Every sample lies in some clip (see `frontend.clip_spans`); other rates are resampled.
        """
        wave = prepare_waveform(waveform, sample_rate, self.sample_rate)
        if wave.numel() == 0:
            raise AudioInputError("audio has no samples")
        fe = self.config.frontend
        spans = clip_spans(wave.shape[0], fe)
        with torch.inference_mode():
            clip_wave, valid = cut_clips(wave, spans, fe.clip_samples)
            encoded = self.encode_clips(clip_wave, valid, torch.tensor([s for s, _ in spans]))
            clips = encoded.embeddings
            times = clip_times(spans, fe.sample_rate)
            song = self.pool_song(clips, times)
        tags = None if encoded.tags is None else encoded.tags.cpu()
        return AudioEmbedding(clips.cpu(), song.cpu(), times, tags)

    # ---- text -------------------------------------------------------------------------------
    def encode_text(self, texts: list[str]) -> TextEmbedding:
        """texts -> tokens (B, L, D), mask (B, L), sentence (B, D) normalised."""
        with torch.inference_mode(), self._autocast():
            emb = self.text_encoder(list(texts), fast=True)
        tags = None if emb.tags is None else emb.tags.float()
        return TextEmbedding(emb.tokens.float(), emb.mask, emb.sentence.float(), tags)

    def first_stage_query(self, text_emb: TextEmbedding) -> Tensor:
        """Texts -> query vectors v (B, m·D): v · p, with p a song's `first_stage_vectors`, is
        exactly the fusion score; what the index searches first (collap_model/fusion.py)."""
        with torch.inference_mode():
            v, _ = self.fusion.text_vectors(text_emb.to(self.device))
        return v.flatten(1).float()

    def first_stage_vectors(self, clips: Tensor, times: Tensor) -> Tensor:
        """One song's clips (N, D) and clip times (N, 2) -> (m·D,): what the index stores for
        the first stage of text search, the clips pooled by each attention pattern."""
        batch = ClipBatch(clips[None], times[None], torch.ones(1, clips.shape[0], dtype=torch.bool))
        return self.first_stage_batch(batch)[0]

    def first_stage_batch(self, batch: ClipBatch) -> Tensor:
        """Songs -> (B, m·D) first-stage vectors (see `first_stage_vectors`)."""
        with torch.inference_mode():
            return self.fusion.song_vectors(batch.to(self.device)).flatten(1).float().cpu()

    # ---- scoring ----------------------------------------------------------------------------
    def score(
        self, text_emb: TextEmbedding, audio_embs: Sequence[AudioEmbedding] | ClipBatch
    ) -> FusionScores:
        """Fusion scores (B_t, B_a) with per-clip weights and scores (B_t, B_a, N)."""
        batch = audio_embs if isinstance(audio_embs, ClipBatch) else ClipBatch.of(audio_embs)
        dev = self.device
        with torch.inference_mode():
            return self.fusion(text_emb.to(dev), batch.to(dev))

    def locate(
        self, text_emb: TextEmbedding, audio_embs: Sequence[AudioEmbedding] | ClipBatch
    ) -> Tensor:
        """Where each text happens in each song: per-clip evidence (B_t, B_a, N), higher where
        a clip is more likely the place the text describes, -inf where padded (fusion.locate).
        For segments and `indexer locate`; scores come from `score`."""
        batch = audio_embs if isinstance(audio_embs, ClipBatch) else ClipBatch.of(audio_embs)
        dev = self.device
        with torch.inference_mode():
            return self.fusion.locate(text_emb.to(dev), batch.to(dev)).float()

    def score_only(
        self, text_emb: TextEmbedding, audio_embs: Sequence[AudioEmbedding] | ClipBatch
    ) -> Tensor:
        """Fusion scores (B_t, B_a) alone: what `score` gives, without the per-clip
        explanation (a fraction of its cost for many songs)."""
        batch = audio_embs if isinstance(audio_embs, ClipBatch) else ClipBatch.of(audio_embs)
        dev = self.device
        with torch.inference_mode():
            return self.fusion.scores(text_emb.to(dev), batch.to(dev))

    # ---- training ---------------------------------------------------------------------------
    def forward(self, batch: TrainingBatch) -> ModelOutput:
        """A batch of aligned pairs -> losses and (B, B) logits (diagonal = positives)."""
        dev = self.device
        with self._autocast():
            tagger = None if batch.tagger is None else batch.tagger.to(dev)
            if batch.pooled is not None:
                if tagger is None or not isinstance(self.audio_encoder, TaggedAudioEncoder):
                    raise ValueError("cached pools need a tagged audio encoder and its features")
                flat = self.audio_encoder.embed_pooled(batch.pooled.to(dev), tagger).float()
            else:
                flat = self.audio_encoder.embed(
                    batch.features.to(dev), batch.feature_mask.to(dev), tagger
                ).float()  # (M, D)
            per_song = list(flat.split(batch.clip_counts))
            clips = pad_sequence(per_song, batch_first=True)  # (B, N, D)
            times = pad_sequence(
                list(batch.clip_times.to(dev).split(batch.clip_counts)), batch_first=True
            )
            mask = pad_sequence(
                [torch.ones(n, dtype=torch.bool, device=dev) for n in batch.clip_counts],
                batch_first=True,
            )
            clip_batch = ClipBatch(clips, times, mask)
            text = self.text_encoder(batch.texts)
            songs = self.song_pool(clip_batch).float()  # (B, D)
            fused = self.fusion.scores(text, clip_batch).float()  # (B, B)
        fusion_logits = self.fusion_scale(fused)
        global_logits = self.global_scale(text.sentence.float() @ songs.T)
        fusion_loss = info_nce(fusion_logits)
        global_loss = info_nce(global_logits)
        loss = fusion_loss + self.config.fusion.global_loss_weight * global_loss
        return ModelOutput(loss, fusion_loss, global_loss, fusion_logits, global_logits, flat)
