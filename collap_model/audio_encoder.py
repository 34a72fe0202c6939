"""Audio encoders: clip waveforms (B, S) at the model's rate -> clip embeddings (B, D).

Three implementations behind one interface, chosen by `AudioEncoderKind`:
- `CompactAudioEncoder`: log-mel -> strided 1-D convolutions with ConvNeXt blocks -> masked
  attention pooling. Trained from scratch; small enough to embed a catalog on a CPU.
- `TaggedAudioEncoder`: the compact encoder beside the pretrained musicnn tagger; a clip's
  embedding is a learned part and the tagger's z-scored tags, side by side (see its doc).
- `TransformersAudioEncoder`: a pretrained transformers audio model (AST, the Whisper encoder,
  the CLAP audio tower) loaded from a local directory, with its own feature extractor.

`features` (and `tagger_features`) and `embed` are split so training can cache the features of
the frozen parts and run only `embed`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from collap_model.config import (
    AudioEncoderConfig,
    AudioEncoderKind,
    ConfigError,
    ModelConfig,
    PatchPlacement,
)
from collap_model.frontend import LogMel
from collap_model.outputs import ClipEncoding
from collap_model.paths import quiet_transformers, resolve_local_dir


class AudioEncoder(nn.Module):
    """Interface: features(clips, valid) -> (features, mask); tagger_features(clips, valid,
    starts) -> (B, W) or None; embed(features, mask, tagger) -> (B, D); encode -> ClipEncoding.
    `starts` (B,): each clip's first sample in its song (a tagger may place its patches by it)."""

    def features(self, clips: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def tagger_features(
        self, clips: Tensor, valid: Tensor, starts: Tensor | None = None
    ) -> Tensor | None:
        """What a pretrained, frozen tagger says of each clip (None: the encoder has none)."""
        return None

    def embed(self, features: Tensor, mask: Tensor, tagger: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def tags(self, tagger: Tensor | None) -> Tensor | None:
        """Tag probabilities (B, K) within `tagger_features` (None without a tagger)."""
        return None

    def encode(self, clips: Tensor, valid: Tensor, starts: Tensor | None = None) -> ClipEncoding:
        """clips (B, S) zero-padded waveforms, valid (B,) real samples -> embeddings (B, D)
        normalised, and tag probabilities (B, K) when the encoder has a tagger."""
        feats, mask = self.features(clips, valid)
        tagger = self.tagger_features(clips, valid, starts)
        return ClipEncoding(self.embed(feats, mask, tagger), self.tags(tagger))

    def forward(self, clips: Tensor, valid: Tensor, starts: Tensor | None = None) -> Tensor:
        """clips (B, S) zero-padded waveforms, valid (B,) real samples -> (B, D) normalised."""
        return self.encode(clips, valid, starts).embeddings


def masked_softmax(logits: Tensor, mask: Tensor, dim: int) -> Tensor:
    """Softmax over `dim` where `mask` is False contributes nothing (all-False rows give 0)."""
    logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
    return torch.softmax(logits, dim=dim) * mask


class ConvNeXt1d(nn.Module):
    """x + MLP(LN(depthwise_conv(x))) over (B, C, F)."""

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        self.dw = nn.Conv1d(
            channels, channels, kernel_size, padding=kernel_size // 2, groups=channels
        )
        self.norm = nn.LayerNorm(channels)
        self.pw1 = nn.Linear(channels, 2 * channels)
        self.pw2 = nn.Linear(2 * channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        h = self.dw(x).transpose(1, 2)  # (B, F, C)
        h = self.pw2(F.gelu(self.pw1(self.norm(h))))
        return x + h.transpose(1, 2)  # (B, C, F)


def conv_stages(n_mels: int, a: AudioEncoderConfig) -> nn.ModuleList:
    """The compact encoder's stride-2 stages: (B, n_mels, F) -> (B, C_last, F / 2^stages)."""
    stages: list[nn.Module] = []
    width = n_mels
    for i, c in enumerate(a.channels):
        k = 5 if i == 0 else 3
        blocks = [ConvNeXt1d(c, a.kernel_size) for _ in range(a.blocks_per_stage)]
        stages.append(
            nn.Sequential(nn.Conv1d(width, c, k, stride=2, padding=k // 2), nn.GELU(), *blocks)
        )
        width = c
    return nn.ModuleList(stages)


def pool_stages(
    stages: nn.ModuleList, pool_logit: nn.Linear, features: Tensor, mask: Tensor
) -> Tensor:
    """Log-mel (B, M, F) through `stages` -> attention and mean pools of the last, (B, 2 C)."""
    x = features
    n_valid = mask.sum(dim=1)  # (B,)
    for stage in stages:
        x = stage(x)  # (B, C, ceil(F / 2))
        n_valid = torch.div(n_valid + 1, 2, rounding_mode="floor")
    frames = x.shape[-1]
    m = torch.arange(frames, device=x.device)[None, :] < n_valid[:, None]  # (B, F')
    h = x.transpose(1, 2)  # (B, F', C)
    w = masked_softmax(pool_logit(h).squeeze(-1), m, dim=1)  # (B, F')
    attn = torch.einsum("bf,bfc->bc", w, h)
    mean = (h * m[..., None]).sum(1) / n_valid.clamp(min=1)[:, None]
    return torch.cat([attn, mean], dim=-1)


class CompactAudioEncoder(AudioEncoder):
    """Log-mel (B, M, F) -> stride-2 stages (B, C_k, F / 2^k) -> attention + mean pool -> (B, D)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        a = config.audio
        self.logmel = LogMel(config.frontend)
        self.stages = conv_stages(config.frontend.n_mels, a)
        width = a.channels[-1]
        self.pool_logit = nn.Linear(width, 1)
        self.head = nn.Sequential(
            nn.LayerNorm(2 * width), nn.Dropout(a.dropout), nn.Linear(2 * width, config.embed_dim)
        )

    def features(self, clips: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        return self.logmel(clips, valid)  # (B, M, F), (B, F)

    def embed(self, features: Tensor, mask: Tensor, tagger: Tensor | None = None) -> Tensor:
        return F.normalize(self.head(self.pooled(features, mask)), dim=-1)  # (B, D)

    def pooled(self, features: Tensor, mask: Tensor) -> Tensor:
        """Log-mel (B, M, F) -> the last stage's attention and mean pools, (B, 2 C)."""
        return pool_stages(self.stages, self.pool_logit, features, mask)


class TaggedAudioEncoder(CompactAudioEncoder):
    """The compact encoder beside musicnn (frozen): clip embedding (B, D) = [a · l̂ ; b · ẑ].

        q ∈ [0,1]^K, e ∈ R^P   the tagger's tags and penultimate features of the clip
        z = (q - μ_q) / σ_q    tags z-scored by statistics of the training clips (buffers)
        ê = (e - μ_e) / σ_e
        l = MLP([pool(compact(log-mel)) ; ê ; z])  ∈ R^{D-K}     the learned part
        a = cos θ, b = sin θ   (θ learned: how much of the embedding the tags hold)
    The last K coordinates are the tags themselves, so a text that names a tag can reach the
    clips that have it without training (the text side's tag bridge, text_encoder.py), and
    what our encoder learns (dynamics, density, structure) and the tagger's features beyond
    its tags reach the text through the learned part. Unit norm, like every clip embedding.
    """

    tag_mean: Tensor
    tag_std: Tensor
    feature_mean: Tensor
    feature_std: Tensor

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        from collap_model.tagger.tagger import Tagger

        t = config.audio.tagger
        assert t is not None  # enforced by AudioEncoderConfig
        fe = config.frontend
        shared = t.patch_placement is PatchPlacement.SHARED
        grid = (fe.clip_samples, fe.hop_samples) if shared else None
        self.tagger = Tagger(t.models, t.patches_per_clip, t.weights, grid)
        k, p = len(self.tagger.labels), self.tagger.width - len(self.tagger.labels)
        self.k = k
        width = 2 * config.audio.channels[-1] + p + k
        self.head = nn.Sequential(
            nn.LayerNorm(width),
            nn.Linear(width, t.hidden),
            nn.GELU(),
            nn.Dropout(config.audio.dropout),
            nn.Linear(t.hidden, config.embed_dim - k),
        )
        self.theta = nn.Parameter(torch.tensor(math.asin(math.sqrt(t.tag_share))))
        # set from the training clips before the first step (`set_statistics`), then stored
        self.register_buffer("tag_mean", torch.full((k,), 0.5))
        self.register_buffer("tag_std", torch.full((k,), 0.25))
        self.register_buffer("feature_mean", torch.zeros(p))
        self.register_buffer("feature_std", torch.ones(p))

    @property
    def frozen(self) -> bool:
        return True  # the tagger's weights (audio_encoder.tagger.) are referenced, not stored

    def tagger_features(self, clips: Tensor, valid: Tensor, starts: Tensor | None = None) -> Tensor:
        out = self.tagger(clips, valid, starts)
        return torch.cat([out.tags, out.penultimate], dim=1)  # (B, K + P)

    def tags(self, tagger: Tensor | None) -> Tensor | None:
        return None if tagger is None else tagger[:, : self.k]

    def set_statistics(self, tagger: Tensor) -> None:
        """Per-feature mean and spread of the training clips' tagger features (M, K + P)."""
        mean, std = tagger.float().mean(dim=0), tagger.float().std(dim=0).clamp(min=1e-3)
        self.tag_mean.copy_(mean[: self.k])
        self.tag_std.copy_(std[: self.k])
        self.feature_mean.copy_(mean[self.k :])
        self.feature_std.copy_(std[self.k :])

    def embed(self, features: Tensor, mask: Tensor, tagger: Tensor | None = None) -> Tensor:
        if tagger is None:
            raise ValueError("a tagged audio encoder needs the tagger's features of each clip")
        return self.embed_pooled(self.pooled(features, mask), tagger)

    def embed_pooled(self, pooled: Tensor, tagger: Tensor) -> Tensor:
        """`embed` from the compact stages' pools (B, 2 C) (`pooled`), computed once when
        training keeps those stages fixed."""
        tagger = tagger.to(pooled.device, torch.float32)
        z = (tagger[:, : self.k] - self.tag_mean) / self.tag_std  # (B, K)
        e = (tagger[:, self.k :] - self.feature_mean) / self.feature_std  # (B, P)
        learned = self.head(torch.cat([pooled.float(), e, z], dim=-1))  # (B, D-K)
        parts = [torch.cos(self.theta) * F.normalize(learned.float(), dim=-1),
                 torch.sin(self.theta) * F.normalize(z, dim=-1)]  # fmt: skip
        return torch.cat(parts, dim=-1)  # (B, D), unit norm


class TransformersAudioEncoder(AudioEncoder):
    """A pretrained transformers audio model from a local directory -> Linear -> (B, D).

    Supported model types (chosen by the directory's config.json `model_type`):
    AST ("audio-spectrogram-transformer", pooler output), Whisper ("whisper", mean of the
    encoder's frames) and CLAP ("clap" or "clap_audio_model", the audio tower's pooler output).
    The model's own feature extractor (from the same directory) computes its input features.
    """

    def __init__(self, config: ModelConfig, directory: Path) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoFeatureExtractor

        quiet_transformers()

        hf_config = AutoConfig.from_pretrained(directory, local_files_only=True)
        self.model_type = str(hf_config.model_type)
        self.backbone, hidden = _load_audio_backbone(self.model_type, directory)
        self.extractor = AutoFeatureExtractor.from_pretrained(directory, local_files_only=True)
        rate = int(self.extractor.sampling_rate)
        if rate != config.frontend.sample_rate:
            raise ConfigError(
                f"audio backbone {directory} expects {rate} Hz but the config's front-end runs at "
                f"{config.frontend.sample_rate} Hz; set frontend.sample_rate to {rate}"
            )
        self.frozen = config.audio.freeze_backbone
        if self.frozen:
            self.backbone.requires_grad_(False)
        self.proj = nn.Linear(hidden, config.embed_dim)

    def features(self, clips: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        arrays = [
            c[: int(n)].float().cpu().numpy().astype(np.float32)
            for c, n in zip(clips, valid, strict=True)
        ]
        out = self.extractor(
            arrays, sampling_rate=int(self.extractor.sampling_rate), return_tensors="pt"
        )
        key = "input_values" if "input_values" in out else "input_features"
        feats = out[key].to(clips.device)
        return feats, torch.ones(feats.shape[0], dtype=torch.bool, device=clips.device)

    def embed(self, features: Tensor, mask: Tensor, tagger: Tensor | None = None) -> Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            match self.model_type:
                case "audio-spectrogram-transformer":
                    pooled = self.backbone(input_values=features).pooler_output
                case "whisper":
                    pooled = self.backbone(input_features=features).last_hidden_state.mean(dim=1)
                case "clap" | "clap_audio_model":
                    pooled = self.backbone(input_features=features).pooler_output
                case other:
                    raise ConfigError(f"unsupported audio backbone type {other!r}")
        return F.normalize(self.proj(pooled.float()), dim=-1)


def _load_audio_backbone(model_type: str, directory: Path) -> tuple[nn.Module, int]:
    from transformers import ASTModel, ClapAudioModel, ClapModel, WhisperModel

    match model_type:
        case "audio-spectrogram-transformer":
            ast = ASTModel.from_pretrained(directory, local_files_only=True)
            return ast, int(ast.config.hidden_size)
        case "whisper":
            whisper = WhisperModel.from_pretrained(directory, local_files_only=True)
            return whisper.get_encoder(), int(whisper.config.d_model)
        case "clap":
            clap = ClapModel.from_pretrained(directory, local_files_only=True)
            return clap.audio_model, int(getattr(clap.config.audio_config, "hidden_size", 0))
        case "clap_audio_model":
            tower = ClapAudioModel.from_pretrained(directory, local_files_only=True)
            return tower, int(tower.config.hidden_size)
        case other:
            raise ConfigError(
                f"unsupported audio backbone type {other!r} in {directory}; "
                "supported: audio-spectrogram-transformer, whisper, clap, clap_audio_model"
            )


def build_audio_encoder(config: ModelConfig) -> AudioEncoder:
    a: AudioEncoderConfig = config.audio
    match a.kind:
        case AudioEncoderKind.COMPACT:
            return CompactAudioEncoder(config)
        case AudioEncoderKind.TAGGED:
            return TaggedAudioEncoder(config)
        case AudioEncoderKind.TRANSFORMERS:
            assert a.backbone is not None  # enforced by AudioEncoderConfig
            return TransformersAudioEncoder(config, resolve_local_dir(a.backbone, "audio backbone"))
