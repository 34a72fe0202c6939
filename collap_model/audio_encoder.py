"""Audio encoders: clip waveforms (B, S) at the model's rate -> clip embeddings (B, D).

Two implementations behind one interface, chosen by `AudioEncoderKind`:
- `CompactAudioEncoder`: log-mel -> strided 1-D convolutions with ConvNeXt blocks -> masked
  attention pooling. Trained from scratch; small enough to embed a catalog on a CPU.
- `TransformersAudioEncoder`: a pretrained transformers audio model (AST, the Whisper encoder,
  the CLAP audio tower) loaded from a local directory, with its own feature extractor.

`features` and `embed` are split so training can cache features and run only `embed`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from collap_model.config import AudioEncoderConfig, AudioEncoderKind, ConfigError, ModelConfig
from collap_model.frontend import LogMel
from collap_model.paths import quiet_transformers, resolve_local_dir


class AudioEncoder(nn.Module):
    """Interface: features(clips, valid) -> (features, mask); embed(features, mask) -> (B, D)."""

    def features(self, clips: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def embed(self, features: Tensor, mask: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, clips: Tensor, valid: Tensor) -> Tensor:
        """clips (B, S) zero-padded waveforms, valid (B,) real samples -> (B, D) normalised."""
        feats, mask = self.features(clips, valid)
        return self.embed(feats, mask)


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


class CompactAudioEncoder(AudioEncoder):
    """Log-mel (B, M, F) -> stride-2 stages (B, C_k, F / 2^k) -> attention + mean pool -> (B, D)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        a = config.audio
        self.logmel = LogMel(config.frontend)
        stages: list[nn.Module] = []
        width = config.frontend.n_mels
        for i, c in enumerate(a.channels):
            k = 5 if i == 0 else 3
            blocks = [ConvNeXt1d(c, a.kernel_size) for _ in range(a.blocks_per_stage)]
            stages.append(
                nn.Sequential(nn.Conv1d(width, c, k, stride=2, padding=k // 2), nn.GELU(), *blocks)
            )
            width = c
        self.stages = nn.ModuleList(stages)
        self.pool_logit = nn.Linear(width, 1)
        self.head = nn.Sequential(
            nn.LayerNorm(2 * width), nn.Dropout(a.dropout), nn.Linear(2 * width, config.embed_dim)
        )

    def features(self, clips: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        return self.logmel(clips, valid)  # (B, M, F), (B, F)

    def embed(self, features: Tensor, mask: Tensor) -> Tensor:
        x = features
        n_valid = mask.sum(dim=1)  # (B,)
        for stage in self.stages:
            x = stage(x)  # (B, C, ceil(F / 2))
            n_valid = torch.div(n_valid + 1, 2, rounding_mode="floor")
        frames = x.shape[-1]
        m = torch.arange(frames, device=x.device)[None, :] < n_valid[:, None]  # (B, F')
        h = x.transpose(1, 2)  # (B, F', C)
        w = masked_softmax(self.pool_logit(h).squeeze(-1), m, dim=1)  # (B, F')
        attn = torch.einsum("bf,bfc->bc", w, h)
        mean = (h * m[..., None]).sum(1) / n_valid.clamp(min=1)[:, None]
        return F.normalize(self.head(torch.cat([attn, mean], dim=-1)), dim=-1)  # (B, D)


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

    def embed(self, features: Tensor, mask: Tensor) -> Tensor:
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
        case AudioEncoderKind.TRANSFORMERS:
            assert a.backbone is not None  # enforced by AudioEncoderConfig
            return TransformersAudioEncoder(config, resolve_local_dir(a.backbone, "audio backbone"))
